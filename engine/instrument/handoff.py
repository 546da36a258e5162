"""The render worker's side of the hand-off to the mixer: a note goes into a free cache slot
and is published to the audio thread.

Single writer (the render worker, or the driving thread in deterministic use). A slot is
free when the mixer cannot be reading it: no voice references it and every publication of it
has been taken (`pinned`). A note is written whole (its loop length too) before its
publication (pitch, slot, seq) is appended to the mixer's `ready` deque; the audio thread
installs publications at its next block. Eviction (engine.instrument.notecache) spares the
keys `keep` says.
"""
from __future__ import annotations

import threading

import numpy as np

from engine.instrument.refill import blend_into


class Handoff:
    """Stores notes in `cache` and publishes them to `mixer`; counts what did not fit."""

    def __init__(self, cache, mixer, note_frames: int, keep):
        self.cache, self.mixer, self.note_frames = cache, mixer, int(note_frames)
        self.keep = keep  # key -> bool: spared by eviction
        self._seq = 0  # publication counter
        self._published_seq = np.zeros(cache.slots, np.int64)
        self._scratch = np.zeros(cache.stride, np.float32)
        self.starved = 0  # notes not stored: the cache full of notes in use
        self.published = threading.Event()  # set after every publication (waiters clear it)

    def pinned(self, slot: int) -> bool:
        """A slot the mixer may still read: referenced, or published but not yet taken."""
        return bool(self.mixer.slot_refs[slot] > 0 or self._published_seq[slot] > self.mixer.consumed_seq)

    def store(self, key, note: np.ndarray, loop_len: int) -> int | None:
        """Write a prepared note (float32 [note_frames]) into a free slot under `key`; its slot,
        or None (cache full of notes in use)."""
        slot = self.cache.allocate(self.pinned, keep=self.keep)
        if slot is None:
            self.starved += 1
            return None
        self.cache.pool[slot, :self.note_frames] = note
        self.cache.pool[slot, self.note_frames:] = 0.0
        self.mixer.slot_loop_len[slot] = loop_len  # before publishing, like the samples
        self.cache.store(key, slot)
        return slot

    def store_blend(self, key, slots: list[int], weights: list[float]) -> int | None:
        """The blend of these stored notes of one pitch (their loop is the pitch's) into a free
        slot under `key`; its slot, or None (cache full)."""
        slot = self.cache.allocate(self.pinned, keep=self.keep)
        if slot is None:
            self.starved += 1
            return None
        blend_into(self.cache.pool, slot, slots, weights, self.mixer.loop_end, self._scratch)
        self.mixer.slot_loop_len[slot] = self.mixer.slot_loop_len[slots[0]]
        self.cache.store(key, slot)
        return slot

    def publish(self, pitch: int, slot: int) -> None:
        self._seq += 1
        self._published_seq[slot] = self._seq
        self.mixer.ready.append((pitch, slot, self._seq))
        self.published.set()

    def next_seq(self) -> int:
        """A fresh number (for keys that must not repeat, e.g. injected notes)."""
        self._seq += 1
        return self._seq
