"""Keep freed memory in the process instead of handing it back to the kernel (glibc only).

A note of the paper-size generator allocates and frees tens of MB of activations. glibc
serves blocks over its mmap threshold with fresh mmap()s and returns them on free, so every
note touched ~40 MB of new pages: ~10,000 minor page faults and ~10 % of a note's time on a
2-core AVX2 CPU (271 -> 244 ms measured with the thresholds raised). Raising the mmap
threshold (to glibc's maximum, 32 MiB) and the trim threshold makes the next note reuse the
same heap. The cost: the process keeps its peak heap (~100 MB for the paper-size model).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 512 * 1024 * 1024

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds, once per process; True where it took effect
    (False: not glibc, or mallopt refused)."""
    global _done
    if _done is None:
        _done = False
        if platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
                    bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError):
                _done = False
    return _done
