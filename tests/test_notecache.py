"""Note cache: LRU order, memory bound, pinned slots never reused, counters."""
from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import pytest

from engine.instrument.notecache import NoteCache


def test_budget_sets_slot_count_and_min_slots_raise_it():
    c = NoteCache(1000, budget_bytes=10 * 1004 * 4)
    assert c.capacity == 10 and not c.budget_raised
    assert c.pool.shape == (11, 1004)  # + silent slot 0
    small = NoteCache(1000, budget_bytes=1, min_slots=5)
    assert small.capacity == 5 and small.budget_raised


def test_lru_eviction_and_counters():
    c = NoteCache(100, budget_bytes=3 * 104 * 4)
    never = lambda slot: False  # noqa: E731
    for key in "abc":
        c.store(key, c.allocate(never))
    assert c.get("a") is not None  # a becomes most recent: b is now the oldest
    slot_d = c.allocate(never)
    c.store("d", slot_d)
    assert "b" not in c and {"a", "c", "d"} == set(c.keys())
    assert c.get("b") is None
    s = c.stats()
    assert (s["cache_hits"], s["cache_misses"], s["cache_fills"], s["cache_evictions"]) == (1, 1, 4, 1)
    assert s["cache_fill"] == 1.0 and s["cache_bytes"] == 3 * 104 * 4


def test_pinned_slots_are_skipped_and_full_pin_returns_none():
    c = NoteCache(100, budget_bytes=2 * 104 * 4)
    never = lambda slot: False  # noqa: E731
    c.store("a", c.allocate(never))
    c.store("b", c.allocate(never))
    pinned_a = c.get("a")
    c.get("b")  # a is least recently used ...
    slot = c.allocate(lambda s: s == pinned_a)  # ... but pinned: b goes instead
    assert slot != pinned_a and "a" in c and "b" not in c
    c.store("c", slot)
    assert c.allocate(lambda s: True) is None


def test_clear_frees_slots_but_respects_pins():
    c = NoteCache(100, budget_bytes=2 * 104 * 4)
    never = lambda slot: False  # noqa: E731
    c.store("a", c.allocate(never))
    c.store("b", c.allocate(never))
    a = c.get("a")
    c.clear()
    assert len(c) == 0
    other = ({1, 2} - {a}).pop()
    assert c.allocate(lambda s: s == a) == other  # the mixer still reads `a`
    assert c.allocate(lambda s: s == a) is None
    assert c.allocate(lambda s: False) == a  # once let go, it is reused


@pytest.mark.parametrize("slot", [1, 2])
def test_give_back_returns_unstored_slot(slot):
    c = NoteCache(10, budget_bytes=2 * 14 * 4)
    never = lambda s: False  # noqa: E731
    a = c.allocate(never)
    c.give_back(a)
    assert c.allocate(never) == a


def test_keep_spares_the_timbre_being_rendered():
    """Re-rendering an old timbre must not evict its own surviving notes one by one."""
    c = NoteCache(10, budget_bytes=3 * 14 * 4)
    never = lambda s: False  # noqa: E731
    for key in [("A", 1), ("A", 2), ("B", 1)]:
        c.store(key, c.allocate(never))
    slot = c.allocate(never, keep=lambda k: k[0] == "A")
    assert ("B", 1) not in c and ("A", 1) in c and ("A", 2) in c
    c.store(("A", 3), slot)
    c.allocate(never, keep=lambda k: True)  # only kept keys left: the oldest goes anyway
    assert ("A", 1) not in c



def _resident(array) -> np.ndarray:
    """bool per whole page inside `array`'s memory: in RAM now (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    start = -(-array.ctypes.data // page) * page
    pages = (array.ctypes.data + array.nbytes - start) // page
    vec = (ctypes.c_ubyte * pages)()
    if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(pages * page), vec) != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return np.frombuffer(vec, np.uint8) & 1 == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore: Linux")
def test_warm_commits_the_next_free_slots_and_never_touches_a_written_one():
    c = NoteCache(192000, budget_bytes=64 * 192004 * 4)   # 768 KB a slot: 4 s at 48 kHz
    # the pool on fresh anonymous pages (np.zeros may reuse memory another test left resident)
    c.pool = np.frombuffer(mmap.mmap(-1, c.pool.nbytes), np.float32).reshape(c.pool.shape)
    never = lambda slot: False  # noqa: E731
    first = c.allocate(never)
    c.pool[first, :4] = [1.0, 2.0, 3.0, 4.0]
    c.store("a", first)
    c.clear()   # its slot is free again, its samples still there
    assert first in c._free
    order = list(reversed(c._free[-8:]))   # the next 8 slots `allocate` hands out
    assert c.warm(8) == 7   # one of them was written already
    assert first in order
    for slot in order:
        if slot != first:
            assert _resident(c.pool[slot]).all(), slot
    for slot in range(1, c.slots):
        if slot not in order:
            assert not _resident(c.pool[slot]).any(), slot   # (pages shared with a neighbour are not whole)
    assert list(c.pool[first, :4]) == [1.0, 2.0, 3.0, 4.0]
    assert c.warm(8) == 0   # nothing left to commit among them
    calls = []
    assert c.warm(20, stop=lambda: calls.append(1) or True) == 1   # a pad move: one slot, then stop
    assert float(c.pool.sum()) == 10.0   # zeros into zeros: only the stored samples are not 0
