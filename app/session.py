"""The window's link to the engine: one `Instrument`, its output, MIDI input and recorder.

The output is a sounddevice stream (`engine.audio.AudioOutput`) when a device is
available, otherwise `ClockOutput`: a thread that calls `Instrument.process` at
real-time pace with no device, so the on-screen keyboard still plays into the
scope, the meters and the recorder. Either way the GUI only *pulls*: `scope()`,
`meters()` and `sounding_notes()` read latest values on the GUI's timers.
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from engine.events import NoteOff, NoteOn

log = logging.getLogger(__name__)

TAP_SECONDS = 2.0


class Tap:
    """Ring of the newest output samples: one writer (the audio/clock thread), GUI readers.

    Reads may see a block half-written; that is fine for a display.
    """

    def __init__(self, sample_rate: int, seconds: float = TAP_SECONDS):
        self.ring = np.zeros(int(sample_rate * seconds), np.float32)
        self.written = 0  # total samples written (int assignment is atomic under the GIL)

    def write(self, block: np.ndarray) -> None:
        n, size = len(block), len(self.ring)
        start = self.written % size
        first = min(n, size - start)
        self.ring[start:start + first] = block[:first]
        self.ring[:n - first] = block[first:]
        self.written += n

    def latest(self, n: int) -> np.ndarray:
        n = min(n, len(self.ring), self.written)
        end = self.written % len(self.ring)
        idx = np.arange(end - n, end) % len(self.ring)
        return self.ring[idx]


class Audition:
    """Wraps an `Instrument` for the output: `process` adds a one-off preview clip.

    The GUI prepares the clip (resampled, faded) off the audio thread and hands it over
    through a latest-value mailbox; the audio thread only adds a slice of it in place
    into the block the instrument returned (no allocation).
    """

    def __init__(self, instrument):
        self.instrument = instrument
        self.sample_rate = instrument.sample_rate
        self._next = None      # mailbox: (serial, clip) set by the GUI
        self._clip = None
        self._serial = 0
        self._pos = 0

    def prepare(self, audio: np.ndarray, sample_rate: int, gain: float = 0.5) -> np.ndarray:
        """Resample, normalize and fade `audio` (float32 [n]); any thread, not the audio one."""
        import soxr

        clip = np.asarray(audio, np.float32)
        if sample_rate != self.sample_rate:
            clip = soxr.resample(clip, sample_rate, self.sample_rate).astype(np.float32)
        clip = clip[: int(2.5 * self.sample_rate)].copy()
        peak = float(np.abs(clip).max()) or 1.0
        fade = min(len(clip), int(0.2 * self.sample_rate))
        clip *= gain / peak
        clip[len(clip) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return clip

    def queue(self, clip: np.ndarray) -> None:
        """Play a prepared clip once (replacing one still playing). GUI thread."""
        self._serial += 1
        self._next = (self._serial, clip)

    def process(self, frames: int) -> np.ndarray:
        out = self.instrument.process(frames)
        mailbox = self._next
        if mailbox is not None and mailbox[0] != self._serial_playing():
            self._clip, self._pos = mailbox, 0
        if self._clip is not None:
            clip = self._clip[1]
            n = min(frames, len(clip) - self._pos)
            if n > 0:
                out[:n] += clip[self._pos:self._pos + n]
                self._pos += n
        return out

    def _serial_playing(self) -> int:
        return self._clip[0] if self._clip is not None else 0


class ClockOutput:
    """Drives `instrument.process(block_size)` at real-time pace without a device.

    The clock thread is the "audio thread": it alone calls `process`. `listeners`
    get each block (the tap, a recorder's feed) and must be quick.
    """

    name = "offline clock"

    def __init__(self, instrument, block_size: int = 512):
        self.instrument = instrument
        self.sample_rate = instrument.sample_rate
        self.block_size = block_size
        self.listeners: list = []
        self.blocks = 0
        self.late_blocks = 0
        self._busy_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.block_size / self.sample_rate

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="clock-output", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _run(self) -> None:
        period = self.block_size / self.sample_rate
        deadline = time.monotonic()
        while not self._stop.is_set():
            t0 = time.monotonic()
            block = self.instrument.process(self.block_size)
            for listener in self.listeners:
                listener(block)
            self.blocks += 1
            self._busy_s = 0.95 * self._busy_s + 0.05 * (time.monotonic() - t0)
            deadline += period
            wait = deadline - time.monotonic()
            if wait < -0.25:          # fell far behind (machine busy): resync, count it
                self.late_blocks += 1
                deadline = time.monotonic()
            elif wait > 0:
                self._stop.wait(wait)

    def meters(self) -> dict:
        return {"latency_ms": self.latency_ms, "xruns": self.late_blocks,
                "cpu_load": self._busy_s * self.sample_rate / self.block_size}


class Session:
    """Owns the instrument's output, MIDI input and recording for the window."""

    def __init__(self, instrument):
        self.instrument = instrument
        self.audition = Audition(instrument)
        self.tap = Tap(instrument.sample_rate)
        self.output = None
        self.audio_error = ""
        self.midi = None
        self.midi_error = ""
        self.midi_port_name = ""
        self.recorder = None
        self._held: set[int] = set()   # notes the GUI holds (fallback for sounding_notes)
        self._errors: list[str] = []

    # -- output ---------------------------------------------------------------------------------
    def start(self, audio_device: str | None = None) -> None:
        self.instrument.start()
        self.open_audio(audio_device)

    def audio_devices(self) -> list[str]:
        return []

    def open_audio(self, name: str | None = None) -> bool:
        """Open device `name` (None: the default one; "": none, the offline clock).
        Falls back to the offline clock; True if a device opened."""
        self._close_output()
        self.audio_error = ("no audio output selected: playing on the offline clock" if name == ""
                            else "no audio output device: playing on the offline clock")
        self.output = ClockOutput(self.audition)
        self.output.listeners.append(self.tap.write)
        self.output.start()
        return False

    def _close_output(self) -> None:
        if self.output is not None:
            self.output.stop()
            self.output = None

    @property
    def output_name(self) -> str:
        return getattr(self.output, "name", "") if self.output is not None else ""

    @property
    def has_device(self) -> bool:
        return self.output is not None and not isinstance(self.output, ClockOutput)

    # -- MIDI -----------------------------------------------------------------------------------
    def midi_ports(self) -> list[str]:
        return []

    def open_midi(self, name: str) -> bool:
        self.midi_error = "no MIDI backend: use the on-screen keyboard"
        return False

    # -- notes from the GUI ---------------------------------------------------------------------
    def note_on(self, pitch: int, velocity: int) -> None:
        self._held.add(pitch)
        self.instrument.post(NoteOn(int(pitch), int(max(1, min(127, velocity)))))

    def note_off(self, pitch: int) -> None:
        self._held.discard(pitch)
        self.instrument.post(NoteOff(int(pitch)))

    def post(self, event) -> None:
        self.instrument.post(event)

    def sounding_notes(self) -> set[int]:
        stats = self.instrument.stats()
        notes = stats.get("held_pitches")
        return set(notes) if notes is not None else set(self._held)

    # -- meters ---------------------------------------------------------------------------------
    def scope(self, n: int) -> np.ndarray:
        return self.tap.latest(n)

    def meters(self) -> dict:
        values = dict(self.instrument.stats())
        if self.output is not None:
            values.update(self.output.meters())
        return values

    # -- recording ------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.recorder is not None

    def start_recording(self, path) -> None:
        from app.fallback_recorder import BlockRecorder

        if self.recorder is not None:
            raise RuntimeError("already recording")
        recorder = BlockRecorder(path, self.instrument.sample_rate)
        recorder.start()
        self.output.listeners.append(recorder.feed)
        self.recorder = recorder

    def stop_recording(self):
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return None
        self.output.listeners.remove(recorder.feed)
        recorder.stop()
        if recorder.error:
            self._errors.append(recorder.error)
        return recorder.path

    def recording_seconds(self) -> float:
        return self.recorder.seconds() if self.recorder is not None else 0.0

    def poll_errors(self) -> str:
        """The oldest error reported by a background part since the last call, or ''."""
        if self.recorder is not None and self.recorder.error:
            self._errors.append(self.recorder.error)
            self.stop_recording()
        return self._errors.pop(0) if self._errors else ""

    def close(self) -> None:
        if self.recorder is not None:
            self.stop_recording()
        self._close_output()
        self.instrument.stop()
