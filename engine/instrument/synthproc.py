"""`SynthProcess`: a Synth's `generate` in a child process, with its own interpreter and GIL.

The live instrument's render worker generates notes many times a second while the audio
callback needs the GIL every period (5.3 ms at 256 frames / 48 kHz). In one process the
torch and numpy glue of a render holds the GIL for up to ~2 ms at a time (measured), and
the callback starts late: xruns while the pad moves. In a child process the renders cost
the parent's GIL nothing; the parent's worker thread only waits on a pipe (in C, without
the GIL) and copies the samples.

The child loads the same model with the same device, threads and precision as the parent's
Synth (`Synth.source`, set by `load_synth`), so its notes are the parent's (to float rounding).

Protocol (no pickle, nothing executed from the data): the parent writes one JSON line per
request on the child's stdin, {"z": [[float]], "pitches": [int], "samples": int | null,
"prepare": {...} | null}; the child answers on its stdout with a header, {"n": N, "samples": S,
...} followed by N x S float32 samples (native byte order), or {"error": "..."} for a request
it rejected (the parent raises ValueError). Its first header is {"ready": true} once its model
is loaded, or {"error": ...}. A header is a 4-byte little-endian length and that much JSON
(two reads, where a line would be read a byte per system call, each taking the GIL again).
A request may carry "gen" (its timbre's generation): when its turn comes while one of a newer
gen waits behind it, the child answers {"dropped": true} and renders nothing (`engine.instrument.renderpool`).
Anything else the child prints goes to stderr. End of stdin ends the child.

    python -m engine.instrument.synthproc SPEC_JSON     # the child; SPEC = Synth.source
                                                        # (started as python -c _CHILD: nice first)
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading

import numpy as np

log = logging.getLogger(__name__)

RENDER_NICENESS = 10  # renders (this child, or the in-process render thread): audio threads win a core


def lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads: a nice value set
    for a thread id applies to that thread alone; elsewhere this does nothing). On a
    2-core machine the renderer, the audio callback and the device's own thread share
    the cores; at equal priority the callback can wait a whole period for one.
    torch's worker threads, started on first use from this thread, inherit the value.

    The render worker takes it also when render processes do the rendering: between their
    answers it plans the refill, stores notes and blends them for the pad (Python and numpy
    in bursts of 1-6 ms, measured in the window), and at the default priority those bursts
    kept a normal-priority audio server's thread (a plain jackd) off a core. The window
    playing on the JACK dummy with the pad moving, 30 s, interleaved: 41 and 47 xruns at the
    default priority, 9 and 28 at nice 10, as many notes rendered. The risk, a low-priority
    thread preempted while it holds the GIL the callback waits for, stays small: the threads
    that take its core mostly need the GIL themselves, and the callback asks for the GIL back
    within one switch interval (engine.devices.audio.GIL_SWITCH_S)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: keep the default
        pass


def _widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Linux: room in the pipe for a whole prepared note (768 KB at 48 kHz), so the parent reads
    it in a few system calls (each one gives up and takes back the GIL) instead of 64 KB ones."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):  # not Linux, or over /proc/sys/fs/pipe-max-size: the default
        pass


class SynthProcessError(RuntimeError):
    """The render process is gone or broke the protocol; render in-process instead."""


class Superseded(Exception):
    """The child dropped a request: a newer timbre's came after it (`send_notes`' gen)."""


class SynthProcess:
    """Parent side. `ready` is set once the child has loaded its model; `generate` before
    that (or after a failure) raises SynthProcessError. One caller at a time (a lock)."""

    def __init__(self, source: dict, num_samples: int):
        self.num_samples = int(num_samples)
        self.ready = threading.Event()
        self.error = ""
        self._lock = threading.Lock()
        self._proc = _spawn_idle([sys.executable, "-c", _CHILD, json.dumps(source)])
        _widen_pipe(self._proc.stdout.fileno())
        threading.Thread(target=self._wait_ready, name="gansynth-synthproc-start", daemon=True).start()

    def _wait_ready(self) -> None:
        try:
            msg = self._read_header()
        except SynthProcessError as e:
            self.error = str(e)
            return
        if msg.get("ready") is True:
            self.ready.set()
        else:
            self.error = f"render process could not start: {msg.get('error', msg)}"
            log.warning("%s", self.error)
            self.close()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read_header(self) -> dict:
        size = self._read_exactly(4)
        line = self._read_exactly(int.from_bytes(size, "little"))
        try:
            return json.loads(line)
        except ValueError:
            raise SynthProcessError(f"render process sent {line[:80]!r}") from None

    def _read_exactly(self, n: int) -> bytes:
        out = bytearray(n)
        view, got = memoryview(out), 0
        while got < n:
            k = self._proc.stdout.readinto(view[got:])
            if not k:
                code = self._proc.poll()
                raise SynthProcessError(f"render process exited (code {code})")
            got += k
        return bytes(out)

    def fileno(self) -> int:
        """The child's answers: readable once one is on its way."""
        return self._proc.stdout.fileno()

    def generate(self, z, pitches, samples: int | None = None) -> np.ndarray:
        """float32 [n, num_samples] (or [n, samples]), as Synth.generate."""
        self._send({"samples": samples}, z, pitches)
        return self._receive()[1]

    def send_notes(self, z, pitches, samples: int | None, prepare: dict, gen: int | None = None) -> None:
        """Ask for notes ready to play, prepared in the child (`engine.instrument.noteloop.
        prepare_note` with prepare = {"rate", "frames", "loop": [start, end, xfade], "loop_s"}):
        resampling, normalising and baking the loop would otherwise hold this process's GIL
        for milliseconds per note (soxr does not release it). `receive_notes` takes the answer;
        several requests may be on their way: the child answers them in order. A request with
        a `gen` (the timbre's generation) that reaches the child's turn while a request of a
        newer gen waits behind it is answered without a render (`Superseded`)."""
        self._send({"samples": samples, "prepare": prepare, "gen": gen}, z, pitches)

    def receive_notes(self):
        """-> (float32 [n, frames], loop lengths [n], errors [n]: "" or why that note was
        rejected, its row then zeros), for the oldest request sent; `Superseded` for one the
        child dropped."""
        msg, notes = self._receive()
        return notes, [int(v) for v in msg["loop_lens"]], [str(e) for e in msg["errors"]]

    def _send(self, fields: dict, z, pitches) -> None:
        if not self.ready.is_set():
            raise SynthProcessError(self.error or "render process not ready")
        z = np.asarray(z, np.float32)
        samples = fields.get("samples")
        request = json.dumps(dict(fields, z=z.reshape(len(z), -1).tolist(), pitches=[int(p) for p in pitches],
                                  samples=None if samples is None else int(samples)))
        with self._failing():
            self._proc.stdin.write(request.encode() + b"\n")

    def _receive(self) -> tuple[dict, np.ndarray]:
        with self._failing():
            msg = self._read_header()
            if "error" in msg:
                raise ValueError(msg["error"])
            if msg.get("dropped"):
                raise Superseded("a newer timbre's request came after it")
            n, length = int(msg["n"]), int(msg.get("samples", self.num_samples))
            out = np.empty((n, length), np.float32)
            view = memoryview(out).cast("B")
            got = 0
            while got < view.nbytes:  # a pipe read returns at most what is buffered (GIL released)
                k = self._proc.stdout.readinto(view[got:])
                if not k:
                    raise SynthProcessError("render process exited mid-note")
                got += k
            return msg, out

    @contextlib.contextmanager
    def _failing(self):
        """One caller at a time; a broken pipe or a garbled answer marks the child failed."""
        with self._lock:
            try:
                yield
            except (OSError, KeyError, TypeError) as e:
                self.ready.clear()
                code = self._proc.poll()
                self.error = (f"render process exited (code {code})" if code is not None
                              else f"render process failed: {type(e).__name__}: {e}")
                raise SynthProcessError(self.error) from e
            except SynthProcessError as e:
                self.ready.clear()
                self.error = str(e)
                raise

    def close(self, timeout: float = 5.0) -> None:
        """End the child (end of stdin; killed if it does not exit within `timeout`)."""
        self.ready.clear()
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()


def _spawn_idle(cmd: list[str]) -> subprocess.Popen:
    """Popen(cmd) with pipes for stdin and stdout, from a short-lived thread that first takes
    SCHED_IDLE (Linux; always permitted): the child inherits it, so even the interpreter's own
    start-up, before `_CHILD`'s first line lowers its nice value, runs only on a core nobody
    else wants. At the spawning thread's policy it took a core from a plain jackd's own thread
    at start-up (jackd: "JackTimedDriver::Process XRun = 4640 usec")."""
    result: list = []

    def spawn():
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            pass
        try:
            result.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0))
        except BaseException as e:  # noqa: BLE001  (re-raised in the caller's thread)
            result.append(e)

    thread = threading.Thread(target=spawn, name="gansynth-synthproc-spawn")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


# The child lowers its priority before it imports anything: importing torch and loading the
# model is seconds of CPU, and at the default priority it took a core from the audio callback
# while the instrument started (start-up xruns). `python -m` would import the `engine` package,
# and with it torch, first. Where Linux offers it, the child also runs SCHED_IDLE (inherited
# from `_spawn_idle`): only on a core no other thread wants, so the parent's threads (one may
# hold the GIL the callback needs) never wait behind it. Measured on a realtime JACK
# (`benchmarks.live --realtime`, 2 render processes, 16 voices, 60 s, runs interleaved): niced
# only 9 / 14 xruns, SCHED_IDLE 3 / 3, with as many notes rendered (2,858-3,081 against 3,466-3,480).
_CHILD = (f"import os\ntry:\n    os.nice({RENDER_NICENESS})\nexcept (AttributeError, OSError):\n    pass\n"
          "import sys\nfrom engine.instrument.synthproc import main\nsys.exit(main())")


def _serve(spec: dict, proto) -> int:
    from engine.gansynth.synth import load_synth

    try:
        synth = load_synth(spec["path"], device=spec.get("device", "cpu"), threads=spec.get("threads"),
                           precision=spec.get("precision", "fp32"), batch_size=spec.get("batch_size"),
                           backend=spec.get("backend", "torch"))
    except Exception as e:  # the parent reports it and renders in-process
        _header(proto, {"error": f"{type(e).__name__}: {e}"})
        return 1
    _header(proto, {"ready": True})
    requests = _Requests(sys.stdin.fileno())
    while (req := requests.next()) is not None:
        try:
            if isinstance(req, str):
                raise ValueError(req)
            if req.get("gen") is not None and requests.superseded(req["gen"]):
                _header(proto, {"dropped": True})
                continue
            pitches = np.asarray(req["pitches"], np.int64)
            waves = synth.generate(np.asarray(req["z"], np.float32), pitches, samples=req.get("samples"))
            header = {}
            if req.get("prepare") is not None:
                waves, header = _prepare(waves, synth.sample_rate, pitches, req["prepare"])
        except (ValueError, KeyError, TypeError) as e:
            _header(proto, {"error": str(e)})
            continue
        waves = np.ascontiguousarray(waves, np.float32)
        header.update(n=int(waves.shape[0]), samples=int(waves.shape[1]))
        _header(proto, header, flush=False)
        proto.write(memoryview(waves).cast("B"))
        proto.flush()
    return 0


class _Requests:
    """The child's side of the requests: JSON objects a line on `fd`, read ahead without waiting
    so that a request can see the ones queued behind it. `next()` is the oldest (a dict, or a
    string saying why its line is not one; None at the end of the input)."""

    def __init__(self, fd: int):
        self.fd, self.ended, self._tail = fd, False, b""
        self.queued: collections.deque = collections.deque()

    def _read(self, wait: bool) -> bool:
        if self.ended or (not wait and not select.select([self.fd], [], [], 0)[0]):
            return False
        data = os.read(self.fd, 1 << 16)
        if not data:
            self.ended = True
            return False
        *lines, self._tail = (self._tail + data).split(b"\n")
        self.queued.extend(_parse_request(line) for line in lines if line.strip())
        return True

    def next(self):
        while not self.queued and not self.ended:
            self._read(wait=True)
        return self.queued.popleft() if self.queued else None

    def superseded(self, gen) -> bool:
        """A request of a newer generation than `gen` waits (everything sent so far read)."""
        while self._read(wait=False):
            pass
        return any(isinstance(r, dict) and isinstance(r.get("gen"), (int, float)) and r["gen"] > gen
                   for r in self.queued)


def _parse_request(line: bytes):
    try:
        req = json.loads(line)
    except ValueError as e:
        return f"not a JSON request: {e}"
    return req if isinstance(req, dict) else "a request must be a JSON object"


def _header(proto, msg: dict, flush: bool = True) -> None:
    data = json.dumps(msg).encode()
    proto.write(len(data).to_bytes(4, "little") + data)
    if flush:
        proto.flush()


def _prepare(waves: np.ndarray, wave_rate: int, pitches, spec: dict) -> tuple[np.ndarray, dict]:
    """The child's side of `send_notes`: float32 [n, frames] and the header fields."""
    from engine.instrument.noteloop import prepare_note

    frames = int(spec["frames"])
    notes = np.zeros((len(waves), frames), np.float32)
    loop_lens, errors = [], []
    for i, (wave, pitch) in enumerate(zip(waves, pitches)):
        try:
            notes[i], loop_len = prepare_note(wave, wave_rate, int(pitch), int(spec["rate"]), frames,
                                              tuple(int(v) for v in spec["loop"]), float(spec["loop_s"]))
            loop_lens.append(int(loop_len))
            errors.append("")
        except ValueError as e:
            loop_lens.append(0)
            errors.append(str(e))
    return notes, {"loop_lens": loop_lens, "errors": errors}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; its end of stdin ends us
    proto = os.fdopen(os.dup(1), "wb")  # the protocol's own copy of stdout ...
    os.dup2(2, 1)                       # ... so stray prints land on stderr
    return _serve(json.loads(argv[0]), proto)


if __name__ == "__main__":
    sys.exit(main())
