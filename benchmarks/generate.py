"""Generator speed: ms per note (z -> waveform) for the paper and lite configs.

Batch 1 and 8, fp32 / bf16, 1 and 2 threads, the spectral inverse alone; each as a
fraction of the machine's bound = FLOPs per note / GFLOP/s of a large matmul of
the same dtype and thread count, measured in the same run. Then the bundled (or
--model) model's whole pitch range, note by note at one thread as the instrument's
renderer does it (issue 5's bar: 61 pitches in <= 1.5 s), per precision.

    python -m benchmarks.generate [--quick] [--model PATH]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from benchmarks.common import matmul_gflops, summary, time_ms
from engine.gansynth.config import PRESETS, SpectralConfig
from engine.gansynth.model import Generator
from engine.gansynth.spectral import SpecgramsHelper
from engine.gansynth.synth import Synth


def generator_macs(cfg) -> int:
    """Multiply-accumulates per note of the full-resolution generator."""
    macs = 0
    for k in range(1, cfg.num_resolutions + 1):
        h, w = cfg.resolution(k)
        c_out = cfg.num_filters(k)
        if k == 1:
            c_in, kh, kw = cfg.latent_size + cfg.num_pitches, *cfg.start_shape
        else:
            c_in, kh, kw = cfg.num_filters(k - 1), cfg.kernel_size, cfg.kernel_size
        macs += h * w * c_out * c_in * kh * kw  # conv0
        macs += h * w * c_out * c_out * cfg.kernel_size ** 2  # conv1
    h, w = cfg.output_shape
    macs += h * w * 2 * cfg.num_filters(cfg.num_resolutions)  # last to_rgb
    return macs


def bench_config(name: str, batches, precisions, threads_list, repeat: int) -> list[dict]:
    torch.manual_seed(0)
    cfg = PRESETS[name]
    gen = Generator(cfg)
    flops = 2 * generator_macs(cfg)
    rows = []
    for threads in threads_list:
        bound = {p: matmul_gflops(threads, torch.float32 if p == "fp32" else torch.bfloat16)
                 for p in precisions}
        for precision in precisions:
            synth = Synth(gen, SpectralConfig(), device="cpu", threads=threads, precision=precision)
            for batch in batches:
                synth.batch_size = batch
                z = synth.random_latents(batch, seed=1)
                pitches = np.full(batch, 60)
                ms = time_ms(lambda: synth.generate(z, pitches), repeat=repeat) / batch
                frac = flops / (ms * 1e-3) / 1e9 / bound[precision]
                rows.append(dict(config=name, threads=threads, precision=precision, batch=batch,
                                 ms_per_note=round(ms, 2), bound_gflops=round(bound[precision], 1),
                                 fraction_of_bound=round(frac, 3)))
                print(f"{name:6s} threads={threads} {precision:5s} batch={batch:2d}  "
                      f"{ms:8.2f} ms/note  {flops / 1e9:6.2f} GFLOP/note  "
                      f"bound {bound[precision]:7.1f} GFLOP/s  -> {100 * frac:5.1f}% of bound")
    return rows


def bench_inverse(threads_list, repeat: int) -> dict:
    helper = SpecgramsHelper(SpectralConfig())
    spec = torch.rand(1, 2, 128, 1024) * 2 - 1
    out = {}
    for threads in threads_list:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            ms = time_ms(lambda: helper.specgrams_to_waves(spec), repeat=repeat)
        out[f"inverse_ms_{threads}t"] = round(ms, 2)
        print(f"mel-IF inverse alone, threads={threads}: {ms:.2f} ms/note")
    return out


def bench_range(model: str, repeat: int) -> dict:
    """Seconds for the model's whole pitch range, one note per generate call, one thread."""
    from engine.gansynth.synth import load_synth

    out = {}
    for precision in ("fp32", "bf16", "auto"):
        synth = load_synth(model, device="cpu", threads=1, precision=precision)
        lo, hi = synth.pitch_range
        z = synth.random_latents(1, seed=0)
        synth.generate(z, [60])  # warm-up

        def whole_range():
            for p in range(lo, hi + 1):
                synth.generate(z, [p])
        seconds = time_ms(whole_range, repeat=repeat) / 1000
        out[f"range_s_{precision}"] = round(seconds, 3)
        print(f"{model}: {hi - lo + 1} pitches, note by note, 1 thread, {precision}"
              f"{' (= ' + synth.precision + ')' if precision == 'auto' else ''}: {seconds:.2f} s "
              f"({1000 * seconds / (hi - lo + 1):.1f} ms/note)")
    return out


def main():
    from engine.util.resources import default_model_path

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, paper config batch 1 only")
    ap.add_argument("--model", default=None, help="model for the pitch-range timing (default: the bundled one)")
    args = ap.parse_args()
    repeat = 3 if args.quick else 5
    threads_list = [1, 2]
    rows = bench_config("paper", [1] if args.quick else [1, 8], ["fp32", "bf16"], threads_list, repeat)
    rows += bench_config("lite", [1, 8], ["fp32", "bf16"], threads_list, repeat)
    inverse = bench_inverse(threads_list, repeat)
    ranges = bench_range(args.model or str(default_model_path()), repeat)
    best = min((r for r in rows if r["config"] == "paper" and r["batch"] == 1), key=lambda r: r["ms_per_note"])
    print(f"best paper batch-1: {best['ms_per_note']} ms/note ({best['precision']}, {best['threads']} threads), "
          f"{100 * best['fraction_of_bound']:.1f}% of bound; Magenta TF reference 107-119 ms/note")
    summary("generate", {"rows": rows, **inverse, **ranges, "best_paper_ms": best["ms_per_note"],
                         "best_paper_fraction_of_bound": best["fraction_of_bound"]})


if __name__ == "__main__":
    main()
