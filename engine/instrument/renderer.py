"""Render worker: (latent, pitch) -> a playable note in the cache, off the audio thread.

One job = one pitch of the newest requested timbre (8 pitches per batch on a GPU):
  generate (torch, one intra-op thread on CPU; only the span a held note can sound, up to
  its loop's end) -> soxr resample 16 kHz -> output rate
  -> cut/pad to the note length -> normalise by the absolute peak of the playable part
  -> bake the loop crossfade (a whole number of pitch periods, before the note's
  release) -> write into a free cache slot -> publish (pitch, slot, seq) to the
  mixer's `ready` deque (the audio thread installs it at its next block).
LRU eviction spares the notes of the timbre being rendered, so going back to an older
timbre re-renders only what was evicted instead of evicting its own notes in turn.

Priority (re-evaluated before every job, so a key pressed now is rendered next):
  1. pitches held right now (mixer.held_count), most recent first;
  2. recently played pitches (mixer.last_on), most recent first;
  3. the rest of the model's range, nearest to the last played pitch first.
Pad moves arrive in a latest-value mailbox: requests made while a job runs
coalesce (newest latent wins) and the unrendered pitches of the old timbre are
dropped. A pitch whose key is already cached is published without rendering.
A failed or non-finite render is logged, counted and skipped; the mixer keeps
playing the previous note of that pitch.

Model swap: `swap_model(synth)` puts a prepared Synth in a mailbox; the worker
picks it up between jobs (cache keys carry a model generation, so old notes are
never mistaken for new ones) and re-renders the current timbre.

Render process (`process=True`, the live instrument's default): `start()` also starts an
`engine.instrument.synthproc.SynthProcess` that loads the same model; once it is ready the worker's
generate calls go there, so the renders hold this process's GIL only to copy samples (the
audio callback needs it every period). Until then, and after it fails, notes render in
this process. A swapped model gets a new render process.

Deterministic use (offline driver, tests): do not `start()`; call `render_now`
(or `run_until_idle`) from the driving thread instead.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time

import numpy as np
import soxr
import torch

from engine.gansynth.spectral import midi_to_hz
from engine.instrument.synthproc import RENDER_NICENESS, SynthProcess, SynthProcessError

log = logging.getLogger(__name__)

SPAN_MARGIN_S = 0.032  # beyond the heard span: soxr HQ's filter reaches a few ms; the note is exact there


def bake_loop(note: np.ndarray, loop_start: int, loop_end: int, xfade: int) -> None:
    """In place: make playback wrapping from loop_end to loop_start seamless.

    The `xfade` frames before loop_end become a linear crossfade from the note
    itself into the frames just before loop_start (the loop spans whole pitch
    periods, so the two are nearly in phase and equal-gain keeps the level). The
    frames from loop_end on repeat the loop's first frames, so interpolating across
    the wrap reads the right neighbours. note: float32 [frames].
    """
    w = (np.arange(xfade, dtype=np.float32) + 0.5) / xfade
    head = note[loop_end - xfade:loop_end].copy()
    tail = note[loop_start - xfade:loop_start]
    note[loop_end - xfade:loop_end] = head * (1.0 - w) + tail * w
    guard = min(16, len(note) - loop_end)
    note[loop_end:loop_end + guard] = note[loop_start:loop_start + guard]
    note[loop_end + guard:] = 0.0


def loop_length(pitch: int, sample_rate: int, target_s: float = 1.0) -> int:
    """A loop length near `target_s` holding a whole number of periods of `pitch`."""
    period = sample_rate / float(midi_to_hz(pitch))
    return int(round(max(1, round(target_s * sample_rate / period)) * period))


def loop_points(note_frames: int, sample_rate: int) -> tuple[int, int, int]:
    """(loop_start, loop_end, xfade) in frames: loop up to 1 s ending at 72 % of the note,
    crossfading up to 100 ms.

    GANSynth notes follow NSynth: the key is held for 3 s of the 4 and released for the
    last second, so a held voice loops the sustained part just before that release (and
    the instrument's own envelope does the releasing). The release part, where generated
    notes also carry inverse-STFT edge artefacts, is never played."""
    loop_end = int(note_frames * 0.72)
    length = int(min(sample_rate * 1.0, note_frames * 0.3))
    xfade = int(min(sample_rate * 0.1, length / 4))
    return loop_end - length, loop_end, xfade


def _take(mailbox: collections.deque):
    try:
        return mailbox.popleft()
    except IndexError:
        return None


def _yield_cpu_to_audio() -> None:
    """Lower the calling thread's CPU priority (Linux schedules threads: a nice value set
    for a thread id applies to that thread alone; elsewhere this does nothing). On a
    2-core machine the renderer, the audio callback and the device's own thread share
    the cores; at equal priority the callback can wait a whole period for one.
    torch's worker threads, started on first use from this thread, inherit the value."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: keep the default
        pass


class Renderer:
    """Fills `cache` with notes of the current timbre for `mixer` (see module doc)."""

    def __init__(self, synth, cache, mixer, sample_rate: int, note_frames: int, threads: int = 1,
                 process: bool = False):
        self.cache = cache
        self.mixer = mixer
        self.sample_rate = int(sample_rate)
        self.note_frames = int(note_frames)
        self.loop = loop_points(self.note_frames, self.sample_rate)
        self.loop_seconds = (self.loop[1] - self.loop[0]) / self.sample_rate
        self.threads = threads
        self._synth = synth
        self.batch = self._batch_for(synth)
        self._model_gen = 0
        self._seq = 0  # publication counter
        self._published_seq = np.zeros(cache.slots, np.int64)
        # mailboxes (latest value wins), written by other threads
        # (a deque of maxlen 1: append replaces, popleft takes, both atomic)
        self._request: collections.deque = collections.deque(maxlen=1)  # (timbre_key, latent)
        self._next_synth: collections.deque = collections.deque(maxlen=1)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.use_process = process
        self._remote: SynthProcess | None = None
        self.process_error = ""  # why notes render in this process although use_process is set
        # current work, touched by the rendering thread only
        self._timbre_key = None
        self._latent = None
        self._timbre_seq = 0
        self._done: set[int] = set()
        self.rendered: tuple[int, ...] = ()  # published pitches of the current timbre (for readers)
        self._timbre_started = 0.0
        # meters (plain attributes, read by anyone)
        self.renders = self.failures = self.starved = 0
        self.last_render_ms = 0.0
        self.progress = 0.0
        self.timbre_seq_done = 0  # timbre sequence whose range is complete
        self.range_seconds = 0.0  # wall time the last complete range took
        self.idle = threading.Event()  # set when the current timbre is complete
        self.published = threading.Event()  # set after every publication (waiters clear it)

    @staticmethod
    def _batch_for(synth) -> int:
        """Pitches per generate call: 1 on a CPU (batching is not faster on 2 cores and
        would delay the held pitch), 8 on a GPU."""
        device = getattr(synth, "device", None)
        return 1 if device is None or device.type == "cpu" else 8

    # ------------------------------------------------------------ any thread
    @property
    def synth(self):
        return self._synth

    @property
    def pitch_range(self) -> tuple[int, int]:
        return self._synth.pitch_range

    def request(self, timbre_key: bytes, latent: np.ndarray) -> None:
        """Render notes of this latent next (coalesces with unprocessed requests)."""
        self.idle.clear()
        self._request.append((timbre_key, np.array(latent, np.float32)))
        self._wake.set()

    def swap_model(self, synth, timbre_key: bytes, latent: np.ndarray) -> None:
        """Switch to a prepared Synth between jobs and re-render this timbre with it."""
        self._next_synth.append(synth)
        self.request(timbre_key, latent)

    @property
    def process_state(self) -> str:
        """'off', 'starting', 'ready' or 'failed: why' (then notes render in this process)."""
        remote = self._remote
        if remote is not None:
            return "ready" if remote.ready.is_set() else (f"failed: {remote.error}" if remote.error else "starting")
        return f"failed: {self.process_error}" if self.process_error else "off"

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.use_process:
            self._spawn(self._synth)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gansynth-render", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None
        self._close_remote()

    def _spawn(self, synth) -> None:
        self._close_remote()
        source = getattr(synth, "source", None)
        if source is None or synth.device.type != "cpu":  # a GPU render barely holds the GIL
            return
        try:
            self._remote = SynthProcess(source, synth.num_samples)
        except OSError as e:
            self.process_error = f"could not start a render process: {e}"
            log.warning("%s", self.process_error)

    def _close_remote(self) -> None:
        remote, self._remote = self._remote, None
        if remote is not None:
            remote.close()

    # ------------------------------------------------------------ rendering thread
    def _run(self) -> None:
        _yield_cpu_to_audio()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        while not self._stop.is_set():
            if not self.step():
                self.idle.set()
                if self._request or self._next_synth:  # mail came in meanwhile
                    self.idle.clear()
                self._wake.wait(0.1)
                self._wake.clear()

    def _take_mail(self) -> None:
        synth = _take(self._next_synth)
        if synth is not None:
            self._synth = synth
            self.batch = self._batch_for(synth)
            self.mixer.model_pitches = synth.pitch_range  # a tuple, replaced whole
            if self._thread is not None and self.use_process:
                self._spawn(synth)
            self._model_gen += 1
            self.cache.clear()
            self._timbre_key = None
        req = _take(self._request)
        if req is not None and (req[0] != self._timbre_key):
            self._timbre_key, self._latent = req
            self._timbre_seq += 1
            self._done = set()
            self.rendered = ()
            self._timbre_started = time.perf_counter()
            self.progress = 0.0

    def step(self) -> bool:
        """Do one job (one pitch; `batch` pitches on a GPU); False when the current timbre
        is complete (nothing to do)."""
        self._take_mail()
        if self._timbre_key is None:
            return False
        todo = self._ordered_todo()
        if not todo:
            return False
        self._jobs(todo[:self.batch])
        return True

    def render_now(self, pitches) -> None:
        """Synchronously make sure these pitches of the newest timbre are published."""
        self._take_mail()
        if self._timbre_key is None:
            return
        lo, hi = self.pitch_range
        need = [int(p) for p in dict.fromkeys(pitches) if lo <= p <= hi and p not in self._done]
        for i in range(0, len(need), self.batch):
            self._jobs(need[i:i + self.batch])

    def run_until_idle(self) -> None:
        """Synchronously render the whole range of the newest timbre."""
        while self.step():
            pass

    def _ordered_todo(self) -> list[int]:
        """Unrendered pitches of the current timbre, most urgent first. Notes played
        outside the model's range count for the edge pitch they are resampled from."""
        lo, hi = self.pitch_range
        held = self.mixer.held_count.astype(np.int64)  # copies: the audio thread writes these
        last_on = self.mixer.last_on.copy()
        held[lo] += held[:lo].sum()
        held[hi] += held[hi + 1:].sum()
        last_on[lo] = max(last_on[:lo + 1].max(), 0)
        last_on[hi] = max(last_on[hi:].max(), 0)
        anchor = min(max(int(np.argmax(last_on)), lo), hi) if last_on.max() > 0 else (lo + hi) // 2

        def rank(p):
            if held[p] > 0:
                return (0, -int(last_on[p]), 0)  # held now, latest first
            if last_on[p] > 0:
                return (1, -int(last_on[p]), 0)  # played recently, latest first
            return (2, abs(p - anchor), p)  # outward from the last played pitch
        return sorted((p for p in range(lo, hi + 1) if p not in self._done), key=rank)

    def _jobs(self, pitches: list[int]) -> None:
        """Publish these pitches of the current timbre: cache hits at once, the rest rendered
        in one generate call."""
        keys = {p: (self._model_gen, self._timbre_key, p) for p in pitches}
        self._done.update(pitches)
        self.rendered = tuple(sorted(self._done))
        missing = []
        for p in pitches:
            slot = self.cache.get(keys[p])
            if slot is not None:
                self._publish(p, slot)
            else:
                missing.append(p)
        if missing:
            for p, slot in zip(missing, self._render_into_slots([keys[p] for p in missing], missing)):
                if slot is not None:
                    self._publish(p, slot)
        lo, hi = self.pitch_range
        self.progress = len(self._done) / (hi - lo + 1)
        if len(self._done) == hi - lo + 1:
            self.timbre_seq_done = self._timbre_seq
            self.range_seconds = time.perf_counter() - self._timbre_started

    def _render_into_slots(self, keys: list, pitches: list[int]) -> list[int | None]:
        t0 = time.perf_counter()
        synth = self._synth
        try:
            if synth.threads is None and self.threads is not None and synth.device.type == "cpu":
                torch.set_num_threads(self.threads)
            z = np.repeat(self._latent[None], len(pitches), axis=0)
            waves = self._generate(synth, z, pitches, self._span_samples(synth))  # at synth.sample_rate
        except Exception as exc:  # keep the previous notes of these pitches
            self.failures += len(pitches)
            log.warning("render of pitch(es) %s failed (%s: %s); keeping the previous notes",
                        pitches, type(exc).__name__, exc)
            return [None] * len(pitches)
        slots = []
        for key, pitch, wave in zip(keys, pitches, waves):
            try:
                note, loop_len = self.prepare(wave, synth.sample_rate, pitch)
            except ValueError as exc:
                self.failures += 1
                log.warning("render of pitch %d failed (%s); keeping the previous note", pitch, exc)
                slots.append(None)
                continue
            slot = self._store(key, note, loop_len)
            if slot is not None:
                self.renders += 1
            slots.append(slot)
        self.last_render_ms = (time.perf_counter() - t0) * 1000.0 / len(pitches)
        return slots

    def _span_samples(self, synth) -> int:
        """Samples of a generated note (at the model's rate) that can be heard: up to the loop's
        end plus its guard (`bake_loop` zeroes the rest), plus SPAN_MARGIN_S for the resampler's
        filter. Rendering only those skips ~25 % of the frames (and ~20 % of the time)."""
        _, loop_end, _ = self.loop
        heard_s = (loop_end + 16) / self.sample_rate + SPAN_MARGIN_S
        return min(synth.num_samples, int(np.ceil(heard_s * synth.sample_rate)))

    def _generate(self, synth, z: np.ndarray, pitches: list[int], samples: int | None = None) -> np.ndarray:
        remote = self._remote
        if remote is not None and remote.ready.is_set():
            try:
                return remote.generate(z, pitches, samples)
            except SynthProcessError as e:  # gone: render here from now on
                self.process_error = str(e)
                log.warning("%s; rendering in this process from now on", e)
                self._close_remote()
        return synth.generate(z, pitches, samples)

    def _store(self, key, note: np.ndarray, loop_len: int) -> int | None:
        slot = self.cache.allocate(self._pinned, keep=self._current_key)
        if slot is None:
            self.starved += 1
            log.warning("note cache full of notes in use; %r not stored", key[-1])
            return None
        self.cache.pool[slot, :self.note_frames] = note
        self.cache.pool[slot, self.note_frames:] = 0.0
        self.mixer.slot_loop_len[slot] = loop_len  # before publishing, like the samples
        self.cache.store(key, slot)
        return slot

    def prepare(self, wave: np.ndarray, wave_rate: int, pitch: int) -> tuple[np.ndarray, int]:
        """A generated note -> (playable float32 [note_frames] at the output rate, loop length).

        Rejects non-finite or silent notes (ValueError); resamples with soxr; normalises
        by the absolute peak; bakes a loop of whole periods of `pitch`."""
        wave = np.asarray(wave, np.float32)
        if not np.all(np.isfinite(wave)):
            raise ValueError("non-finite samples in the generated note")
        if wave.size == 0 or float(np.max(np.abs(wave))) < 1e-6:
            raise ValueError("the generated note is silent")
        if wave_rate != self.sample_rate:
            wave = soxr.resample(wave, wave_rate, self.sample_rate, quality="HQ")
        note = np.zeros(self.note_frames, np.float32)
        n = min(len(wave), self.note_frames)
        note[:n] = wave[:n]
        _, loop_end, xfade = self.loop
        # normalise by the absolute peak of what can be played (after resampling, which can
        # move the peak; the unplayed end does not count)
        peak = float(np.max(np.abs(note[:loop_end])))
        if peak < 1e-6:
            raise ValueError("the generated note is silent")
        note /= peak
        loop_len = min(loop_length(pitch, self.sample_rate, self.loop_seconds), loop_end - xfade)
        bake_loop(note, loop_end - loop_len, loop_end, xfade)
        return note, loop_len

    def inject(self, pitch: int, wave: np.ndarray, wave_rate: int) -> int | None:
        """Publish a given note (e.g. a test tone or an imported sample) for `pitch` as if
        rendered. Call from the thread that renders (or in deterministic use)."""
        note, loop_len = self.prepare(wave, wave_rate, pitch)
        self._seq += 1
        slot = self._store(("injected", self._seq, pitch), note, loop_len)
        if slot is not None:
            self._publish(pitch, slot)
        return slot

    def _current_key(self, key) -> bool:
        return key[0] == self._model_gen and key[1] == self._timbre_key

    def _pinned(self, slot: int) -> bool:
        """A slot the mixer may still read: referenced, or published but not yet taken."""
        return bool(self.mixer.slot_refs[slot] > 0 or self._published_seq[slot] > self.mixer.consumed_seq)

    def _publish(self, pitch: int, slot: int) -> None:
        self._seq += 1
        self._published_seq[slot] = self._seq
        self.mixer.ready.append((pitch, slot, self._seq))
        self.published.set()

    def done_pitches(self) -> list[int]:
        return list(self.rendered)
