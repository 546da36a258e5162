"""Recording what the output played: a lock-free ring from the audio thread, a writer thread, WAV.

    rec = Recorder(output)                  # output: AudioOutput or OfflineClockOutput
    rec.start("take.wav", subtype="FLOAT")  # or "PCM_24"; raises RecorderError naming the file
    ...                                     # output.post(event) events are logged with frames
    rec.stop()                              # -> take.wav + take.mid (the performance)
    rec.elapsed_s, rec.overruns, rec.error  # meters for the GUI

Threads:
- audio thread (the stream callback or the offline clock): `SampleRing.push(block)` only,
  through the output's tap. Never blocks, never allocates beyond numpy views; a block
  that does not fit is counted (`overruns`, `dropped_frames`) and replaced by silence of
  the same length in the file, so the WAV keeps the stream's timeline.
- writer thread (one per take): pops the ring, writes with soundfile, watches for the file
  being removed, finishes the file on stop or on the first failure.
- GUI / any thread: start, stop, meters; `log_event` (via `output.post`).

Files: mono WAV at the output's sample rate (the stream's channels are copies of the mono
instrument output). A WAV holds at most 4 GiB: about 6 h of float32 or 8 h of 24-bit
mono at 48 kHz; the take stops cleanly at that limit with an error saying so.
If writing fails (disk full, I/O error) the take stops, the file is closed and its header
repaired to cover every whole frame on disk, and `error` says what happened. If the file
is removed while recording, the take stops and what was recorded is saved again (same
path if its folder still exists, else the temp folder) and `error` names where.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from engine.devices.performance import write_performance

SUBTYPES = ("FLOAT", "PCM_24")
RING_SECONDS = 10.0          # ring capacity at the output rate (bounded memory for any take length)
WRITE_CHUNK = 16384          # frames per soundfile write
POLL_S = 0.02                # writer wake-up period (the audio thread never signals)
WAV_LIMIT_BYTES = 0xFFFFFFFF - 4096
_PCM24_MAX = 1.0 - 2.0 ** -23


class RecorderError(Exception):
    """A take could not start; the message names the file and the problem."""


class SampleRing:
    """Single-producer single-consumer ring of float32 samples, preallocated.

    Lock-free under the GIL: the producer only advances `_write`, the consumer only
    `_read` (plain int stores are atomic). Blocks that do not fit become gap markers
    (position, frames) that the consumer turns back into silence.
    """

    GAP_SLOTS = 256

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        # written now (not calloc'd), so its pages exist: a first touch in the callback is a page fault
        self._buf = np.full(self.capacity, 0.0, np.float32)
        self._write = 0          # samples pushed (producer)
        self._read = 0           # samples popped (consumer)
        self.overruns = 0        # blocks that did not fit (producer)
        self.dropped_frames = 0  # their frames
        self._gaps = np.zeros((self.GAP_SLOTS, 2), np.int64)  # [pos, frames]
        self._gap_write = 0
        self._gap_read = 0
        self._pending_gap = 0    # producer-local: dropped frames not yet published
        self.start_frame = -1    # output frame of the first sample (set by the producer)

    # ---- producer (audio thread) ----
    def push(self, block: np.ndarray) -> bool:
        n = block.shape[0]
        w = self._write
        if n > self.capacity - (w - self._read):
            self.overruns += 1
            self.dropped_frames += n
            self._pending_gap += n
            return False
        if self._pending_gap:
            self._publish_gap(w)
        i = w % self.capacity
        first = min(n, self.capacity - i)
        self._buf[i:i + first] = block[:first]
        if first < n:
            self._buf[:n - first] = block[first:]
        self._write = w + n
        return True

    def _publish_gap(self, pos: int) -> None:
        g = self._gap_write
        if g - self._gap_read < self.GAP_SLOTS:
            self._gaps[g % self.GAP_SLOTS, 0] = pos
            self._gaps[g % self.GAP_SLOTS, 1] = self._pending_gap
            self._gap_write = g + 1
            self._pending_gap = 0
        # else: keep it pending; it is published with a later block

    def flush_gap(self) -> None:
        """Producer side, when the producer has stopped: publish a trailing gap."""
        if self._pending_gap:
            self._publish_gap(self._write)

    # ---- consumer (writer thread) ----
    def available(self) -> int:
        return self._write - self._read

    def pop(self, out: np.ndarray) -> tuple[int, int]:
        """Copy up to len(out) samples into `out`; returns (frames copied, silence frames due first).

        When the second value is > 0, the caller writes that much silence before the
        copied samples (that silence stands for blocks the ring could not take).
        """
        w = self._write
        r = self._read
        if self._gap_read < self._gap_write:
            slot = self._gap_read % self.GAP_SLOTS
            pos, frames = int(self._gaps[slot, 0]), int(self._gaps[slot, 1])
            if pos == r:
                self._gap_read += 1
                return 0, frames
            w = min(w, pos)
        n = min(w - r, out.shape[0])
        i = r % self.capacity
        first = min(n, self.capacity - i)
        out[:first] = self._buf[i:i + first]
        if first < n:
            out[first:n] = self._buf[:n - first]
        self._read = r + n
        return n, 0


class Recorder:
    """Records the output's samples to WAV and its events to a MIDI file beside it."""

    def __init__(self, output, ring_seconds: float = RING_SECONDS):
        self.output = output
        self.sample_rate = int(output.sample_rate)
        self._ring_capacity = int(ring_seconds * self.sample_rate)
        self._ring: SampleRing | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._events: list = []
        self._events_lock = threading.Lock()
        self.path: Path | None = None
        self.midi_path: Path | None = None
        self.subtype = "FLOAT"
        self.frames_written = 0
        self.error = ""          # last failure, "" if none
        self.saved_to: Path | None = None   # where the audio ended up (differs after a rescue)

    # ---- meters (any thread) ----
    @property
    def recording(self) -> bool:
        return not self._done.is_set()

    @property
    def elapsed_s(self) -> float:
        return self.frames_written / self.sample_rate

    @property
    def overruns(self) -> int:
        return self._ring.overruns if self._ring is not None else 0

    @property
    def dropped_frames(self) -> int:
        return self._ring.dropped_frames if self._ring is not None else 0

    @property
    def backlog_frames(self) -> int:
        """Frames waiting in the ring (producers may pace themselves on this)."""
        ring = self._ring
        return ring.available() if ring is not None and self.recording else 0

    @property
    def start_frame(self) -> int:
        """Output frame (`output.tap.frames`) of the take's first sample; -1 before it."""
        return self._ring.start_frame if self._ring is not None else -1

    @property
    def ring_capacity(self) -> int:
        return self._ring_capacity

    # ---- control (GUI thread) ----
    def start(self, path, subtype: str = "FLOAT") -> None:
        """Open `path` for a new take and start recording at the next block."""
        if self.recording:
            raise RecorderError(f"already recording to {self.path}")
        if subtype not in SUBTYPES:
            raise RecorderError(f"{path}: sample format must be one of {SUBTYPES}, not {subtype!r}")
        path = Path(path)
        fd, sound_file = _open_wav(path, self.sample_rate, subtype)
        self.path, self.subtype = path, subtype
        self.midi_path = path.with_suffix(".mid")
        self.saved_to = path
        self.frames_written = 0
        self.error = ""
        with self._events_lock:
            self._events = []
        self._ring = SampleRing(self._ring_capacity)
        self._stop.clear()
        self._done.clear()
        self._thread = threading.Thread(target=self._run, args=(fd, sound_file, self._ring),
                                        name="recorder-writer", daemon=True)
        self._thread.start()
        self.output.recorder = self            # output.post(event) now logs events here
        self.output.tap.attach_ring(self._ring)

    def stop(self, timeout: float = 30.0) -> Path | None:
        """Stop the take, finish the WAV and the MIDI file; returns where the audio is."""
        if self._thread is None:
            return self.saved_to
        self.output.tap.detach_ring(self._ring)
        self._stop.set()
        self._done.wait(timeout)
        self._thread.join(timeout=1.0)
        self._thread = None
        return self.saved_to

    def wait_written(self, frames: int, timeout: float) -> bool:
        """Block until `frames` frames are on disk or the take ended (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while self.frames_written < frames and self.recording:
            if time.monotonic() > deadline:
                return False
            self._done.wait(POLL_S)
        return self.frames_written >= frames

    def wait_done(self, timeout: float) -> bool:
        """Block until the take has ended (stopped, or ended by itself on an error)."""
        return self._done.wait(timeout)

    def log_event(self, frame: int, event) -> None:
        """Remember `event` applied at output frame `frame` (any thread)."""
        if self.recording:
            with self._events_lock:
                self._events.append((frame, event))

    def events(self) -> list:
        """The take's events as (frame from the take's start, event)."""
        start = self._ring.start_frame if self._ring is not None else -1
        with self._events_lock:
            events = list(self._events)
        if start < 0:
            return [(0, e) for _, e in events]
        return [(max(0, f - start), e) for f, e in events]

    # ---- writer thread ----
    def _run(self, fd: int, sound_file: sf.SoundFile, ring: SampleRing) -> None:
        chunk = np.zeros(WRITE_CHUNK, np.float32)
        zeros = np.zeros(WRITE_CHUNK, np.float32)
        bytes_per_frame = 4 if self.subtype == "FLOAT" else 3
        failed = removed = False
        try:
            while True:
                stopping = self._stop.is_set()   # read before draining: nothing is lost
                if stopping:
                    ring.flush_gap()             # producer detached: safe to publish
                while True:
                    n, silence = ring.pop(chunk)
                    if silence:
                        self._write_silence(sound_file, zeros, silence)
                    elif n:
                        self._write(sound_file, chunk[:n])
                    else:
                        break
                    if self.frames_written * bytes_per_frame > WAV_LIMIT_BYTES:
                        raise OSError("the WAV size limit (4 GiB) was reached")
                if os.fstat(fd).st_nlink == 0:
                    removed = True
                    break
                if stopping:
                    break
                self._stop.wait(POLL_S)
        except Exception as e:  # disk full, I/O error, size limit: keep what is on disk
            failed = True
            self.error = f"recording to {self.path} stopped: {_describe(e)}"
        finally:
            self.output.tap.detach_ring(ring)
            self._finish(fd, sound_file, failed, removed)
            self._done.set()

    def _write(self, sound_file, block: np.ndarray) -> None:
        if self.subtype == "PCM_24":      # the device clips too; libsndfile would wrap
            np.clip(block, -1.0, _PCM24_MAX, out=block)
        sound_file.write(block)
        self.frames_written += block.shape[0]

    def _write_silence(self, sound_file, zeros: np.ndarray, frames: int) -> None:
        while frames > 0:
            n = min(frames, zeros.shape[0])
            sound_file.write(zeros[:n])
            self.frames_written += n
            frames -= n

    def _finish(self, fd: int, sound_file, failed: bool, removed: bool) -> None:
        try:
            sound_file.close()
        except Exception as e:
            failed = True
            self.error = self.error or f"recording to {self.path}: closing failed: {_describe(e)}"
        if failed:
            try:
                self.frames_written = repair_wav(fd)   # a failed write may have left part of a chunk
            except OSError as e:
                self.error += f"; header repair failed: {_describe(e)}"
        if removed:
            self._rescue(fd)
        os.close(fd)
        self._write_midi()

    def _rescue(self, fd: int) -> None:
        target = _rescue_path(self.path)
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            with os.fdopen(os.dup(fd), "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            self.saved_to = target
            self.midi_path = target.with_suffix(".mid")
            self.error = (f"recording file {self.path} was removed during the take; stopped and saved "
                          f"the {self.elapsed_s:.1f} s recorded to {target}")
        except OSError as e:
            self.saved_to = None
            self.error = (f"recording file {self.path} was removed during the take and could not be "
                          f"saved again to {target}: {_describe(e)}")

    def _write_midi(self) -> None:
        try:
            write_performance(self.midi_path, self.events(), self.sample_rate, end_frame=self.frames_written)
        except Exception as e:  # disk full, path gone: the WAV still counts
            msg = f"performance MIDI {self.midi_path} not written: {_describe(e)}"
            self.error = f"{self.error}; {msg}" if self.error else msg


def _open_wav(path: Path, sample_rate: int, subtype: str) -> tuple[int, sf.SoundFile]:
    if path.suffix.lower() != ".wav":
        raise RecorderError(f"{path}: recordings are WAV files; use a .wav name")
    if not path.parent.is_dir():
        raise RecorderError(f"{path}: folder {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as e:
        raise RecorderError(f"{path}: cannot create the file: {_describe(e)}") from None
    try:
        sound_file = sf.SoundFile(fd, "w", samplerate=sample_rate, channels=1, subtype=subtype,
                                  format="WAV", closefd=False)
    except Exception as e:
        os.close(fd)
        raise RecorderError(f"{path}: cannot write a WAV there: {_describe(e)}") from None
    return fd, sound_file


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _rescue_path(path: Path) -> Path:
    folder = path.parent if path.parent.is_dir() else Path(tempfile.gettempdir())
    candidate = folder / path.name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    i = 0
    while candidate.exists():
        i += 1
        candidate = folder / f"{path.stem}-rescued-{stamp}{'-' + str(i) if i > 1 else ''}{path.suffix}"
    return candidate


def repair_wav(fd: int) -> int:
    """Make a WAV's header match the whole frames on disk (after a failed write).

    Walks the RIFF chunks of the open file `fd`, sets the `data` size to the bytes
    actually present (floored to whole frames), truncates a torn last frame, and fixes
    the RIFF size and a `fact` frame count. Returns the number of frames kept.
    """
    size = os.fstat(fd).st_size
    head = os.pread(fd, min(size, 1 << 16), 0)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise OSError(f"not a RIFF/WAVE file ({size} bytes)")
    pos, block_align, fact_at, data_at = 12, 0, -1, -1
    while pos + 8 <= len(head):
        cid, csize = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            block_align = struct.unpack("<H", head[pos + 20:pos + 22])[0]
        elif cid == b"fact":
            fact_at = pos + 8
        elif cid == b"data":
            data_at = pos + 8
            break
        pos += 8 + csize + (csize & 1)
    if data_at < 0 or block_align == 0:
        raise OSError("no fmt/data chunk in the header")
    frames = max(0, size - data_at) // block_align
    data_bytes = frames * block_align
    os.ftruncate(fd, data_at + data_bytes)
    os.pwrite(fd, struct.pack("<I", data_bytes), data_at - 4)
    os.pwrite(fd, struct.pack("<I", data_at + data_bytes - 8), 4)
    if fact_at >= 0:
        os.pwrite(fd, struct.pack("<I", frames), fact_at)
    os.fsync(fd)
    return frames
