"""MIDI learn: a table of bindings from hardware controls to the instrument's controls.

    mapping = MidiMap(pad=lambda: instrument.timbre.pad)    # where the pad is now (x, y)
    midi = MidiInput(output, mapping=mapping)               # the callback asks the map first
    mapping.learn("pad_x")      # the next CC, NRPN or note (any channel) is bound to pad X
    mapping.learned.wait(5)     # a threading.Event, set when a binding was learned
    mapping.forget("pad_x")
    mapping.actions.take()      # [Action("record", 1.0), Action("corner_a", 0.25), ...]

Sources (`Binding.kind`): "cc" (0..127; a CC 0..31 whose LSB partner CC 32..63 also
arrives becomes a 14-bit control), "nrpn" (CC99/98 select a parameter 0..16383, CC6/38
carry its 7- or 14-bit value) and "note" (a key or a drum pad: note-on triggers).

Targets (`TARGETS`): the pad axes, the continuous settings (engine.instrument.params), the
four corner selections, record and panic. Pad and settings become engine events
(`PadMove`, `SetParam`, `Panic`) posted from the MIDI callback, which only translates;
corner selections and record are `Action`s the window (or `gansynth play`) takes from
`actions` on its own thread, since they are not the engine's business. A message a
binding consumes is not also played.

Thread model: the GUI thread calls learn/forget/set_bindings, which replace the table
whole (copy-on-write); the MIDI callback only reads the table and keeps its own
14-bit/NRPN state. Mapping files and presets carry `bindings_to_list` output; they are
read through `engine.util.fileio.read_json` and checked field by field (MappingError
names the file); nothing in them is ever executed.
"""
from __future__ import annotations

import collections
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from engine.instrument.events import PadMove, Panic, SetParam
from engine.instrument.params import INT_PARAMS, PARAMS
from engine.util.fileio import JsonFileError, atomic_write_text, read_json

FORMAT = "gansynth-midi-map"
VERSION = 1
KINDS = {"cc": 127, "nrpn": 16383, "note": 127}     # kind -> highest number
CORNERS = ("corner_a", "corner_b", "corner_c", "corner_d")
CONTINUOUS_PARAMS = ("attack_s", "decay_s", "sustain", "release_s", "volume", "velocity_curve",
                     "velocity_floor", "polyphony", "bend_range")
# target -> what it is: "pad", "param", "corner" (continuous actions) or "trigger" (buttons)
TARGETS: dict[str, str] = {"pad_x": "pad", "pad_y": "pad",
                           **{name: "param" for name in CONTINUOUS_PARAMS},
                           **{name: "corner" for name in CORNERS},
                           "record": "trigger", "panic": "trigger"}
# a knob's 0..1 -> lo..hi as ** curve (finer low), like the window's sliders
CURVES = {"attack_s": 3.0, "decay_s": 3.0, "release_s": 3.0, "volume": 2.0, "velocity_curve": 2.0}
NRPN_MSB, NRPN_LSB, RPN_MSB, RPN_LSB, DATA_MSB, DATA_LSB = 99, 98, 101, 100, 6, 38
_PROTOCOL_CCS = (NRPN_MSB, NRPN_LSB, RPN_MSB, RPN_LSB, DATA_MSB, DATA_LSB)
MAX_BINDINGS = 512


class MappingError(ValueError):
    """A mapping file (or a preset's mapping) that cannot be used; names the file and field."""


@dataclass(frozen=True, slots=True)
class Binding:
    target: str                 # a TARGETS name
    kind: str                   # "cc" | "nrpn" | "note"
    number: int                 # controller, NRPN parameter or note number
    channel: int | None = None  # 0..15, None = any channel

    def source(self) -> tuple:
        return (self.kind, self.number, self.channel)

    def describe(self) -> str:
        what = {"cc": "CC", "nrpn": "NRPN", "note": "note"}[self.kind]
        channel = "any channel" if self.channel is None else f"ch {self.channel + 1}"
        return f"{what} {self.number} ({channel})"


class Action(NamedTuple):
    """Something for the window or `gansynth play` to do: a corner selection (value 0..1),
    record (toggle), a preset to load (value: the path or bundled index, from OSC)."""
    name: str
    value: object


class ActionQueue:
    """Single-consumer queue of `Action`s; producers are the MIDI and OSC threads."""

    def __init__(self, maxlen: int = 256):
        self._items: collections.deque = collections.deque(maxlen=maxlen)   # oldest dropped
        self.ready = threading.Event()

    def put(self, action: Action) -> None:
        self._items.append(action)
        self.ready.set()

    def take(self) -> list[Action]:
        self.ready.clear()
        out = []
        while self._items:
            out.append(self._items.popleft())
        return out


def knob_to_value(target: str, fraction: float):
    """A control position 0..1 -> the setting's value (its range and curve)."""
    _, lo, hi = PARAMS[target]
    value = lo + (hi - lo) * min(1.0, max(0.0, fraction)) ** CURVES.get(target, 1.0)
    return int(round(value)) if target in INT_PARAMS else float(value)


class MidiMap:
    """The bindings and their matching (see the module doc); shared by window and `play`."""

    def __init__(self, bindings=(), pad=None, actions: ActionQueue | None = None):
        self._pad = pad                  # callable -> (x, y), or None: the last we sent
        self._pad_sent = (0.5, 0.5)
        self.actions = actions or ActionQueue()
        self.learned = threading.Event()
        self.last_learned: Binding | None = None
        self.learning: str | None = None
        self.consumed = 0
        self._table: dict = {}
        self._bindings: tuple[Binding, ...] = ()
        self.set_bindings(bindings)
        # MIDI callback state
        self._msb: dict = {}             # (kind, number, channel) -> last MSB
        self._fine: set = set()          # sources whose LSB arrives: the LSB sends
        self._nrpn: dict = {}            # channel -> [msb, lsb] of the selected NRPN (or None)
        self._pressed: dict = {}         # trigger sources -> above half-way

    # ---- table (GUI / main thread) ----
    @property
    def bindings(self) -> tuple[Binding, ...]:
        return self._bindings

    def set_bindings(self, bindings) -> None:
        bindings = tuple(bindings)
        for b in bindings:
            check_binding(b)
        self._bindings = bindings
        self._table = {b.source(): b for b in bindings}

    def bind(self, binding: Binding) -> None:
        """Add `binding`, replacing what its target or its source had."""
        check_binding(binding)
        kept = [b for b in self._bindings if b.target != binding.target and b.source() != binding.source()]
        self.set_bindings(kept + [binding])

    def forget(self, target: str) -> None:
        self.set_bindings(b for b in self._bindings if b.target != target)

    def binding_for(self, target: str) -> Binding | None:
        return next((b for b in self._bindings if b.target == target), None)

    def learn(self, target: str | None) -> None:
        """Bind the next control moved or key pressed to `target` (None: stop learning)."""
        if target is not None and target not in TARGETS:
            raise ValueError(f"unknown control {target!r}; known: {sorted(TARGETS)}")
        self.learned.clear()
        self.learning = target

    # ---- MIDI callback thread ----
    def handle(self, msg, post) -> bool:
        """Match a mido message; post engine events / queue actions. True when it was consumed."""
        channel = getattr(msg, "channel", None)
        if channel is None:
            return False
        kind = msg.type
        if kind == "note_on" and msg.velocity > 0:
            return self._source(("note", msg.note, channel), msg.velocity / 127.0, post, press=True)
        if kind in ("note_on", "note_off"):
            return self._find(("note", msg.note, channel)) is not None   # its note-off stays ours
        if kind != "control_change":
            return False
        control, value = msg.control, msg.value
        if control in (NRPN_MSB, NRPN_LSB):
            number = self._nrpn.get(channel) or [0, 0]
            number[control == NRPN_LSB] = value
            self._nrpn[channel] = number
            return False
        if control in (RPN_MSB, RPN_LSB):
            self._nrpn[channel] = None      # data entry now belongs to an RPN (bend range...)
            return False
        if control in (DATA_MSB, DATA_LSB) and self._nrpn.get(channel):
            msb, lsb = self._nrpn[channel]
            return self._coarse_or_fine(("nrpn", msb * 128 + lsb, channel), control == DATA_LSB, value, post)
        if 32 <= control < 64 and self._find(("cc", control, channel)) is None:
            if self._find(("cc", control - 32, channel)) is not None:      # LSB of a 14-bit pair
                return self._coarse_or_fine(("cc", control - 32, channel), True, value, post)
        if control in _PROTOCOL_CCS:
            return False
        return self._coarse_or_fine(("cc", control, channel), False, value, post)

    def _coarse_or_fine(self, source: tuple, is_lsb: bool, value: int, post) -> bool:
        if not is_lsb:
            self._msb[source] = value
            if source in self._fine and self._find(source) is not None:
                self.consumed += 1
                return True                 # the LSB that follows sends the 14-bit value
            return self._source(source, value / 127.0, post)
        self._fine.add(source)
        fraction = (self._msb.get(source, 0) * 128 + value) / 16383.0
        return self._source(source, fraction, post, learnable=False)

    def _find(self, source: tuple) -> Binding | None:
        table = self._table
        return table.get(source) or table.get(source[:2] + (None,))

    def _source(self, source: tuple, fraction: float, post, press: bool = False,
                learnable: bool = True) -> bool:
        target = self.learning
        if target is not None and learnable:
            self.learning = None
            binding = Binding(target, *source)
            self.bind(binding)
            self.last_learned = binding
            self.learned.set()
            self.consumed += 1
            return True
        binding = self._find(source)
        if binding is None:
            return False
        self.consumed += 1
        self._dispatch(binding, source, fraction, post, press)
        return True

    def _dispatch(self, binding: Binding, source: tuple, fraction: float, post, press: bool) -> None:
        target, role = binding.target, TARGETS[binding.target]
        if role == "trigger":
            down = press or fraction >= 0.5
            was_down, self._pressed[source] = self._pressed.get(source, False), down and not press
            if down and not was_down:
                if target == "panic":
                    post(Panic())
                else:
                    self.actions.put(Action(target, 1.0))
        elif role == "corner":
            self.actions.put(Action(target, fraction))
        elif role == "pad":
            x, y = self._pad() if self._pad is not None else self._pad_sent
            x, y = (fraction, y) if target == "pad_x" else (x, fraction)
            self._pad_sent = (x, y)
            post(PadMove(float(x), float(y)))
        else:
            post(SetParam(target, knob_to_value(target, fraction)))


# ---------------------------------------------------------------------------- files

def check_binding(b: Binding) -> None:
    if b.target not in TARGETS:
        raise ValueError(f"unknown control {b.target!r}")
    if b.kind not in KINDS:
        raise ValueError(f"unknown source kind {b.kind!r} (cc, nrpn or note)")
    if not 0 <= b.number <= KINDS[b.kind]:
        raise ValueError(f"{b.kind} number must be 0..{KINDS[b.kind]}, got {b.number}")
    if b.channel is not None and not 0 <= b.channel <= 15:
        raise ValueError(f"channel must be 0..15 or None, got {b.channel}")


def bindings_to_list(bindings) -> list[dict]:
    """JSON-ready: channels 1..16 (as devices show them) or null for any."""
    return [{"target": b.target, "kind": b.kind, "number": b.number,
             "channel": None if b.channel is None else b.channel + 1} for b in bindings]


def bindings_from_list(data, source: str) -> tuple[Binding, ...]:
    """Check a list from a mapping file or a preset; MappingError names `source` and the entry."""
    if not isinstance(data, list):
        raise MappingError(f"{source}: 'bindings' must be a list")
    if len(data) > MAX_BINDINGS:
        raise MappingError(f"{source}: {len(data)} bindings, at most {MAX_BINDINGS}")
    out = []
    for i, item in enumerate(data):
        where = f"{source}: bindings[{i}]"
        if not isinstance(item, dict) or set(item) - {"target", "kind", "number", "channel"}:
            raise MappingError(f"{where} must be an object with target, kind, number, channel")
        number, channel = item.get("number"), item.get("channel")
        if isinstance(number, bool) or not isinstance(number, int):
            raise MappingError(f"{where}.number must be an integer, got {number!r}")
        if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)
                                    or not 1 <= channel <= 16):
            raise MappingError(f"{where}.channel must be 1..16 or null, got {channel!r}")
        binding = Binding(item.get("target"), item.get("kind"), number,
                          None if channel is None else channel - 1)
        try:
            check_binding(binding)
        except (ValueError, TypeError) as e:
            raise MappingError(f"{where}: {e}") from None
        out.append(binding)
    return tuple(out)


def mapping_to_json(bindings) -> str:
    return json.dumps({"format": FORMAT, "version": VERSION, "bindings": bindings_to_list(bindings)},
                      indent=1)


def mapping_from_json_data(data, source: str) -> tuple[Binding, ...]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MappingError(f"{source}: not a MIDI mapping (field 'format' must be {FORMAT!r})")
    if data.get("version") != VERSION:
        raise MappingError(f"{source}: field 'version' must be {VERSION}, got {data.get('version')!r}")
    return bindings_from_list(data.get("bindings", []), source)


def save_mapping(path, bindings) -> Path:
    return atomic_write_text(Path(os.path.expanduser(str(path))), mapping_to_json(bindings))


def load_mapping(path) -> tuple[Binding, ...]:
    """Read a mapping file (`gansynth play --midi-map`); MappingError names the file."""
    path = Path(os.path.expanduser(str(path)))
    try:
        data = read_json(path, max_bytes=1 << 20)
    except JsonFileError as e:
        raise MappingError(f"{e} (a MIDI mapping)") from None
    return mapping_from_json_data(data, str(path))
