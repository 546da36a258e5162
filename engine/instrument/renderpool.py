"""`RenderPool`: several render processes (`SynthProcess`) serving the render worker, kept busy.

`render_process_count` decides how many the instrument starts; `RenderPool.submit` queues a
request (a pitch) on the child with room, `RenderPool.receive` returns whichever answer comes
first (a `Landing`). The protocol and the child itself are `engine.instrument.synthproc`.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
import select
import threading

import numpy as np

from engine.instrument.synthproc import Superseded, SynthProcess, SynthProcessError

log = logging.getLogger(__name__)

MAX_RENDER_PROCESSES = 4   # each is a whole Python with torch and the model (~350 MB)


def render_process_count(realtime_audio: bool = False) -> int:
    """Render processes for this machine, 1 to MAX_RENDER_PROCESSES: one per core this process
    may run on, but one (the audio callback's, the audio server's, the window's) unless the
    audio callback thread is realtime-scheduled (SCHED_FIFO/RR: it preempts the renders at
    once). Measured on 2 cores (benchmarks.live, 60 s of 16 voices with the pad moving, JACK
    dummy): a second render process halved the refill (1.8 -> 1.0 s); with a normal-priority
    JACK it took the xruns from 6 to 26 (niced or SCHED_IDLE alike), with jackd -R it had 0."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_RENDER_PROCESSES, cores if realtime_audio else cores - 1))


@dataclasses.dataclass
class Landing:
    """One answered (or lost) request of a `RenderPool`: `tag` as submitted; `notes` float32
    [n, frames], `loop_lens` and `errors` ("" or why that note was rejected) as
    `SynthProcess.receive_notes`; or `failure` (the child rejected the request), or `lost`
    (not rendered: its child died, or dropped it for a newer timbre's request: render it
    again where it is still wanted)."""
    tag: object
    notes: np.ndarray | None = None
    loop_lens: list = dataclasses.field(default_factory=list)
    errors: list = dataclasses.field(default_factory=list)
    failure: str = ""
    lost: bool = False


class RenderPool:
    """`size` render processes serving one caller, kept busy: `submit` queues a request (a
    pitch) on the ready child with the fewest queued, up to DEPTH each, and `receive` returns
    whichever answer comes first. Each child renders with the parent's threads, so a note is
    the same whichever child made it.

    With a request queued behind the one rendering, a child starts its next note while the
    parent stores the last one: on 2 cores, 61 bundled notes in 0.78-0.81 s against 0.85 s
    with one request a child and 0.93-1.09 s in rounds of one pitch per child, each round
    waiting for its slowest (measured 2026-12-06, notes prepared at 48 kHz).

    A request may carry its timbre's generation (`gen`). One of a newer generation finds room
    where the older ones queued behind a render would have filled it (the child drops those
    when their turn comes), so after a pad move the new timbre's notes start after the note
    rendering now, not after every note queued for the old one.

    `ready`, `error` and `pid` are the first child's: the pool serves while it lives
    (SynthProcessError when it is gone; `queued_tags` then says what was in flight). A helper
    that fails is dropped and its requests come back from `receive` as lost. Setting `size`
    starts or ends helpers at the next `submit`."""

    DEPTH = 2
    MAX_QUEUED = 8   # per child, superseded requests included (a bound on the pipe's contents)

    def __init__(self, source: dict, num_samples: int, size: int = 1):
        self.source, self.num_samples = source, int(num_samples)
        self.size = max(1, int(size))   # any thread may set it; the caller's next submit applies it
        self.processes = [SynthProcess(source, num_samples) for _ in range(self.size)]
        self._queued: dict[SynthProcess, collections.deque] = {p: collections.deque() for p in self.processes}
        self._lost: list[Landing] = []

    @property
    def ready(self) -> threading.Event:
        return self.processes[0].ready

    @property
    def error(self) -> str:
        return self.processes[0].error

    @property
    def pid(self) -> int:
        return self.processes[0].pid

    @property
    def ready_count(self) -> int:
        """Children rendering now (0 until the first is ready)."""
        return sum(p.ready.is_set() for p in self.processes) if self.ready.is_set() else 0

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet returned by `receive`."""
        return sum(len(q) for q in self._queued.values()) + len(self._lost)

    def queued_tags(self) -> list:
        return [t for q in self._queued.values() for t, _ in q] + [landing.tag for landing in self._lost]

    def _load(self, child: SynthProcess, gen: int | None) -> int:
        """Requests `child` will still render before one of generation `gen`: the first (taken
        to be rendering) and, behind it, those a request of `gen` does not supersede."""
        queue = self._queued[child]
        if gen is None or len(queue) >= self.MAX_QUEUED:
            return len(queue)
        return min(1, len(queue)) + sum(g is None or g >= gen for _, g in itertools.islice(queue, 1, None))

    def _open(self, gen: int | None) -> list[SynthProcess]:
        return [p for p in self.processes if p.ready.is_set() and self._load(p, gen) < self.DEPTH]

    def can_take(self, gen: int | None = None) -> bool:
        """A ready child has room for another request (of timbre generation `gen`)."""
        return self.ready.is_set() and bool(self._open(gen))

    def _apply_size(self) -> None:
        while len(self.processes) < self.size:   # started now, they help once they are ready
            child = SynthProcess(self.source, self.num_samples)
            self.processes.append(child)
            self._queued[child] = collections.deque()
        for child in self.processes[max(1, self.size):]:   # idle extras end now, busy ones later
            if not self._queued[child]:
                self.processes.remove(child)
                del self._queued[child]
                child.close()

    def submit(self, z, pitches, samples: int | None, prepare: dict, tag, gen: int | None = None) -> bool:
        """Queue a request (see `SynthProcess.send_notes`) under `tag`; False when no ready
        child has room (`can_take`). SynthProcessError when the first child is gone."""
        self._apply_size()
        while True:
            first = self.processes[0]
            if not first.ready.is_set():
                raise SynthProcessError(first.error or "render process not ready")
            open_ = self._open(gen)
            if not open_:
                return False
            child = min(open_, key=lambda p: self._load(p, gen))   # the first child wins ties
            try:
                child.send_notes(z, pitches, samples, prepare, gen)
            except SynthProcessError as e:
                if child is first:
                    raise
                self._drop(child, e)   # its queue comes back lost; try another child
                continue
            self._queued[child].append((tag, gen))
            return True

    def receive(self, wait=None) -> list[Landing]:
        """The next answer(s): requests a dropped helper lost, else the first answer any child
        has ([] when nothing is in flight). `wait(fds)`, if given, must return the readable
        ones among `fds` (the render worker answers pad moves meanwhile); else select().
        SynthProcessError when the first child is gone (its requests stay in `queued_tags`)."""
        if self._lost:
            out, self._lost = self._lost, []
            return out
        busy = {p.fileno(): p for p in self.processes if self._queued[p]}
        if not busy:
            return []
        readable = wait(list(busy)) if wait is not None else select.select(list(busy), [], [])[0]
        child = next(busy[fd] for fd in busy if fd in readable)
        try:
            notes, loop_lens, errors = child.receive_notes()
        except Superseded:
            return [Landing(self._queued[child].popleft()[0], lost=True)]
        except ValueError as e:   # the child rejected the request and serves on
            return [Landing(self._queued[child].popleft()[0], failure=str(e))]
        except SynthProcessError as e:
            if child is self.processes[0]:
                raise
            self._drop(child, e)
            out, self._lost = self._lost, []
            return out
        return [Landing(self._queued[child].popleft()[0], notes, loop_lens, errors)]

    def _drop(self, helper: SynthProcess, error: Exception) -> None:
        log.warning("a render process failed (%s); going on with %d", error, len(self.processes) - 1)
        self._lost += [Landing(tag, lost=True) for tag, _ in self._queued.pop(helper)]
        self.processes.remove(helper)
        helper.close()

    def close(self, timeout: float = 5.0) -> None:
        """End the children; one with requests still queued is killed at once (its answers,
        unread, could fill its pipe and keep it from reading the end of its input)."""
        for process in self.processes:
            process.close(0.0 if self._queued.get(process) else timeout)
