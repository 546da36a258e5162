"""`gansynth make-dataset`: render an NSynth-format dataset from a SoundFont with FluidSynth.

Every note is rendered in-process (no audio driver) at 16 kHz: the key is held
for 3 s and released for 1 s, 64000 samples, stereo mixed to mono, reverb and
chorus off, every voice killed between notes so no tail leaks into the next.
Notes are named as NSynth does, `<family>_<source>_<program:03d>-<pitch:03d>-<velocity:03d>`,
e.g. `keyboard_acoustic_000-060-127`, with the family taken from the General
MIDI program group (`gm_family`). Renders that are silent (peak below -80 dBFS)
or clipped (a sample at full scale) are skipped and counted.

    gansynth make-dataset --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 \
        --programs 0,11,24 --pitches 24-84 --velocities 75,127 -o /data/fluidr3
"""
from __future__ import annotations

import ctypes
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.training.nsynth import make_record, note_str, write_examples
from engine.util.fileio import atomic_write_text

SAMPLE_RATE = 16000
HELD_SAMPLES = 3 * SAMPLE_RATE
RELEASE_SAMPLES = 1 * SAMPLE_RATE
SILENCE_PEAK = 1e-4  # -80 dBFS
CLIP_PEAK = 0.999
DEFAULT_VELOCITIES = (25, 50, 75, 100, 127)  # NSynth's

# General MIDI program groups of 8 -> NSynth family (program // 8 indexes this).
_GROUP_FAMILY = ("keyboard", "mallet", "organ", "guitar", "bass", "string", "string", "brass",
                 "reed", "flute", "synth_lead", "synth_lead", "synth_lead", "guitar", "mallet",
                 "synth_lead")
# Programs whose family differs from their group's.
_PROGRAM_FAMILY = {47: "mallet",  # timpani
                   52: "vocal", 53: "vocal", 54: "vocal",  # choir aahs, voice oohs, synth voice
                   108: "mallet", 109: "reed", 110: "string", 111: "reed"}  # kalimba, bagpipe, fiddle, shanai
# Synthesizer programs (everything else is a sampled acoustic or electric instrument).
_SYNTHETIC = {38, 39, 50, 51, 54, 62, 63, 118, *range(80, 104), *range(120, 128)}


def gm_family(program: int) -> tuple[str, str]:
    """(family, source) of a General MIDI program 0..127, in NSynth's vocabulary."""
    if not 0 <= program <= 127:
        raise ValueError(f"General MIDI program must be 0..127, not {program}")
    family = _PROGRAM_FAMILY.get(program, _GROUP_FAMILY[program // 8])
    return family, ("synthetic" if program in _SYNTHETIC else "acoustic")


def instrument_name(program: int) -> str:
    family, source = gm_family(program)
    return f"{family}_{source}_{program:03d}"


def parse_int_list(text: str, lo: int, hi: int, what: str) -> list[int]:
    """'0,1,24-31' -> [0, 1, 24, ..., 31] (sorted, unique), each within lo..hi."""
    values: set[int] = set()
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            a, _, b = part.partition("-")
            first, last = int(a), int(b) if b else int(a)
            if first > last:
                raise ValueError(f"empty range {part!r}")
            values.update(range(first, last + 1))
    except ValueError as e:
        raise ValueError(f"bad {what} list {text!r}: {e}") from None
    bad = [v for v in values if not lo <= v <= hi]
    if bad or not values:
        raise ValueError(f"{what} must be within {lo}..{hi}, got {text!r}")
    return sorted(values)


# ----------------------------------------------------------------------------- rendering

@dataclass
class RenderSummary:
    written: int = 0
    silent: list[str] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)
    missing_programs: list[int] = field(default_factory=list)
    preset_names: dict[int, str] = field(default_factory=dict)

    def line(self) -> str:
        s = (f"wrote {self.written} notes; skipped {len(self.silent)} silent, "
             f"{len(self.clipped)} clipped")
        if self.missing_programs:
            s += f"; programs not in the SoundFont: {self.missing_programs}"
        return s


class NoteRenderer:
    """A FluidSynth instance that renders single notes of one SoundFont, float32 mono."""

    def __init__(self, soundfont, gain: float = 0.5):
        import fluidsynth  # pyfluidsynth (needs Debian libfluidsynth3)

        path = Path(soundfont)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such SoundFont file")
        self._fs = fluidsynth
        self.synth = fluidsynth.Synth(gain=gain, samplerate=SAMPLE_RATE,
                                      **{"synth.reverb.active": 0, "synth.chorus.active": 0})
        self.sfid = self.synth.sfload(str(path))
        if self.sfid < 0:
            self.synth.delete()
            raise ValueError(f"{path}: FluidSynth cannot load it as a SoundFont")
        # Float output has no dither and no int16 saturation, so clipping is measurable.
        self._write_float = fluidsynth.cfunc(
            "fluid_synth_write_float", ctypes.c_int, ("synth", ctypes.c_void_p, 1),
            ("len", ctypes.c_int, 1), ("lout", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1),
            ("lincr", ctypes.c_int, 1), ("rout", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1),
            ("rincr", ctypes.c_int, 1))

    def preset_name(self, program: int, bank: int = 0) -> str | None:
        name = self.synth.sfpreset_name(self.sfid, bank, program)
        return name if name else None

    def select(self, program: int, bank: int = 0) -> bool:
        return self.synth.program_select(0, self.sfid, bank, program) == 0

    def _samples(self, n: int) -> np.ndarray:
        """[n, 2] float32 stereo."""
        buf = np.zeros((n, 2), np.float32)
        ptr = buf.ctypes.data
        if self._write_float is None:
            return self.synth.get_samples(n).reshape(n, 2).astype(np.float32) / 32768.0
        self._write_float(self.synth.synth, n, ptr, 0, 2, ptr, 1, 2)
        return buf

    def render(self, pitch: int, velocity: int) -> np.ndarray:
        """float32 [64000]: 3 s held + 1 s release, stereo averaged to mono."""
        self.synth.noteon(0, pitch, velocity)
        held = self._samples(HELD_SAMPLES)
        self.synth.noteoff(0, pitch)
        release = self._samples(RELEASE_SAMPLES)
        self.synth.all_sounds_off(0)  # kill what still rings, then flush FluidSynth's block
        self._samples(256)
        return np.concatenate([held, release]).mean(axis=1)

    def close(self) -> None:
        self.synth.delete()


def _render_programs(soundfont, out_dir, programs, pitches, velocities, gain, bar=None):
    """Render `programs` into out_dir/audio: (records without ids, silent, clipped, missing, names).

    Each program gets a fresh FluidSynth: a used one starts the first note after a program change
    differently in its first 64-sample block (measured: up to 0.007 on TimGM6mb's vibraphone, even
    after a system reset), and a program must render the same in any job."""
    records, silent, clipped, missing, names = [], [], [], [], {}
    for program in programs:
        renderer = NoteRenderer(soundfont, gain)
        try:
            name = renderer.preset_name(program)
            if name is None or not renderer.select(program):
                missing.append(program)
                continue
            names[program] = name
            family, source = gm_family(program)
            inst = instrument_name(program)
            for pitch in pitches:
                for velocity in velocities:
                    wave = renderer.render(pitch, velocity)
                    note = note_str(inst, pitch, velocity)
                    peak = float(np.max(np.abs(wave)))
                    if peak < SILENCE_PEAK:
                        silent.append(note)
                    elif peak >= CLIP_PEAK:
                        clipped.append(note)
                    else:
                        sf.write(out_dir / "audio" / f"{note}.wav", wave, SAMPLE_RATE, subtype="PCM_16")
                        records.append((inst, program, pitch, velocity, family, source))
                    if bar is not None:
                        bar.update(1)
        finally:
            renderer.close()
    return records, silent, clipped, missing, names


def _render_worker(job):
    return _render_programs(*job)


def render_dataset(soundfont, out_dir, programs, pitches, velocities, gain: float = 0.5,
                   progress: bool = True, jobs: int = 1) -> RenderSummary:
    """Render every (program, pitch, velocity) into NSynth layout under out_dir; `jobs` worker
    processes render programs in parallel (each with its own FluidSynth; the same files)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    NoteRenderer(soundfont, gain).close()  # a bad SoundFont fails here, before any worker starts
    jobs = max(1, min(jobs, len(programs)))
    if jobs == 1:
        total = len(programs) * len(pitches) * len(velocities)
        with tqdm(total=total, unit="note", disable=not progress, desc="rendering") as bar:
            parts = [_render_programs(soundfont, out_dir, programs, pitches, velocities, gain, bar)]
    else:
        import multiprocessing

        chunks = [programs[i::jobs] for i in range(jobs)]
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            parts = list(tqdm(pool.imap(_render_worker, [(soundfont, out_dir, c, pitches, velocities, gain)
                                                         for c in chunks]),
                              total=jobs, unit="job", disable=not progress, desc=f"rendering ({jobs} jobs)"))
    summary, rows = RenderSummary(), []
    for records, silent, clipped, missing, names in parts:
        rows += records
        summary.silent += silent
        summary.clipped += clipped
        summary.missing_programs += missing
        summary.preset_names.update(names)
    rows.sort(key=lambda r: (r[1], r[2], r[3]))  # program, pitch, velocity: as a single job writes them
    records = [make_record(i, inst, program, pitch, velocity, family, source, SAMPLE_RATE)
               for i, (inst, program, pitch, velocity, family, source) in enumerate(rows)]
    summary.missing_programs.sort()
    summary.written = len(records)
    write_examples(out_dir, records)
    return summary


# ----------------------------------------------------------------------------- CLI

def add_arguments(p):
    p.add_argument("--soundfont", required=True, help="SoundFont file (.sf2)")
    p.add_argument("--programs", default=None,
                   help="General MIDI programs 0-127, e.g. 0,1,24-31 (default: all acoustic ones)")
    p.add_argument("--pitches", default="24-84", help="MIDI pitches (default 24-84)")
    p.add_argument("--velocities", default=",".join(map(str, DEFAULT_VELOCITIES)),
                   help="MIDI velocities (default NSynth's 25,50,75,100,127)")
    p.add_argument("--gain", type=float, default=0.5, help="FluidSynth master gain (default 0.5)")
    p.add_argument("-o", "--out", required=True, help="output directory (examples.json + audio/)")
    p.add_argument("--force", action="store_true", help="replace an existing examples.json")
    p.add_argument("--jobs", type=int, default=1, help="worker processes rendering programs in parallel")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    prog = "gansynth make-dataset"
    try:
        if args.programs is None:
            programs = [p for p in range(128) if gm_family(p)[1] == "acoustic"]
        else:
            programs = parse_int_list(args.programs, 0, 127, "program")
        pitches = parse_int_list(args.pitches, 0, 127, "pitch")
        velocities = parse_int_list(args.velocities, 1, 127, "velocity")
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if (out / "examples.json").exists() and not args.force:
        print(f"{prog}: {out / 'examples.json'} exists (use --force to replace it)", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        summary = render_dataset(args.soundfont, out, programs, pitches, velocities, args.gain,
                                 progress=not args.no_progress, jobs=args.jobs)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    info = {"soundfont": str(Path(args.soundfont).resolve()), "programs": programs,
            "preset_names": {str(k): v for k, v in summary.preset_names.items()},
            "pitches": pitches, "velocities": velocities, "gain": args.gain,
            "sample_rate": SAMPLE_RATE, "held_s": HELD_SAMPLES / SAMPLE_RATE,
            "release_s": RELEASE_SAMPLES / SAMPLE_RATE, "written": summary.written,
            "skipped_silent": summary.silent, "skipped_clipped": summary.clipped,
            "missing_programs": summary.missing_programs,
            "seconds": round(time.monotonic() - start, 1)}
    atomic_write_text(out / "render.json", json.dumps(info, indent=1))
    print(f"{prog}: {summary.line()} -> {out}")
    return 0 if summary.written else 1
