"""Recorder: the SPSC ring, WAV contents, faults (disk full, path removed), performance MIDI files."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import soundfile as sf

from engine.devices.clock import OfflineClockOutput
from engine.devices.performance import read_performance, render_performance, write_performance
from engine.devices.recorder import Recorder, RecorderError, SampleRing, repair_wav
from engine.instrument.events import ControlChange, NoteOff, NoteOn, PadMove, Panic, PitchBend, SetParam

RATE = 48000


class RampInstrument:
    """Test double for the recorder's unit tests only: a known sample sequence, no synthesis."""

    sample_rate = RATE

    def __init__(self):
        self.frames = 0
        self.posted = []
        self._buf = np.zeros(1 << 16, np.float32)

    def post(self, event):
        self.posted.append(event)

    def process(self, frames):
        out = self._buf[:frames]
        out[:] = ramp(self.frames, frames)
        self.frames += frames
        return out


def ramp(start: int, n: int) -> np.ndarray:
    """Sample i of the double's output: a sawtooth in [-0.9, 0.9) with a 997-sample period."""
    i = np.arange(start, start + n)
    return ((i % 997) / 997.0 * 1.8 - 0.9).astype(np.float32)


# ---------------------------------------------------------------------------- ring

def test_ring_round_trip_across_wraparound():
    ring = SampleRing(1000)
    out = np.zeros(300, np.float32)
    got = []
    pos = 0
    for n in (256, 256, 256, 100, 7, 256, 256):
        assert ring.push(ramp(pos, n))
        pos += n
        while True:
            k, silence = ring.pop(out)
            assert silence == 0
            if k == 0:
                break
            got.append(out[:k].copy())
    assert np.array_equal(np.concatenate(got), ramp(0, pos))
    assert ring.overruns == 0


def test_ring_overrun_is_counted_and_becomes_silence_in_place():
    ring = SampleRing(600)
    assert ring.push(ramp(0, 256)) and ring.push(ramp(256, 256))
    assert not ring.push(ramp(512, 256))        # 768 > 600: dropped, counted
    assert not ring.push(ramp(768, 256))
    assert ring.overruns == 2 and ring.dropped_frames == 512
    out = np.zeros(1024, np.float32)
    k, silence = ring.pop(out)
    assert (k, silence) == (512, 0)
    assert ring.push(ramp(1024, 100))           # publishes the gap before these samples
    assert ring.pop(out) == (0, 512)
    k, silence = ring.pop(out)
    assert (k, silence) == (100, 0) and np.array_equal(out[:100], ramp(1024, 100))


# ---------------------------------------------------------------------------- takes

def _take(tmp_path, subtype="FLOAT", blocks=400, ring_seconds=10.0):
    inst = RampInstrument()
    clock = OfflineClockOutput(inst, block_size=256, realtime=False)
    rec = Recorder(clock, ring_seconds=ring_seconds)
    path = tmp_path / "take.wav"
    rec.start(path, subtype)
    clock.post(NoteOn(60, 100))
    clock.run_blocks(blocks // 2)
    clock.post(NoteOff(60))
    clock.run_blocks(blocks - blocks // 2)
    rec.stop()
    return rec, path, inst


def test_float_take_is_bit_identical_to_what_was_played(tmp_path):
    rec, path, inst = _take(tmp_path)
    audio, rate = sf.read(path, dtype="float32")
    assert rate == RATE and sf.info(path).subtype == "FLOAT"
    assert audio.shape == (inst.frames,)
    assert np.array_equal(audio, ramp(0, inst.frames))
    assert rec.error == "" and rec.overruns == 0 and rec.elapsed_s == inst.frames / RATE


def test_pcm24_take_matches_to_one_lsb_and_clips_like_a_device(tmp_path):
    inst = RampInstrument()
    clock = OfflineClockOutput(inst, realtime=False)
    rec = Recorder(clock)
    rec.start(tmp_path / "loud.wav", "PCM_24")
    ring_block = np.linspace(-1.5, 1.5, 256, dtype=np.float32)   # beyond full scale
    clock.tap.push(ring_block)
    clock.run_blocks(10)
    rec.stop()
    audio, _ = sf.read(tmp_path / "loud.wav", dtype="float32")
    assert sf.info(tmp_path / "loud.wav").subtype == "PCM_24"
    assert audio.shape == (256 + 2560,)
    assert np.max(np.abs(audio[:256] - np.clip(ring_block, -1, 1))) <= 2.0 ** -23 * 1.01
    assert np.max(np.abs(audio[256:] - ramp(0, 2560))) <= 2.0 ** -23 * 1.01


def test_overruns_are_reported_and_keep_the_timeline(tmp_path):
    # A ring smaller than one block: every block overruns, deterministically.
    rec, path, inst = _take(tmp_path, blocks=20, ring_seconds=100 / RATE)
    assert rec.overruns == 20 and rec.dropped_frames == 20 * 256
    audio, _ = sf.read(path, dtype="float32")
    assert audio.shape == (inst.frames,) and not audio.any()   # silence where samples were lost


def test_start_errors_name_the_file(tmp_path):
    rec = Recorder(OfflineClockOutput(RampInstrument()))
    with pytest.raises(RecorderError, match="does not exist"):
        rec.start(tmp_path / "missing" / "take.wav")
    with pytest.raises(RecorderError, match=r"take\.flac.*\.wav"):
        rec.start(tmp_path / "take.flac")
    with pytest.raises(RecorderError, match="sample format"):
        rec.start(tmp_path / "take.wav", "PCM_8")
    assert not rec.recording


# ---------------------------------------------------------------------------- faults

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (we are root): the disk fills during a take."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_24"])
def test_disk_full_keeps_a_valid_wav_with_everything_written(small_disk, subtype):
    inst = RampInstrument()
    clock = OfflineClockOutput(inst, realtime=False)
    rec = Recorder(clock)
    path = small_disk / "take.wav"
    rec.start(path, subtype)
    clock.max_frames = 60 * RATE          # 60 s never fits in 2 MiB
    clock.start()
    assert clock.wait_frames(clock.max_frames, timeout=60)
    clock.stop()
    rec.stop()
    assert "No space left" in rec.error and str(path) in rec.error
    info = sf.info(path)
    assert info.frames > RATE and info.frames * (4 if subtype == "FLOAT" else 3) < 2 * 2**20
    audio, _ = sf.read(path, dtype="float32")
    expected = ramp(0, info.frames)
    tolerance = 0 if subtype == "FLOAT" else 2.0 ** -23 * 1.01
    assert np.max(np.abs(audio - expected)) <= tolerance
    assert rec.frames_written == info.frames


def test_file_removed_mid_take_is_saved_again_in_the_temp_folder(tmp_path, monkeypatch):
    rescue_dir = tmp_path / "tmp"
    rescue_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue_dir))
    folder = tmp_path / "takes"
    folder.mkdir()
    inst = RampInstrument()
    clock = OfflineClockOutput(inst, realtime=False)
    rec = Recorder(clock)
    rec.start(folder / "take.wav")
    clock.run_blocks(200)
    assert rec.wait_written(200 * 256, timeout=10)
    shutil.rmtree(folder)                 # the folder goes away while recording
    assert rec.wait_done(timeout=10)      # the writer notices and ends the take by itself
    saved = rec.stop()
    assert saved == rescue_dir / "take.wav"
    assert "was removed" in rec.error and str(saved) in rec.error
    audio, _ = sf.read(saved, dtype="float32")
    assert audio.shape[0] == rec.frames_written >= 200 * 256
    assert np.array_equal(audio, ramp(0, audio.shape[0]))
    assert (rescue_dir / "take.mid").exists()


def test_file_deleted_but_folder_kept_is_saved_at_the_same_path(tmp_path):
    inst = RampInstrument()
    clock = OfflineClockOutput(inst, realtime=False)
    rec = Recorder(clock)
    rec.start(tmp_path / "take.wav")
    clock.run_blocks(50)
    assert rec.wait_written(50 * 256, timeout=10)
    os.remove(tmp_path / "take.wav")
    assert rec.wait_done(timeout=10)
    assert rec.stop() == tmp_path / "take.wav"
    audio, _ = sf.read(tmp_path / "take.wav", dtype="float32")
    assert np.array_equal(audio, ramp(0, audio.shape[0])) and audio.shape[0] >= 50 * 256


def test_repair_wav_trims_a_torn_frame_and_fixes_sizes(tmp_path):
    path = tmp_path / "torn.wav"
    sf.write(path, ramp(0, 1000), RATE, subtype="PCM_24")
    with open(path, "ab") as f:
        f.write(b"\x01\x02")              # a torn last frame: 2 of 3 bytes
    with open(path, "r+b") as f:          # and a header that claims far more data
        data = f.read()
        at = data.index(b"data") + 4
        f.seek(at)
        f.write((10**8).to_bytes(4, "little"))
    fd = os.open(path, os.O_RDWR)
    try:
        assert repair_wav(fd) == 1000
    finally:
        os.close(fd)
    audio, _ = sf.read(path, dtype="float32")
    assert audio.shape == (1000,)


# ---------------------------------------------------------------------------- performance files

def test_performance_midi_round_trip(tmp_path):
    events = [(0, NoteOn(60, 100)), (256, PadMove(0.25, 0.75)), (256, PitchBend(-8192)),
              (512, ControlChange(64, 127)), (4800, NoteOff(60)), (5000, SetParam("volume", 0.3)),
              (6000, Panic()), (10**8, NoteOn(72, 1))]      # over half an hour in: still exact
    for rate in (48000, 44100, 96000):
        path = write_performance(tmp_path / f"p{rate}.mid", events, rate, end_frame=10**8 + 10)
        got_rate, got = read_performance(path)
        assert got_rate == rate
        assert [f for f, _ in got] == [f for f, _ in events]
        for (_, want), (_, have) in zip(events, got):
            if isinstance(want, PadMove):
                assert abs(have.x - want.x) < 1e-4 and abs(have.y - want.y) < 1e-4
            else:
                assert have == want


def test_take_events_are_saved_beside_the_wav(tmp_path):
    rec, path, inst = _take(tmp_path, blocks=100)
    rate, events = read_performance(path.with_suffix(".mid"))
    assert rate == RATE
    assert events == [(0, NoteOn(60, 100)), (50 * 256, NoteOff(60))]
    assert inst.posted == [NoteOn(60, 100), NoteOff(60)]


def test_a_live_take_re_renders_identically_with_the_offline_driver(tmp_path, tiny_model_dir):
    from engine.gansynth.synth import load_synth
    from engine.instrument.instrument import Instrument

    synth = load_synth(tiny_model_dir, threads=1)
    live = Instrument(synth, sample_rate=RATE, cache_mb=32, seed=3)
    live.renderer.render_now([60, 64, 67])       # a warm cache, as when playing
    clock = OfflineClockOutput(live, realtime=False)
    rec = Recorder(clock)
    rec.start(tmp_path / "live.wav")
    script = [(NoteOn(60, 100), 10), (NoteOn(64, 80), 20), (PitchBend(4000), 5), (NoteOff(60), 30),
              (NoteOn(67, 127), 40), (ControlChange(64, 127), 5), (NoteOff(64), 10),
              (NoteOff(67), 10), (ControlChange(64, 0), 60)]
    for event, blocks in script:
        clock.post(event)
        clock.run_blocks(blocks)
    rec.stop()
    played, _ = sf.read(tmp_path / "live.wav", dtype="float32")
    assert np.abs(played).max() > 1e-3                    # notes sounded

    rate, events = read_performance(tmp_path / "live.mid")
    fresh = Instrument(load_synth(tiny_model_dir, threads=1), sample_rate=rate, cache_mb=32, seed=3)
    again = render_performance(fresh, events, played.shape[0])
    assert np.array_equal(again, played)
