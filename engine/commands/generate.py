"""`gansynth generate`: WAVs of random instruments at one pitch (a smoke test of the whole chain)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.gansynth.backend import BackendUnavailable
from engine.gansynth.config import BACKEND_HELP, BACKENDS, PRECISION_HELP, PRECISIONS
from engine.gansynth.modelfile import ModelFileError
from engine.gansynth.synth import load_synth


def add_arguments(p):
    p.add_argument("--model", default=None, help="model directory, Magenta checkpoint dir or .zip "
                                                  "(default: the bundled model)")
    p.add_argument("--count", type=int, default=4, help="number of random instruments")
    p.add_argument("--pitch", type=int, default=60, help="MIDI pitch")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("-o", "--out", required=True, help="output directory")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)


def run(args) -> int:
    from engine.util.resources import default_model_path

    try:
        synth = load_synth(args.model or default_model_path(), device=args.device, precision=args.precision,
                           backend=args.backend)
    except (ModelFileError, ValueError, BackendUnavailable) as e:
        print(f"gansynth generate: {e}", file=sys.stderr)
        return 1
    lo, hi = synth.pitch_range
    if not lo <= args.pitch <= hi:
        print(f"gansynth generate: pitch {args.pitch} outside the model's range {lo}..{hi}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    z = synth.random_latents(args.count, seed=args.seed)
    audio = synth.generate(z, np.full(args.count, args.pitch))
    for i, wave in enumerate(audio):
        peak = float(np.max(np.abs(wave))) or 1.0
        path = out / f"generated_{i:03d}_pitch{args.pitch}.wav"
        sf.write(path, wave / peak * 0.9, synth.sample_rate, subtype="FLOAT")
        print(path)
    return 0
