"""`gansynth import-sound`: recorded notes become a playable instrument (a preset file).

    gansynth import-sound NOTE.wav [MORE.wav ...] [--pitch P] [--model PATH] [--name NAME] -o INSTRUMENT.json

The work is engine/gansynth/soundimport.py's. Several notes (one instrument at different
pitches) fit one shared latent. The instrument is saved as a preset with the fitted
latent on all four corners, which the window's Load preset, `render --preset` and
`export-sfz --preset` read. A file that cannot be used is named with the reason and left
out; the others go on. Ctrl+C cancels (nothing is written).
"""
from __future__ import annotations

import json
import sys

from engine.gansynth.config import PRECISION_HELP, PRECISIONS


def _pitches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--pitch {text!r}: give MIDI numbers, e.g. 60 or 48,60,72") from None
    if not values:
        raise ValueError("--pitch needs at least one MIDI number")
    return values


def add_arguments(p) -> None:
    p.add_argument("sounds", nargs="+", metavar="SOUND", help="audio files (WAV, FLAC, OGG, MP3, AIFF...), "
                                                              "one note each, of one instrument")
    p.add_argument("-o", "--out", required=True, help="instrument file to write (a preset .json)")
    p.add_argument("--pitch", default=None, metavar="P[,P...]",
                   help="MIDI pitch of the note(s): one for all or one per file (default: tracked by CREPE)")
    p.add_argument("--model", default=None, help="model directory, Magenta checkpoint dir or .zip "
                                                 "(default: the bundled model)")
    p.add_argument("--name", default=None, help="instrument name (default: the first file's name)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior draws the fit starts from")
    p.add_argument("--steps", type=int, default=None, help="Adam steps of the winning start")
    p.add_argument("--starts", type=int, default=None, help="best-scoring starts tried before one wins")
    p.add_argument("--tracker", choices=("full", "tiny"), default="full", help="CREPE model for the pitch")
    p.add_argument("--report", default=None, metavar="JSON", help="also write the fit report as JSON")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)


def _settings(args):
    import dataclasses

    from engine.gansynth.latentfit import FitSettings

    changes = {k: v for k, v in (("seed", args.seed), ("steps", args.steps), ("starts", args.starts))
               if v is not None}
    return dataclasses.replace(FitSettings(), **changes)


def run(args) -> int:
    from engine.gansynth.latentfit import FitCancelled
    from engine.gansynth.modelfile import ModelFileError
    from engine.gansynth.noteaudio import SoundImportError, pitch_tracker
    from engine.gansynth.soundimport import import_sound
    from engine.gansynth.synth import load_synth
    from engine.instrument.presets import instrument_preset, save_preset
    from engine.util.resources import default_model_path

    def say(message):
        print(f"gansynth import-sound: {message}", file=sys.stderr)

    try:
        pitches = None if args.pitch is None else _pitches(args.pitch)
        settings = _settings(args)
        synth = load_synth(args.model or default_model_path(), device=args.device, threads=args.threads,
                           precision=args.precision)
    except (ModelFileError, ValueError) as exc:
        say(exc)
        return 2
    bar = _bar()
    try:
        result = import_sound(synth, args.sounds, pitches, args.name, settings,
                              tracker=pitch_tracker(args.tracker), progress=bar.update)
    except SoundImportError as exc:
        bar.close()
        for line in str(exc).splitlines():
            say(line)
        say("no usable note: nothing written")
        return 1
    except ValueError as exc:
        bar.close()
        say(exc)
        return 2
    except (KeyboardInterrupt, FitCancelled):
        bar.close()
        say("cancelled: nothing written")
        return 130
    bar.close()
    for problem in result.problems:
        say(f"left out {problem}")
    for note in result.notes:
        for notice in note.notices:
            print(f"{note.path}: {notice}", file=sys.stderr)
    print(result.table())
    try:
        path = save_preset(args.out, instrument_preset(result.latent, result.name))
        if args.report:
            from engine.util.fileio import atomic_write_text

            atomic_write_text(args.report, json.dumps(result.to_json(), indent=1))
    except OSError as exc:
        say(f"cannot write {exc.filename or args.out}: {exc.strerror or exc}")
        return 1
    print(f"wrote {path}: {result.summary()}")
    return 0


class _bar:
    """A tqdm bar on stderr fed with (done, total) calls."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm(total=1000, desc="fitting", unit="‰", file=sys.stderr, leave=False,
                          bar_format="{desc} {bar} {percentage:3.0f}% {elapsed}")

    def update(self, done, total):
        step = int(1000 * done / max(total, 1)) - self._tqdm.n
        if step > 0:
            self._tqdm.update(step)   # redraws at most every tqdm.mininterval

    def close(self):
        self._tqdm.close()
