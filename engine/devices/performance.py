"""A performance (timestamped engine events) as a Standard MIDI File, and its offline re-render.

    write_performance("take.mid", [(frame, event), ...], sample_rate=48000, end_frame=n)
    sample_rate, events = read_performance("take.mid")
    audio = render_performance(instrument, events, total_frames)   # float32 [total_frames], offline driver

File layout (type 0, one track), chosen so any DAW opens it and times are sample-exact:
- Time base: one tick = one sample. `ticks_per_beat = sample_rate / d` with tempo
  `1e6 / d` us per beat (d = 2 at 44.1/48 kHz, i.e. 120 bpm); a text meta event
  `gansynth-performance sample_rate=48000` names the rate.
- Channel 1: the keyboard. NoteOn/NoteOff -> note_on/note_off, ControlChange -> control_change,
  PitchBend -> pitchwheel.
- Channel 16: the instrument's own controls. PadMove(x, y) -> 14-bit CC16/CC48 (x MSB/LSB)
  and CC17/CC49 (y MSB/LSB), i.e. General Purpose Controllers 1 and 2 (resolution 1/16383);
  Panic -> CC120 on channel 16.
- SetParam(name, value) -> text meta event `gansynth:SetParam <json [name, value]>`.
Other messages (other channels, sysex) are ignored when reading.
"""
from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np

from engine.instrument.events import ControlChange, NoteOff, NoteOn, PadMove, Panic, PitchBend, SetParam
from engine.util.fileio import parse_json

KEYS_CHANNEL = 0     # MIDI channel 1
CONTROL_CHANNEL = 15  # MIDI channel 16
CC_PAD_X, CC_PAD_X_LSB, CC_PAD_Y, CC_PAD_Y_LSB = 16, 48, 17, 49
CC_PANIC = 120
RATE_TEXT = "gansynth-performance sample_rate="
PARAM_TEXT = "gansynth:SetParam "
_PAD_MAX = 16383


class PerformanceFileError(Exception):
    """A performance MIDI file could not be read; the message names the file."""


def time_base(sample_rate: int) -> tuple[int, int]:
    """(ticks_per_beat, tempo_us) such that one tick is one sample, if possible."""
    for d in (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 40, 50):
        if sample_rate % d == 0 and sample_rate // d <= 32767:
            return sample_rate // d, 1_000_000 // d
    return 24000, 500_000   # approximate (sub-sample rounding) for unusual rates


def event_messages(event) -> list:
    """MIDI messages (or one text meta message) for one engine event."""
    if isinstance(event, NoteOn):
        return [mido.Message("note_on", channel=KEYS_CHANNEL, note=event.pitch, velocity=event.velocity)]
    if isinstance(event, NoteOff):
        return [mido.Message("note_off", channel=KEYS_CHANNEL, note=event.pitch, velocity=0)]
    if isinstance(event, ControlChange):
        return [mido.Message("control_change", channel=KEYS_CHANNEL, control=event.control,
                             value=event.value)]
    if isinstance(event, PitchBend):
        return [mido.Message("pitchwheel", channel=KEYS_CHANNEL, pitch=event.value)]
    if isinstance(event, PadMove):
        x, y = (int(round(min(max(v, 0.0), 1.0) * _PAD_MAX)) for v in (event.x, event.y))
        return [_cc(CC_PAD_X, x >> 7), _cc(CC_PAD_X_LSB, x & 127),
                _cc(CC_PAD_Y, y >> 7), _cc(CC_PAD_Y_LSB, y & 127)]
    if isinstance(event, Panic):
        return [_cc(CC_PANIC, 0)]
    if isinstance(event, SetParam):
        return [mido.MetaMessage("text", text=PARAM_TEXT + json.dumps([event.name, event.value]))]
    raise ValueError(f"not an engine event: {event!r}")


def _cc(control: int, value: int):
    return mido.Message("control_change", channel=CONTROL_CHANNEL, control=control, value=value)


def write_performance(path, events, sample_rate: int, end_frame: int | None = None) -> Path:
    """Write [(frame, event)] (frames from the take's start, any order) as a MIDI file."""
    path = Path(path)
    tpb, tempo = time_base(int(sample_rate))
    ticks_per_frame = tpb * 1_000_000 / (tempo * sample_rate)   # 1.0 when exact
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo),
                            mido.MetaMessage("text", text=f"{RATE_TEXT}{int(sample_rate)}")])
    last_tick = 0
    for frame, event in sorted(events, key=lambda fe: fe[0]):
        tick = int(round(frame * ticks_per_frame))
        for i, msg in enumerate(event_messages(event)):
            track.append(msg.copy(time=tick - last_tick if i == 0 else 0))
            last_tick = tick
    end_tick = int(round((end_frame or 0) * ticks_per_frame))
    track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - last_tick)))
    midi = mido.MidiFile(type=0, ticks_per_beat=tpb)
    midi.tracks.append(track)
    midi.save(path)
    return path


def read_performance(path, sample_rate: int | None = None) -> tuple[int, list]:
    """(sample_rate, [(frame, event)]) from a performance file (or any MIDI file's channel 1).

    The file's own rate (text meta) wins over `sample_rate`; one of them is needed.
    """
    path = Path(path)
    try:
        midi = mido.MidiFile(path)
    except (OSError, EOFError, ValueError, KeyError, IndexError) as e:
        raise PerformanceFileError(f"{path}: not a readable MIDI file: {e}") from None
    if midi.type == 2:
        raise PerformanceFileError(f"{path}: type 2 MIDI files are not performances")
    rate = _file_rate(midi) or sample_rate
    if not rate:
        raise PerformanceFileError(f"{path}: no sample rate in the file; pass one")
    # One tempo (performances have one); integer maths keeps hours-long takes sample-exact.
    num, den = _tempo_at(midi) * int(rate), 1_000_000 * midi.ticks_per_beat
    out, ticks, pad = [], 0, _PadState()
    for msg in mido.merge_tracks(midi.tracks):
        ticks += msg.time
        frame = (ticks * num + den // 2) // den
        if not _is_pad_cc(msg):
            pad.flush(out)
        elif pad.dirty_frame is not None and frame != pad.dirty_frame:
            pad.flush(out)
        event = _message_event(msg, pad, frame)
        if event is not None:
            out.append((frame, event))
    pad.flush(out)
    return int(rate), out


def _file_rate(midi) -> int | None:
    for track in midi.tracks:
        for msg in track:
            if msg.is_meta and msg.type == "text" and msg.text.startswith(RATE_TEXT):
                try:
                    return int(msg.text[len(RATE_TEXT):])
                except ValueError:
                    return None
    return None


def _tempo_at(midi) -> int:
    # Other files: the first tempo (the full tempo map is engine.songs.midifile's job).
    for track in midi.tracks:
        for msg in track:
            if msg.type == "set_tempo":
                return msg.tempo
    return 500_000


class _PadState:
    """Assembles 14-bit pad CCs into one PadMove per run of pad CCs at one frame."""

    def __init__(self):
        self.value = [0, 0, 0, 0]   # x msb, x lsb, y msb, y lsb
        self.dirty_frame: int | None = None

    def set(self, control: int, value: int, frame: int) -> None:
        self.value[(CC_PAD_X, CC_PAD_X_LSB, CC_PAD_Y, CC_PAD_Y_LSB).index(control)] = value
        if self.dirty_frame is None:
            self.dirty_frame = frame

    def flush(self, out: list) -> None:
        if self.dirty_frame is not None:
            x = ((self.value[0] << 7) | self.value[1]) / _PAD_MAX
            y = ((self.value[2] << 7) | self.value[3]) / _PAD_MAX
            out.append((self.dirty_frame, PadMove(x, y)))
            self.dirty_frame = None


def _is_pad_cc(msg) -> bool:
    return (msg.type == "control_change" and msg.channel == CONTROL_CHANNEL
            and msg.control in (CC_PAD_X, CC_PAD_X_LSB, CC_PAD_Y, CC_PAD_Y_LSB))


def _message_event(msg, pad: _PadState, frame: int):
    if msg.is_meta:
        if msg.type == "text" and msg.text.startswith(PARAM_TEXT):
            try:
                name, value = parse_json(msg.text[len(PARAM_TEXT):], "performance parameter", max_depth=4)
                return SetParam(str(name), value)
            except (ValueError, TypeError):  # JsonFileError is a ValueError
                return None
        return None
    channel = getattr(msg, "channel", None)
    if channel == CONTROL_CHANNEL and msg.type == "control_change":
        if msg.control in (CC_PAD_X, CC_PAD_X_LSB, CC_PAD_Y, CC_PAD_Y_LSB):
            pad.set(msg.control, msg.value, frame)
        elif msg.control == CC_PANIC:
            return Panic()
        return None
    if channel != KEYS_CHANNEL:
        return None
    if msg.type == "note_on":
        return NoteOn(msg.note, msg.velocity) if msg.velocity > 0 else NoteOff(msg.note)
    if msg.type == "note_off":
        return NoteOff(msg.note)
    if msg.type == "control_change":
        return ControlChange(msg.control, msg.value)
    if msg.type == "pitchwheel":
        return PitchBend(msg.pitch)
    return None


def render_performance(instrument, events, total_frames: int, block_size: int = 256,
                       deterministic: bool = True) -> np.ndarray:
    """Re-render [(frame, event)] through `instrument` with the offline driver: float32 [total_frames].

    Each event takes effect exactly at its frame (the live output applied it at the start
    of a block, so a take re-renders with the same timing).
    """
    from engine.instrument.offline import OfflineDriver

    rate = instrument.sample_rate
    driver = OfflineDriver(instrument, block_size=block_size, deterministic=deterministic)
    return driver.render([(frame / rate, event) for frame, event in events],
                         duration_s=int(total_frames) / rate)
