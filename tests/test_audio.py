"""Audio output on a real, paced JACK dummy device (sounddevice), the clock fallback, device loss."""
from __future__ import annotations

import os
import re
import signal
import threading

import numpy as np
import pytest
import soundfile as sf

from engine.devices.audio import AudioOutput
from engine.devices.clock import OfflineClockOutput
from engine.devices.listing import AudioDeviceError, device_sample_rate, find_output_device, list_output_devices
from engine.devices.performance import read_performance
from engine.devices.recorder import Recorder
from engine.instrument.events import NoteOff, NoteOn
from tests.jack import JackServer

RATE = 48000
pytestmark = pytest.mark.realtime


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    from engine.gansynth.synth import load_synth

    return load_synth(tiny_model_dir, threads=1)


def make_instrument(synth, rate=RATE, pitches=(60,)):
    from engine.instrument.instrument import Instrument

    inst = Instrument(synth, sample_rate=rate, cache_mb=16, seed=1)
    inst.renderer.render_now(list(pitches))     # a warm cache: notes sound at once
    return inst


class Probe:
    """Test probe around the real Instrument: keeps a copy of every block the output asked for
    and sets events when the stream has pulled a given number of frames."""

    def __init__(self, instrument, capacity: int = 10 * RATE):
        self.instrument = instrument
        self.sample_rate = instrument.sample_rate
        self.copy = np.zeros(capacity, np.float32)
        self.frames = 0
        self._targets: list[tuple[int, threading.Event]] = []

    def post(self, event):
        self.instrument.post(event)

    def process(self, frames):
        block = self.instrument.process(frames)
        start = min(self.frames, self.copy.shape[0])
        end = min(self.frames + frames, self.copy.shape[0])
        self.copy[start:end] = block[:end - start]
        self.frames += frames
        for target, event in self._targets:
            if self.frames >= target:
                event.set()
        return block

    def reached(self, frames: int) -> threading.Event:
        """An event set once `frames` more frames than now have been pulled."""
        event = threading.Event()
        self._targets.append((self.frames + frames, event))
        return event


@pytest.fixture
def no_audio_devices():
    """PortAudio with nothing to play on: no sound card here, and a JACK server that does not exist."""
    import sounddevice as sd

    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ.update(JACK_DEFAULT_SERVER="gansynth-no-such-server", JACK_NO_START_SERVER="1")
    sd._terminate()
    sd._initialize()
    try:
        yield
    finally:
        sd._terminate()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sd._initialize()


def test_lists_and_finds_the_jack_output(jack_server):
    devices = list_output_devices()
    system = [d for d in devices if d.name == "system"]
    assert system and system[0].hostapi.startswith("JACK") and system[0].channels == 2
    assert system[0].default_sample_rate == RATE
    assert find_output_device("SYST").name == "system"        # case-insensitive substring
    assert find_output_device(None).name == "system"          # the default
    assert device_sample_rate("system") == RATE
    with pytest.raises(AudioDeviceError, match=r"'No Such Card'.*'system'"):
        find_output_device("No Such Card")


@pytest.mark.parametrize("ahead", [1, 0], ids=["rendered ahead", "in the callback"])
def test_stream_plays_the_instrument_on_every_channel_and_records_exactly(jack_server, synth, tmp_path, ahead):
    import sounddevice as sd

    probe = Probe(make_instrument(synth))
    out = AudioOutput(probe, device="system", ahead=ahead)
    captured = []
    capture = sd.InputStream(device="system", channels=2, samplerate=RATE, dtype="float32",
                             callback=lambda indata, *_: captured.append(indata.copy()))
    try:
        assert out.open() and out.mode == "device" and out.last_error == ""
        capture.start()
        # what the device received: PortAudio numbers its JACK ports on from earlier streams of the
        # process ("PortAudio:out_2" after a stream the window opened), so take the ones there are
        number = lambda port: int(port.rsplit("_", 1)[1])  # noqa: E731
        ports = jack_server.ports()
        outs = sorted((p for p in ports if re.fullmatch(r"PortAudio:out_\d+", p)), key=number)
        ins = sorted((p for p in ports if re.fullmatch(r"PortAudio:in_\d+", p)), key=number)
        assert len(outs) == len(ins) == 2, ports
        for source, destination in zip(outs, ins):
            jack_server.connect(source, destination)
        rec = Recorder(out)
        rec.start(tmp_path / "take.wav")
        assert probe.reached(RATE // 4).wait(10)
        out.post(NoteOn(60, 110))
        assert probe.reached(RATE // 2).wait(10)
        out.post(NoteOff(60))
        assert probe.reached(RATE // 4).wait(10)
        rec.stop()
        meters = out.meters()
    finally:
        capture.close()
        out.close()
    assert meters["latency_ms"] > 0 and meters["block_size"] == jack_server.period
    assert isinstance(meters["xruns"], int) and meters["callback_errors"] == 0
    assert out.mode == "closed"

    played, rate = sf.read(tmp_path / "take.wav", dtype="float32")
    start = rec.start_frame
    assert rate == RATE and start >= 0 and played.shape[0] >= RATE
    assert np.array_equal(played, probe.copy[start:start + played.shape[0]])   # bit-identical
    onset = int(np.flatnonzero(played)[0])
    assert np.abs(played).max() > 1e-3
    _, events = read_performance(tmp_path / "take.mid")
    assert [e for _, e in events] == [NoteOn(60, 110), NoteOff(60)]
    assert events[0][0] <= onset < events[0][0] + 2 * jack_server.period   # note starts at its event

    got = np.concatenate(captured)
    assert np.array_equal(got[:, 0], got[:, 1])                # the same signal on both channels
    heard = int(np.flatnonzero(got[:, 0])[0])
    n = min(4096, got.shape[0] - heard)
    assert n > 1000 and np.array_equal(got[heard:heard + n, 0], played[onset:onset + n])


def test_a_missing_compiled_ring_is_reported_and_the_clock_plays(jack_server, synth, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "engine.devices._aheadring", None)   # an install that built no C
    out = AudioOutput(Probe(make_instrument(synth)), device="system")
    try:
        assert not out.open() and out.mode == "clock"
        assert "'system'" in out.last_error and "compiled audio ring is missing" in out.last_error
        assert "ahead 0" in out.last_error and "offline clock" in out.last_error
    finally:
        out.close()
    out = AudioOutput(Probe(make_instrument(synth)), device="system", ahead=0)   # the way round it
    try:
        assert out.open() and out.mode == "device"
    finally:
        out.close()


def test_no_device_runs_on_the_clock_and_still_records(no_audio_devices, synth, tmp_path, capsys):
    assert list_output_devices() == []
    probe = Probe(make_instrument(synth))
    out = AudioOutput(probe)
    try:
        assert out.open() is False
        assert out.mode == "clock" and "no audio output device found" in out.last_error
        rec = Recorder(out)
        rec.start(tmp_path / "clock.wav")
        out.post(NoteOn(60, 100))
        assert probe.reached(RATE // 10).wait(10)
        rec.stop()
    finally:
        out.close()
    played, _ = sf.read(tmp_path / "clock.wav", dtype="float32")
    assert played.shape[0] >= RATE // 10 and np.abs(played).max() > 1e-3

    from engine.commands import devices

    assert devices.run(type("Args", (), {"midi_api": "UNIX_JACK"})()) == 0
    text = capsys.readouterr().out
    assert "Audio outputs:\n  none found" in text and "MIDI inputs:\n  none: no MIDI backend" in text


def test_unknown_device_falls_back_then_reopens_another_without_restart(jack_server, synth):
    probe = Probe(make_instrument(synth))
    out = AudioOutput(probe, device="No Such Card")
    try:
        assert out.open() is False and out.mode == "clock"
        assert "'No Such Card' matches no device" in out.last_error and "'system'" in out.last_error
        assert probe.reached(512).wait(10)                   # the clock keeps the engine going
        assert out.reopen("system") is True and out.mode == "device" and out.last_error == ""
        assert probe.reached(RATE // 10).wait(10)
    finally:
        out.close()


def test_sample_rate_mismatch_is_explained(jack_server, synth):
    out = AudioOutput(make_instrument(synth, rate=44100, pitches=()), device="system")
    try:
        assert out.open() is False
        assert "44100 Hz" in out.last_error and "runs at 48000 Hz" in out.last_error
    finally:
        out.close()
    with pytest.raises(ValueError, match="renders at 48000 Hz"):
        AudioOutput(make_instrument(synth, pitches=()), sample_rate=44100)


def test_stalled_device_is_reported_and_the_stream_reopens(synth):
    probe = Probe(make_instrument(synth))
    with JackServer() as jack:                  # its own server: this test freezes it
        out = AudioOutput(probe, device="system")
        out.stall_s, out.lost_s = 0.3, 1.0          # shorter than the defaults: a quick test
        try:
            assert out.open()
            assert probe.reached(RATE // 10).wait(10)
            os.kill(jack.proc.pid, signal.SIGSTOP)
            try:
                assert out.wait_mode("clock", timeout=15)
                assert "'system' was lost" in out.last_error and out.device_losses == 1
                assert out.stalls == 1                              # reported as a stall first
                assert probe.reached(RATE // 10).wait(10)       # the clock took over
            finally:
                os.kill(jack.proc.pid, signal.SIGCONT)
            assert out.reopen() is True and out.mode == "device"
            assert probe.reached(RATE // 10).wait(10)
        finally:
            out.close()


def test_clock_output_paces_and_steps(synth):
    inst = make_instrument(synth)
    clock = OfflineClockOutput(inst, block_size=128)
    clock.run_blocks(4)
    assert clock.tap.frames == 512
    clock.start()
    with pytest.raises(RuntimeError, match="stop it"):
        clock.run_blocks(1)
    assert clock.wait_frames(512 + RATE // 20, timeout=10)
    clock.stop()
    assert clock.latency_ms == pytest.approx(1000 * 128 / RATE)
    peak, rms = clock.tap.levels()
    assert peak == 0.0 and rms == 0.0                   # nothing played: silence
    assert clock.tap.scope(256).shape == (256,)


def test_play_command_runs_headless_and_records(jack_server, tiny_model_dir, tmp_path, capsys):
    import argparse

    from engine.commands import play

    parser = argparse.ArgumentParser()
    play.add_arguments(parser)
    args = parser.parse_args(["--model", str(tiny_model_dir), "--audio-out", "system", "--seconds", "0.5",
                              "--record", str(tmp_path / "play.wav"), "--cache-mb", "16", "--render-processes", "2"])
    assert play.run(args) == 0
    text = capsys.readouterr().out
    assert "audio: system at 48000 Hz" in text and "MIDI (UNIX_JACK)" in text
    assert "GANSynth Instrument In" in text and "recorded" in text
    info = sf.info(tmp_path / "play.wav")
    assert info.samplerate == RATE and info.frames > RATE // 4
    assert (tmp_path / "play.mid").exists()


def test_play_command_reports_a_bad_model_path(tmp_path, capsys):
    import argparse

    from engine.commands import play

    parser = argparse.ArgumentParser()
    play.add_arguments(parser)
    assert play.run(parser.parse_args(["--model", str(tmp_path / "nope")])) == 1
    assert str(tmp_path / "nope") in capsys.readouterr().err
    assert play.run(parser.parse_args(["--render-processes", "0"])) == 2
    assert "--render-processes must be at least 1" in capsys.readouterr().err


def test_the_output_tells_the_instrument_whether_its_callback_runs_realtime(tiny_model_dir):
    """On a realtime JACK (jackd -R, where SCHED_FIFO is permitted) both outputs' callback
    threads are realtime and the instrument renders on every core; on a plain one, all but one,
    and the callback thread is raised to SCHED_FIFO where permitted, with every other thread
    libjack made in the process (PortAudio's own JACK client, idle beside our JACK client
    output: a late one is an xrun for the whole graph). All settled when `open()` returns, so
    the instrument's start (its render process, its threads) never competes with an ordinary
    callback thread. In a child process: it starts its own JACK servers (PortAudio attaches to
    one at a time)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from engine.devices.jackclient import JACK_CLIENT_DEVICE
    from engine.instrument.renderpool import render_process_count

    code = ("import json, sys\nfrom tests.test_audio import _callback_realtime\n"
            "print(json.dumps(_callback_realtime(sys.argv[1])), flush=True)\nimport os\nos._exit(0)")
    child = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir)], capture_output=True, text=True,
                           timeout=180, cwd=Path(__file__).resolve().parent.parent)
    assert child.returncode == 0, child.stderr[-3000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])
    permitted = got.pop("fifo_permitted")
    for device in ("system", JACK_CLIENT_DEVICE):
        # plain: not realtime as given (one core left to the audio), then raised where permitted
        assert got[f"plain {device}"] == [False, render_process_count(False), permitted, permitted]
        assert got[f"realtime {device}"] == [permitted, render_process_count(permitted), False, permitted]
        threads, all_fifo = got[f"plain {device} jack threads"]
        assert threads >= 3 and all_fifo == permitted   # PortAudio's client has 3 here, ours 1-2 more


def _fifo_permitted() -> bool:
    """May a thread of ours take SCHED_FIFO (what jackd -R gives its clients' process threads)?"""
    result = []

    def probe():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


def _callback_realtime(model_dir: str) -> dict:
    import time

    from engine.devices.audio import WATCHDOG_S
    from engine.devices.jackclient import JACK_CLIENT_DEVICE
    from engine.devices.jackthreads import jack_thread_ids
    from engine.gansynth.synth import load_synth
    from engine.instrument.instrument import Instrument

    synth = load_synth(model_dir, threads=1)
    got = {"fifo_permitted": _fifo_permitted()}
    for realtime in (False, True):
        with JackServer(realtime=realtime):
            for device in ("system", JACK_CLIENT_DEVICE):
                inst = Instrument(synth, sample_rate=RATE, cache_mb=16)
                out = AudioOutput(inst, device=device)
                try:
                    assert out.open(), out.last_error
                    # settled by open() itself, at the first block: before the caller starts anything
                    fifo = bool(out.callback_tid) and os.sched_getscheduler(out.callback_tid) == os.SCHED_FIFO
                    tids = jack_thread_ids()
                    mode = "realtime" if realtime else "plain"
                    got[f"{mode} {device}"] = [out.callback_realtime, inst.renderer.processes, out.callback_raised, fifo]
                    got[f"{mode} {device} jack threads"] = [
                        len(tids), all(os.sched_getscheduler(t) == os.SCHED_FIFO for t in tids)]
                    time.sleep(3 * WATCHDOG_S)   # and the watchdog keeps them so
                    assert all(os.sched_getscheduler(t) == os.SCHED_FIFO for t in jack_thread_ids()) == (
                        got[f"{mode} {device} jack threads"][1])
                finally:
                    out.close()
    return got


def test_a_thread_we_raised_is_not_taken_for_a_realtime_audio_system():
    """A reopened stream can get back a callback thread we made SCHED_FIFO ourselves (PortAudio
    keeps its JACK client): that is not a realtime audio system, and says so."""
    from engine.devices.jackthreads import raise_thread, raised_threads, realtime_as_given

    seen = {}
    done = threading.Event()

    def thread():
        tid = threading.get_native_id()
        seen["before"] = realtime_as_given(tid)
        seen["raised"] = raise_thread(tid, 1)
        seen["fifo"] = os.sched_getscheduler(tid) == os.SCHED_FIFO
        seen["after"] = realtime_as_given(tid)
        seen["ours"] = tid in raised_threads()
        seen["again"] = raise_thread(tid, 1)
        done.set()

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join()
    assert done.is_set() and seen["before"] is False and seen["after"] is False and seen["again"] is False
    assert seen["raised"] == seen["fifo"] == seen["ours"] == _fifo_permitted()
