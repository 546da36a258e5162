"""`gansynth play`: the instrument headless — audio out, MIDI in, optional recording.

    gansynth play --midi-in "Keystation" --audio-out system --record take.wav --seconds 60

Runs until Ctrl-C (or `--seconds`), printing a status line every few seconds. Without
an audio device it runs on the offline clock (recording still works); without a MIDI
backend it says so and other programs cannot play it, but nothing else changes.
"""
from __future__ import annotations

import signal
import sys
import threading
import time

from engine.gansynth.config import PRECISION_HELP, PRECISIONS

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
    p.add_argument("--preset", default=None, metavar="FILE", help="preset JSON (corners, pad, settings)")
    p.add_argument("--record", default=None, metavar="FILE.wav",
                   help="record the output to a WAV (and the performance to FILE.mid)")
    p.add_argument("--record-format", choices=("float", "pcm24"), default="float")
    p.add_argument("--model", default=None, metavar="PATH", help="model directory, Magenta checkpoint "
                                                                 "dir or .zip (default: the bundled model)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--seconds", type=float, default=None, metavar="N", help="stop after N seconds")
    p.add_argument("--cache-mb", type=float, default=512)


def run(args) -> int:
    from engine.devices.audio import AudioOutput
    from engine.devices.jackclient import JACK_CLIENT_DEVICE
    from engine.devices.listing import device_sample_rate
    from engine.devices.midi_input import CLIENT_NAME, MidiInput
    from engine.devices.recorder import Recorder, RecorderError
    from engine.gansynth.modelfile import ModelFileError
    from engine.gansynth.synth import load_synth
    from engine.instrument.instrument import Instrument
    from engine.util.resources import default_model_path

    if args.channel is not None and not 1 <= args.channel <= 16:
        print(f"gansynth play: --channel must be 1..16, not {args.channel}", file=sys.stderr)
        return 2
    try:
        synth = load_synth(args.model or default_model_path(), threads=1, precision=args.precision)
    except (ModelFileError, ValueError, OSError) as e:
        print(f"gansynth play: {e}", file=sys.stderr)
        return 1
    inst = Instrument(synth, sample_rate=device_sample_rate(args.audio_out), cache_mb=args.cache_mb)
    if args.preset:
        try:
            inst.load_preset(args.preset)
        except Exception as e:  # PresetError names the file and field
            print(f"gansynth play: {e}", file=sys.stderr)
            return 1
    inst.start()
    channel = None if args.channel is None else args.channel - 1
    out = AudioOutput(inst, device=args.audio_out, midi_channel=channel)
    if out.open():
        print(f"audio: {out.device_name} at {out.sample_rate} Hz, latency {out.latency_ms:.1f} ms")
        if out.device_name == JACK_CLIENT_DEVICE:
            print(f"MIDI (JACK): connect a MIDI output to {CLIENT_NAME}:midi_in (hardware ports are connected)")
    else:
        print(f"audio: {out.last_error}")
    midi = MidiInput(out, port_name=args.midi_in, channel=channel, virtual=not args.no_virtual_port)
    if midi.start():
        virtual = "" if args.no_virtual_port else f", virtual port {midi.virtual_name!r}"
        port = midi.connected_name or ("waiting for " + repr(args.midi_in) if args.midi_in else "no port")
        print(f"MIDI ({midi.api}): {port}{virtual}")
        if midi.last_error:
            print(f"MIDI: {midi.last_error}")
    else:
        print(f"MIDI: {midi.last_error}")
    recorder = None
    if args.record:
        recorder = Recorder(out)
        try:
            recorder.start(args.record, "FLOAT" if args.record_format == "float" else "PCM_24")
            print(f"recording to {args.record}")
        except RecorderError as e:
            print(f"gansynth play: {e}", file=sys.stderr)
            recorder = None
    try:
        _wait(out, midi, recorder, args.seconds)
    finally:
        if recorder is not None:
            saved = recorder.stop()
            if recorder.error:
                print(f"recording: {recorder.error}")
            if saved is not None:
                print(f"recorded {recorder.elapsed_s:.1f} s to {saved} (+ {recorder.midi_path}), "
                      f"{recorder.overruns} overruns")
        midi.close()
        out.close()
        inst.stop()
    return 0


def _wait(out, midi, recorder, seconds: float | None) -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        start = time.monotonic()
        last_error = ""
        while not stop.wait(min(STATUS_EVERY_S, seconds or STATUS_EVERY_S)):
            m = out.meters()
            line = (f"[{time.monotonic() - start:6.0f} s] {m['mode']} {m['device']}: xruns {m['xruns']}, "
                    f"cpu {100 * m['cpu_load']:.0f} %, voices {out.instrument.stats().get('voices', 0)}, "
                    f"MIDI messages {midi.messages + m['midi_messages']}")  # rtmidi + our JACK client
            if recorder is not None:
                line += f", recorded {recorder.elapsed_s:.0f} s"
            print(line, flush=True)
            error = m["last_error"] or midi.last_error or (recorder.error if recorder else "")
            if error and error != last_error:
                print(f"  {error}", flush=True)
                last_error = error
            if seconds is not None and time.monotonic() - start >= seconds:
                break
            if recorder is not None and recorder.error and not recorder.recording:
                recorder = None
    finally:
        signal.signal(signal.SIGINT, previous)
