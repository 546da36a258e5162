"""NSynth json/wav datasets: `DIR/examples.json` + `DIR/audio/<note_str>.wav`.

This is the layout of NSynth as downloaded (`nsynth-{train,valid,test}.jsonwav.tar.gz`)
and of what `gansynth make-dataset` writes. `examples.json` maps each note_str
("<instrument_str>-<pitch:03d>-<velocity:03d>") to a record with the NSynth keys
(`NSYNTH_KEYS`). Audio is 16 kHz mono, 64000 samples (4 s).

    notes = read_examples("/data/nsynth-train")            # list[Note], sorted by note_str
    notes = filter_notes(notes, sources=("acoustic",), pitch_range=(24, 84))   # GANSynth subset
    train, valid = split_by_instrument(notes, valid_fraction=0.1, seed=0)
    wave = load_wave(notes[0].path)                          # float32 [64000]
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.util.fileio import JsonFileError, atomic_write_text, read_json

FAMILIES = ("bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
            "synth_lead", "vocal")
SOURCES = ("acoustic", "electronic", "synthetic")
QUALITIES = ("bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic",
             "nonlinear_env", "percussive", "reverb", "tempo-synced")
NSYNTH_KEYS = ("note", "note_str", "instrument", "instrument_str", "pitch", "velocity", "sample_rate",
               "qualities", "qualities_str", "instrument_family", "instrument_family_str",
               "instrument_source", "instrument_source_str")
GANSYNTH_PITCHES = (24, 84)
SAMPLE_RATE = 16000
NUM_SAMPLES = 64000


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class Note:
    """One note of an NSynth-format dataset."""

    note_str: str
    pitch: int  # MIDI
    velocity: int  # 1..127
    instrument_str: str
    family: str  # one of FAMILIES
    source: str  # one of SOURCES
    path: Path  # the WAV file


def note_str(instrument_str: str, pitch: int, velocity: int) -> str:
    return f"{instrument_str}-{pitch:03d}-{velocity:03d}"


def make_record(note_id: int, instrument_str: str, instrument: int, pitch: int, velocity: int,
                family: str, source: str, sample_rate: int = SAMPLE_RATE) -> dict:
    """An examples.json record with every NSynth key (qualities unknown -> all zero)."""
    return {
        "note": int(note_id),
        "note_str": note_str(instrument_str, pitch, velocity),
        "instrument": int(instrument),
        "instrument_str": instrument_str,
        "pitch": int(pitch),
        "velocity": int(velocity),
        "sample_rate": int(sample_rate),
        "qualities": [0] * len(QUALITIES),
        "qualities_str": [],
        "instrument_family": FAMILIES.index(family),
        "instrument_family_str": family,
        "instrument_source": SOURCES.index(source),
        "instrument_source_str": source,
    }


def write_examples(data_dir, records: list[dict]) -> Path:
    """Write `examples.json` (keyed by note_str) atomically."""
    path = Path(data_dir) / "examples.json"
    atomic_write_text(path, json.dumps({r["note_str"]: r for r in records}, indent=1, sort_keys=True))
    return path




def read_examples(data_dir) -> list[Note]:
    """All notes listed in `DIR/examples.json`, sorted by note_str.

    Raises DatasetError naming the file when it is missing, not JSON, or a record
    lacks a key we use. WAV files are not opened here (see `load_wave`).
    """
    data_dir = Path(data_dir)
    path = data_dir / "examples.json"
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: not a directory")
    if not path.is_file():
        raise DatasetError(f"{path}: missing (an NSynth json/wav dataset has examples.json + audio/)")
    try:
        examples = read_json(path, max_bytes=2 ** 31)  # NSynth's train split index is ~200 MB
    except JsonFileError as e:
        raise DatasetError(str(e)) from None
    if not isinstance(examples, dict):
        raise DatasetError(f"{path}: expected an object keyed by note_str")
    return sorted((_parse_record(path, key, rec) for key, rec in examples.items()),
                  key=lambda n: n.note_str)


def read_datasets(data_dirs) -> list[Note]:
    """The notes of one or more datasets as one set (`read_examples` of each). Instruments of
    different datasets stay apart, as in training: with several, each instrument_str (and
    note_str) is prefixed with its folder's name, 'timgm/keyboard_acoustic_000'."""
    dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    if len(dirs) == 1:
        return read_examples(dirs[0])
    labels = [Path(d).resolve().name for d in dirs]
    if len(set(labels)) < len(labels):
        raise DatasetError(f"datasets with the same folder name cannot be told apart: {', '.join(map(str, dirs))}")
    return sorted((replace(n, instrument_str=f"{label}/{n.instrument_str}", note_str=f"{label}/{n.note_str}")
                   for d, label in zip(dirs, labels) for n in read_examples(d)), key=lambda n: n.note_str)


def _parse_record(path: Path, key: str, rec) -> Note:
    try:
        family = rec["instrument_family_str"]
        source = rec["instrument_source_str"]
        note = Note(note_str=str(rec.get("note_str", key)), pitch=int(rec["pitch"]),
                    velocity=int(rec["velocity"]), instrument_str=str(rec["instrument_str"]),
                    family=str(family), source=str(source),
                    path=path.parent / "audio" / f"{rec.get('note_str', key)}.wav")
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: record {key!r} is malformed ({type(e).__name__}: {e})") from None
    if note.source not in SOURCES:
        raise DatasetError(f"{path}: record {key!r} has unknown instrument_source_str {source!r}")
    return note


def filter_notes(notes: list[Note], sources=("acoustic",), pitch_range=GANSYNTH_PITCHES,
                 families=None, velocities=None, instruments=None) -> list[Note]:
    """Keep notes matching every given filter (None = no filter on that field).

    The defaults are GANSynth's subset: acoustic source, MIDI pitch 24..84 inclusive.
    `instruments` is a collection of instrument_str values.
    """
    keep = []
    for n in notes:
        if sources is not None and n.source not in sources:
            continue
        if pitch_range is not None and not pitch_range[0] <= n.pitch <= pitch_range[1]:
            continue
        if families is not None and n.family not in families:
            continue
        if velocities is not None and n.velocity not in velocities:
            continue
        if instruments is not None and n.instrument_str not in instruments:
            continue
        keep.append(n)
    return keep


def split_by_instrument(notes: list[Note], valid_fraction: float = 0.1,
                        seed: int = 0) -> tuple[list[Note], list[Note]]:
    """Instrument-level train/valid split: no instrument has notes on both sides.

    Deterministic for a given set of instruments and seed. With two or more
    instruments and valid_fraction > 0, at least one instrument goes to valid and
    at least one stays in train.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), not {valid_fraction}")
    names = sorted({n.instrument_str for n in notes})
    order = np.random.default_rng(seed).permutation(len(names))
    n_valid = int(round(valid_fraction * len(names)))
    if valid_fraction > 0 and len(names) >= 2:
        n_valid = min(max(n_valid, 1), len(names) - 1)
    valid_names = {names[i] for i in order[:n_valid]}
    train = [n for n in notes if n.instrument_str not in valid_names]
    valid = [n for n in notes if n.instrument_str in valid_names]
    return train, valid


def instrument_ids(notes: list[Note]) -> tuple[np.ndarray, list[str]]:
    """Contiguous ids 0..k-1 (sorted instrument_str order): (int64 [N], names [k])."""
    names = sorted({n.instrument_str for n in notes})
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[n.instrument_str] for n in notes], np.int64), names


def load_wave(path, sample_rate: int = SAMPLE_RATE, num_samples: int = NUM_SAMPLES) -> np.ndarray:
    """A note's audio as float32 [num_samples] in [-1, 1], cropped or zero-padded.

    Raises DatasetError naming the file when it is missing, unreadable, not mono
    or at another sample rate.
    """
    path = Path(path)
    try:
        wave, sr = sf.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as e:
        raise DatasetError(f"{path}: cannot read audio ({e})") from None
    if sr != sample_rate:
        raise DatasetError(f"{path}: sample rate {sr} Hz, expected {sample_rate}")
    if wave.shape[1] != 1:
        raise DatasetError(f"{path}: {wave.shape[1]} channels, expected mono")
    wave = wave[:num_samples, 0]
    if len(wave) < num_samples:
        wave = np.pad(wave, (0, num_samples - len(wave)))
    return wave
