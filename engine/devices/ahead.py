"""Rendering ahead of the device: a producer thread fills a ring that a C callback plays.

    ahead = AheadRing(render, 48000, channels=2, periods=1)   # render(frames) -> float32 [frames]
    stream = ahead.open_stream(sd, device=..., samplerate=..., latency=..., blocksize=...)
    ahead.start(); stream.start() ... ahead.stop(); stream.abort(); stream.close()

Why: a Python callback needs the GIL at its start and again after every cffi call or numpy
operation on more than 500 elements. While another thread holds it in C code (the window's
paint calls into Qt hold it for up to 3 ms, measured) the callback waits, and a block that
waits past its period is an xrun. Here the device's callback is C (engine/devices/aheadring.c:
PortAudio's here, our JACK client's in engine/devices/jackclient.py): it copies the ring into
the device's buffer, never entering the interpreter, then wakes the producer, which renders
the next blocks `periods` device periods ahead. A GIL wait now costs the producer up to
`periods` periods of slack (plus what is left of the current one) instead of the device's
deadline, for `periods` periods more output latency.

The producer renders in blocks of the device's period (events keep their one-block
timing) and runs at SCHED_FIFO (CALLBACK_RT_PRIORITY) where permitted, as the Python
callback did. Until the device's first callback the period is unknown: the ring is primed
with `default_period`-sized blocks, and blocks the ring could not fill count as xruns only
once the producer has filled it at the device's own period.
"""
from __future__ import annotations

import os
import select
import threading
import time

import numpy as np

from engine.util.compiled import compiled_module

CAPACITY = 1 << 16        # samples the ring holds: (periods + 1) * period must fit
MAX_PERIODS = 4
WAKE_TIMEOUT_S = 0.1      # the producer also looks without a wake-up (a stream not yet started)


def ring_library():
    """(ffi, lib) of the compiled ring; ImportError saying how to get it back when it is missing."""
    return compiled_module("engine.devices._aheadring", "the compiled audio ring",
                           ", or render in the callback (ahead 0)")


class AheadRing:
    """The ring, its counters and its producer thread (see the module docstring)."""

    def __init__(self, render, sample_rate: int, channels: int, periods: int = 1, default_period: int = 256,
                 realtime_priority: int = 1, on_error=None, before_block=None):
        if not 1 <= int(periods) <= MAX_PERIODS:
            raise ValueError(f"periods ahead must be 1..{MAX_PERIODS}, not {periods}")
        self.render = render
        self.sample_rate = int(sample_rate)
        self.periods = int(periods)
        self.default_period = int(default_period)
        self.realtime_priority = realtime_priority
        self.on_error = on_error          # on_error(exception) from the producer: silence was played
        self.before_block = before_block  # before_block() in the producer before each block (MIDI in)
        ffi, lib = ring_library()
        self._ffi, self._lib = ffi, lib
        self._mem = ffi.new("float[]", CAPACITY)
        self._ring = ffi.new("gs_ring *")
        r = self._ring
        r.data, r.capacity, r.channels = self._mem, CAPACITY, int(channels)
        self._fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        r.wake_fd = self._fd
        self._buf = np.frombuffer(ffi.buffer(self._mem), np.float32)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.load = 0.0                   # producer's render time per period (EMA)

    # ---- the device's view ----
    @property
    def callback(self):
        """The C callback, for a PortAudio stream (PaStreamCallback)."""
        return self._ffi.addressof(self._lib, "gs_pa_callback")

    @property
    def userdata(self):
        return self._ffi.cast("void *", self._ring)

    @property
    def ring(self):
        """The C ring (gs_ring *), for engine/devices/jackclient.py's process callback."""
        return self._ring

    def open_stream(self, sd, **kwargs):
        """A sounddevice output stream (float32) that the C callback feeds."""
        return sd._StreamBase(kind="output", dtype="float32", callback=self.callback, userdata=self.userdata,
                              wrap_callback=None, channels=int(self._ring.channels), **kwargs)

    # ---- counters (any thread) ----
    @property
    def xruns(self) -> int:
        return int(self._ring.xruns)

    @property
    def short_blocks(self) -> int:
        """Callbacks the ring could not fill (once primed): the producer was late, our share of `xruns`."""
        return int(self._ring.short_blocks)

    @property
    def underflow_run(self) -> int:
        return int(self._ring.underflow_run)

    @property
    def last_frames(self) -> int:
        return int(self._ring.last_frames)

    @property
    def callback_tid(self) -> int:
        return int(self._ring.callback_tid)

    @property
    def filled(self) -> int:
        return int(self._lib.gs_ring_filled(self._ring))

    @property
    def ahead_frames(self) -> int:
        """Frames rendered ahead of the device at each callback: the latency this adds."""
        return self.periods * (self.last_frames or self.default_period)

    # ---- control ----
    def start(self) -> None:
        """Start the producer (before the stream, so that its first callback finds audio)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audio-ahead", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Silence the callback (it consumes nothing more) and end the producer."""
        self._lib.gs_ring_set_flag(self._ffi.addressof(self._ring, "silent"), 1)
        self._stop.set()
        if self._fd >= 0:
            os.eventfd_write(self._fd, 1)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def close(self) -> None:
        """Release the wake-up descriptor; only once no callback can run (the stream closed)."""
        if self._fd >= 0:
            self._ring.wake_fd = -1
            os.close(self._fd)
            self._fd = -1

    # ---- producer thread ----
    def _run(self) -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime_priority))
        except (AttributeError, OSError):       # not permitted, or not Linux: as it is
            pass
        r, lib, buf = self._ring, self._lib, self._buf
        mask = CAPACITY - 1
        while not self._stop.is_set():
            period = int(r.last_frames) or self.default_period
            target = min((self.periods + 1) * period, CAPACITY)
            filled = lib.gs_ring_filled(r)
            while filled < target and not self._stop.is_set():
                n = min(period, target - filled)
                t0 = time.perf_counter()
                try:
                    if self.before_block is not None:
                        self.before_block()
                    block = self.render(n)
                except Exception as e:          # silence plus a report, as the direct callback does
                    block = np.zeros(n, np.float32)
                    if self.on_error is not None:
                        self.on_error(e)
                start = int(r.written) & mask
                first = min(n, CAPACITY - start)
                buf[start:start + first] = block[:first]
                if first < n:
                    buf[:n - first] = block[first:]
                lib.gs_ring_commit(r, n)
                filled += n
                self.load = 0.9 * self.load + 0.1 * (time.perf_counter() - t0) * self.sample_rate / n
            if r.last_frames and not r.primed:
                lib.gs_ring_set_flag(self._ffi.addressof(r, "primed"), 1)
            ready, _, _ = select.select([self._fd], [], [], WAKE_TIMEOUT_S)
            if ready:
                try:
                    os.eventfd_read(self._fd)
                except BlockingIOError:
                    pass
