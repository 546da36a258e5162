"""The window's link to the engine: one `Instrument`, its output, MIDI input and recorder.

The output is `engine.devices.audio.AudioOutput` (a sounddevice stream, which falls back to
the offline clock when the device is missing or lost) or, when the user picks no
device, `engine.devices.clock.OfflineClockOutput`: the on-screen keyboard still plays into
the scope, the meters and the recorder. One `OutputTap` is shared by every output
the session opens, so a take survives a device switch. The GUI only *pulls*:
`scope()`, `levels()`, `meters()` and `sounding_notes()` read latest values on timers.
"""
from __future__ import annotations

import logging

import numpy as np

from engine.devices.audio import AudioOutput
from engine.devices.clock import OfflineClockOutput, OutputTap
from engine.devices.listing import list_output_devices
from engine.devices.midi_input import RESCAN_S as MIDI_RESCAN_S
from engine.devices.midi_input import MidiInput
from engine.devices.midimap import MidiMap
from engine.devices.osc import OscServer
from engine.devices.recorder import Recorder
from engine.instrument.events import NoteOff, NoteOn

log = logging.getLogger(__name__)


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

    def post(self, event) -> None:
        self.instrument.post(event)

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


class Session:
    """Owns the instrument's output, MIDI input and recording for the window."""

    def __init__(self, instrument):
        self.instrument = instrument
        self.model_name = ""
        self.audition = Audition(instrument)
        self.tap = OutputTap()
        self.output = None
        self.audio_ahead: int | None = None   # periods a device output renders ahead (None: AudioOutput's)
        self.midi: MidiInput | None = None
        self.midi_map = MidiMap(pad=lambda: self.instrument.timbre.pad)   # learned controls
        self.osc: OscServer | None = None
        self._midi_ports: list[str] = []
        self.recorder: Recorder | None = None
        self._errors: list[str] = []
        self._reported = ""

    # -- output ---------------------------------------------------------------------------------
    def start(self, audio_device: str | None = None) -> None:
        self.instrument.start()
        self.open_audio(audio_device)

    def audio_devices(self) -> list[str]:
        try:
            return [d.name for d in list_output_devices()]
        except Exception as exc:     # PortAudio missing: say so, offer none
            self._errors.append(f"cannot list audio devices: {exc}")
            return []

    def open_audio(self, name: str | None = None) -> bool:
        """Open device `name` (None: the default one; "": none, the offline clock).
        A missing device falls back to the offline clock; True if a device plays."""
        self._close_output()
        if name == "":
            output = OfflineClockOutput(self.audition, tap=self.tap)
        else:
            output = AudioOutput(self.audition, device=name, ahead=self.audio_ahead)
            output.tap = self.tap
        output.recorder = self.recorder
        self.output = output
        return bool(output.open())

    def set_audio_ahead(self, periods: int) -> None:
        """Periods a sound card's output renders ahead (more: safer from dropouts, more latency);
        a playing device reopens with it."""
        self.audio_ahead = periods
        if self.has_device:
            self.open_audio(self.output_name)

    def rescan_audio(self) -> None:
        """Re-scan PortAudio when no stream is open (a JACK server started, a USB device)."""
        if isinstance(self.output, AudioOutput) and self.output.mode != "device":
            self.output.reopen(rescan=True)

    def _close_output(self) -> None:
        if self.output is not None:
            self.output.close()
            self.output = None

    @property
    def output_name(self) -> str:
        return getattr(self.output, "device_name", "") if self.has_device else ""

    @property
    def has_device(self) -> bool:
        return getattr(self.output, "mode", "") == "device"

    @property
    def audio_error(self) -> str:
        if self.output is None:
            return "no audio output"
        if isinstance(self.output, OfflineClockOutput):
            return "no audio output selected: playing on the offline clock (recording works)"
        return self.output.last_error

    # -- MIDI -----------------------------------------------------------------------------------
    def open_midi(self, name: str | None, virtual: bool = True) -> bool:
        """Listen to MIDI port `name` ("" or None: only the virtual input port). `virtual`: also
        open the virtual input port (the first call decides; not beside our JACK client, whose
        own midi_in is the input other programs play)."""
        if self.midi is None:
            self.midi = MidiInput(self, port_name=name or None, rescan_s=0, mapping=self.midi_map, virtual=virtual)
            if not self.midi.start():
                return False
            if self.midi.api != "UNIX_JACK" or self.midi.status()["virtual"]:
                # Periodic rescans reconnect unplugged keyboards. On JACK they list through
                # the virtual port's client and wire a port back into it; without that port
                # (beside our JACK client) a reconnect would make a new rtmidi client, which
                # stalls the JACK audio stream for over a second: there, on demand only.
                self.midi.rescan_s = MIDI_RESCAN_S
                self.midi.start()
            self._midi_ports = self.midi.list_ports()
            return self.midi.connected_name is not None or not name
        return self.midi.open(name or None)

    def rescan_midi(self) -> None:
        """List MIDI ports again and reconnect the wanted one (the user asked for it).

        Open MIDI before the audio stream: on JACK, creating MIDI clients (listing ports
        creates one) after the audio stream started stalled that stream (measured on
        the dummy driver), so the list is cached and refreshed only on request."""
        if self.midi is not None:
            self.midi.rescan()
            self._midi_ports = self.midi.list_ports()

    def midi_ports(self) -> list[str]:
        return list(self._midi_ports)

    @property
    def midi_port_name(self) -> str:
        return (self.midi.port_name or "") if self.midi is not None else ""

    @property
    def midi_error(self) -> str:
        return self.midi.last_error if self.midi is not None else ""

    # -- OSC -------------------------------------------------------------------------------------
    def open_osc(self, port: int, host: str = "127.0.0.1") -> str:
        """Listen for OSC on `port` (0 or None: off); '' when it works, else why not."""
        self.close_osc()
        if not port:
            return ""
        try:
            self.osc = OscServer(self, port, host=host, pad=lambda: self.instrument.timbre.pad,
                                 actions=self.midi_map.actions).start()
        except (OSError, ValueError) as exc:
            return str(exc)
        return ""

    def close_osc(self) -> None:
        if self.osc is not None:
            self.osc.close()
            self.osc = None

    # -- events ---------------------------------------------------------------------------------
    def post(self, event) -> None:
        """Any thread (the MIDI callback too): through the output, so a take logs it."""
        output = self.output
        if output is not None:
            output.post(event)
        else:
            self.instrument.post(event)

    def note_on(self, pitch: int, velocity: int) -> None:
        self.post(NoteOn(int(pitch), int(max(1, min(127, velocity)))))

    def note_off(self, pitch: int) -> None:
        self.post(NoteOff(int(pitch)))

    def sounding_notes(self) -> list[int]:
        return self.instrument.stats()["held_pitches"]

    # -- meters ---------------------------------------------------------------------------------
    def scope(self, n: int) -> np.ndarray:
        return self.tap.scope(n)

    def levels(self) -> tuple[float, float]:
        return self.tap.levels()

    def meters(self) -> dict:
        values = dict(self.instrument.stats())
        if self.output is not None:
            values.update(self.output.meters())
        return values

    # -- recording ------------------------------------------------------------------------------
    @property
    def recording(self) -> bool:
        return self.recorder is not None and self.recorder.recording

    def start_recording(self, path) -> None:
        """Record the output to `path` (WAV) and its events to a .mid beside it."""
        if self.recording:
            raise RuntimeError(f"already recording to {self.recorder.path}")
        recorder = Recorder(self.output)
        recorder.start(path)                 # RecorderError names the file
        self.recorder = recorder
        self.output.recorder = recorder

    def stop_recording(self):
        """Finish the take; returns the WAV path (where it was saved)."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return None
        if self.output is not None:
            self.output.recorder = None
        saved = recorder.stop()
        if recorder.error:
            self._errors.append(recorder.error)
        return saved

    def recording_seconds(self) -> float:
        return self.recorder.elapsed_s if self.recorder is not None else 0.0

    def poll_errors(self) -> str:
        """A new problem reported by a background part since the last call, or ''."""
        if self.recorder is not None and not self.recorder.recording and self.recorder.error:
            self.stop_recording()             # the take ended by itself (disk full, ...)
        return self._errors.pop(0) if self._errors else ""

    def close(self) -> None:
        if self.recorder is not None:
            self.stop_recording()
        if self.midi is not None:
            self.midi.close()
        self.close_osc()
        self._close_output()
        self.instrument.stop()
