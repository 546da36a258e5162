"""Audio output devices: what PortAudio offers, plus our own JACK client while a JACK server
runs; a device by name; the rate to build the instrument at.

    list_output_devices()            # [OutputDevice(index, name, hostapi, channels, rate, is_default)]
    find_output_device("USB")        # exact name, else a unique case-insensitive substring
    device_sample_rate(name)         # 48000 when unknown
    refresh_devices()                # re-scan PortAudio (no stream may be open)

Once our JACK client saw its server go away (`jack_server_lost`), the JACK client device is
no longer offered and PortAudio is not re-scanned (see `refresh_devices`).
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.devices.jackclient import JACK_CLIENT_DEVICE, JACK_CLIENT_HOSTAPI
from engine.devices.jackthreads import hook_jack_threads

DEFAULT_SAMPLE_RATE = 48000


class AudioDeviceError(Exception):
    """No usable audio output; the message says what was looked for and what exists."""


@dataclass(frozen=True)
class OutputDevice:
    index: int
    name: str
    hostapi: str
    channels: int
    default_sample_rate: float
    is_default: bool

    def __str__(self) -> str:
        mark = " (default)" if self.is_default else ""
        return (f"{self.name} [{self.hostapi}, {self.channels} ch, "
                f"{self.default_sample_rate:.0f} Hz]{mark}")


def import_sounddevice():
    """sounddevice, or AudioDeviceError when PortAudio itself is missing. libjack's thread hook
    goes in first, so that the JACK client PortAudio makes as it initialises is seen
    (engine.devices.jackthreads)."""
    hook_jack_threads()   # idempotent (~1 ms: reads /proc/self/maps); the hook stays through re-scans
    try:
        import sounddevice
    except OSError as e:  # libportaudio2 not installed
        raise AudioDeviceError(f"PortAudio is not available ({e}); install libportaudio2") from None
    return sounddevice


_jack_server_lost = False   # our JACK client saw its server go away (see `jack_server_lost`)


def jack_server_lost() -> None:
    """Called when our JACK client's server shut down or dropped us. From then on this process
    opens no new JACK client: libjack crashes (segfault, measured) when a client connects to a
    restarted server while another client of the process (PortAudio's, rtmidi's) still holds
    the old connection state. The instrument stays on the clock; a restart reconnects."""
    global _jack_server_lost
    _jack_server_lost = True


JACK_LOST_HINT = "the JACK server went away; restart the program to play through JACK again"


def refresh_devices() -> None:
    """Re-scan PortAudio's devices (a JACK server or USB device that appeared later).

    Re-initialises PortAudio: only call it with no stream open. Not once a JACK server
    PortAudio is attached to has gone away: PortAudio's terminate then aborts the process
    (an assertion in pa_jack.c), so this raises AudioDeviceError and keeps the old list.
    """
    sd = import_sounddevice()
    if _jack_server_lost and any(h["name"].startswith("JACK") for h in sd.query_hostapis()):
        raise AudioDeviceError(f"cannot re-scan audio devices: {JACK_LOST_HINT} (PortAudio aborts the "
                               f"process when it lets go of a JACK server that died)")
    sd._terminate()
    sd._initialize()


def list_output_devices() -> list[OutputDevice]:
    """Every device with output channels; [] when there is none (no sound card, no JACK)."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError:
        devices, hostapis = [], []
    try:
        default = sd.default.device[1]
    except (sd.PortAudioError, TypeError, IndexError):
        default = -1
    out = []
    for d in devices:
        if d["max_output_channels"] > 0:
            out.append(OutputDevice(d["index"], d["name"], hostapis[d["hostapi"]]["name"],
                                    d["max_output_channels"], float(d["default_samplerate"]),
                                    d["index"] == default))
    rate = _jack_client_rate()
    if rate:
        out.append(OutputDevice(-1, JACK_CLIENT_DEVICE, JACK_CLIENT_HOSTAPI, 2, float(rate), False))
    return out


def _jack_client_rate() -> int:
    """The JACK server's rate when our own JACK client could run there, else 0."""
    from engine.devices.jackclient import JackUnavailable, server_sample_rate
    from engine.devices.midi_input import quiet_stderr

    if _jack_server_lost:
        return 0
    try:
        with quiet_stderr():                 # libjack prints its own complaints when no server runs
            return server_sample_rate()
    except JackUnavailable:
        return 0


def find_output_device(name: str | None = None) -> OutputDevice:
    """The device called `name` (exact, else a unique case-insensitive substring); None = default."""
    if _jack_server_lost and name and name.lower() in JACK_CLIENT_DEVICE.lower():
        raise AudioDeviceError(f"audio output {name!r}: {JACK_LOST_HINT}")
    devices = list_output_devices()
    if not devices:
        raise AudioDeviceError("no audio output device found (no sound card, and no JACK server "
                               "running)")
    if name is None or name == "":
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    exact = [d for d in devices if d.name == name]
    if exact:
        return exact[0]
    partial = [d for d in devices if name.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    names = ", ".join(repr(d.name) for d in devices)
    what = "matches several devices" if partial else "matches no device"
    raise AudioDeviceError(f"audio output {name!r} {what}; available: {names}")


def is_jack_client(name: str | None) -> bool:
    """Whether output `name`, matched as `find_output_device` matches it, is our own JACK client."""
    try:
        return find_output_device(name).hostapi == JACK_CLIENT_HOSTAPI
    except AudioDeviceError:
        return False


def device_sample_rate(name: str | None = None) -> int:
    """The rate to build the instrument at for device `name` (48 kHz when unknown)."""
    try:
        rate = find_output_device(name).default_sample_rate
    except AudioDeviceError:
        return DEFAULT_SAMPLE_RATE
    return int(rate) if rate > 0 else DEFAULT_SAMPLE_RATE
