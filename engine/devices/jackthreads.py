"""The process's other JACK clients' threads, raised as our own audio thread is.

Every JACK client of this process has a process thread that the server runs each cycle, one
client after another: PortAudio's (made when PortAudio initialises, whether or not a stream
plays through it), python-rtmidi's (a virtual MIDI port, its bundled libjack), JACK-Client's
(our own JACK client output). A realtime JACK server (jackd -R, JACK2's default) makes these
threads SCHED_FIFO; a plain one leaves them ordinary threads, and one that waits for a core
makes the whole cycle late: an xrun for every client. Measured on a 2-core VM with a plain
jackd: the last xruns of our JACK client output were all "client = PortAudio was not
finished" (PortAudio's idle client), and through sounddevice "client = GANSynth was not
finished" came from rtmidi's virtual port client.

libjack makes its threads through a hook (`jack_set_thread_creator`) that we set in every
libjack loaded in the process (`hook_jack_threads`; the compiled ring module records the
thread ids, `engine/devices/aheadring.c`), before the clients exist: `import_sounddevice`
calls it before PortAudio first initialises, the MIDI input after importing rtmidi.
`raise_jack_threads` then makes those that are not realtime SCHED_FIFO where permitted; the
audio output's watchdog calls it while it has raised its own callback thread (the server is
not realtime, and we may), so clients made later (a MIDI port opened, PortAudio re-scanned)
are raised within a watchdog period.
"""
from __future__ import annotations

import os
import threading

JACK_LIBRARY = "libjack.so.0"

_lock = threading.Lock()
_hooked: set[str] = set()
_raised: set[int] = set()   # threads we made SCHED_FIFO: not realtime "as the audio system gave them"


def _ring():
    try:
        from engine.devices.ahead import ring_library
        return ring_library()
    except ImportError:   # not built: nothing recorded (the output says so itself)
        return None


def _loaded_libjacks() -> set[str]:
    """Paths of the libjack copies mapped into this process (Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            fields = (line.split(None, 5) for line in f)
            paths = {parts[5].strip() for parts in fields if len(parts) == 6}
    except OSError:
        return set()
    return {p for p in paths if "/libjack" in p and ".so" in p}


def hook_jack_threads() -> int:
    """Hook every libjack this process has loaded, and the system's (loading it: PortAudio and
    JACK-Client use that one), so that the threads they make from now on are recorded. Idempotent;
    returns how many libraries are hooked."""
    ring = _ring()
    if ring is None:
        return 0
    ffi, lib = ring
    with _lock:
        lib.gs_jack_hook_threads(JACK_LIBRARY.encode(), 1)   # load it (hooked below, by its path)
        for path in _loaded_libjacks() - _hooked:
            if lib.gs_jack_hook_threads(path.encode(), 0) == 0:
                _hooked.add(path)
        return len(_hooked)


def jack_thread_ids() -> list[int]:
    """Threads libjack made since it was hooked that are still running."""
    ring = _ring()
    if ring is None:
        return []
    ffi, lib = ring
    buf = ffi.new("int32_t[]", 256)
    n = lib.gs_jack_threads(buf, 256)
    return [int(t) for t in buf[0:n] if os.path.exists(f"/proc/self/task/{int(t)}")]


def realtime_as_given(tid: int) -> bool:
    """Whether thread `tid` is SCHED_FIFO/RR by the audio system's doing (jackd -R, PortAudio's
    ALSA thread), not because we raised it (a reopened stream can get the same thread back)."""
    with _lock:   # forget ended threads: the kernel reuses their ids
        _raised.intersection_update(t for t in _raised if os.path.exists(f"/proc/self/task/{t}"))
    try:
        return os.sched_getscheduler(tid) in (os.SCHED_FIFO, os.SCHED_RR) and tid not in _raised
    except (AttributeError, OSError):   # not Linux, or the thread is gone
        return False


def raise_thread(tid: int, priority: int) -> bool:
    """Make thread `tid` SCHED_FIFO at `priority` unless it is realtime already; True if we did
    (False: it was, it is gone, we may not, or not Linux)."""
    try:
        if os.sched_getscheduler(tid) in (os.SCHED_FIFO, os.SCHED_RR):
            return False
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError):
        return False
    with _lock:
        _raised.add(tid)
    return True


def raise_jack_threads(priority: int) -> int:
    """Make libjack's threads that are not realtime SCHED_FIFO at `priority` where permitted;
    returns how many were raised now."""
    return sum(raise_thread(tid, priority) for tid in jack_thread_ids())


def raised_threads() -> frozenset[int]:
    """The threads we made SCHED_FIFO so far."""
    with _lock:
        return frozenset(_raised)
