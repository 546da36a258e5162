"""Immutable engine events: the only things other threads hand to the instrument.

Every event is a small frozen dataclass. Producers (GUI thread, MIDI callback,
offline driver) call `Instrument.post(event)`; the audio thread consumes them at
the start of its next block. Values use MIDI ranges unless stated otherwise.

    NoteOn(60, 100)            # pitch 0..127, velocity 1..127 (0 is a NoteOff)
    NoteOff(60)
    ControlChange(64, 127)     # sustain pedal down (control 0..127, value 0..127)
    PitchBend(8191)            # -8192..8191, 0 = centre
    PadMove(0.25, 0.75)        # pad position, x and y in 0..1
    Panic()                    # All Notes Off + All Sound Off + reset controllers
    SetParam("attack_s", 0.5)  # an instrument setting, see engine.instrument.params.PARAMS
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

# MIDI controller numbers the engine understands.
CC_MOD_WHEEL = 1
CC_VOLUME = 7
CC_EXPRESSION = 11
CC_SUSTAIN = 64
CC_ALL_SOUND_OFF = 120
CC_RESET_CONTROLLERS = 121
CC_ALL_NOTES_OFF = 123


@dataclass(frozen=True, slots=True)
class NoteOn:
    pitch: int
    velocity: int = 100


@dataclass(frozen=True, slots=True)
class NoteOff:
    pitch: int


@dataclass(frozen=True, slots=True)
class ControlChange:
    control: int
    value: int


@dataclass(frozen=True, slots=True)
class PitchBend:
    value: int  # -8192..8191


@dataclass(frozen=True, slots=True)
class PadMove:
    x: float  # 0..1, left to right
    y: float  # 0..1, bottom to top


@dataclass(frozen=True, slots=True)
class Panic:
    pass


@dataclass(frozen=True, slots=True)
class SetParam:
    name: str
    value: object


Event = Union[NoteOn, NoteOff, ControlChange, PitchBend, PadMove, Panic, SetParam]
EVENT_TYPES = (NoteOn, NoteOff, ControlChange, PitchBend, PadMove, Panic, SetParam)


def validate(event) -> Event:
    """Check types and ranges of an event from outside; raise ValueError naming the field.

    NoteOn with velocity 0 becomes NoteOff (MIDI convention).
    """
    if not isinstance(event, EVENT_TYPES):
        raise ValueError(f"not an engine event: {event!r}")
    if isinstance(event, (NoteOn, NoteOff)):
        _int_in(event, "pitch", event.pitch, 0, 127)
        if isinstance(event, NoteOn):
            _int_in(event, "velocity", event.velocity, 0, 127)
            if event.velocity == 0:
                return NoteOff(event.pitch)
    elif isinstance(event, ControlChange):
        _int_in(event, "control", event.control, 0, 127)
        _int_in(event, "value", event.value, 0, 127)
    elif isinstance(event, PitchBend):
        _int_in(event, "value", event.value, -8192, 8191)
    elif isinstance(event, PadMove):
        for name in ("x", "y"):
            v = getattr(event, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{type(event).__name__}.{name} must be a number in 0..1, got {v!r}")
    elif isinstance(event, SetParam) and not isinstance(event.name, str):
        raise ValueError(f"SetParam.name must be a string, got {event.name!r}")
    return event


def _int_in(event, field: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        import numpy as np  # numpy integers are fine too

        if not (isinstance(value, np.integer) and lo <= int(value) <= hi):
            raise ValueError(f"{type(event).__name__}.{field} must be an integer in {lo}..{hi}, got {value!r}")
