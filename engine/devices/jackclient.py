"""The instrument as a native JACK client: audio outs and a MIDI in on one client.

    out = AudioOutput(instrument, device=JACK_CLIENT_DEVICE)   # "JACK client" in the device lists
    out.open()        # ports GANSynth:out_1, out_2 (wired to the playback ports) and GANSynth:midi_in

Why a second path beside sounddevice + rtmidi: on JACK those are two clients (PortAudio's
and rtmidi's), which JACK runs side by side in a cycle, so a note-on usually reaches the
engine just after that cycle's block was rendered: one block more latency (measured with
benchmarks.live: 13.8 ms median from a JACK MIDI note-on to the DAC against a target of
10.7). On one client JACK runs us after whatever plays into `midi_in` (a connection orders
clients), and the note sounds in the block of the very cycle that delivers it.

`JackStream` looks like the sounddevice stream `AudioOutput` drives: it calls
`callback(outdata, frames, time_info, status)` once per period from JACK's process thread
(after posting that period's MIDI events), `finished_callback()` when the server shuts the
client down, and has `cpu_load`, `latency`, `start`, `abort`, `close`. So the watchdog, the
clock fallback, reopen, meters and the recorder are `AudioOutput`'s own. The process
callback translates MIDI (`message_to_event`) and posts notes and pitch bends (an append to
the instrument's queue); other events (the mod wheel moves the timbre, which takes a lock and
wakes the renderer) go to a small thread that posts them. Then it calls the audio callback
and copies its block into the port buffers. A period after which the server counted an
xrun (JACK's xrun callback: ours is C, see below) is reported to the audio callback as an
underflow, as PortAudio does for its JACK streams.

Given a ring (`ring=`, engine/devices/ahead.py: `AudioOutput(ahead >= 1)`, the default), the
process callback is C instead (`gs_jack_process` in engine/devices/aheadring.c): it copies
the period's MIDI events into a small ring and the audio ring into the out ports, never
taking the GIL. The ring's producer drains the MIDI (`_drain_midi`, the same translation)
before it renders each block, so a note sounds `ahead` periods after the cycle it came in.
"""
from __future__ import annotations

import contextlib
import queue
import threading

import mido
import numpy as np

from engine.devices.midi_input import CLIENT_NAME, message_to_event
from engine.instrument.events import NoteOff, NoteOn, PitchBend

JACK_CLIENT_DEVICE = "JACK client"
PARK_TIMEOUT_S = 0.5  # abort() waits this long at most for the process callback to park
MAX_PERIOD = 8192     # frames the block buffer holds without reallocating
JACK_CLIENT_HOSTAPI = "JACK (native client)"


class JackUnavailable(Exception):
    """No JACK library or no running server; the message says which."""


class _Status:
    """The part of sounddevice's CallbackFlags the audio callback reads."""

    __slots__ = ("output_underflow",)

    def __init__(self, underflow: bool):
        self.output_underflow = underflow


_OK, _UNDERFLOW = _Status(False), _Status(True)


def _jack():
    try:
        import jack
    except (ImportError, OSError) as e:     # OSError: the JACK-Client package without libjack
        raise JackUnavailable(f"JACK is not available ({e})") from None
    return jack


@contextlib.contextmanager
def _probe_client():
    """(jack module, a short-lived client of the running server); JackUnavailable without one."""
    jack = _jack()
    try:
        client = jack.Client(f"{CLIENT_NAME} probe", no_start_server=True)
    except jack.JackOpenError as e:
        raise JackUnavailable(f"no JACK server running ({e})") from None
    try:
        yield jack, client
    finally:
        client.close(ignore_errors=True)


def server_sample_rate() -> int:
    """The running server's rate; JackUnavailable without one."""
    with _probe_client() as (_, client):
        return int(client.samplerate)


def playback_latency_ms() -> float:
    """JACK's playback latency of the server's first physical output in ms (0 if unknown): one
    measure for every path to the same DAC (PortAudio reports its own figure for its streams)."""
    with _probe_client() as (jack, client):
        ports = client.get_ports(is_audio=True, is_input=True, is_physical=True)
        frames = _playback_latency_frames(jack, ports[0]) if ports else 0
        return 1000.0 * frames / float(client.samplerate)


class JackStream:
    """One JACK client: `channels` audio outs (the same signal) and one MIDI in.

    `post(event)` receives the MIDI in's events (channel `midi_channel`, None = all) from the
    process thread, before that period's `callback`; with a `ring`, from its producer before
    it renders the next block."""

    def __init__(self, sample_rate: int, channels: int, callback, finished_callback, post,
                 midi_channel: int | None = None, name: str = CLIENT_NAME, on_server_lost=None, ring=None):
        from engine.devices.ahead import ring_library

        jack = _jack()
        self._jack = jack
        ffi, lib = self._ffi, self._clib = ring_library()   # the C callbacks (before a client to close)
        try:
            self.client = jack.Client(name, no_start_server=True)
        except jack.JackOpenError as e:
            raise JackUnavailable(f"cannot open a JACK client: no JACK server running ({e})") from None
        client = self.client
        if int(client.samplerate) != int(sample_rate):
            client.close(ignore_errors=True)
            raise JackUnavailable(f"the JACK server runs at {client.samplerate} Hz, the instrument at "
                                  f"{sample_rate} Hz")
        self.outs = [client.outports.register(f"out_{i + 1}") for i in range(channels)]
        self.midi_in = client.midi_inports.register("midi_in")
        self.callback, self.finished_callback, self.post = callback, finished_callback, post
        self.on_server_lost = on_server_lost
        self.midi_channel = midi_channel
        self._later: queue.SimpleQueue = queue.SimpleQueue()   # events posted off the process thread
        self._poster: threading.Thread | None = None
        # the Python callback's block (rendering ahead, the C callback plays the ring instead)
        frames = max(int(client.blocksize), MAX_PERIOD)
        self._buffer = np.zeros((frames, channels), np.float32) if ring is None else None
        self._midi_count = 0          # MIDI messages received on midi_in (written by the process thread)
        self._active = False
        self._closing = False         # set before deactivation: the process callback only parks
        self._parked = threading.Event()
        self._playback = []
        # At most the process and shutdown callbacks are Python. JACK calls the others on its
        # notification thread and, for some, waits for the answer: with the GIL held elsewhere
        # in a JACK call (rtmidi opening its client) a Python one deadlocked (observed). So the
        # xrun callback is C: it counts the server's xruns (engine/devices/aheadring.c).
        self._server_xruns = ffi.new("int64_t *")
        self._seen_xruns = 0
        if jack._lib.jack_set_xrun_callback(client._ptr, self._theirs("JackXRunCallback", ffi.addressof(
                lib, "gs_jack_xrun")), self._theirs("void *", self._server_xruns)) != 0:
            client.close(ignore_errors=True)
            raise JackUnavailable("JACK refused the xrun callback")
        self.ring, self._cj = ring, None
        if ring is None:
            client.set_process_callback(self._process)
        else:
            self._bind_ring(ring)
        client.set_shutdown_callback(self._shutdown)

    def _ours(self, pointer):
        """A pointer of JACK-Client's FFI as one of ours."""
        return self._ffi.cast("void *", int(self._jack._ffi.cast("uintptr_t", pointer)))

    def _theirs(self, kind: str, pointer):
        """One of ours as JACK-Client's `kind`."""
        return self._jack._ffi.cast(kind, int(self._ffi.cast("uintptr_t", pointer)))

    def _bind_ring(self, ring) -> None:
        """Make the C process callback ours, playing `ring` (mono) and queueing MIDI for its producer."""
        jack, ffi, lib = self._jack, self._ffi, self._clib
        if lib.gs_jack_bind(str(jack._libname).encode()) != 0:
            self.client.close(ignore_errors=True)
            raise JackUnavailable(f"cannot find libjack's functions in {jack._libname}")
        cj = ffi.new("gs_jack *")
        cj.ring, cj.n_outs, cj.server_xruns = ring.ring, len(self.outs), self._server_xruns
        for i, port in enumerate(self.outs):
            cj.outs[i] = self._ours(port._ptr)
        cj.midi_in = self._ours(self.midi_in._ptr)
        process = self._theirs("JackProcessCallback", ffi.addressof(lib, "gs_jack_process"))
        if jack._lib.jack_set_process_callback(self.client._ptr, process, self._theirs("void *", cj)) != 0:
            self.client.close(ignore_errors=True)
            raise JackUnavailable("JACK refused the process callback")
        self._cj = cj
        self._midi_slot = ffi.new("uint8_t[4]")
        ring.before_block = self._drain_midi

    def _drain_midi(self) -> None:
        """The ring's producer, before each block: post what the MIDI in received."""
        slot = self._midi_slot
        while self._clib.gs_jack_midi_pop(self._cj, slot):
            self._dispatch(bytes(slot[1:1 + slot[0]]))

    # ---- what AudioOutput reads ----
    @property
    def cpu_load(self) -> float:
        return float(self.client.cpu_load()) / 100.0

    @property
    def midi_messages(self) -> int:
        """MIDI messages received on midi_in."""
        cj = self._cj
        return int(cj.midi_messages) if cj is not None else self._midi_count

    @property
    def midi_port_name(self) -> str:
        """Our MIDI in's full JACK name: "GANSynth:midi_in", or "GANSynth-01:midi_in" when JACK
        had to rename the client (another client holds the name)."""
        return str(self.midi_in.name)

    @property
    def latency(self) -> float:
        """Seconds the playback port we feed adds (its JACK playback latency, as PortAudio
        reports for its JACK streams); one period if it cannot be read."""
        frames = _playback_latency_frames(self._jack, self._playback[0]) if self._playback else 0
        return (frames or int(self.client.blocksize)) / float(self.client.samplerate)

    def start(self) -> None:
        self._poster = threading.Thread(target=self._post_later, name="jack-midi-post", daemon=True)
        self._poster.start()
        self.client.activate()
        self._active = True
        playback = self.client.get_ports(is_audio=True, is_input=True, is_physical=True)
        for port, dest in zip(self.outs, playback):
            self.client.connect(port, dest)
        self._playback = playback[:len(self.outs)]
        for source in self.client.get_ports(is_midi=True, is_output=True, is_physical=True):
            self.client.connect(source, self.midi_in)   # hardware MIDI the server bridges

    def abort(self, ignore_errors: bool = True) -> None:
        if self._active:
            self._active = False
            # jack_deactivate may cancel the process thread (JACK2 kills a client's RT thread),
            # and a thread cancelled inside Python, or waiting for its lock, leaves the GIL held
            # for ever (observed: the whole program hung in close). So first let the callback
            # see `_closing` and return at once, and deactivate while it waits in JACK. (The C
            # callback of a ring holds nothing.)
            self._closing = True
            if self.ring is None:
                self._parked.wait(PARK_TIMEOUT_S)
            self.client.deactivate(ignore_errors=ignore_errors)

    def close(self, ignore_errors: bool = True) -> None:
        self.abort(ignore_errors)
        self.client.close(ignore_errors=ignore_errors)
        if self._poster is not None:
            self._later.put(None)
            self._poster.join(timeout=1.0)
            self._poster = None

    def _post_later(self) -> None:
        while (event := self._later.get()) is not None:
            try:
                self.post(event)
            except ValueError:          # the instrument refused it (validated there)
                pass

    # ---- JACK's threads ----
    def _process(self, frames: int) -> None:
        if self._closing:                               # see abort(): silence, and nothing else
            for port in self.outs:
                port.get_array().fill(0.0)
            self._parked.set()
            return
        for _, data in self.midi_in.incoming_midi_events():
            self._midi_count += 1
            self._dispatch(bytes(data))
        xruns = self._server_xruns[0]                   # the server counted an xrun since the last period
        missed, self._seen_xruns = xruns != self._seen_xruns, xruns
        if frames > self._buffer.shape[0]:              # a server period beyond MAX_PERIOD
            self._buffer = np.zeros((frames, self._buffer.shape[1]), np.float32)
        block = self._buffer[:frames]
        status = _UNDERFLOW if missed else _OK
        self.callback(block, frames, None, status)
        for i, port in enumerate(self.outs):
            port.get_array()[:] = block[:, i]

    def _dispatch(self, data: bytes) -> None:
        """Notes and bends to `post` at once (an append); others through the poster thread."""
        event = _midi_event(data, self.midi_channel)
        if isinstance(event, (NoteOn, NoteOff, PitchBend)):
            self.post(event)
        elif event is not None:
            self._later.put(event)

    def _shutdown(self, status, reason: str) -> None:
        self._active = False
        if self.on_server_lost is not None:
            self.on_server_lost()
        self.finished_callback()


_latency_api = None


def _playback_latency_frames(jack, port) -> int:
    """jack_port_get_latency_range(port, JackPlaybackLatency).max, which JACK-Client does not
    wrap: our own two-line binding of the same libjack; 0 when it is not there."""
    global _latency_api
    try:
        if _latency_api is None:
            from cffi import FFI

            ffi = FFI()
            ffi.cdef("typedef struct { uint32_t min; uint32_t max; } jack_latency_range_t;"
                     "void jack_port_get_latency_range(void *port, int mode, jack_latency_range_t *range);")
            _latency_api = (ffi, ffi.dlopen(jack._libname))
        ffi, lib = _latency_api
        latency = ffi.new("jack_latency_range_t *")
        pointer = ffi.cast("void *", int(jack._ffi.cast("uintptr_t", port._ptr)))
        lib.jack_port_get_latency_range(pointer, 1, latency)       # 1 = JackPlaybackLatency
        return int(latency.max)
    except Exception:            # another JACK-Client layout, no symbol: the caller's estimate
        return 0


def _midi_event(data: bytes, channel: int | None):
    try:
        message = mido.Message.from_bytes(data)
    except (ValueError, TypeError):                     # sysex fragments, junk: not ours
        return None
    return message_to_event(message, channel)
