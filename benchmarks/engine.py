"""Synthesis engine benchmark: mixer cost per block and pad-move re-render latency.

    python -m benchmarks.engine [--model PATH] [--moves 5] [--backend auto] [--precision auto]

The render processes load the model as the instrument does (`--backend auto`, `--precision
auto`: bf16 where this CPU runs it natively); a bare torch fp32 note is timed beside any
other engine or precision, the target's baseline.

1. `Instrument.process(256)` at 48 kHz with 64 sounding voices, against the 5.33 ms
   block period (target <= 10 %), in three cases: plain (one gather per voice), pitch
   bend (fractional resampling), and all 64 voices crossfading to a new timbre (128
   readers); the idle block is the baseline measured in the same run. Then the block that
   starts a 16-note chord after 2 s of idle blocks called at the device's pace (the live
   case in which code and memory untouched while idle have gone cold).
2. After a pad move, with the render worker's processes on one torch thread each (1, 2 and
   this machine's default, a core each but one, up to 4; `--render-processes`) and a paced
   OfflineClockOutput playing a held note beside it (as live): time until the held pitch
   starts sounding the new timbre's approximation (the blend of the corner instruments'
   notes; the crossfade to it has begun in the audio thread), until it starts sounding the
   exact render (target for the first: <= 30 ms), and until the whole pitch range is
   re-rendered (target <= 1 s, i.e. <= 0.35x the same run's bare notes); the cost of one
   bare `Synth.generate` note is the baseline (timed between the moves, so that the
   machine's drifting speed weighs on both alike), and every figure is also printed as a
   ratio to it. Measured from an idle worker, mid-range (a second move 100 ms after the
   first, while the worker is busy) and after a sweep (a move every 50 ms for 2 s: the
   render processes drop the notes queued for timbres passed over). Beside them, the share of
   the CPUs' time the host took meanwhile (steal time, `benchmarks.floor.steal_pct`).

Uses resources/models/default if present, else the `lite` config with random weights.
Prints figures and a final JSON line.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import torch

from benchmarks.common import add_engine_args, summary, time_ms
from benchmarks.floor import steal_mark, steal_pct
from engine.devices.clock import OfflineClockOutput
from engine.instrument import events as ev
from engine.instrument.instrument import Instrument

SR = 48000
BLOCK = 256
PERIOD_MS = BLOCK / SR * 1000


def load_model(path, backend: str = "torch", precision: str = "fp32"):
    from engine import load_synth
    from engine.util.resources import default_model_path

    path = path or default_model_path()
    try:
        return load_synth(path, device="cpu", threads=1, backend=backend, precision=precision), str(path)
    except Exception as exc:  # no bundled model yet: lite config, random weights
        from engine.gansynth.config import PRESETS, SpectralConfig
        from engine.gansynth.model import Generator
        from engine.gansynth.synth import Synth

        print(f"({path}: {exc}; using the lite config with random weights)")
        torch.manual_seed(0)
        return Synth(Generator(PRESETS["lite"]), SpectralConfig(), device="cpu", threads=1,
                     precision=precision, backend=backend), "lite-random"


def block_stats(inst, n=400):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        inst.process(BLOCK)
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    return statistics.median(times), times[int(0.99 * len(times)) - 1]


def bench_process(synth) -> dict:
    inst = Instrument(synth, sample_rate=SR, max_voices=64, approximate=False)  # the range alone
    lo, hi = synth.pitch_range
    t0 = time.perf_counter()
    while inst.renderer.step():
        inst.process(BLOCK)
    print(f"rendered {hi - lo + 1} pitches synchronously in {time.perf_counter() - t0:.2f} s")
    out = {}
    out["idle_us"], _ = block_stats(inst)
    for i in range(64):
        inst.post(ev.NoteOn(lo + i % (hi - lo + 1), 100))
    inst.process(BLOCK)
    assert inst.stats()["voices"] == 64
    out["plain_us"], out["plain_p99_us"] = block_stats(inst)
    inst.post(ev.PitchBend(1234))
    inst.process(BLOCK)
    out["bend_us"], out["bend_p99_us"] = block_stats(inst)
    inst.post(ev.PitchBend(0))
    inst.settings.pad_grid = 0
    inst.mixer.morph_s = 60.0  # keep all 64 crossfades running while we measure
    inst.set_pad(0.9, 0.1)
    while inst.renderer.step():
        inst.process(BLOCK)
    inst.process(BLOCK)
    assert inst.mixer.n_xfading == 64, inst.mixer.n_xfading
    out["morph_us"], out["morph_p99_us"] = block_stats(inst)
    for k in ("idle", "plain", "bend", "morph"):
        pct = out[f"{k}_us"] / (PERIOD_MS * 1000) * 100
        out[f"{k}_pct"] = pct
        print(f"process(256), 64 voices, {k:5s}: median {out[f'{k}_us']:7.1f} us = {pct:5.2f} % of "
              f"{PERIOD_MS:.2f} ms" + (f" (p99 {out[f'{k}_p99_us']:.1f} us)" if k != "idle" else ""))
    inst.post(ev.Panic())
    out["first_chord_us"], out["first_chord_max_us"] = first_chords(inst, lo, hi)
    print(f"process(256) starting a 16-note chord after 2 s of idle blocks paced at the period: median "
          f"{out['first_chord_us']:.0f} us, max {out['first_chord_max_us']:.0f} us (of {PERIOD_MS:.2f} ms)")
    return out


def first_chords(inst, lo: int, hi: int, rounds: int = 8, idle_s: float = 2.0) -> tuple[float, float]:
    """(median, max) us of the block that starts a 16-note chord (its note-ons included) after
    `idle_s` of idle blocks called at the device's pace, as live: what the first chord costs
    once the idle audio thread's code and memory have gone cold."""
    times = []
    for r in range(rounds):
        t_next = time.perf_counter()
        end = t_next + idle_s
        while t_next < end or inst.mixer.active_voices():
            inst.process(BLOCK)
            t_next += PERIOD_MS / 1000
            time.sleep(max(0.0, t_next - time.perf_counter()))
        for i in range(16):
            inst.post(ev.NoteOn(lo + (7 * i + r) % (hi - lo + 1), 100))
        t0 = time.perf_counter()
        inst.process(BLOCK)
        times.append((time.perf_counter() - t0) * 1e6)
        assert inst.mixer.active_voices() == 16
        for _ in range(20):
            inst.process(BLOCK)
        inst.post(ev.Panic())
    return statistics.median(times), max(times)


def bench_pad_moves(synth, moves: int, processes: int, reference=None) -> dict:
    """`reference`: a torch fp32 Synth of the same model, whose bare note is the baseline too
    when `synth` runs another backend or precision (the target's "bare fp32 one-thread notes")."""
    print(f"-- {processes} render process{'es' if processes > 1 else ''}")
    inst = Instrument(synth, sample_rate=SR, max_voices=64, render_processes=processes)
    inst.settings.pad_grid = 0
    pitch = 60
    seen, seen_approx = threading.Event(), threading.Event()
    state = {"want": None}

    def on_block(block):  # audio thread: notice when the held voice plays the wanted timbre
        key = inst.cache._slot_key[int(inst.mixer.r_slot[0])]
        if key is None:
            return
        if key[1] == state["want"]:
            seen.set()
            seen_approx.set()  # the exact note came first (a cached one)
        elif key[0] == "blend" and key[2] == state["want"]:
            seen_approx.set()

    clock = OfflineClockOutput(inst, block_size=BLOCK, on_block=on_block)
    inst.post(ev.NoteOn(pitch, 100))
    clock.start()
    inst.start()
    steal = steal_mark()
    try:
        assert inst.renderer.idle.wait(120)
        rng = np.random.default_rng(0)
        z = synth.random_latents(1, 0)
        # moves before the measured one, and their spacing: busy, a first move 100 ms before it, while
        # the worker renders; sweep, the pad moved every 50 ms for 2 s
        cases = {"idle": (0, 0.0), "busy": (1, 0.1), "sweep": (40, 0.05)}
        held, approx, full = ({case: [] for case in cases} for _ in range(3))
        bare, bare_torch = [], []
        for _ in range(moves):
            for case, (before, spacing) in cases.items():
                for _ in range(before):
                    inst.set_pad(*rng.uniform(0, 1, 2))
                    time.sleep(spacing)
                seen.clear()
                seen_approx.clear()
                inst.renderer.idle.clear()
                x, y = rng.uniform(0, 1, 2)
                state["want"] = inst.timbre.with_pad(x, y).key()
                t0 = time.perf_counter()
                inst.set_pad(x, y)
                assert seen_approx.wait(10)
                approx[case].append((time.perf_counter() - t0) * 1000)
                assert seen.wait(10)
                held[case].append((time.perf_counter() - t0) * 1000)
                assert inst.renderer.idle.wait(120)
                full[case].append(inst.renderer.claims.range_seconds)
                if case != "sweep":  # the yardstick, between the moves: the machine's speed drifts (neighbours)
                    bare.append(time_ms(lambda: synth.generate(z, [pitch]), repeat=2, warmup=int(not bare)))
                    if reference is not None:
                        bare_torch.append(time_ms(lambda: reference.generate(z, [pitch]), repeat=2,
                                                  warmup=int(len(bare_torch) == 0)))
    finally:
        inst.stop()
        clock.stop()
    stolen = steal_pct(steal)
    note_ms = statistics.median(bare + [time_ms(lambda: synth.generate(z, [pitch]), repeat=3, warmup=0)])
    out = {"note_generate_ms": note_ms, "answer_ms_last": inst.renderer.last_answer_ms,
           "approximations": inst.renderer.approximations, "late_blocks": clock.xruns, "clock_blocks": clock.tap.frames // BLOCK,
           "approximate": inst.renderer.anchors, "approx_ms": statistics.median(approx["idle"]),
           "approx_busy_ms": statistics.median(approx["busy"]), "approx_max_ms": max(approx["idle"] + approx["busy"]),
           "held_ms": statistics.median(held["idle"]), "held_busy_ms": statistics.median(held["busy"]),
           "range_s": statistics.median(full["idle"]), "range_busy_s": statistics.median(full["busy"]),
           "held_sweep_ms": statistics.median(held["sweep"]), "range_sweep_s": statistics.median(full["sweep"]),
           "steal_pct": round(stolen, 2)}
    n = synth.pitch_range[1] - synth.pitch_range[0] + 1
    # machine-independent: the engine's latency in units of one bare note render
    bare_range_s = n * note_ms / 1000
    out["approx_in_notes"] = out["approx_ms"] / note_ms
    out["approx_busy_in_notes"] = out["approx_busy_ms"] / note_ms
    out["held_in_notes"] = out["held_ms"] / note_ms
    out["held_busy_in_notes"] = out["held_busy_ms"] / note_ms
    out["range_in_bare_ranges"] = out["range_s"] / bare_range_s
    out["range_busy_in_bare_ranges"] = out["range_busy_s"] / bare_range_s
    print(f"one bare Synth.generate note (baseline, timed between the moves): {note_ms:.1f} ms "
          f"(between {min(bare):.1f} and {max(bare):.1f}) -> {n} pitches = {n * note_ms / 1000:.2f} s")
    print(f"pad move -> held pitch sounds the approximation (corner blend): median {out['approx_ms']:.1f} ms "
          f"from idle, {out['approx_busy_ms']:.1f} ms mid-range, max {out['approx_max_ms']:.1f} ms (target 30 ms)"
          f" = {out['approx_in_notes']:.2f} / {out['approx_busy_in_notes']:.2f} bare notes")
    print(f"pad move -> held pitch sounds the exact render: median {out['held_ms']:.1f} ms from idle, "
          f"{out['held_busy_ms']:.1f} ms mid-range, {out['held_sweep_ms']:.1f} ms after a sweep")
    print(f"pad move -> whole range re-rendered: median {out['range_s']:.2f} s from idle, "
          f"{out['range_busy_s']:.2f} s mid-range, {out['range_sweep_s']:.2f} s after a sweep (target 1 s)")
    print(f"  as ratios to this run's bare note: held pitch {out['held_in_notes']:.2f} notes from idle, "
          f"{out['held_busy_in_notes']:.2f} mid-range; whole range {out['range_in_bare_ranges']:.2f}x "
          f"{n} bare notes from idle, {out['range_busy_in_bare_ranges']:.2f}x mid-range (target <= 0.35x)")
    if bare_torch:
        torch_ms = statistics.median(bare_torch)
        out["torch_note_ms"] = torch_ms
        out["range_in_torch_ranges"] = out["range_s"] / (n * torch_ms / 1000)
        out["range_busy_in_torch_ranges"] = out["range_busy_s"] / (n * torch_ms / 1000)
        print(f"  the same model's bare torch fp32 note (1 thread), timed beside it: {torch_ms:.1f} ms "
              f"(between {min(bare_torch):.1f} and {max(bare_torch):.1f}); whole range "
              f"{out['range_in_torch_ranges']:.2f}x / {out['range_busy_in_torch_ranges']:.2f}x "
              f"{n} bare torch notes")
    print(f"paced clock blocks {clock.tap.frames // BLOCK}, late {clock.xruns}; the host took {stolen:.1f} % of the "
          "CPUs meanwhile (steal time: a busy host slows the bare notes and the ranges unevenly)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    parser.add_argument("--moves", type=int, default=5, help="pad moves to time")
    parser.add_argument("--render-processes", default=None,
                        help="render process counts to time in turn, e.g. 1,2 (default: 1, 2 and this machine's "
                             "default, a core each but one, up to 4)")
    add_engine_args(parser)   # a bare torch fp32 note is timed beside any other engine or precision
    args = parser.parse_args(argv)
    from engine.instrument.renderpool import render_process_count

    counts = ([int(v) for v in args.render_processes.split(",")] if args.render_processes
              else sorted({1, 2, render_process_count()}))
    synth, name = load_model(args.model, args.backend, args.precision)
    exact = synth.backend == "torch" and synth.precision == "fp32"
    reference = None if exact else load_model(args.model, "torch", "fp32")[0]
    print(f"model {name}: latent {synth.latent_size}, pitches {synth.pitch_range}, backend {synth.backend}, "
          f"precision {synth.precision}, threads for renders: 1")
    import os

    figures = {"model": name, "backend": synth.backend, "precision": synth.precision, "loadavg_1min_start": os.getloadavg()[0]}
    figures.update(bench_process(synth))
    for n in counts:   # figures per count: p1_range_s, p2_range_s, ...
        figures.update({f"p{n}_{k}": v for k, v in bench_pad_moves(synth, args.moves, n, reference).items()})
    figures["loadavg_1min_end"] = os.getloadavg()[0]  # the machine is shared: context for the figures
    summary("engine", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
