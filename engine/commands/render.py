"""`gansynth render`: a MIDI file rendered with instruments morphing over time.

    gansynth render SONG.mid -o SONG.wav [--preset FILE | --random N --seed S] [--plot SONG.png]

The work is engine/songs/render.py's. The instrument options (--model, --preset, --random,
--seed, --device, --precision, --batch-size) and the progress bar serve `gansynth export-sfz`
too.
"""
from __future__ import annotations

import sys

import numpy as np

from engine.gansynth.config import BACKEND_HELP, BACKENDS
from engine.gansynth.config import PRECISION_HELP, PRECISIONS
from engine.songs.midifile import MidiFileError
from engine.songs.render import RenderError, RenderSettings, render_midi_file, timbre_palette


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _float_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def add_instrument_arguments(p) -> None:
    """--model / --preset / --random / --seed / --instrument-style options shared with export-sfz."""
    p.add_argument("--model", default=None, help="model directory, Magenta checkpoint dir or .zip "
                                                 "(default: the bundled model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help="preset JSON: its four corners are instruments 0-3, "
                                                     "the pad's current timbre is instrument 4 (the default)")
    src.add_argument("--random", type=int, default=None, metavar="N", help="N random instruments")
    p.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    p.add_argument("--batch-size", type=int, default=None,
                   help="notes per generator call (default: the synth's; 1 on CPU)")


def add_arguments(p) -> None:
    p.add_argument("midi", help="MIDI file (.mid)")
    p.add_argument("-o", "--out", required=True, help="output WAV")
    add_instrument_arguments(p)
    sched = p.add_mutually_exclusive_group()
    sched.add_argument("--secs-per-instrument", type=float, default=None, metavar="S",
                       help="a new instrument every S seconds (cycling through the instruments)")
    sched.add_argument("--instruments", type=_int_list, default=None, metavar="I,J,...",
                       help="instrument indices to morph through (default: all, evenly)")
    p.add_argument("--times", type=_float_list, default=None, metavar="T,U,...",
                   help="when each of --instruments is reached, as fractions 0..1 of the song")
    p.add_argument("--tempo-scale", type=float, default=1.0, help=">1 plays faster")
    p.add_argument("--sample-rate", type=int, default=48000)
    p.add_argument("--attack", type=float, default=0.010, help="attack seconds")
    p.add_argument("--release", type=float, default=0.3, help="release seconds")
    p.add_argument("--max-note", type=float, default=3.0, help="longest sustain in seconds")
    p.add_argument("--morph-steps", type=int, default=0,
                   help="quantise each morph to N steps so more notes share renders (0: continuous)")
    p.add_argument("--max-minutes", type=float, default=RenderSettings.max_minutes, metavar="M",
                   help="refuse songs longer than this (default %(default)g); raise it to render "
                        "a longer one where memory allows")
    p.add_argument("--plot", default=None, metavar="PNG", help="also write the rainbowgram of the result")


def preset_palette(path, latent_size: int) -> tuple[np.ndarray, list[str]]:
    """Instruments of a preset file (see `timbre_palette`); raises PresetError naming the file."""
    from engine.instrument.presets import load_preset

    return timbre_palette(load_preset(path, latent_size).timbre)


def load_palette(args, synth) -> tuple[np.ndarray, list[str]]:
    """Instrument latents float32 [P, L] and names from --preset or --random/--seed."""
    if args.preset is not None:
        return preset_palette(args.preset, synth.latent_size)
    count = 1 if args.random is None else args.random
    if count < 1:
        raise RenderError(f"--random must be >= 1, not {count}")
    return synth.random_latents(count, seed=args.seed), [f"random {i} (seed {args.seed})" for i in range(count)]


def load_synth_for(args):
    from engine.gansynth.synth import load_synth
    from engine.util.resources import default_model_path

    return load_synth(args.model or default_model_path(), device=args.device, batch_size=args.batch_size,
                      precision=args.precision, backend=args.backend)


def run(args) -> int:
    from engine.gansynth.modelfile import ModelFileError

    prog = "gansynth render"
    if args.times is not None and args.instruments is None:
        print(f"{prog}: --times needs --instruments", file=sys.stderr)
        return 2
    settings = RenderSettings(sample_rate=args.sample_rate, attack_s=args.attack, release_s=args.release,
                              max_note_s=args.max_note, morph_steps=args.morph_steps,
                              max_minutes=args.max_minutes)
    instruments = args.instruments
    if args.preset is not None and instruments is None and args.secs_per_instrument is None:
        instruments = [4]  # the pad's current timbre
    try:
        synth = load_synth_for(args)
        palette, _ = load_palette(args, synth)
        with _progress_bar("rendering", "notes") as bar:
            report = render_midi_file(args.midi, args.out, synth, palette, instruments, args.times,
                                      args.secs_per_instrument, args.tempo_scale, settings,
                                      plot_path=args.plot, progress=bar,
                                      log=lambda text: print(text, file=sys.stderr))
    except (ModelFileError, MidiFileError, RenderError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; nothing written", file=sys.stderr)
        return 130
    print(report.render_line())   # the MIDI summary went to stderr before rendering
    if report.plot_path:
        print(f"rainbowgram -> {report.plot_path}")
    return 0


class _progress_bar:
    """A tqdm bar usable as progress(done, total); created lazily on the first call."""

    def __init__(self, desc: str, unit: str):
        self.desc, self.unit, self.bar = desc, unit, None

    def __enter__(self):
        return self

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
