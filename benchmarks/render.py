"""MIDI rendering benchmark: real-time factor of `render_midi_file` on the Bach demo.

    python -m benchmarks.render [--model PATH] [--notes N] [--skip-paper]

For the default model (resources/models/default, or the `lite` config with random
weights if it is missing) and for the `paper` config with random weights, on the
Bach demo (resources/midi/bach_prelude_c_bwv846.mid, 160 notes, ~38 s):

- baseline: every note rendered on its own, one generator call per note, no
  de-duplication (what the original does, minus its padding to the batch size);
- morph: three instruments morphing over the song (continuous, as the original),
  de-duplicated and requested 8 at a time;
- morph8: the same with --morph-steps 8 (more notes share a render);
- single: one instrument (the app's "Render MIDI file…" with the pad's timbre).

Each is the whole command: read the MIDI file, render, mix, resample to 48 kHz,
write the WAV. Real-time factor = seconds of audio / seconds of wall time;
speed-ups are against the baseline measured in the same run (first and last,
the faster kept), by wall time and by this process's CPU time (steadier when
other work shares the cores). Prints figures and a final JSON line.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mido
import numpy as np
import torch

from benchmarks.common import summary
from engine.gansynth.config import PRESETS, SpectralConfig
from engine.gansynth.model import Generator
from engine.gansynth.synth import Synth, load_synth
from engine.songs.render import RenderSettings, render_midi_file
from engine.util.resources import default_model_path, midi_dir

BACH = midi_dir() / "bach_prelude_c_bwv846.mid"


def load_default(path, batch_size: int):
    path = path or default_model_path()
    try:
        return load_synth(path, device="cpu", batch_size=batch_size), Path(path).name
    except Exception as exc:  # no bundled model yet
        print(f"({path}: {exc}; using the lite config with random weights)")
        torch.manual_seed(0)
        return Synth(Generator(PRESETS["lite"]), SpectralConfig(), device="cpu", batch_size=batch_size), \
            "lite-random"


def paper_random(batch_size: int):
    torch.manual_seed(0)
    return Synth(Generator(PRESETS["paper"]), SpectralConfig(), device="cpu", batch_size=batch_size)


def first_notes(path: Path, count: int | None, out_dir: Path) -> Path:
    """The first `count` notes of a MIDI file (all if None), as a new type-0 file."""
    if count is None:
        return path
    midi = mido.MidiFile(path)
    seen, out = 0, mido.MidiTrack()
    for msg in mido.merge_tracks(midi.tracks):
        if msg.type == "note_on" and msg.velocity > 0:
            seen += 1
            if seen > count:
                msg = mido.MetaMessage("text", text="cut", time=msg.time)
        out.append(msg)
    short = mido.MidiFile(type=0, ticks_per_beat=midi.ticks_per_beat)
    short.tracks.append(out)
    target = out_dir / f"first{count}.mid"
    short.save(target)
    return target


def run_case(synth, midi: Path, out_dir: Path, palette, instruments, settings) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    report = render_midi_file(midi, out_dir / "out.wav", synth, palette, instruments=instruments,
                              settings=settings)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"rtf": report.duration_s / elapsed, "seconds": elapsed, "cpu_s": cpu,
            "audio_s": report.duration_s, "renders": report.renders, "notes": report.notes}


def bench_model(name: str, make_synth, midi: Path, out_dir: Path) -> dict:
    cases = {
        "baseline": (1, None, RenderSettings(dedup=False, batch_size=1)),
        "morph": (8, [0, 1, 2], RenderSettings(batch_size=8)),
        "morph8": (8, [0, 1, 2], RenderSettings(batch_size=8, morph_steps=8)),
        "single": (8, [0], RenderSettings(batch_size=8)),
    }
    results = {}
    synths = {}
    # The baseline runs first and again last: on a shared machine the load drifts,
    # so it keeps its faster run (wall and CPU separately).
    for case in [*cases, "baseline"]:
        batch, instruments, settings = cases[case]
        if batch not in synths:
            synths[batch] = make_synth(batch)
        synth = synths[batch]
        palette = synth.random_latents(3, seed=0)
        if case == "baseline":
            instruments = [0, 1, 2]
        if case == "baseline" and case not in results:   # warm-up: imports, kernels, soxr
            run_case(synth, first_notes(BACH, 2, out_dir), out_dir, palette, [0], settings)
        synth.generate(palette[:1], [60])
        r = run_case(synth, midi, out_dir, palette, instruments, settings)
        print(f"{name:>12} {case:>9}: {r['renders']:4d} renders for {r['notes']} notes, "
              f"{r['audio_s']:.1f} s audio in {r['seconds']:6.1f} s wall, {r['cpu_s']:6.1f} s CPU "
              f"-> {r['rtf']:6.2f}x real time")
        if case in results:
            for key in ("seconds", "cpu_s"):
                results[case][key] = min(results[case][key], r[key])
            results[case]["rtf"] = r["audio_s"] / results[case]["seconds"]
        else:
            results[case] = r
    base = results["baseline"]
    for case in cases:
        results[case]["speedup"] = base["seconds"] / results[case]["seconds"]
        results[case]["cpu_speedup"] = base["cpu_s"] / results[case]["cpu_s"]
    print(f"{name:>12} speed-up vs baseline (wall / CPU time): " +
          ", ".join(f"{c} {results[c]['speedup']:.2f}x / {results[c]['cpu_speedup']:.2f}x"
                    for c in cases if c != "baseline"))
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--notes", type=int, default=None, help="only the first N notes of the Bach demo")
    p.add_argument("--skip-paper", action="store_true")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {BACH.name}")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        midi = first_notes(BACH, args.notes, out_dir)
        default_name = []

        def make_default(batch):
            synth, label = load_default(args.model, batch)
            default_name.append(label)
            return synth

        models = [("default", make_default)] + ([] if args.skip_paper else [("paper", paper_random)])
        for label, make in models:
            results = bench_model(label, make, midi, out_dir)
            for case, r in results.items():
                figures[f"{label}_{case}_rtf"] = round(r["rtf"], 3)
                if case != "baseline":
                    figures[f"{label}_{case}_speedup"] = round(r["speedup"], 2)
                    figures[f"{label}_{case}_cpu_speedup"] = round(r["cpu_speedup"], 2)
            figures["notes"] = results["baseline"]["notes"]
        figures["default_model"] = default_name[0]
    summary("render", figures)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
