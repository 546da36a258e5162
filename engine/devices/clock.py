"""What every output shares, and the output without a device.

- `OutputTap`: what the output played (scope, levels, frame count, the recorder's ring);
  written by the audio (or clock) thread only.
- `OutputBase`: posting events with timestamps for a recorder, one block from the
  instrument into the tap; `AudioOutput` (engine/devices/audio.py) builds on it too.
- `OfflineClockOutput`: calls `instrument.process` from its own thread, paced in real time
  or as fast as it goes; `AudioOutput` falls back to it when its device fails.
"""
from __future__ import annotations

import threading
import time

import numpy as np

CLOCK_BLOCK = 256
SCOPE_SIZE = 16384
MAX_BLOCK = 1 << 16     # largest block the tap accepts (the mixer's own limit)


class OutputTap:
    """What the output played, for the GUI and the recorder. Written by the audio thread only.

    - `scope(n)`: the newest n samples (a copy; seqlock-consistent).
    - `levels()`: (peak, rms) linear, peak held since the previous call, rms of the last block.
    - `frames`: samples produced so far (monotonic across device/clock switches).
    - a recorder ring (`attach_ring`) gets every block while attached.
    """

    def __init__(self, scope_size: int = SCOPE_SIZE):
        self._scope = np.zeros(scope_size, np.float32)
        self._abs = np.zeros(MAX_BLOCK, np.float32)
        self._seq = 0
        self.frames = 0
        self._peak = 0.0
        self._rms = 0.0
        self._ring = None
        self._in_push = False

    # ---- audio thread ----
    def push(self, block: np.ndarray) -> None:
        self._in_push = True
        n = block.shape[0]
        ring = self._ring
        if ring is not None:
            if ring.start_frame < 0:
                ring.start_frame = self.frames
            ring.push(block)
        np.abs(block, out=self._abs[:n])
        peak = float(self._abs[:n].max()) if n else 0.0
        if peak > self._peak:
            self._peak = peak
        self._rms = float(np.sqrt(np.dot(block, block) / n)) if n else 0.0
        self._seq += 1                      # odd: writing
        size = self._scope.shape[0]
        if n >= size:
            self._scope[:] = block[n - size:]
        else:
            self._scope[:-n] = self._scope[n:]
            self._scope[-n:] = block
        self._seq += 1                      # even: consistent
        self.frames += n
        self._in_push = False

    # ---- readers ----
    def scope(self, n: int) -> np.ndarray:
        n = min(int(n), self._scope.shape[0])
        for _ in range(8):
            seq = self._seq
            out = self._scope[self._scope.shape[0] - n:].copy()
            if seq % 2 == 0 and seq == self._seq:
                return out
            time.sleep(0.0005)
        return out

    def levels(self) -> tuple[float, float]:
        peak, self._peak = self._peak, 0.0
        return peak, self._rms

    # ---- recorder (GUI thread) ----
    def attach_ring(self, ring) -> None:
        self._ring = ring

    def detach_ring(self, ring) -> None:
        """Stop feeding `ring`; returns once the audio thread is out of `push`."""
        if self._ring is ring:
            self._ring = None
        deadline = time.monotonic() + 0.1
        while self._in_push and time.monotonic() < deadline:
            time.sleep(0.0005)


class OutputBase:
    """Event posting with timestamps, the recorder hook and the tap, shared by both outputs."""

    def __init__(self, instrument, tap: OutputTap | None = None):
        self.instrument = instrument
        self.sample_rate = int(instrument.sample_rate)
        self.tap = tap or OutputTap()
        self.recorder = None          # set by engine.devices.recorder.Recorder users (see `post`)
        self.callback_errors = 0
        self.callback_error: BaseException | None = None

    def post(self, event) -> None:
        """Send `event` to the instrument (any thread); a recorder logs it with its frame."""
        self.instrument.post(event)
        recorder = self.recorder
        if recorder is not None:
            recorder.log_event(self.tap.frames, event)

    def _render(self, frames: int) -> np.ndarray:
        """One block from the instrument into the tap. Audio/clock thread only."""
        block = self.instrument.process(frames)
        self.tap.push(block)
        return block


class OfflineClockOutput(OutputBase):
    """Calls `instrument.process(block_size)` from its own thread without a device.

    `realtime=True` paces blocks at the sample rate (the on-screen keyboard still sounds
    into the scope and the recorder); `realtime=False` runs as fast as the instrument and
    an attached recorder's writer allow (offline takes, benchmarks). Late blocks (the
    machine could not keep pace) count as `xruns`.
    """

    name = "offline clock"
    mode = "clock"

    def __init__(self, instrument, block_size: int = CLOCK_BLOCK, realtime: bool = True,
                 tap: OutputTap | None = None, on_block=None):
        super().__init__(instrument, tap)
        self.block_size = int(block_size)
        self.realtime = realtime
        self.on_block = on_block  # clock thread: on_block(block), block valid during the call only
        self.xruns = 0
        self.cpu_load = 0.0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame_cond = threading.Condition()
        self.max_frames: int | None = None   # stop by itself after this many frames

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.block_size / self.sample_rate

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self) -> bool:
        self.start()
        return False

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="offline-clock", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._thread = None

    def run_blocks(self, blocks: int) -> None:
        """Render `blocks` blocks in the calling thread (single-threaded mode; not while started)."""
        if self.running:
            raise RuntimeError("the clock thread is running; stop it before stepping by hand")
        for _ in range(int(blocks)):
            self._render(self.block_size)
        if self.realtime is False:
            self._wait_for_recorder()

    def wait_frames(self, frames: int, timeout: float) -> bool:
        """Block until the tap has produced `frames` frames in total (or timeout)."""
        with self._frame_cond:
            return self._frame_cond.wait_for(lambda: self.tap.frames >= frames or self._stop.is_set(),
                                             timeout)

    def _run(self) -> None:
        period = self.block_size / self.sample_rate
        deadline = time.monotonic()
        while not self._stop.is_set():
            if self.max_frames is not None and self.tap.frames >= self.max_frames:
                break
            t0 = time.monotonic()
            try:
                block = self._render(self.block_size)
                if self.on_block is not None:
                    self.on_block(block)
            except Exception as e:  # keep time going: silence plus a count
                self.callback_errors += 1
                self.callback_error = e
                self.tap.push(np.zeros(self.block_size, np.float32))
            busy = time.monotonic() - t0
            self.cpu_load = 0.9 * self.cpu_load + 0.1 * busy / period
            with self._frame_cond:
                self._frame_cond.notify_all()
            if self.realtime:
                deadline += period
                wait = deadline - time.monotonic()
                if wait < -period:                # missed a whole block: count and resync
                    self.xruns += 1
                    deadline = time.monotonic()
                elif wait > 0:
                    self._stop.wait(wait)
            else:
                self._wait_for_recorder()
        with self._frame_cond:
            self._frame_cond.notify_all()

    def _wait_for_recorder(self) -> None:
        """Faster than real time: never outrun the recorder's writer (no overruns)."""
        rec = self.recorder
        while rec is not None and rec.recording and not self._stop.is_set() \
                and rec.backlog_frames > rec.ring_capacity // 2:
            self._stop.wait(0.002)

    def meters(self) -> dict:
        return {"mode": self.mode, "device": self.name, "sample_rate": self.sample_rate,
                "block_size": self.block_size, "latency_ms": self.latency_ms, "xruns": self.xruns,
                "cpu_load": self.cpu_load, "last_error": self.last_error}
