"""`gansynth import-magenta`: convert a Magenta GANSynth checkpoint (directory or .zip) into our
model files, once (engine/gansynth/magenta/convert.py does the work).

    gansynth import-magenta acoustic_only.zip -o models/acoustic [--raw]
"""
from __future__ import annotations

import sys
import warnings

from engine.gansynth.magenta.convert import import_checkpoint
from engine.gansynth.magenta.files import MagentaImportWarning
from engine.gansynth.modelfile import ModelFileError


def add_arguments(p) -> None:
    p.add_argument("src", help="Magenta GANSynth checkpoint directory (with experiment.json) or its .zip")
    p.add_argument("-o", "--out", required=True, help="model directory to write")
    p.add_argument("--raw", action="store_true", help="use the raw generator weights instead of the EMA shadows")


def run(args) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MagentaImportWarning)  # printed below from meta
            out, meta = import_checkpoint(args.src, args.out, prefer_ema=not args.raw)
    except ModelFileError as e:
        print(f"gansynth import-magenta: {e}", file=sys.stderr)
        return 1
    for message in meta.get("warnings", []):
        print(f"warning: {message}", file=sys.stderr)
    print(f"wrote {out} ({meta['weights']} weights, {meta['representation']}, "
          f"global_step {meta.get('global_step', '?')})")
    return 0
