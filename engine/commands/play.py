"""`gansynth play`: the instrument headless — audio out, MIDI in, optional recording.

    gansynth play --midi-in "Keystation" --audio-out system --record take.wav --seconds 60
    gansynth play --midi-map knobs.json --osc-port 9000     # learned knobs; OSC on 127.0.0.1:9000
    gansynth play --osc-port 9000 --osc-help                # the OSC address list, then exit

Runs until Ctrl-C (or `--seconds`), printing a status line every few seconds. Without
an audio device it runs on the offline clock (recording still works); without a MIDI
backend it says so and other programs cannot play it, but nothing else changes.
"""
from __future__ import annotations

import signal
import sys
import threading
import time

from engine.devices.ahead import MAX_PERIODS
from engine.gansynth.backend import BackendUnavailable
from engine.gansynth.config import BACKEND_HELP, BACKENDS, PRECISION_HELP, PRECISIONS

STATUS_EVERY_S = 5.0


def add_arguments(p) -> None:
    p.add_argument("--midi-in", default=None, metavar="NAME",
                   help="MIDI input port (name or unique part of it); reconnects if unplugged")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="listen to MIDI channel N (1-16) only (default: all)")
    p.add_argument("--no-virtual-port", action="store_true",
                   help="do not open the virtual MIDI input other programs can connect to")
    p.add_argument("--audio-out", default=None, metavar="NAME",
                   help="audio output device (default: the system default); \"JACK client\" runs the "
                        "instrument as its own JACK client with a MIDI in port (GANSynth:midi_in)")
    p.add_argument("--audio-ahead", type=int, default=None, metavar="N", choices=range(0, MAX_PERIODS + 1),
                   help="device periods rendered ahead (1 by default: the device never waits for Python, "
                        "one period more latency; 0: lowest latency, rendered in the device's callback)")
    p.add_argument("--preset", default=None, metavar="FILE", help="preset JSON (corners, pad, settings)")
    p.add_argument("--record", default=None, metavar="FILE.wav",
                   help="record the output to a WAV (and the performance to FILE.mid)")
    p.add_argument("--record-format", choices=("float", "pcm24"), default="float")
    p.add_argument("--model", default=None, metavar="PATH", help="model directory, Magenta checkpoint "
                                                                 "dir or .zip (default: the bundled model)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    p.add_argument("--seconds", type=float, default=None, metavar="N", help="stop after N seconds")
    p.add_argument("--cache-mb", type=float, default=512)
    p.add_argument("--render-processes", type=int, default=None, metavar="N",
                   help="processes rendering notes side by side (default: a core each but one, 1 to 4); "
                        "more re-render a new timbre sooner, but on 2 cores 2 cost xruns")
    p.add_argument("--midi-map", default=None, metavar="FILE",
                   help="MIDI mapping JSON (learned in the window: Devices > Save MIDI mappings)")
    p.add_argument("--osc-port", type=int, default=None, metavar="N",
                   help="listen for OSC on UDP port N (off by default)")
    p.add_argument("--osc-host", default="127.0.0.1", metavar="ADDR",
                   help="address OSC binds (default 127.0.0.1: this machine only; 0.0.0.0 opens it "
                        "to the network, e.g. for a tablet)")
    p.add_argument("--osc-help", action="store_true", help="print the OSC addresses and exit")


def run(args) -> int:
    from engine.devices.audio import AudioOutput
    from engine.devices.jackclient import JACK_CLIENT_DEVICE
    from engine.devices.listing import device_sample_rate, is_jack_client
    from engine.devices.midi_input import MidiInput
    from engine.gansynth.modelfile import ModelFileError
    from engine.gansynth.synth import load_synth
    from engine.instrument.instrument import Instrument
    from engine.util.resources import default_model_path

    from engine.devices.midimap import MappingError, MidiMap, bindings_from_list, load_mapping
    from engine.devices.osc import OscServer, address_help

    if getattr(args, "osc_help", False):
        print(address_help())
        return 0
    if args.channel is not None and not 1 <= args.channel <= 16:
        print(f"gansynth play: --channel must be 1..16, not {args.channel}", file=sys.stderr)
        return 2
    if args.render_processes is not None and args.render_processes < 1:
        print(f"gansynth play: --render-processes must be at least 1, not {args.render_processes}", file=sys.stderr)
        return 2
    try:
        bindings = load_mapping(args.midi_map) if getattr(args, "midi_map", None) else ()
    except MappingError as e:
        print(f"gansynth play: {e}", file=sys.stderr)
        return 1
    try:
        synth = load_synth(args.model or default_model_path(), threads=1, precision=args.precision,
                           backend=args.backend)
    except (ModelFileError, ValueError, OSError, BackendUnavailable) as e:
        print(f"gansynth play: {e}", file=sys.stderr)
        return 1
    inst = Instrument(synth, sample_rate=device_sample_rate(args.audio_out), cache_mb=args.cache_mb,
                      render_processes=args.render_processes)
    if args.preset:
        try:
            preset = inst.load_preset(args.preset)
            if preset.midi_map and not bindings:     # the preset's own learned controls
                bindings = bindings_from_list(preset.midi_map, args.preset)
        except Exception as e:  # PresetError / MappingError name the file and field
            print(f"gansynth play: {e}", file=sys.stderr)
            return 1
    inst.start()
    channel = None if args.channel is None else args.channel - 1
    out = AudioOutput(inst, device=args.audio_out, midi_channel=channel, ahead=args.audio_ahead)
    mapping = MidiMap(bindings, pad=lambda: inst.timbre.pad)
    if bindings:
        print(f"MIDI mapping: {len(bindings)} control(s) from {args.midi_map or args.preset}")
    # On our JACK client its own midi_in is the input other programs play: no second (rtmidi) one
    midi = MidiInput(out, port_name=args.midi_in, channel=channel,
                     virtual=not (args.no_virtual_port or is_jack_client(args.audio_out)), mapping=mapping)
    if midi.start():
        virtual = f", virtual port {midi.virtual_name!r}" if midi.virtual else ""
        port = midi.connected_name or ("waiting for " + repr(args.midi_in) if args.midi_in else "no port")
        print(f"MIDI ({midi.api}): {port}{virtual}")
        if midi.last_error:
            print(f"MIDI: {midi.last_error}")
    else:
        print(f"MIDI: {midi.last_error}")
    # Audio after MIDI: rtmidi opens its JACK client holding the GIL, and a JACK client
    # activated while our audio callback runs waits for a graph cycle that the callback
    # cannot finish without the GIL: a stall of seconds, and a hang (seen in the test of
    # this command on our JACK client). The window opens them in this order too.
    if out.open():
        print(f"audio: {out.device_name} at {out.sample_rate} Hz, latency {out.latency_ms:.1f} ms")
        if out.device_name == JACK_CLIENT_DEVICE:
            print(f"MIDI (JACK): connect a MIDI output to {out.jack_midi_port} (hardware ports are connected)")
    else:
        print(f"audio: {out.last_error}")
    osc = None
    if getattr(args, "osc_port", None) is not None:
        try:
            osc = OscServer(out, args.osc_port, host=args.osc_host, pad=lambda: inst.timbre.pad,
                            actions=mapping.actions).start()
            print(f"OSC: listening on {osc.host}:{osc.port} (gansynth play --osc-help lists the addresses)")
        except (OSError, ValueError) as e:
            print(f"gansynth play: {e}", file=sys.stderr)
    controls = Controls(inst, out, args)
    if args.record:
        controls.toggle_record()
    try:
        _wait(out, midi, controls, args.seconds, mapping.actions, osc)
    finally:
        controls.stop_recording()
        if osc is not None:
            osc.close()
        midi.close()
        out.close()
        inst.stop()
    return 0


PALETTE_SIZE = 16     # corner knobs choose among this many random instruments (seed 0)


class Controls:
    """What learned buttons and knobs and OSC ask of `play` beyond engine events: record,
    corner selections, preset loads. Runs on the main thread."""

    def __init__(self, inst, out, args):
        self.inst, self.out, self.args = inst, out, args
        self.recorder = None
        self._palette = None

    def handle(self, action) -> None:
        if action.name == "record":
            self.toggle_record()
        elif action.name.startswith("corner_"):
            if self._palette is None:
                self._palette = self.inst.synth.random_latents(PALETTE_SIZE, 0)
            k = int(round(float(action.value) * (PALETTE_SIZE - 1)))
            corner = "abcd".index(action.name[-1])
            self.inst.set_corner(corner, self._palette[k], f"Random {k + 1}")
            print(f"corner {action.name[-1].upper()}: Random {k + 1}", flush=True)
        elif action.name == "preset":
            self.load_preset(action.value)

    def load_preset(self, which) -> None:
        from engine.util.resources import presets_dir

        if not isinstance(which, str):
            shipped = sorted(presets_dir().glob("*.json"))
            if not 0 <= which < len(shipped):
                print(f"preset: no bundled preset number {which} (0..{len(shipped) - 1})", flush=True)
                return
            which = shipped[which]
        try:
            self.inst.load_preset(which)
            print(f"preset {which} loaded", flush=True)
        except Exception as e:  # PresetError names the file and field
            print(f"preset: {e}", flush=True)

    def toggle_record(self) -> None:
        from engine.devices.recorder import Recorder, RecorderError

        if self.recorder is not None and self.recorder.recording:
            self.stop_recording()
            return
        path = self.args.record or time.strftime("take-%Y%m%d-%H%M%S.wav")
        self.recorder = Recorder(self.out)
        try:
            self.recorder.start(path, "FLOAT" if self.args.record_format == "float" else "PCM_24")
            print(f"recording to {path}", flush=True)
        except RecorderError as e:
            print(f"gansynth play: {e}", file=sys.stderr)
            self.recorder = None

    def stop_recording(self) -> None:
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        saved = recorder.stop()
        if recorder.error:
            print(f"recording: {recorder.error}")
        if saved is not None:
            print(f"recorded {recorder.elapsed_s:.1f} s to {saved} (+ {recorder.midi_path}), "
                  f"{recorder.overruns} overruns", flush=True)


def _wait(out, midi, controls, seconds: float | None, actions, osc) -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        start = time.monotonic()
        next_status = start + min(STATUS_EVERY_S, seconds or STATUS_EVERY_S)
        last_error = ""
        while not stop.is_set():
            actions.ready.wait(max(0.0, min(0.1, next_status - time.monotonic())))
            for action in actions.take():
                controls.handle(action)
            if time.monotonic() < next_status:
                continue
            next_status += STATUS_EVERY_S
            recorder = controls.recorder
            m = out.meters()
            line = (f"[{time.monotonic() - start:6.0f} s] {m['mode']} {m['device']}: xruns {m['xruns']} "
                    f"({m['late_blocks']} rendered late, the rest flagged by the audio system), "
                    f"cpu {100 * m['cpu_load']:.0f} %, voices {out.instrument.stats().get('voices', 0)}, "
                    f"MIDI messages {midi.messages + m['midi_messages']}")  # rtmidi + our JACK client
            if osc is not None:
                line += f", OSC {osc.handled} ({osc.ignored} ignored, {osc.flood_dropped} dropped)"
            if recorder is not None:
                line += f", recorded {recorder.elapsed_s:.0f} s"
            print(line, flush=True)
            error = (m["last_error"] or midi.last_error or (recorder.error if recorder else "")
                     or (osc.last_ignored if osc is not None else ""))
            if error and error != last_error:
                print(f"  {error}", flush=True)
                last_error = error
            if seconds is not None and time.monotonic() - start >= seconds:
                break
            if recorder is not None and recorder.error and not recorder.recording:
                controls.stop_recording()
    finally:
        signal.signal(signal.SIGINT, previous)
