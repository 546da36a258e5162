"""`gansynth export-sfz`: one instrument as an SFZ sampler patch (engine/songs/sfz.py).

    gansynth export-sfz --preset FILE -o DIR [--instrument 0-4] [--pitches 24-84:3] [--velocity-layers N]
"""
from __future__ import annotations

import sys

from engine.commands.render import _progress_bar, add_instrument_arguments, load_palette, load_synth_for
from engine.songs.render import RenderError
from engine.songs.sfz import SfzError, SfzSettings, export_sfz


def parse_pitches(text: str) -> list[int]:
    """'24-84' -> 24..84; '36,48,60' -> those; '24-84:3' -> every 3rd from 24."""
    step = 1
    if ":" in text:
        text, step_text = text.split(":", 1)
        step = int(step_text)
    if "-" in text.strip()[1:]:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1, step))
    return [int(v) for v in text.split(",") if v.strip()][::step]


def add_arguments(p) -> None:
    add_instrument_arguments(p)
    p.add_argument("--instrument", type=int, default=None,
                   help="which instrument: a corner 0-3 or the pad 4 with --preset (default 4), "
                        "an index with --random (default 0)")
    p.add_argument("-o", "--out", required=True, help="output folder (created; the .sfz is named after it)")
    p.add_argument("--pitches", default=None, help="e.g. 24-84 (default: the model's range), 36,48,60, "
                                                   "or 24-84:3 for every third key")
    p.add_argument("--velocity-layers", type=int, default=1)
    p.add_argument("--sample-rate", type=int, default=48000)
    p.add_argument("--attack", type=float, default=0.005, help="ampeg_attack seconds")
    p.add_argument("--release", type=float, default=0.3, help="ampeg_release seconds")
    p.add_argument("--name", default=None, help="patch name (default: the folder's name)")


def run(args) -> int:
    from engine.gansynth.modelfile import ModelFileError

    prog = "gansynth export-sfz"
    try:
        pitches = parse_pitches(args.pitches) if args.pitches else None
    except ValueError:
        print(f"{prog}: --pitches {args.pitches!r}: expected e.g. 24-84, 36,48,60 or 24-84:3", file=sys.stderr)
        return 2
    try:
        synth = load_synth_for(args)
        palette, names = load_palette(args, synth)
        index = args.instrument if args.instrument is not None else (4 if args.preset else 0)
        if not 0 <= index < len(palette):
            raise SfzError(f"--instrument must be 0..{len(palette) - 1}, not {index}")
        settings = SfzSettings(sample_rate=args.sample_rate, attack_s=args.attack, release_s=args.release)
        provenance = {"model": str(args.model or "bundled default"), "instrument": names[index]}
        with _progress_bar("exporting", "samples") as bar:
            report = export_sfz(synth, palette[index], args.out, pitches, args.velocity_layers, settings,
                                name=args.name, progress=bar, provenance=provenance)
    except (ModelFileError, RenderError, SfzError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; samples written so far were removed", file=sys.stderr)
        return 130
    print(report.summary())
    return 0
