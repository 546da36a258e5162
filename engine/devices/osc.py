"""OSC control (python-osc's packet parser, our own UDP socket): tablets and patchers play the
instrument.

    server = OscServer(instrument_or_output, port=9000)     # host "127.0.0.1" unless opened
    server.start()                 # OSError (port taken...) with a clear message
    server.stats()                 # received, handled, ignored, flood_dropped, last_ignored
    server.actions.take()          # preset loads, for the main/GUI thread
    server.close()

Addresses (`ADDRESSES`, printed by `gansynth play --osc-help`): note on/off, the pad,
every setting by name (`/param/<name>`, engine.instrument.params.PARAMS), preset load and
panic. The receiving thread only translates messages into the engine events the MIDI
path posts (`NoteOn`, `PadMove`, `SetParam`, `Panic`...); a preset load is an `Action`
for the owner's thread. Bad messages (unparseable packets, unknown addresses, wrong
types, out-of-range values) are ignored and counted with the reason; more than
`max_per_s` messages a second (a flood) are dropped and counted. Nothing in a packet is
ever executed; the socket binds 127.0.0.1 unless the user names another host.
"""
from __future__ import annotations

import collections
import socket
import threading
import time

from engine.devices.midimap import Action, ActionQueue
from engine.instrument.events import NoteOff, NoteOn, PadMove, Panic, SetParam
from engine.instrument.params import PARAMS, check_param

DEFAULT_HOST = "127.0.0.1"
MAX_PER_S = 2000            # messages a second before a flood is dropped (burst the same)
MAX_PACKET = 65536



def _param_help(spec: tuple) -> tuple[str, str]:
    """(OSC type tag, what values) of a PARAMS entry."""
    if len(spec) == 2 and isinstance(spec[0], bool):
        return "T|F|i", "true/false (or 1/0)"
    if len(spec) == 2:
        return "s", "one of " + ", ".join(map(str, spec[1]))
    return "f", f"{spec[1]}..{spec[2]}"


ADDRESSES: tuple[tuple[str, str, str], ...] = (
    ("/note/on", "i [i]", "pitch 0..127, velocity 0..127 (default 100; 0 = note off)"),
    ("/note/off", "i", "pitch 0..127"),
    ("/on", "i [i]", "same as /note/on (NSynth Super)"),
    ("/off", "i", "same as /note/off"),
    ("/pad", "f f", "pad position x, y in 0..1 (x right, y up): a TouchOSC XY pad"),
    ("/pad/x", "f", "pad x in 0..1"),
    ("/pad/y", "f", "pad y in 0..1"),
    *((f"/param/{name}", *_param_help(spec)) for name, spec in PARAMS.items()),
    ("/volume", "f", "same as /param/volume (0..1)"),
    ("/preset/load", "s|i", "a preset file path, or the number of a bundled preset (0..)"),
    ("/panic", "", "all notes and sound off"),
)


def address_help() -> str:
    """The address list as text (`gansynth play --osc-help`, README)."""
    width = max(len(a) for a, _, _ in ADDRESSES)
    lines = ["OSC addresses (UDP; ints may be sent as whole floats, as TouchOSC does):"]
    lines += [f"  {a:<{width}}  {t:<7} {d}" for a, t, d in ADDRESSES]
    return "\n".join(lines)


class BadMessage(ValueError):
    """A message we ignore; the text says why."""


def _number(args, i: int, what: str) -> float:
    if i >= len(args):
        raise BadMessage(f"missing {what}")
    v = args[i]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise BadMessage(f"{what} must be a number, got {v!r}")
    return float(v)


def _whole(args, i: int, what: str, lo: int, hi: int) -> int:
    v = _number(args, i, what)
    if v != int(v) or not lo <= v <= hi:
        raise BadMessage(f"{what} must be a whole number in {lo}..{hi}, got {args[i]!r}")
    return int(v)


def _unit(args, i: int, what: str) -> float:
    v = _number(args, i, what)
    if not 0.0 <= v <= 1.0:
        raise BadMessage(f"{what} must lie in 0..1, got {v!r}")
    return v


def message_to_events(address: str, args, pad) -> list:
    """Engine events or `Action`s for one OSC message; BadMessage says why not.

    `pad`: (x, y) now, for the one-axis addresses."""
    if address in ("/note/on", "/on"):
        pitch = _whole(args, 0, "pitch", 0, 127)
        velocity = _whole(args, 1, "velocity", 0, 127) if len(args) > 1 else 100
        _no_more(args, 2)
        return [NoteOn(pitch, velocity) if velocity else NoteOff(pitch)]
    if address in ("/note/off", "/off"):
        pitch = _whole(args, 0, "pitch", 0, 127)
        _no_more(args, 2)           # a note-off velocity is allowed and ignored
        return [NoteOff(pitch)]
    if address == "/pad":
        _no_more(args, 2)
        return [PadMove(_unit(args, 0, "x"), _unit(args, 1, "y"))]
    if address in ("/pad/x", "/pad/y"):
        _no_more(args, 1)
        v = _unit(args, 0, address[-1])
        return [PadMove(v, pad[1]) if address == "/pad/x" else PadMove(pad[0], v)]
    if address == "/panic":
        _no_more(args, 0)
        return [Panic()]
    if address == "/preset/load":
        _no_more(args, 1)
        if not args or isinstance(args[0], bool) or not isinstance(args[0], (str, int, float)):
            raise BadMessage("expects a path (string) or a bundled preset number")
        value = args[0] if isinstance(args[0], str) else _whole(args, 0, "preset number", 0, 999)
        return [Action("preset", value)]
    name = "volume" if address == "/volume" else address[len("/param/"):] \
        if address.startswith("/param/") else None
    if name is None or name not in PARAMS:
        raise BadMessage("unknown address")
    _no_more(args, 1)
    if not args:
        raise BadMessage("missing value")
    value = args[0]
    if isinstance(PARAMS[name][0], bool) and value in (0, 1) and not isinstance(value, float):
        value = bool(value)
    try:
        return [SetParam(name, check_param(name, value))]
    except ValueError as e:
        raise BadMessage(str(e)) from None


def _no_more(args, n: int) -> None:
    if len(args) > n:
        raise BadMessage(f"expects at most {n} argument(s), got {len(args)}")


class OscServer:
    """A UDP socket and one thread that turns OSC messages into `target.post(event)`."""

    def __init__(self, target, port: int, host: str = DEFAULT_HOST, pad=None,
                 actions: ActionQueue | None = None, max_per_s: float = MAX_PER_S,
                 clock=time.monotonic):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"OSC port must be 0..65535, got {port!r}")
        self.target = target
        self.host, self.port = host, port
        self.actions = actions or ActionQueue()
        self._pad = pad or (lambda: getattr(getattr(target, "instrument", target), "timbre").pad)
        self.max_per_s = float(max_per_s)
        self._clock = clock
        self._tokens, self._refilled = self.max_per_s, clock()
        self.received = self.handled = self.ignored = self.flood_dropped = 0
        self.reasons: collections.Counter = collections.Counter()
        self.last_ignored = ""
        self._counted = threading.Condition()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> "OscServer":
        """Bind and start listening; OSError names the address when it cannot."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise OSError(f"cannot listen for OSC on {self.host}:{self.port} ({e.strerror or e})") from None
        sock.settimeout(0.2)            # the thread checks for close() this often
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="osc-in", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stats(self) -> dict:
        return {"port": self.port, "host": self.host, "received": self.received,
                "handled": self.handled, "ignored": self.ignored,
                "flood_dropped": self.flood_dropped, "reasons": dict(self.reasons),
                "last_ignored": self.last_ignored}

    def wait_counted(self, messages: int, timeout: float = 5.0) -> bool:
        """Until `messages` were handled, ignored or dropped in all (tests, scripts)."""
        with self._counted:
            return self._counted.wait_for(
                lambda: self.handled + self.ignored + self.flood_dropped >= messages, timeout)

    # ---- the receiving thread ----
    def _loop(self) -> None:
        from pythonosc.osc_packet import OscPacket

        while not self._stop.is_set():
            try:
                data, sender = self._sock.recvfrom(MAX_PACKET)
            except (socket.timeout, OSError):
                continue
            try:
                messages = [m.message for m in OscPacket(data).messages]
            except Exception as e:      # ParseError, and python-osc raises others on odd packets
                self._ignore(f"packet from {sender[0]}:{sender[1]}: not OSC ({e})", "not OSC")
                continue
            for message in messages:
                self._one(message, sender)

    def _one(self, message, sender) -> None:
        self.received += 1
        if not self._take_token():
            with self._counted:
                self.flood_dropped += 1
                self._counted.notify_all()
            return
        address = getattr(message, "address", "?")
        try:
            for item in message_to_events(address, list(message.params), self._pad()):
                if isinstance(item, Action):
                    self.actions.put(item)
                else:
                    self.target.post(item)
        except (BadMessage, ValueError) as e:
            self._ignore(f"OSC {address} from {sender[0]}:{sender[1]}: {e}",
                         "unknown address" if str(e) == "unknown address" else "bad arguments")
            return
        with self._counted:
            self.handled += 1
            self._counted.notify_all()

    def _ignore(self, why: str, reason: str) -> None:
        with self._counted:
            self.ignored += 1
            self.reasons[reason] += 1
            self.last_ignored = why[:300]
            self._counted.notify_all()

    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(self.max_per_s, self._tokens + (now - self._refilled) * self.max_per_s)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
