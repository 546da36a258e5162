"""MIDI keyboards (and other programs) into the instrument, through mido + python-rtmidi.

    midi = MidiInput(output, port_name="Keystation", channel=None)  # target: anything with .post
    midi.start()          # False when there is no MIDI backend: see midi.last_error
    midi.list_ports()     # input port names
    midi.open("Keystation 49")   # by name (exact, without ALSA's client:port numbers, or a
                                 # unique substring); reconnects by name after unplugging
    midi.connected_name, midi.api, midi.messages, midi.last_error
    midi.close()

The rtmidi callback thread only translates messages into engine events and posts them
(`message_to_event`; learned controls first through `mapping`, an
`engine.devices.midimap.MidiMap`); note-on with velocity 0 is a note-off. A rescan thread (every
`rescan_s`) notices a port that vanished (unplugged) and reopens it when its name comes
back. A virtual input port ("GANSynth Instrument In", client "GANSynth") lets a DAW or a
sequencer play the instrument.

On JACK, beside our virtual port, a port to listen to is wired into the virtual port (a JACK
connection through JACK-Client, which releases the GIL) rather than opened by a new rtmidi
client: rtmidi activates its JACK client holding the GIL, and a running audio callback, which
needs the GIL, then stalls the JACK graph for seconds (once it hung).

Backends: rtmidi's ALSA sequencer first, then JACK MIDI (when a JACK server runs), then
the platform's own (CoreMIDI, Windows MM). With none of them there is no MIDI: `start()`
returns False with a clear `last_error`, and everything else keeps working.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading

import mido

from engine.devices.jackthreads import hook_jack_threads
from engine.instrument.events import ControlChange, NoteOff, NoteOn, PitchBend

VIRTUAL_PORT_NAME = "GANSynth Instrument In"
CLIENT_NAME = "GANSynth"
API_ORDER = ("LINUX_ALSA", "UNIX_JACK", "MACOSX_CORE", "WINDOWS_MM")
RESCAN_S = 1.0
_ALSA_NUMBERS = re.compile(r"\s+\d+:\d+$")


class MidiUnavailable(Exception):
    """No MIDI backend works; the message says what was tried."""


def message_to_event(msg, channel: int | None = None):
    """The engine event for a mido message, or None (other channel, unhandled type).

    `channel`: 0..15 to listen to one channel, None for all.
    """
    if getattr(msg, "channel", None) is None:
        return None
    if channel is not None and msg.channel != channel:
        return None
    kind = msg.type
    if kind == "note_on":
        return NoteOn(msg.note, msg.velocity) if msg.velocity > 0 else NoteOff(msg.note)
    if kind == "note_off":
        return NoteOff(msg.note)
    if kind == "control_change":
        return ControlChange(msg.control, msg.value)
    if kind == "pitchwheel":
        return PitchBend(msg.pitch)
    return None


def open_backend(api: str | None = None):
    """A working mido rtmidi backend (first of API_ORDER, or `api`); MidiUnavailable otherwise."""
    try:
        import rtmidi
    except ImportError as e:
        raise MidiUnavailable(f"python-rtmidi is not installed ({e})") from None
    hook_jack_threads()   # its bundled libjack, before it makes a JACK client (engine.devices.jackthreads)
    compiled = {name for name in API_ORDER
                if getattr(rtmidi, f"API_{name}", None) in rtmidi.get_compiled_api()}
    tried = []
    for name in ([api] if api else API_ORDER):
        if name not in compiled:
            if api:
                tried.append(f"{name}: not compiled into python-rtmidi")
            continue
        try:
            with quiet_stderr():          # ALSA/JACK print their own complaints on failure
                backend = mido.Backend(f"mido.backends.rtmidi/{name}", load=True)
                backend.get_input_names()   # creates a client: fails without the system service
            return backend
        except Exception as e:  # rtmidi raises SystemError/RuntimeError subclasses
            tried.append(f"{name}: {str(e).strip().rstrip('.') or type(e).__name__}")
    hint = "no ALSA sequencer (/dev/snd/seq) and no JACK server running"
    raise MidiUnavailable(f"no MIDI backend available ({hint}); tried " + "; ".join(tried))


@contextlib.contextmanager
def quiet_stderr():
    """Silence C libraries' stderr (fd 2) for a moment; Python exceptions still carry the reason."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def backend_api(backend) -> str:
    api = getattr(backend, "api", None)
    if api:
        return api
    return backend.name.split("/", 1)[1] if "/" in backend.name else backend.name


def match_port(wanted: str, names: list[str]) -> str | None:
    """The port called `wanted`: exact, then without ALSA's client:port numbers, then a unique
    case-insensitive substring."""
    if wanted in names:
        return wanted
    bare = _ALSA_NUMBERS.sub("", wanted)
    for name in names:
        if _ALSA_NUMBERS.sub("", name) == bare:
            return name
    partial = [n for n in names if bare.lower() in n.lower()]
    return partial[0] if len(partial) == 1 else None


class MidiInput:
    """Routes MIDI input ports to `target.post(event)` (an Instrument or an audio output)."""

    def __init__(self, target, port_name: str | None = None, channel: int | None = None,
                 virtual: bool = True, virtual_name: str = VIRTUAL_PORT_NAME,
                 rescan_s: float = RESCAN_S, backend=None, api: str | None = None, mapping=None):
        if channel is not None and not 0 <= int(channel) <= 15:
            raise ValueError(f"MIDI channel must be 0..15 (1..16 on the device) or None, not {channel!r}")
        self.target = target
        self.mapping = mapping                  # engine.devices.midimap.MidiMap: asked first
        self.port_name = port_name or None      # the port we want (reconnect by this name)
        self.channel = None if channel is None else int(channel)
        self.virtual = virtual
        self.virtual_name = virtual_name
        self.rescan_s = rescan_s
        self.api = ""
        self.last_error = ""
        self.connected_name: str | None = None
        self.messages = 0            # messages received (MIDI activity)
        self.events_posted = 0
        self.callback_errors = 0
        self._backend = backend
        self._api_wanted = api
        self._port = None
        self._virtual_port = None
        self._scanner = None                    # rtmidi client used only to list ports
        self._patcher = None                    # JACK: a JACK-Client client that wires ports (see _connect)
        self._patched: tuple[str, str] | None = None   # (source, our virtual port) wired now
        self._lock = threading.RLock()          # open/close/rescan (never the callback)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- callback thread ----
    def _on_message(self, msg) -> None:
        self.messages += 1
        try:
            mapping = self.mapping
            if mapping is not None and mapping.handle(msg, self.target.post):
                return                            # a learned control: translated by the map
            event = message_to_event(msg, self.channel)
            if event is not None:
                self.target.post(event)
                self.events_posted += 1
        except Exception:  # a bad message must not kill rtmidi's thread
            self.callback_errors += 1

    # ---- control (GUI / main thread) ----
    @property
    def available(self) -> bool:
        return self._backend is not None

    def start(self) -> bool:
        """Pick a backend, open the virtual port and the wanted port, start rescanning."""
        with self._lock:
            if self._backend is None:
                try:
                    self._backend = open_backend(self._api_wanted)
                except MidiUnavailable as e:
                    self.last_error = f"{e}; use the on-screen keyboard"
                    return False
            self.api = backend_api(self._backend)
            if self.virtual and self._virtual_port is None:
                self._open_virtual()
            if self.port_name and self.connected_name is None:
                self._connect()
        if self.rescan_s and (self._thread is None or not self._thread.is_alive()):
            self._stop.clear()
            self._thread = threading.Thread(target=self._rescan_loop, name="midi-rescan", daemon=True)
            self._thread.start()
        return True

    def list_ports(self) -> list[str]:
        """Input ports other programs and devices offer (not our own virtual port)."""
        if self._backend is None:
            return []
        try:
            names = self._port_names()
        except Exception as e:
            self._scanner = None
            self.last_error = f"cannot list MIDI ports ({self.api}): {e}"
            return []
        return [n for n in names if not n.endswith(self.virtual_name)]

    def _port_names(self) -> list[str]:
        # mido's get_input_names() makes a new rtmidi client per call, and on JACK every new
        # client stalls the audio graph (measured: >1 s on the dummy driver), while every
        # extra client costs a context switch per period. So list through a client we
        # already have (the virtual or the connected port); else, on JACK, through a client
        # that is never activated (rtmidi's scanner would be: on a plain jackd its thread,
        # not realtime, was late for the graph 9 times in 30 s of the window playing, an
        # xrun each); else one long-lived rtmidi scanner.
        for port in (self._virtual_port, self._port):
            rt = getattr(port, "_rt", None)         # mido's rtmidi ports keep their rtmidi.MidiIn
            if rt is not None:
                return rt.get_ports()
        if self.api == "UNIX_JACK" and (client := self._jack_client()) is not None:
            return [p.name for p in client.get_ports(is_midi=True, is_output=True)]
        if self._scanner is None and getattr(self._backend, "name", "").startswith("mido.backends.rtmidi"):
            import rtmidi

            self._scanner = rtmidi.MidiIn(rtapi=getattr(rtmidi, f"API_{self.api}"),
                                          name=f"{CLIENT_NAME} scan")
        if self._scanner is not None:
            return self._scanner.get_ports()
        return self._backend.get_input_names()

    def open(self, name: str | None) -> bool:
        """Listen to port `name` (None or "" = none); True if connected now.

        If it is not there now, it is opened as soon as a rescan sees it.
        """
        with self._lock:
            self.port_name = name or None
            self._disconnect()
            self.last_error = ""
            if self.port_name is None:
                return True
            if self._backend is None and not self.start():
                return False
            return self._connect()

    def set_channel(self, channel: int | None) -> None:
        if channel is not None and not 0 <= int(channel) <= 15:
            raise ValueError(f"MIDI channel must be 0..15 or None, not {channel!r}")
        self.channel = None if channel is None else int(channel)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None
        with self._lock:
            self._disconnect()
            if self._virtual_port is not None:
                _close_quietly(self._virtual_port)
                self._virtual_port = None
            if self._scanner is not None:
                try:
                    self._scanner.delete()
                except Exception:
                    pass
                self._scanner = None
            if self._patcher is not None:
                with contextlib.suppress(Exception):
                    self._patcher.close()
                self._patcher = None

    def rescan(self) -> None:
        """One rescan pass: drop a vanished port, reopen the wanted one when it is back."""
        with self._lock:
            if self._backend is None:
                return
            names = self.list_ports()
            if self.connected_name is not None and self.connected_name not in names:
                gone = self.connected_name
                self._disconnect()
                self.last_error = f"MIDI input {gone!r} disconnected; waiting for it to come back"
            if self.connected_name is None and self.port_name and match_port(self.port_name, names):
                self._connect(names)

    def wait_connected(self, connected: bool = True, timeout: float = 5.0) -> bool:
        """Block until the wanted port is (or is no longer) connected (tests, scripts)."""
        with self._changed:
            return self._changed.wait_for(lambda: (self.connected_name is not None) == connected,
                                          timeout)

    def status(self) -> dict:
        return {"api": self.api, "port": self.connected_name, "wanted": self.port_name,
                "virtual": self._virtual_port is not None and self.virtual_name,
                "channel": self.channel, "messages": self.messages, "last_error": self.last_error}

    # ---- internals (lock held) ----
    def _open_virtual(self) -> None:
        try:
            self._virtual_port = self._backend.open_input(self.virtual_name, client_name=CLIENT_NAME,
                                                          callback=self._on_message)
        except Exception as e:
            self.last_error = f"cannot create the virtual MIDI port {self.virtual_name!r}: {e}"

    def _connect(self, names: list[str] | None = None) -> bool:
        names = self.list_ports() if names is None else names
        name = match_port(self.port_name, names)
        if name is None:
            shown = ", ".join(repr(n) for n in names) or "none"
            self.last_error = (f"MIDI input {self.port_name!r} not found (ports: {shown}); "
                               f"waiting for it")
            return False
        try:
            sink = self._jack_sink()
            if sink is not None:
                self._patcher.connect(name, sink)
                self._patched = (name, sink)
            else:
                self._port = self._backend.open_input(name, callback=self._on_message)
        except Exception as e:
            self.last_error = f"cannot open MIDI input {name!r}: {e}"
            return False
        self.connected_name = name
        self.last_error = ""
        self._notify()
        return True

    def _jack_sink(self) -> str | None:
        """On JACK with our virtual port open: its JACK name, which a port to listen to is wired
        into (a connection made through JACK-Client, whose C calls release the GIL). A new
        rtmidi client per port would activate holding the GIL, and JACK waits for a cycle the
        audio callback cannot finish without the GIL: seconds of stall, once a hang. None: open
        the port through rtmidi (other APIs, no virtual port, or not found once)."""
        if self.api != "UNIX_JACK" or self._virtual_port is None:
            return None
        client = self._jack_client()
        try:
            ports = client.get_ports(f"^{CLIENT_NAME}(-[0-9]+)?:{re.escape(self.virtual_name)}$",
                                     is_midi=True, is_input=True) if client is not None else []
        except Exception:      # the server went away: rtmidi's way
            return None
        return ports[0].name if len(ports) == 1 else None   # two instruments running: ambiguous

    def _jack_client(self):
        """Our JACK-Client client for listing and wiring ports, never activated (so it takes no
        part in the server's cycles); None without JACK-Client or a server."""
        if self._patcher is None:
            try:
                import jack

                self._patcher = jack.Client(f"{CLIENT_NAME} patch", no_start_server=True)
            except Exception:
                return None
        return self._patcher

    def _disconnect(self) -> None:
        if self._patched is not None:
            with contextlib.suppress(Exception):   # the source may be gone (unplugged) with its connection
                self._patcher.disconnect(*self._patched)
            self._patched = None
        if self._port is not None:
            _close_quietly(self._port)
            self._port = None
        if self.connected_name is not None:
            self.connected_name = None
            self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _rescan_loop(self) -> None:
        while not self._stop.wait(self.rescan_s):
            try:
                self.rescan()
            except Exception as e:  # a backend that died (JACK server gone): report, keep going
                self.last_error = f"MIDI rescan failed ({self.api}): {e}"


def _close_quietly(port) -> None:
    try:
        port.close()
    except Exception:
        pass


def list_input_ports(api: str | None = None) -> tuple[list[str], str, str]:
    """(input port names, backend api, error message) without keeping anything open."""
    try:
        backend = open_backend(api)
    except MidiUnavailable as e:
        return [], "", str(e)
    try:
        return backend.get_input_names(), backend_api(backend), ""
    except Exception as e:
        return [], backend_api(backend), f"cannot list MIDI ports: {e}"
