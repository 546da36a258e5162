"""The render-ahead ring (engine/devices/ahead.py): its compiled callback driven as PortAudio drives it."""
from __future__ import annotations

import contextlib
import os
import threading
import time

import numpy as np
import pytest

from engine.devices.ahead import CAPACITY, AheadRing
from engine.devices.audio import AudioOutput

OUTPUT_UNDERFLOW = 0x4   # paOutputUnderflow


class Counter:
    """render(frames): a ramp continuing across calls, so order and gaps show."""

    def __init__(self):
        self.next = 0
        self.sizes = []
        self.fail = False

    def __call__(self, frames):
        self.sizes.append(frames)
        if self.fail:
            raise RuntimeError("render failed")
        block = np.arange(self.next, self.next + frames, dtype=np.float32)
        self.next += frames
        return block


def play(ring, frames, status=0):
    """One callback into a fresh interleaved buffer, as the device would make it."""
    out = ring._ffi.new("float[]", frames * int(ring._ring.channels))
    ring._lib.gs_ring_play(ring._ring, out, frames, status)
    return np.frombuffer(ring._ffi.buffer(out), np.float32).reshape(frames, -1).copy()


@contextlib.contextmanager
def producing(render, **kwargs):
    """A ring at 48 kHz with its producer running; stopped and closed after."""
    ring = AheadRing(render, 48000, **kwargs)
    ring.start()
    try:
        yield ring
    finally:
        ring.stop()
        ring.close()


def wait_filled(ring, frames, timeout=5.0):
    deadline = time.monotonic() + timeout
    while ring.filled < frames and time.monotonic() < deadline:
        time.sleep(0.001)
    return ring.filled


def test_the_callback_plays_the_producers_blocks_in_order_on_every_channel():
    render = Counter()
    with producing(render, channels=2, periods=2, default_period=64) as ring:
        assert wait_filled(ring, 3 * 64) == 3 * 64            # primed: (periods + 1) default periods
        got = []
        for _ in range(40):                                   # the device's period differs: it follows
            got.append(play(ring, 128))
            assert wait_filled(ring, 3 * 128) == 3 * 128
    audio = np.concatenate(got)
    assert np.array_equal(audio[:, 0], audio[:, 1])
    assert np.array_equal(audio[:, 0], np.arange(audio.shape[0], dtype=np.float32))   # nothing lost or repeated
    assert render.sizes[:3] == [64, 64, 64] and set(render.sizes[3:]) <= {64, 128}
    assert ring.last_frames == 128 and ring._ring.callbacks == 40 and ring.callback_tid == threading.get_native_id()
    assert ring.ahead_frames == 2 * 128


def test_it_wraps_around_its_capacity_seamlessly():
    with producing(Counter(), channels=1, periods=1, default_period=1000) as ring:
        wait_filled(ring, 2000)
        audio = []
        while len(audio) * 1000 < 3 * CAPACITY:
            audio.append(play(ring, 1000)[:, 0])
            wait_filled(ring, 2000)
    audio = np.concatenate(audio)
    assert np.array_equal(audio, np.arange(audio.shape[0], dtype=np.float32))


def test_short_blocks_count_once_primed_and_device_underflows_always():
    render = Counter()
    ring = AheadRing(render, 48000, channels=1, periods=1, default_period=32)
    # no producer yet: the device starts before anything was rendered (start-up is not an xrun)
    assert not play(ring, 32).any() and ring.xruns == 0
    ring.start()
    try:
        wait_filled(ring, 64)
        play(ring, 64)                    # the real period: the producer primes at it
        deadline = time.monotonic() + 5
        while not ring._ring.primed and time.monotonic() < deadline:
            time.sleep(0.001)
        assert ring._ring.primed and wait_filled(ring, 128) == 128
        play(ring, 64, OUTPUT_UNDERFLOW)  # PortAudio's own flag counts
        assert ring.xruns == 1 and ring.underflow_run == 1 and ring._ring.device_underflows == 1
    finally:
        ring.stop()
    # the producer is gone: the device drains what is left, then gets part silence, counted
    left = ring.filled
    block = play(ring, left + 64)[:, 0]
    ring.close()
    assert not block[left:].any() and ring.xruns == 1       # silent after stop(): not the producer's fault


def test_a_starved_ring_counts_and_plays_what_it_has():
    render = Counter()
    ring = AheadRing(render, 48000, channels=1, periods=1, default_period=32)
    r = ring._ring
    ring._buf[:48] = np.arange(1, 49)
    ring._lib.gs_ring_commit(r, 48)
    ring._lib.gs_ring_set_flag(ring._ffi.addressof(r, "primed"), 1)
    block = play(ring, 64)[:, 0]
    assert np.array_equal(block[:48], np.arange(1, 49)) and not block[48:].any()
    assert ring.xruns == 1 and ring.underflow_run == 1
    play(ring, 16, OUTPUT_UNDERFLOW)      # short and flagged: one xrun
    assert ring.xruns == 2 and ring._ring.short_blocks == 2 and ring._ring.device_underflows == 1
    ring._buf[48:112] = 1.0
    ring._lib.gs_ring_commit(r, 64)
    play(ring, 64)
    assert ring.xruns == 2 and ring.underflow_run == 0
    ring.close()


def test_a_failing_render_plays_silence_and_reports():
    render = Counter()
    render.fail = True
    errors = []
    with producing(render, channels=1, periods=1, default_period=32, on_error=errors.append) as ring:
        wait_filled(ring, 64)
        assert not play(ring, 32).any()
    assert errors and isinstance(errors[0], RuntimeError)


def test_each_callback_wakes_the_producer():
    with producing(Counter(), channels=1, periods=1, default_period=256) as ring:
        wait_filled(ring, 512)
        t0 = time.monotonic()
        play(ring, 256)
        assert wait_filled(ring, 512) == 512
        assert time.monotonic() - t0 < 0.05        # woken, not found by its 0.1 s look-around


def test_periods_out_of_range_are_refused():
    with pytest.raises(ValueError, match="periods ahead"):
        AheadRing(Counter(), 48000, channels=1, periods=0)

    class Instrument:
        sample_rate = 48000

    with pytest.raises(ValueError, match=r"0\.\.4, not 5"):
        AudioOutput(Instrument(), ahead=5)


def test_close_releases_the_wake_descriptor():
    ring = AheadRing(Counter(), 48000, channels=1)
    fd = ring._fd
    ring.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    play(ring, 16)          # a late callback after close writes to no descriptor
