"""Our own JACK client (audio outs + MIDI in on one client) on a real JACK dummy server."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from engine.devices.audio import AudioOutput
from engine.devices.jackclient import JACK_CLIENT_DEVICE, JACK_CLIENT_HOSTAPI
from engine.devices.listing import find_output_device, list_output_devices
from engine.devices.performance import read_performance
from engine.devices.recorder import Recorder
from engine.instrument.events import NoteOff, NoteOn
from tests.jack import JackServer
from tests.test_audio import RATE, Probe, make_instrument, synth  # noqa: F401  (fixture)

pytestmark = pytest.mark.realtime


def jack_keys(name: str):
    """A JACK MIDI output port of another client (what a DAW or a2jmidid would be)."""
    return mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True).open_output(name, virtual=True)


def port_named(server: JackServer, fragment: str) -> str:
    names = [p for p in server.ports() if fragment in p]
    assert len(names) == 1, server.ports()
    return names[0]


def test_listed_with_the_server_rate(jack_server):
    dev = find_output_device(JACK_CLIENT_DEVICE)
    assert dev.hostapi == JACK_CLIENT_HOSTAPI and dev.default_sample_rate == RATE and dev.channels == 2
    assert [d.name for d in list_output_devices()].count(JACK_CLIENT_DEVICE) == 1


@pytest.mark.parametrize("ahead", [1, 0], ids=["C callback, rendered ahead", "Python callback"])
def test_midi_port_plays_the_note_in_the_period_that_delivers_it(jack_server, synth, tmp_path, ahead):
    probe = Probe(make_instrument(synth))
    out = AudioOutput(probe, device=JACK_CLIENT_DEVICE, midi_channel=0, ahead=ahead)
    keys = jack_keys("Test Keys")
    try:
        assert out.open() and out.mode == "device", out.last_error
        ports = jack_server.ports()
        assert "GANSynth:out_1" in ports and "GANSynth:midi_in" in ports
        jack_server.connect(port_named(jack_server, "Test Keys"), "GANSynth:midi_in")
        rec = Recorder(out)
        rec.start(tmp_path / "take.wav")
        assert probe.reached(RATE // 4).wait(10)
        keys.send(mido.Message("note_on", channel=1, note=60, velocity=100))   # another channel: ignored
        assert probe.reached(RATE // 4).wait(10)
        sent_at = probe.frames
        keys.send(mido.Message("note_on", note=60, velocity=100))
        assert probe.reached(RATE // 4).wait(10)
        keys.send(mido.Message("note_on", note=60, velocity=0))                # velocity 0: note-off
        assert probe.reached(RATE // 4).wait(10)
        rec.stop()
        meters = out.meters()
    finally:
        keys.close()
        out.close()
    assert "GANSynth:midi_in" not in jack_server.ports()                       # the client is gone
    assert meters["latency_ms"] > 0 and meters["block_size"] == jack_server.period
    assert meters["callback_errors"] == 0 and meters["device"] == JACK_CLIENT_DEVICE
    assert meters["midi_messages"] == 3          # all received, the other channel's too (status line)
    assert out.midi_messages == 3                # kept after the client closed

    played, _ = sf.read(tmp_path / "take.wav", dtype="float32")
    start = rec.start_frame
    assert np.array_equal(played, probe.copy[start:start + played.shape[0]])   # bit-identical
    onset = start + int(np.flatnonzero(played)[0])
    # The period after the send (the sender's client flushes at the next cycle) is where the
    # note starts: never later, whatever the thread timing of this test. (Rendered ahead, the
    # block rendered right after that cycle: `ahead` periods later on the device's clock.)
    assert sent_at <= onset < sent_at + 2 * jack_server.period + RATE // 100
    _, events = read_performance(tmp_path / "take.mid")
    assert [e for _, e in events] == [NoteOn(60, 100), NoteOff(60)]


def test_play_command_on_the_jack_client(jack_server, tiny_model_dir, tmp_path, capsys):
    import argparse

    from engine.commands import play

    parser = argparse.ArgumentParser()
    play.add_arguments(parser)
    args = parser.parse_args(["--model", str(tiny_model_dir), "--audio-out", "jack client", "--channel", "1",
                              "--seconds", "0.5", "--record", str(tmp_path / "play.wav"), "--cache-mb", "16"])
    assert play.run(args) == 0
    text = capsys.readouterr().out
    assert f"audio: {JACK_CLIENT_DEVICE} at 48000 Hz" in text and "GANSynth:midi_in" in text
    assert "virtual port" not in text   # its own midi_in is the input: no second (rtmidi) one to confuse
    assert "rendered late, the rest flagged by the audio system)" in text   # the status line's xruns
    assert sf.info(tmp_path / "play.wav").frames > RATE // 4


@pytest.mark.parametrize("ahead", [1, 0], ids=["C callback, rendered ahead", "Python callback"])
def test_the_servers_xruns_are_counted(jack_server, synth, ahead):
    """Another client that stalls makes the server miss a cycle: JACK's xrun callback (ours is C)
    counts it, and the next period is flagged as an underflow."""
    import threading
    import time

    import jack

    probe = Probe(make_instrument(synth))
    out = AudioOutput(probe, device=JACK_CLIENT_DEVICE, ahead=ahead)
    slow = jack.Client("Slow Client", no_start_server=True)
    stall = threading.Event()

    @slow.set_process_callback
    def process(frames):
        if stall.is_set():
            stall.clear()
            time.sleep(0.05)            # ten periods

    try:
        assert out.open(), out.last_error
        slow.activate()
        assert probe.reached(RATE // 4).wait(10)
        before = out.xruns
        stall.set()
        assert probe.reached(RATE // 4).wait(10)
        assert 1 <= out.xruns - before <= 3     # once a period flagged, not for every callback since
    finally:
        slow.deactivate()
        slow.close()
        out.close()


def test_a_render_that_runs_late_is_counted_as_ours(jack_server, synth):
    """`late_blocks` tells the periods our render thread missed (the ring ran short) from those
    the server flagged: a block rendered 30 ms late (six periods) counts there too."""
    import time

    class Late(Probe):
        late = False

        def process(self, frames):
            if self.late:
                self.late = False
                time.sleep(0.03)
            return super().process(frames)

    probe = Late(make_instrument(synth))
    out = AudioOutput(probe, device=JACK_CLIENT_DEVICE, ahead=1)
    try:
        assert out.open(), out.last_error
        assert probe.reached(RATE // 4).wait(10)
        xruns, late = out.xruns, out.late_blocks
        probe.late = True
        assert probe.reached(RATE // 4).wait(10)
        assert out.late_blocks - late >= 1
        assert out.xruns - xruns >= out.late_blocks - late
        assert out.meters()["late_blocks"] == out.late_blocks
    finally:
        out.close()
    assert out.late_blocks >= 1              # kept once the stream is shut, as xruns are


def test_server_that_dies_leaves_the_instrument_on_the_clock(tiny_model_dir):
    """In a child process: libjack's state after a server death is the process's for good."""
    child = subprocess.run([sys.executable, "-m", "tests.test_jackclient", str(tiny_model_dir)],
                           capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert child.returncode == 0, child.stderr[-3000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])
    assert got["opened"] and got["fell_back"] and got["losses"] == 1
    assert f"'{JACK_CLIENT_DEVICE}' was lost" in got["lost_error"]
    assert got["clock_runs"]                                        # the instrument keeps playing
    assert got["reopened"] is False and "restart the program" in got["reopen_error"]
    assert JACK_CLIENT_DEVICE not in got["listed_after"]


def _server_death(model_dir: str) -> dict:
    from engine.gansynth.synth import load_synth

    probe = Probe(make_instrument(load_synth(model_dir, threads=1)))
    server = JackServer(portaudio=False).start()
    out = AudioOutput(probe, device=JACK_CLIENT_DEVICE)
    out.lost_s = 1.0
    try:
        got = {"opened": out.open()}
        probe.reached(RATE // 10).wait(10)
        os.kill(server.proc.pid, signal.SIGKILL)
        got.update(fell_back=out.wait_mode("clock", timeout=15), losses=out.device_losses,
                   lost_error=out.last_error, clock_runs=probe.reached(RATE // 10).wait(10))
        server.stop()
        server = JackServer(name=server.name, portaudio=False).start()   # the server comes back
        got.update(reopened=out.reopen(), reopen_error=out.last_error,
                   listed_after=[d.name for d in list_output_devices()])
        return got
    finally:
        out.close()
        server.stop()


if __name__ == "__main__":
    print(json.dumps(_server_death(sys.argv[1])), flush=True)
    os._exit(0)      # PortAudio's exit handler must not touch the dead server
