"""A real, paced, headless audio device for tests and benchmarks: Debian's jackd2 dummy driver.

    with JackServer() as jack:          # jackd --no-realtime -d dummy -r 48000 -p 256
        ...                             # sounddevice lists a JACK "system" output; rtmidi's
                                        # UNIX_JACK API works; jack.connect(src, dst) wires ports

Each server gets its own name (JACK_DEFAULT_SERVER), so parallel test runs on one machine
never share a server; JACK_NO_START_SERVER keeps clients from spawning one. The names come
from a few fixed slots (a lock file each): libjack's registry holds 8 servers per machine
and frees the entry of a server that died without cleaning up (killed, a crashed run) only
when a server of the same name starts, so unique names per run would leak entries until
"Too many servers already active". PortAudio is
re-initialised after start so it sees the server, and after stop so it forgets it.
The `jack_server` fixture (session scope) is registered in tests/conftest.py.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import tempfile
import time

import pytest

SAMPLE_RATE = 48000
PERIOD = 256


class JackServer:
    def __init__(self, sample_rate: int = SAMPLE_RATE, period: int = PERIOD, name: str | None = None,
                 portaudio: bool = True, realtime: bool = False):
        self.sample_rate = sample_rate
        self.realtime = realtime      # jackd -R: the server's and its clients' process threads run
                                      # SCHED_FIFO, as on a studio machine (needs the permission)
        self.portaudio = portaudio    # False: PortAudio never attaches (a server a test kills under
                                      # our own JACK client; PortAudio aborts the process if its
                                      # server dies)
        self.period = period
        self._slot_lock = None
        if name is None:
            name, self._slot_lock = _claim_name()
        self.name = name
        self.proc: subprocess.Popen | None = None
        self._saved_env: dict = {}

    def start(self, timeout: float = 30.0) -> "JackServer":
        # A log file, not a pipe: a full pipe would block jackd (it reports every xrun).
        self._log = tempfile.TemporaryFile()
        for key, value in (("JACK_DEFAULT_SERVER", self.name), ("JACK_NO_START_SERVER", "1")):
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        self.proc = subprocess.Popen(
            ["jackd", "-n", self.name, "-R" if self.realtime else "--no-realtime", "-d", "dummy", "-r", str(self.sample_rate),
             "-p", str(self.period)], stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                self._log.seek(0)
                raise RuntimeError(f"jackd exited: {self._log.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                log = self.log_text()[-2000:]
                self.stop()
                raise RuntimeError(f"jackd did not come up within {timeout} s; its output:\n{log}")
            time.sleep(0.05)   # polling another process, not a thread of ours
        if self.portaudio:
            _reinit_portaudio()
        return self

    def ready(self) -> bool:
        """True when the server answers (jack_lsp lists its system ports)."""
        r = subprocess.run(["jack_lsp", "-s", self.name], capture_output=True, text=True,
                           env=os.environ)
        return r.returncode == 0 and "system:playback_1" in r.stdout

    def connect(self, source: str, destination: str) -> None:
        subprocess.run(["jack_connect", "-s", self.name, source, destination], check=True,
                       capture_output=True)

    def ports(self) -> list[str]:
        r = subprocess.run(["jack_lsp", "-s", self.name], capture_output=True, text=True)
        return r.stdout.splitlines()

    def log_text(self) -> str:
        """What jackd printed so far (xruns, client errors)."""
        if getattr(self, "_log", None) is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def kill(self) -> None:
        """Stop the server abruptly (a device that disappears)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
        if self._slot_lock is not None:
            self._slot_lock.close()            # releases the name
            self._slot_lock = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}

    def __enter__(self) -> "JackServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        import sounddevice as sd

        from engine.devices.audio import stuck_hostapis

        if stuck_hostapis() or not self.portaudio:     # PortAudio would wait (10 min) on a stream it cannot close
            self.stop()
            return
        sd._terminate()          # while the server still answers (else PortAudio asserts)
        self.stop()
        sd._initialize()


NAME_SLOTS = 6


def _claim_name():
    """(server name, open lock file): the first free slot on this machine."""
    for slot in range(NAME_SLOTS):
        lock = open(os.path.join(tempfile.gettempdir(), f"gansynth-jack-{os.getuid()}-{slot}.lock"), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return f"gansynth-test-{slot}", lock
    raise RuntimeError(f"all {NAME_SLOTS} JACK test server names are in use on this machine")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it dies (a crashed test run)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def _reinit_portaudio() -> None:
    from engine.devices.listing import import_sounddevice

    sd = import_sounddevice()   # libjack's thread hook first (engine.devices.jackthreads)
    sd._terminate()
    sd._initialize()


@pytest.fixture(scope="session")
def jack_server():
    """A running JACK dummy server (48 kHz, 256-frame periods) for the whole session."""
    with JackServer() as server:
        yield server
