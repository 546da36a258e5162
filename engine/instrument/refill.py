"""What the render worker does next after a pad move, and what plays until it is done.

Refill order (`refill_ranks`, `job_order`): pure functions over the mixer's held-pitch and
last-played tables (copies taken by the worker).
  1. pitches held now (keys or pedal), most recent first;
  2. the RECENT_PITCHES pitches played most recently (not held), latest first;
  3. every other pitch outward from those: nearest first, ties going to the neighbour of
     the more urgent pitch (held before recent, latest first), then the lower pitch.
     With nothing held or played, outward from the middle of the range.
The worker interleaves the corner instruments' own notes ("anchors", below) with that:
the current timbre's held pitches, the anchors of the held pitches, the current timbre's
recent pitches, their anchors, the current timbre's other pitches, the other anchors.

Instant answer (`blend_into`): the worker keeps, per pitch, the notes of the four corner
instruments (anchors: ordinary cache entries keyed by the corner's latent). On a pad move
it writes, for every held pitch, the blend of those prepared notes weighted by the new
corner weights into a free cache slot and publishes it at once (microseconds of numpy per
pitch, no model call); the exact render replaces it when it lands, through the mixer's
click-free crossfade. Prepared notes of one pitch share their loop (its length depends on
the pitch alone) and `bake_loop` is linear, so the blend is itself a correctly looped note;
it is normalised to peak 1 like every note.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import NamedTuple

import numpy as np

RECENT_PITCHES = 8  # played-but-not-held pitches that count as "just played"
MIN_BLEND_WEIGHT = 0.5  # blend only when the rendered corners carry at least this weight

HELD, RECENT, OTHER = 0, 1, 2


class TimbreRequest(NamedTuple):
    """A timbre to render: its key and latent float32 [latent_size]; the corners' keys and
    latents float32 [4, latent_size] and their weights float64 [4] at the pad (the blend),
    or empty tuples / None when unknown."""

    key: bytes
    latent: np.ndarray
    corner_keys: tuple = ()
    corner_latents: np.ndarray | None = None
    weights: np.ndarray | None = None


class Claims:
    """The render worker's account of its work (its thread only; readers take the plain
    attributes): the current timbre's pitches taken off the to-do list (`done`: landed, or
    pending), the notes in the render processes (`pending`: cache keys (model generation,
    timbre key, pitch) of any timbre), how far the current range is and how long it took."""

    def __init__(self):
        self.current = None   # (model generation, timbre key) that `done` counts
        self.pitch_count = 0
        self.done: set[int] = set()
        self.pending: set = set()
        self.seq = self.seq_done = 0   # timbres begun; the one whose range is complete
        self.started = self.range_seconds = self.progress = 0.0
        self.rendered: tuple[int, ...] = ()   # pitches of the current timbre published

    def begin(self, current, pitch_count: int) -> None:
        """A new timbre: nothing of it done yet."""
        self.current, self.pitch_count = current, int(pitch_count)
        self.seq += 1
        self.done, self.rendered, self.progress = set(), (), 0.0
        self.started = time.perf_counter()

    def is_current(self, key) -> bool:
        return tuple(key[:2]) == self.current

    def send(self, keys) -> None:
        """These notes are being rendered."""
        self.pending.update(keys)
        self.update()

    def land(self, key) -> None:
        """A note rendered (stored, or failed for good)."""
        self.pending.discard(key)
        self.update()

    def drop(self, key) -> None:
        """A note that will not land (its render process died): back on the to-do list."""
        self.pending.discard(key)
        if self.is_current(key):
            self.done.discard(key[-1])
        self.update()

    def update(self) -> None:
        pending = {k[-1] for k in self.pending if self.is_current(k)}
        self.rendered = tuple(sorted(p for p in self.done if p not in pending))
        self.progress = len(self.rendered) / max(1, self.pitch_count)
        if len(self.rendered) == self.pitch_count and self.seq_done != self.seq:
            self.seq_done = self.seq
            self.range_seconds = time.perf_counter() - self.started


def refill_ranks(pitch_range: tuple[int, int], held: np.ndarray, last_on: np.ndarray) -> dict[int, tuple]:
    """Sort key of every pitch in the inclusive `pitch_range`: smaller renders sooner.

    held: int [128] voices holding each pitch; last_on: int [128] note-on counter of each
    pitch's latest note (0 = never). Pitches outside the range count for the edge pitch
    (they are resampled from it). The key's first element is HELD, RECENT or OTHER."""
    lo, hi = pitch_range
    held = np.asarray(held, np.int64).copy()
    last_on = np.asarray(last_on, np.int64).copy()
    held[lo] += held[:lo].sum()
    held[hi] += held[hi + 1:].sum()
    last_on[lo] = max(int(last_on[:lo + 1].max()), 0)
    last_on[hi] = max(int(last_on[hi:].max()), 0)
    pitches = np.arange(lo, hi + 1)
    by_recency = pitches[np.argsort(-last_on[lo:hi + 1], kind="stable")]
    held_now = [int(p) for p in by_recency if held[p] > 0]
    recent = [int(p) for p in by_recency if held[p] <= 0 and last_on[p] > 0][:RECENT_PITCHES]
    ranks: dict[int, tuple] = {}
    for p in held_now:
        ranks[p] = (HELD, -int(last_on[p]), 0, p)
    for p in recent:
        ranks[p] = (RECENT, -int(last_on[p]), 0, p)
    sources = np.array(held_now + recent or [(lo + hi) // 2])  # most urgent first
    dist = np.abs(pitches[:, None] - sources[None, :])  # [pitches, sources], numpy: the worker
    nearest = dist.argmin(axis=1)  # holds the GIL as little as it can; ties -> the more urgent
    for p, d, u in zip(pitches.tolist(), dist.min(axis=1).tolist(), nearest.tolist()):
        if p not in ranks:
            ranks[p] = (OTHER, d, u, p)
    return ranks


def job_order(ranks: dict[int, tuple], current: list[int], anchors: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Jobs (pitch, corner) most urgent first; corner -1 is the current timbre.

    current: its pitches still to render; anchors: (pitch, corner) notes of the corner
    instruments still to render. Each group of `refill_ranks` comes first for the current
    timbre, then for the anchors of those pitches."""
    jobs = [(ranks[p][0], 0, ranks[p], p, -1) for p in current]
    jobs += [(ranks[p][0], 1, ranks[p], p, c) for p, c in anchors]
    jobs.sort(key=lambda j: (j[0], j[1], j[2], j[4]))
    return [(p, c) for *_, p, c in jobs]


def blend_weights(weights: np.ndarray, available: list[bool]) -> np.ndarray | None:
    """Corner weights float64 [4] renormalised over the corners whose notes are at hand, or None
    when those carry less than MIN_BLEND_WEIGHT of the weight (the blend would not be this
    timbre)."""
    w = np.where(np.asarray(available, bool), np.asarray(weights, np.float64), 0.0)
    total = float(w.sum())
    if total < MIN_BLEND_WEIGHT * float(np.sum(weights)):
        return None
    return w / total


def blend_into(pool: np.ndarray, dst: int, slots: list[int], weights: list[float], frames: int,
               scratch: np.ndarray) -> None:
    """pool[dst] = sum_i weights[i] * pool[slots[i]], normalised to peak 1 over its first `frames`.

    pool: float32 [slots, stride]; scratch: float32 [>= stride], overwritten. In place, no
    temporaries of note size."""
    row = pool[dst]
    tmp = scratch[:row.shape[0]]
    np.multiply(pool[slots[0]], np.float32(weights[0]), out=row)
    for s, w in zip(slots[1:], weights[1:]):
        np.multiply(pool[s], np.float32(w), out=tmp)
        row += tmp
    np.abs(row[:frames], out=tmp[:frames])
    peak = float(tmp[:frames].max()) if frames else 0.0
    if peak > 1e-6:
        row *= np.float32(1.0 / peak)


class WakePipe:
    """A pipe the render worker selects on beside the render process's answer: `poke` (any
    thread) makes it readable, `drain` (the worker) empties it. Closed until `open`."""

    def __init__(self):
        self._fds: tuple[int, int] | None = None
        self._lock = threading.Lock()  # poke vs close: never write to a closed (reused) fd

    def open(self) -> None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        with self._lock:
            self._fds = (r, w)

    def fileno(self) -> int | None:
        fds = self._fds
        return fds[0] if fds else None

    def poke(self) -> None:
        with self._lock:
            if self._fds is not None:
                with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                    os.write(self._fds[1], b"\0")

    def drain(self) -> None:
        fd = self.fileno()
        with contextlib.suppress(OSError):  # empty (BlockingIOError) or closed
            while fd is not None and os.read(fd, 64):
                pass

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, None
        for fd in fds or ():
            os.close(fd)
