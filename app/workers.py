"""Long work off the GUI thread: a `Job` runs a function on a `QThreadPool` thread.

    job = Job(render_midi, path, progress=True)       # fn(*args, progress=callback)
    jobs.start(job, on_done=show,                      # result, delivered on the GUI thread
               on_failed=report,                       # message str
               on_progress=bar.setValue)               # 0..1000

Signals are emitted from the worker thread and delivered through queued
connections, so slots run on the GUI thread. A `latest` key makes a job
supersede an earlier one with the same key (e.g. rainbowgram requests): the
older result is dropped. After `Jobs.shutdown()` (the window closed) no callback
runs, so a late result never touches deleted widgets.
"""
from __future__ import annotations

import itertools
import logging
import threading
import traceback

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

log = logging.getLogger(__name__)


class JobSignals(QObject):
    done = Signal(object)
    failed = Signal(str)
    progress = Signal(int)       # 0..1000
    finished = Signal()          # after done or failed


class Job(QRunnable):
    def __init__(self, fn, *args, progress: bool = False, latest: str | None = None, **kwargs):
        super().__init__()
        self.setAutoDelete(False)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.wants_progress = progress
        self.latest = latest
        self.generation = 0
        self.signals = JobSignals()
        self.finished_event = threading.Event()
        self.pool: "Jobs | None" = None

    def _progress(self, fraction: float) -> None:
        self.signals.progress.emit(int(1000 * min(1.0, max(0.0, float(fraction)))))

    def run(self) -> None:
        try:
            kwargs = dict(self.kwargs)
            if self.wants_progress:
                kwargs["progress"] = self._progress
            result = self.fn(*self.args, **kwargs)
            if self.pool is None or self.pool.is_current(self):
                self.signals.done.emit(result)
        except Exception as exc:  # reported in the window, never raised into Qt
            log.debug("job failed: %s", traceback.format_exc())
            self.signals.failed.emit(f"{exc}" or type(exc).__name__)
        finally:
            self.finished_event.set()
            self.signals.finished.emit()


class Jobs(QObject):
    """Keeps running jobs alive (until their signals reach the GUI thread) and tracks the
    newest job per `latest` key. Create on the GUI thread."""

    def __init__(self, max_threads: int = 2, parent=None):
        super().__init__(parent)
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(max_threads)
        self._running: set[Job] = set()
        self._newest: dict[str, int] = {}
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.closed = False

    def start(self, job: Job, on_done=None, on_failed=None, on_progress=None) -> Job:
        job.pool = self
        for signal, callback in ((job.signals.done, on_done), (job.signals.failed, on_failed),
                                 (job.signals.progress, on_progress)):
            if callback is not None:
                signal.connect(self._guard(callback))
        with self._lock:
            job.generation = next(self._counter)
            if job.latest:
                self._newest[job.latest] = job.generation
            self._running.add(job)
        job.signals.finished.connect(self._finished)
        self.pool.start(job)
        return job

    def is_current(self, job: Job) -> bool:
        with self._lock:
            return not job.latest or self._newest.get(job.latest) == job.generation

    def _guard(self, callback):
        def call(*args):
            if not self.closed:
                callback(*args)
        return call

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """No more callbacks; wait for running jobs to end."""
        self.closed = True
        return self.pool.waitForDone(timeout_ms)

    @Slot()
    def _finished(self) -> None:
        """Runs on the GUI thread after the job's last signal: drop our reference."""
        sender = self.sender()
        with self._lock:
            self._running = {j for j in self._running if j.signals is not sender}

    def busy(self, key: str | None = None) -> bool:
        with self._lock:
            return any(key is None or j.latest == key for j in self._running)

    def wait(self, timeout_ms: int = 30000) -> bool:
        return self.pool.waitForDone(timeout_ms)
