"""Read the notes of a Standard MIDI File (every track) as flat numpy arrays.

    notes = read_midi("song.mid", pitch_range=(24, 84))
    notes.pitch, notes.velocity, notes.start_s, notes.end_s   # [n] arrays, sorted by start
    print(notes.summary())

What it handles, and how:
- Tempo changes in any track are merged into one tempo map (types 0 and 1);
  a type-2 file plays its tracks one after another, each with its own tempo.
  SMPTE time division (frames per second x ticks per frame) is supported.
- Note pairing is per (track, channel, pitch), first-in first-out: two
  overlapping note-ons of the same key are closed by the next two note-offs
  in order. A note-on with velocity 0 is a note-off.
- Zero-length notes (on and off at the same tick) are kept and counted: the
  renderer plays them as short notes (attack + release).
- Notes still held at the end of their track end there and are counted;
  note-offs without a matching note-on are ignored and counted.
- With `pitch_range`, notes outside it are dropped and counted; if none are
  left, `MidiFileError` says so.
- A delta time longer than the standard's 4-byte variable-length number (0x0FFFFFFF
  ticks) is corruption, not a long pause: `MidiFileError`.
- Anything unreadable raises `MidiFileError` naming the file and the problem.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_TEMPO_US = 500_000  # microseconds per quarter note (120 bpm)
MAX_DELTA_TICKS = 0x0FFFFFFF  # the largest delta time a 4-byte variable-length number holds (SMF)


class MidiFileError(Exception):
    """A MIDI file could not be used; the message names the file and the problem."""


@dataclass
class MidiNotes:
    """Notes of one MIDI file, sorted by start time (then pitch).

    pitch int16 [n] (MIDI), velocity int16 [n] (1..127),
    start_s / end_s float64 [n] (seconds, end_s >= start_s).
    """

    path: str
    pitch: np.ndarray
    velocity: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    num_tracks: int = 0
    dropped_out_of_range: int = 0
    zero_length: int = 0
    unterminated: int = 0
    orphan_note_offs: int = 0
    pitch_range: tuple[int, int] | None = None
    tempo_scale: float = 1.0

    def __len__(self) -> int:
        return int(self.pitch.shape[0])

    @property
    def duration_s(self) -> float:
        """End of the last note, in seconds (0 for no notes)."""
        return float(self.end_s.max()) if len(self) else 0.0

    def summary(self) -> str:
        """One human-readable paragraph: counts and what was dropped or fixed."""
        name = Path(self.path).name
        lines = [f"{name}: {len(self)} notes in {self.num_tracks} track(s), "
                 f"{_format_time(self.duration_s)} long"]
        if self.dropped_out_of_range:
            lo, hi = self.pitch_range
            lines.append(f"dropped {self.dropped_out_of_range} note(s) outside the model's "
                         f"pitch range {lo}..{hi}")
        if self.zero_length:
            lines.append(f"{self.zero_length} zero-length note(s) play as short notes")
        if self.unterminated:
            lines.append(f"{self.unterminated} note(s) without a note-off end at their track's end")
        if self.orphan_note_offs:
            lines.append(f"ignored {self.orphan_note_offs} note-off(s) without a note-on")
        return "; ".join(lines)


def _format_time(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60.0)
    return f"{int(minutes)}:{secs:05.2f}"


def read_midi(path, pitch_range: tuple[int, int] | None = None,
              tempo_scale: float = 1.0) -> MidiNotes:
    """Read every track of `path`. `tempo_scale` > 1 plays faster (times divided by it)."""
    path = Path(os.path.expanduser(str(path)))
    if not tempo_scale > 0:
        raise ValueError(f"tempo_scale must be > 0, not {tempo_scale}")
    midi = _open(path)
    _check_delta_times(midi, path)
    seconds_per_tick = _seconds_per_tick_fn(midi, path)
    rows, counts = [], collections.Counter()
    if midi.type == 2:
        offset_s = 0.0
        for track in midi.tracks:
            tempo_map = _tempo_map([track])
            track_rows = _track_notes(track, counts)
            _rows_to_seconds(track_rows, tempo_map, seconds_per_tick, offset_s, rows)
            offset_s = max([offset_s] + [r[1] for r in rows])
    else:
        tempo_map = _tempo_map(midi.tracks)
        for track in midi.tracks:
            _rows_to_seconds(_track_notes(track, counts), tempo_map, seconds_per_tick, 0.0, rows)
    notes = _to_arrays(str(path), rows, tempo_scale)
    notes.num_tracks = len(midi.tracks)
    notes.unterminated = counts["unterminated"]
    notes.orphan_note_offs = counts["orphan"]
    notes.zero_length = int(np.count_nonzero(notes.end_s <= notes.start_s))
    if len(notes) == 0:
        raise MidiFileError(f"{path}: the file contains no notes")
    if pitch_range is not None:
        notes = _keep_range(notes, pitch_range)
    return notes


def _open(path: Path):
    import mido

    if not path.exists():
        raise MidiFileError(f"{path}: no such file")
    if path.is_dir():
        raise MidiFileError(f"{path}: is a directory, not a MIDI file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise MidiFileError(f"{path}: cannot read: {e.strerror or e}") from e
    if magic != b"MThd":
        raise MidiFileError(f"{path}: not a MIDI file (it does not start with 'MThd')")
    try:
        return mido.MidiFile(path, clip=True)
    except Exception as e:  # mido raises OSError, EOFError, KeyError, ValueError, struct.error...
        detail = str(e) or type(e).__name__
        raise MidiFileError(f"{path}: corrupt MIDI file ({detail})") from e


def _check_delta_times(midi, path: Path) -> None:
    for number, track in enumerate(midi.tracks, 1):
        for index, msg in enumerate(track):
            if msg.time > MAX_DELTA_TICKS:
                raise MidiFileError(
                    f"{path}: corrupt MIDI file (track {number}, event {index}: a delta time of "
                    f"{msg.time:,} ticks, longer than the {MAX_DELTA_TICKS:,} a 4-byte "
                    "variable-length number can hold)")


def _seconds_per_tick_fn(midi, path: Path):
    """Returns f(tempo_us) -> seconds per tick, for metrical or SMPTE division."""
    division = int(midi.ticks_per_beat)
    if division == 0:
        raise MidiFileError(f"{path}: corrupt MIDI file (time division is 0)")
    if division < 0:  # SMPTE: high byte -fps (two's complement), low byte ticks per frame
        raw = division & 0xFFFF
        fps = 256 - (raw >> 8)
        ticks_per_frame = raw & 0xFF
        if ticks_per_frame == 0 or fps not in (24, 25, 29, 30):
            raise MidiFileError(f"{path}: corrupt MIDI file (bad SMPTE division {raw:#06x})")
        rate = 29.97 if fps == 29 else float(fps)
        return lambda tempo_us: 1.0 / (rate * ticks_per_frame)
    return lambda tempo_us: tempo_us * 1e-6 / division


def _tempo_map(tracks) -> list[tuple[int, int]]:
    """[(tick, tempo_us)] sorted by tick, merged over `tracks`; starts at tick 0."""
    changes = []
    for order, track in enumerate(tracks):
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                changes.append((tick, order, msg.tempo))
    changes.sort(key=lambda c: (c[0], c[1]))
    tempo_map = [(0, DEFAULT_TEMPO_US)]
    for tick, _, tempo in changes:
        if tick == tempo_map[-1][0]:
            tempo_map[-1] = (tick, tempo)
        else:
            tempo_map.append((tick, tempo))
    return tempo_map


def _track_notes(track, counts) -> list[tuple[int, int, int, int]]:
    """[(start_tick, end_tick, pitch, velocity)] of one track, FIFO pairing per (channel, pitch)."""
    held: dict[tuple[int, int], collections.deque] = collections.defaultdict(collections.deque)
    rows = []
    tick = 0
    for msg in track:
        tick += msg.time
        kind = msg.type
        if kind == "note_on" and msg.velocity > 0:
            held[(msg.channel, msg.note)].append((tick, msg.velocity))
        elif kind == "note_off" or kind == "note_on":
            queue = held.get((msg.channel, msg.note))
            if queue:
                start, velocity = queue.popleft()
                rows.append((start, tick, msg.note, velocity))
            else:
                counts["orphan"] += 1
    for (_, pitch), queue in held.items():
        for start, velocity in queue:
            rows.append((start, tick, pitch, velocity))
            counts["unterminated"] += 1
    return rows


def _rows_to_seconds(rows, tempo_map, seconds_per_tick, offset_s: float, out: list) -> None:
    """Append (start_s, end_s, pitch, velocity) for `rows` in ticks."""
    if not rows:
        return
    ticks = np.array([t for t, _ in tempo_map], np.int64)
    spt = np.array([seconds_per_tick(tempo) for _, tempo in tempo_map], np.float64)
    # Seconds at each tempo change: cumulative sum of segment lengths.
    seg_s = np.concatenate([[0.0], np.cumsum(np.diff(ticks) * spt[:-1])])
    arr = np.array(rows, np.int64)

    def to_s(t):
        i = np.searchsorted(ticks, t, side="right") - 1
        return offset_s + seg_s[i] + (t - ticks[i]) * spt[i]

    start_s, end_s = to_s(arr[:, 0]), to_s(arr[:, 1])
    out.extend(zip(start_s.tolist(), end_s.tolist(), arr[:, 2].tolist(), arr[:, 3].tolist()))


def _to_arrays(path: str, rows, tempo_scale: float) -> MidiNotes:
    if rows:
        arr = np.array(rows, np.float64)
        order = np.lexsort((arr[:, 2], arr[:, 0]))  # by start, then pitch
        arr = arr[order]
    else:
        arr = np.zeros((0, 4), np.float64)
    return MidiNotes(path=path, pitch=arr[:, 2].astype(np.int16), velocity=arr[:, 3].astype(np.int16),
                     start_s=arr[:, 0] / tempo_scale, end_s=arr[:, 1] / tempo_scale,
                     tempo_scale=tempo_scale)


def _keep_range(notes: MidiNotes, pitch_range: tuple[int, int]) -> MidiNotes:
    lo, hi = int(pitch_range[0]), int(pitch_range[1])
    keep = (notes.pitch >= lo) & (notes.pitch <= hi)
    dropped = int(len(notes) - np.count_nonzero(keep))
    if not keep.any():
        raise MidiFileError(
            f"{notes.path}: no notes in the model's pitch range {lo}..{hi} "
            f"({len(notes)} notes, pitches {int(notes.pitch.min())}..{int(notes.pitch.max())})")
    zero = (notes.end_s <= notes.start_s) & keep
    return MidiNotes(path=notes.path, pitch=notes.pitch[keep], velocity=notes.velocity[keep],
                     start_s=notes.start_s[keep], end_s=notes.end_s[keep],
                     num_tracks=notes.num_tracks, dropped_out_of_range=dropped,
                     zero_length=int(np.count_nonzero(zero)), unterminated=notes.unterminated,
                     orphan_note_offs=notes.orphan_note_offs, pitch_range=(lo, hi),
                     tempo_scale=notes.tempo_scale)
