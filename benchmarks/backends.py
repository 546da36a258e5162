"""Faster notes on CPU: generator backends and layouts against the same run's baseline.

For the bundled model and the paper-size one (random weights; what the official Magenta
checkpoints are), at 1 and 2 threads, whole notes (generator + mel-IF inverse, batch 1):

  before      torch eager, the 4-phase fused upsample-conv on the large blocks (the code before
              the transposed-conv form; kept here as the baseline)
  torch       torch eager now (every upsample + conv one stride-2 transposed conv)
  openvino    the same network through OpenVINO's CPU plugin, fp32 (if installed)
  ncnn        the same network as an ncnn net, Winograd 3x3 convolutions, fp32 (if installed)
  compile     torch.compile with freezing (--compile: 30-60 s to compile each)

Per-note times come from interleaved rounds (each option once per round, so a neighbour's load
hits all alike): min and median. Then each option renders the model's 61 pitches note by note
(s; the fastest of 3 interleaved passes for the bundled model, 1 for the paper-size one), and the relative RMS of its audio to the baseline's is printed (the bar: 1e-2). Then the
layouts for the 61 pitches with the fastest backend: one batch of 61, chunks of 8, and two
render threads of 1 intra-op thread each; the spectral inverse's share; what `auto` chose.
Machine notes: on a shared 2-core machine compare ratios of one run; the load average is
printed at the start and the end.

    python -m benchmarks.backends [--quick] [--compile] [--rounds N]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
import time

import numpy as np
import torch
from torch.nn import functional as F

import engine.gansynth.model as model_mod
from benchmarks.common import summary
from benchmarks.generate import cpu_flags
from engine.gansynth.backend import choose_backend, installed
from engine.gansynth.config import PRESETS, SpectralConfig
from engine.gansynth.model import Generator
from engine.gansynth.synth import Synth, load_synth

_PHASE_ROWS = torch.tensor([[[1., 0., 0.], [0., 1., 1.], [0., 0., 0.]],
                            [[0., 0., 0.], [1., 1., 0.], [0., 0., 1.]]])


def four_phase_upsample_conv(x, conv):
    """The previous inference form: upsample + conv below 64x512 output pixels; above, a 3x3
    conv with 4 phase kernels at low resolution and a pixel shuffle (channels_last)."""
    if 4 * x.shape[2] * x.shape[3] < 64 * 512:
        return conv(F.interpolate(x, scale_factor=2, mode="nearest"))
    w = conv.weight * conv.scale
    out_ch = w.shape[0]
    rows = _PHASE_ROWS.to(w)
    phases = torch.einsum("akr,blc,oirc->aboikl", rows, rows, w).reshape(4 * out_ch, w.shape[1], 3, 3)
    y = F.conv2d(x, phases, conv.bias.repeat(4), padding=1)
    b, _, h, wd = y.shape
    y = y.permute(0, 2, 3, 1).reshape(b, h, wd, 2, 2, out_ch).permute(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * wd, out_ch).permute(0, 3, 1, 2)


@contextlib.contextmanager
def before_form():
    saved = model_mod.upsample_conv3x3
    model_mod.upsample_conv3x3 = four_phase_upsample_conv
    try:
        yield
    finally:
        model_mod.upsample_conv3x3 = saved


class Option:
    """One way to render: a Synth plus whether it runs in the 'before' form."""

    def __init__(self, name: str, synth: Synth, before: bool = False):
        self.name, self.synth, self.before = name, synth, before

    def generate(self, z, pitches):
        with before_form() if self.before else contextlib.nullcontext():
            return self.synth.generate(z, pitches)


def make_synths(model: str, threads: int, with_compile: bool) -> list[Option]:
    if model == "bundled":
        from engine.util.resources import default_model_path

        def make(backend):
            return load_synth(default_model_path(), device="cpu", threads=threads, backend=backend)
    else:
        torch.manual_seed(0)
        generator = Generator(PRESETS["paper"])

        def make(backend):
            return Synth(generator, SpectralConfig(), "cpu", threads, backend=backend)
    options = [Option("before", make("torch"), before=True), Option("torch", make("torch"))]
    options += [Option(name, make(name)) for name in installed()]
    if with_compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        synth = make("torch")
        synth.generator = torch.compile(synth.generator, dynamic=False)
        t0 = time.perf_counter()
        with torch.no_grad():
            synth.generate(synth.random_latents(1, seed=0), [60])
        print(f"  torch.compile ({model}, {threads} threads): {time.perf_counter() - t0:.1f} s to compile")
        options.append(Option("compile", synth))
    return options


def per_note(options: list[Option], rounds: int) -> dict[str, list[float]]:
    torch_threads = options[0].synth.threads
    torch.set_num_threads(torch_threads)
    z = options[0].synth.random_latents(1, seed=0)
    for opt in options:
        opt.generate(z, [60])  # warm-up (OpenVINO converts here)
    times = {opt.name: [] for opt in options}
    for _ in range(rounds):
        for opt in options:
            t0 = time.perf_counter()
            opt.generate(z, [60])
            times[opt.name].append((time.perf_counter() - t0) * 1e3)
    return times


def pitch_range(opt: Option) -> tuple[float, np.ndarray]:
    """Seconds for the 61 pitches note by note, and the audio [61, samples]."""
    lo, hi = opt.synth.pitch_range
    z = opt.synth.random_latents(1, seed=0)
    t0 = time.perf_counter()
    audio = np.concatenate([opt.generate(z, [p]) for p in range(lo, hi + 1)])
    return time.perf_counter() - t0, audio


def rel_rms(got: np.ndarray, want: np.ndarray) -> float:
    """Largest per-note relative RMS of got vs want."""
    return float(np.max(np.sqrt(((got - want) ** 2).sum(1) / (want ** 2).sum(1))))


def layouts(opt: Option) -> dict[str, float]:
    """61 pitches: one batch, chunks of 8, and two threads each rendering every other pitch."""
    synth = opt.synth
    lo, hi = synth.pitch_range
    pitches = np.arange(lo, hi + 1)
    z = np.repeat(synth.random_latents(1, seed=0), len(pitches), 0)
    out = {}
    for batch in (61, 8):
        synth.batch_size = batch
        t0 = time.perf_counter()
        opt.generate(z, pitches)
        out[f"batch{batch}_s"] = time.perf_counter() - t0
    synth.batch_size = 1
    if synth.threads == 1:
        def half(k):
            for p in pitches[k::2]:
                opt.generate(z[:1], [p])
        workers = [threading.Thread(target=half, args=(k,)) for k in (0, 1)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        out["two_workers_s"] = time.perf_counter() - t0
    return out


def inverse_ms(synth: Synth, rounds: int) -> float:
    spec = torch.rand(1, 2, 128, 1024) * 2 - 1
    torch.set_num_threads(synth.threads)
    times = []
    with torch.inference_mode():
        for _ in range(rounds + 1):
            t0 = time.perf_counter()
            synth.helper.specgrams_to_waves(spec)
            times.append((time.perf_counter() - t0) * 1e3)
    return min(times[1:])


def ranges(options: list[Option], passes: int) -> dict[str, tuple[float, np.ndarray]]:
    """Each option's fastest of `passes` interleaved 61-pitch passes, with its audio."""
    best = {}
    for _ in range(passes):
        for opt in options:
            seconds, audio = pitch_range(opt)
            if opt.name not in best or seconds < best[opt.name][0]:
                best[opt.name] = (seconds, audio)
    return best


def bench(model: str, threads: int, rounds: int, passes: int, with_compile: bool) -> list[dict]:
    options = make_synths(model, threads, with_compile)
    times = per_note(options, rounds)
    passes_61 = ranges(options, passes)
    rows, baseline = [], None
    for opt in options:
        seconds, audio = passes_61[opt.name]
        baseline = audio if baseline is None else baseline
        row = dict(model=model, threads=threads, option=opt.name, ms_min=round(min(times[opt.name]), 1),
                   ms_median=round(statistics.median(times[opt.name]), 1), range_s=round(seconds, 2),
                   rel_rms=rel_rms(audio, baseline))
        rows.append(row)
        print(f"{model:8s} threads={threads} {opt.name:9s} {row['ms_min']:7.1f} ms/note min "
              f"{row['ms_median']:7.1f} median   61 pitches {seconds:6.2f} s   "
              f"audio rel RMS vs before {row['rel_rms']:.1e}")
    best = min(options[1:], key=lambda o: statistics.median(times[o.name]))
    lay = layouts(best)
    inv = inverse_ms(options[0].synth, rounds)
    print(f"{model:8s} threads={threads} layouts with {best.name}: "
          + ", ".join(f"{k} {v:.2f}" for k, v in lay.items())
          + f"; inverse alone {inv:.1f} ms/note = {inv / min(times[best.name]):.0%} of a note")
    rows.append(dict(model=model, threads=threads, option=f"layouts:{best.name}",
                     **{k: round(v, 2) for k, v in lay.items()}, inverse_ms=round(inv, 2)))
    return rows


def auto_choices(threads_list) -> dict:
    from engine.util.resources import default_model_path

    if not installed():
        return {}
    torch.manual_seed(0)
    gens = {"bundled": load_synth(default_model_path(), device="cpu").generator,
            "paper": Generator(PRESETS["paper"]).to(memory_format=torch.channels_last).eval().requires_grad_(False)}
    return {f"{m}_{t}t": choose_backend(g, t)[0] for m, g in gens.items() for t in threads_list}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the bundled model only, 1 thread")
    ap.add_argument("--compile", action="store_true", help="also torch.compile (30-60 s per case)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case")
    args = ap.parse_args()
    load_start = os.getloadavg()
    print(f"CPU flags: {cpu_flags()}; torch {torch.__version__}; "
          f"installed: {', '.join(installed()) or 'torch only'}; "
          f"load average {load_start[0]:.2f}")
    cases = [("bundled", 1)] if args.quick else [("bundled", 1), ("bundled", 2), ("paper", 1), ("paper", 2)]
    rows = []
    for model, threads in cases:
        rounds = args.rounds or (12 if model == "bundled" else 5)
        rows += bench(model, threads, rounds, 3 if model == "bundled" else 1, args.compile)
    auto = auto_choices(sorted({t for _, t in cases}))
    print(f"auto chooses (cached probe): {auto}")
    load_end = os.getloadavg()
    print(f"load average at the end {load_end[0]:.2f}")
    summary("backends", {"cpu_flags": cpu_flags(), "load_start": round(load_start[0], 2),
                         "load_end": round(load_end[0], 2), "auto": auto, "rows": rows})


if __name__ == "__main__":
    main()
