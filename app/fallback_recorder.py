"""Temporary WAV recorder used until `engine.recorder` is wired in: blocks from the
output thread go through a queue to a writer thread (soundfile, float32)."""
from __future__ import annotations

import queue
import threading

import soundfile as sf


class BlockRecorder:
    def __init__(self, path, sample_rate: int):
        self.path = str(path)
        self.sample_rate = sample_rate
        self.frames = 0
        self.error = ""
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="recorder", daemon=True)
        self._file = sf.SoundFile(self.path, "w", sample_rate, 1, subtype="FLOAT")

    def start(self) -> None:
        self._thread.start()

    def feed(self, block) -> None:
        self._queue.put(block.copy())

    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def _write(self) -> None:
        while True:
            block = self._queue.get()
            if block is None:
                break
            try:
                self._file.write(block)
                self.frames += len(block)
            except Exception as exc:
                self.error = f"recording to {self.path} failed: {exc}"
                break
        self._file.close()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
