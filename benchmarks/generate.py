"""Generator speed: ms per note (z -> waveform) for the paper and lite configs.

Batch 1 and 8, 1 and 2 threads, each precision THIS CPU does natively (fp32 always; bf16 only
with AMX or AVX512-BF16: elsewhere it is emulated, ~12x slower, and costs tens of minutes to
time). `--all-precisions` times the others too, capped: a case whose first call takes longer
than `--cap-s` is reported from that one call. Then the spectral inverse alone, and the bundled
(or --model) model's whole pitch range, note by note at one thread as the instrument's renderer
does it, for each native precision.

FLOPs per note are counted two ways: `nominal` = a 3x3 conv over each upsampled image, as the
paper's network is written (what `executed` counted while inference ran a 4-phase 3x3 conv at
half resolution), and `useful` = without the structural zeros of that form (each output phase
reads 4 of the 9 taps): what the transposed-conv form of upsample + conv executes now. Each is given as GFLOP/s and as a
fraction of the rate of a large matmul of the same dtype and thread count, measured in the same
run. That matmul is a practical reference, not the core's peak: oneDNN's direct convolutions can
beat it, so a fraction above 1 says "faster than torch's 2048^2 matmul here", not an error.

    python -m benchmarks.generate [--quick] [--model PATH] [--all-precisions] [--cap-s S]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import matmul_gflops, summary, time_ms
from engine.gansynth.config import PRESETS, SpectralConfig
from engine.gansynth.model import Generator
from engine.gansynth.spectral import SpecgramsHelper
from engine.gansynth.synth import Synth, native_bf16


def generator_macs(cfg) -> tuple[int, int]:
    """(nominal, useful) multiply-accumulates per note of the full-resolution generator at inference;
    inference executes the useful count (engine.gansynth.model.upsample_conv3x3)."""
    nominal = useful = 0
    for k in range(1, cfg.num_resolutions + 1):
        h, w = cfg.resolution(k)
        c_out = cfg.num_filters(k)
        if k == 1:
            c_in, kh, kw = cfg.latent_size + cfg.num_pitches, *cfg.start_shape
        else:
            c_in, kh, kw = cfg.num_filters(k - 1), cfg.kernel_size, cfg.kernel_size
        conv0 = h * w * c_out * c_in * kh * kw
        fused = k > 1 and (kh, kw) == (3, 3)  # engine.gansynth.model.upsample_conv3x3
        nominal += conv0
        useful += conv0 * 4 // 9 if fused else conv0
        conv1 = h * w * c_out * c_out * cfg.kernel_size ** 2
        nominal += conv1
        useful += conv1
    h, w = cfg.output_shape
    last = h * w * 2 * cfg.num_filters(cfg.num_resolutions)  # last to_rgb
    return nominal + last, useful + last


def native_precisions() -> list[str]:
    return ["fp32", "bf16"] if native_bf16(torch.device("cpu")) else ["fp32"]


def capped_ms(fn, repeat: int, cap_s: float) -> tuple[float, bool]:
    """Median ms of fn(), or the first call alone when it already took longer than cap_s."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > cap_s:
        return first * 1e3, True
    return time_ms(fn, repeat=repeat, warmup=0), False


def bench_config(name: str, batches, precisions, threads_list, repeat: int, cap_s: float) -> list[dict]:
    torch.manual_seed(0)
    cfg = PRESETS[name]
    gen = Generator(cfg)
    nominal, useful = (2 * m for m in generator_macs(cfg))
    executed = useful  # the transposed-conv upsample skips the structural zeros
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
                ms, capped = capped_ms(lambda: synth.generate(z, pitches), repeat, cap_s)
                ms /= batch
                gflops = executed / (ms * 1e-3) / 1e9
                rows.append(dict(config=name, threads=threads, precision=precision, batch=batch,
                                 ms_per_note=round(ms, 2), capped=capped,
                                 nominal_gflop=round(nominal / 1e9, 3), executed_gflop=round(executed / 1e9, 3),
                                 executed_gflops=round(gflops, 1), matmul_gflops=round(bound[precision], 1),
                                 executed_vs_matmul=round(gflops / bound[precision], 3)))
                print(f"{name:6s} threads={threads} {precision:5s} batch={batch:2d}  "
                      f"{ms:8.2f} ms/note{' (1 call, capped)' if capped else ''}  "
                      f"{executed / 1e9:6.2f} GFLOP executed ({nominal / 1e9:5.2f} nominal)  "
                      f"{gflops:6.1f} GFLOP/s = {gflops / bound[precision]:4.2f} x matmul "
                      f"({bound[precision]:.1f} GFLOP/s)")
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


def bench_range(model: str, repeat: int, precisions) -> dict:
    """Seconds for the model's whole pitch range, one note per generate call, one thread."""
    from engine.gansynth.synth import load_synth

    out = {}
    for precision in precisions:
        synth = load_synth(model, device="cpu", threads=1, precision=precision)
        lo, hi = synth.pitch_range
        z = synth.random_latents(1, seed=0)
        synth.generate(z, [60])  # warm-up

        def whole_range():
            for p in range(lo, hi + 1):
                synth.generate(z, [p])
        seconds = time_ms(whole_range, repeat=repeat) / 1000
        out[f"range_s_{precision}"] = round(seconds, 3)
        print(f"{model}: {hi - lo + 1} pitches, note by note, 1 thread, {precision}: {seconds:.2f} s "
              f"({1000 * seconds / (hi - lo + 1):.1f} ms/note)")
    return out


def cpu_flags() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
                                            "amx_tile", "amx_bf16") if f in have)
    except OSError:
        pass
    return "unknown"


def main():
    from engine.util.resources import default_model_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, paper config batch 1 only")
    ap.add_argument("--model", default=None, help="model for the pitch-range timing (default: the bundled one)")
    ap.add_argument("--all-precisions", action="store_true",
                    help="also time precisions this CPU does not do natively (capped by --cap-s)")
    ap.add_argument("--cap-s", type=float, default=2.0,
                    help="a case whose first call takes longer is reported from that call (default 2)")
    args = ap.parse_args()
    repeat = 3 if args.quick else 5
    threads_list = [1, 2]
    native = native_precisions()
    precisions = ["fp32", "bf16"] if args.all_precisions else native
    skipped = sorted(set(["fp32", "bf16"]) - set(precisions))
    print(f"CPU flags: {cpu_flags()}; native precisions: {', '.join(native)}"
          + (f"; skipped (not native here, --all-precisions to time them): {', '.join(skipped)}" if skipped else ""))
    rows = bench_config("paper", [1] if args.quick else [1, 8], precisions, threads_list, repeat, args.cap_s)
    rows += bench_config("lite", [1, 8], precisions, threads_list, repeat, args.cap_s)
    inverse = bench_inverse(threads_list, repeat)
    ranges = bench_range(args.model or str(default_model_path()), repeat, native)
    best = min((r for r in rows if r["config"] == "paper" and r["batch"] == 1), key=lambda r: r["ms_per_note"])
    print(f"best paper batch-1: {best['ms_per_note']} ms/note ({best['precision']}, {best['threads']} threads), "
          f"{best['executed_vs_matmul']:.2f} x the matmul rate; Magenta TF reference 107-119 ms/note")
    summary("generate", {"cpu_flags": cpu_flags(), "native_precisions": native, "skipped_precisions": skipped,
                         "rows": rows, **inverse, **ranges, "best_paper_ms": best["ms_per_note"],
                         "best_paper_executed_vs_matmul": best["executed_vs_matmul"]})


if __name__ == "__main__":
    main()
