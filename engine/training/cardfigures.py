"""Rainbowgram figures for a model card: generated notes beside real ones.

    python -m engine.training.cardfigures --model resources/models/default \
        --data /work/data/fluidr3 --out resources/models/default

Writes `rainbowgrams_generated.png` (rows: random instruments from `Synth.random_latents`,
seeds 0..n-1; columns: pitches) and `rainbowgrams_real.png` (rows: real instruments of the
dataset at the same pitches), plus the figures as JSON (`card_figures.json`): spectral
flatness of the generated and real notes (speed: `python -m benchmarks.generate`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from engine.gansynth.rainbowgram import rainbowgram, save_png

PITCHES = (36, 60, 84)


def spectral_flatness(audio: np.ndarray, n_fft: int = 2048) -> float:
    """Mean over frames of geometric / arithmetic mean of the power spectrum (0 tonal .. 1 white noise)."""
    x = np.asarray(audio, np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::n_fft // 2] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2 + 1e-12
    loud = power.sum(-1) > 1e-6 * power.sum(-1).max()  # skip silent frames
    flat = np.exp(np.log(power).mean(-1)) / power.mean(-1)
    return float(flat[loud].mean())


def grid(notes: list[list[np.ndarray]], sample_rate: int) -> np.ndarray:
    """Rows of notes -> one RGB image, low frequencies at the bottom of each cell."""
    gap = 4
    rows = []
    for row in notes:
        cells = [rainbowgram(a, sample_rate)[::-1] for a in row]  # top = high frequency
        sep = np.full((cells[0].shape[0], gap, 3), 255, np.uint8)
        rows.append(np.concatenate(sum(([c, sep] for c in cells), [])[:-1], axis=1))
        rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def main(argv=None) -> int:
    from engine.gansynth.synth import load_synth
    from engine.training.nsynth import load_wave, read_examples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--instruments", type=int, default=4)
    parser.add_argument("--fp32-model", help="the same model stored as float32: report how far --model's audio is")
    args = parser.parse_args(argv)
    out = Path(args.out)
    synth = load_synth(args.model, device="cpu", threads=1)
    z = synth.random_latents(args.instruments, seed=0)
    generated = [[synth.generate(z[i:i + 1], [p])[0] for p in PITCHES] for i in range(args.instruments)]
    save_png(grid(generated, synth.sample_rate), out / "rainbowgrams_generated.png", scale=(3, 1), origin="upper")

    notes = read_examples(args.data)
    by_inst: dict[str, dict[int, object]] = {}
    for n in notes:
        by_inst.setdefault(n.instrument_str, {})[n.pitch] = n
    names = sorted(by_inst)[:: max(1, len(by_inst) // args.instruments)][:args.instruments]
    real = [[load_wave(by_inst[name][p].path) for p in PITCHES] for name in names]
    save_png(grid(real, synth.sample_rate), out / "rainbowgrams_real.png", scale=(3, 1), origin="upper")

    figures = {
        "generated_voices": [synth.voice_name(v) for v in z],   # the learned voice each row was drawn from
        "real_instruments": names,
        "pitches": list(PITCHES),
        "flatness_generated": round(float(np.mean([spectral_flatness(a) for r in generated for a in r])), 4),
        "flatness_real": round(float(np.mean([spectral_flatness(a) for r in real for a in r])), 4),
    }
    if args.fp32_model:
        ref = load_synth(args.fp32_model, device="cpu", threads=1)
        pitches = np.tile(PITCHES, len(z))
        zz = np.repeat(z, len(PITCHES), 0)
        a, b = synth.generate_specgrams(zz, pitches), ref.generate_specgrams(zz, pitches)
        figures["fp16_vs_fp32_specgram_rel_rms"] = float(np.sqrt(((a - b) ** 2).mean() / (b ** 2).mean()))
        a, b = synth.generate(zz, pitches), ref.generate(zz, pitches)
        figures["fp16_vs_fp32_audio_rel_rms"] = float(np.sqrt(((a - b) ** 2).mean() / (b ** 2).mean()))
    (out / "card_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
