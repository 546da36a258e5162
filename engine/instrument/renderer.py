"""Render worker: (latent, pitch) -> a playable note in the cache, off the audio thread.

One job = one pitch of the newest requested timbre (queued on the render processes, up to
two a child, on a CPU; 8 pitches per batch on a GPU): generate only the span a held note
can sound (up to its loop's end), prepare it (engine.instrument.noteloop.prepare_note), and
hand it to the mixer (engine.instrument.handoff). LRU eviction spares the notes of the
timbre being rendered, so going back to an older timbre re-renders only what was evicted.

Priority (re-evaluated before every job; engine.instrument.refill): held pitches, then
the ones just played, then their neighbours; with `anchors` on, the corner instruments'
notes of each group after it. Pad moves arrive in a latest-value mailbox (newest latent
wins; the old timbre's unrendered pitches are dropped); cached notes are published without
rendering. A failed render is logged, counted and skipped (the previous note keeps playing).

Instant answer (`anchors` on): a new timbre is answered before any render, mid-render too
(the worker waits for its render processes in select() with a wake pipe `request` writes
to): every held pitch gets its cached note, else the blend of the corners' notes at the new
weights. A render landing for a timbre no longer current is cached, not published.

Model swap: `swap_model(synth)` puts a prepared Synth in a mailbox; the worker picks it up
between jobs (cache keys carry a model generation) and re-renders the current timbre.

Render processes (`process=True`, the live instrument's default): `start()` also starts an
`engine.instrument.synthproc.RenderPool` of `processes` children (default: a core each but
one, 1 to 4); once the first is ready the worker keeps them busy (`_pool_step`), so renders
hold this process's GIL only to copy samples. Until then, and after the first fails, notes
render in this process. docs/ARCHITECTURE.md has the measurements behind each choice.

Deterministic use (offline driver, tests): do not `start()`; call `render_now`
(or `run_until_idle`) from the driving thread instead.
"""
from __future__ import annotations

import collections
import logging
import select
import threading
import time

import numpy as np
import torch

from engine.instrument.handoff import Handoff
from engine.instrument.noteloop import heard_samples, loop_points, prepare_note
from engine.instrument.refill import HELD, Claims, TimbreRequest, WakePipe, blend_weights, job_order, refill_ranks
from engine.instrument.renderpool import RenderPool, render_process_count
from engine.instrument.synthproc import SynthProcessError, lower_thread_priority

log = logging.getLogger(__name__)

IDLE_WAIT_S = 2.0  # an idle worker's wait for mail (`request` wakes it at once)


def _take(mailbox: collections.deque):
    try:
        return mailbox.popleft()
    except IndexError:
        return None


class Renderer:
    """Fills `cache` with notes of the current timbre for `mixer` (see module doc)."""

    def __init__(self, synth, cache, mixer, sample_rate: int, note_frames: int, threads: int = 1,
                 process: bool = False, processes: int | None = None):
        self.cache = cache
        self.mixer = mixer
        self.sample_rate = int(sample_rate)
        self.note_frames = int(note_frames)
        self.loop = loop_points(self.note_frames, self.sample_rate)
        self.loop_seconds = (self.loop[1] - self.loop[0]) / self.sample_rate
        self._prepare_spec = {"rate": self.sample_rate, "frames": self.note_frames, "loop": list(self.loop),
                              "loop_s": self.loop_seconds}  # what a render process prepares notes for
        self.threads = threads
        self._synth = synth
        self.batch = self._batch_for(synth)
        self._model_gen = 0
        self.handoff = Handoff(cache, mixer, note_frames, keep=self._keep)  # into the cache, to the mixer
        # mailboxes (latest value wins), written by other threads
        # (a deque of maxlen 1: append replaces, popleft takes, both atomic)
        self._request: collections.deque = collections.deque(maxlen=1)  # TimbreRequest
        self._next_synth: collections.deque = collections.deque(maxlen=1)
        self._wake = threading.Event()
        self._wake_pipe = WakePipe()  # `request` pokes it: heard while waiting on the render process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.use_process = process
        self.processes = processes or render_process_count()  # render processes (CPU cores)
        self.render_pool: RenderPool | None = None  # the worker's; others only read it or set .size
        self.process_error = ""  # why notes render in this process although use_process is set
        # current work, touched by the rendering thread only
        self._timbre_key = None
        self._latent = None
        self._req: TimbreRequest | None = None
        self._timbre_gen = 0   # counts timbre changes: render processes drop a superseded timbre's queued notes
        self.claims = Claims()  # the current timbre's pitches done or pending; progress (readers too)
        self._anchor_tried: set = set()  # anchor keys rendered (or failed) for this model
        self.anchors = False  # keep the corners' notes and answer pad moves with their blend
        self._deferred = False  # jobs left for the render process, which is starting
        # meters (plain attributes, read by anyone)
        self.renders = self.failures = 0
        self.approximations = 0  # blends published
        self.last_answer_ms = 0.0  # new timbre taken -> its held pitches published
        self.last_render_ms = 0.0
        self.idle = threading.Event()  # set when nothing is left to render (anchors included)

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

    def request(self, timbre_key: bytes, latent: np.ndarray, corner_keys=(), corner_latents=None,
                weights=None) -> None:
        """Render notes of this latent next (coalesces with unprocessed requests). With the
        corners' keys, latents [4, n] and weights [4], pad moves are answered by blends."""
        self.idle.clear()
        self._request.append(TimbreRequest(timbre_key, np.array(latent, np.float32), tuple(corner_keys),
                                           None if corner_latents is None else np.array(corner_latents, np.float32),
                                           None if weights is None else np.array(weights, np.float64)))
        self._wake.set()
        self._wake_pipe.poke()

    def swap_model(self, synth, timbre_key: bytes, latent: np.ndarray, **corners) -> None:
        """Switch to a prepared Synth between jobs and re-render this timbre with it."""
        self._next_synth.append(synth)
        self.request(timbre_key, latent, **corners)

    @property
    def process_state(self) -> str:
        """'off', 'starting', 'ready' or 'failed: why' (then notes render in this process)."""
        remote = self.render_pool
        if remote is not None:
            return "ready" if remote.ready.is_set() else (f"failed: {remote.error}" if remote.error else "starting")
        return f"failed: {self.process_error}" if self.process_error else "off"

    def set_processes(self, count: int) -> None:
        """Render processes from the next job on (any thread; a running pool resizes itself)."""
        self.processes = max(1, int(count))
        if self.render_pool is not None:
            self.render_pool.size = self.processes

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.use_process:
            self._spawn(self._synth)
        self._wake_pipe.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gansynth-render", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout)
            self._thread = None
            self._close_remote()
        self._wake_pipe.close()

    def _spawn(self, synth) -> None:
        self._close_remote()
        source = getattr(synth, "source", None)
        if source is None or synth.device.type != "cpu":  # a GPU render barely holds the GIL
            return
        try:
            self.render_pool = RenderPool(source, synth.num_samples, self.processes)
        except OSError as e:
            self.process_error = f"could not start a render process: {e}"
            log.warning("%s", self.process_error)

    def _close_remote(self) -> None:
        remote, self.render_pool = self.render_pool, None
        if remote is not None:
            remote.close()

    # ------------------------------------------------------------ rendering thread
    def _run(self) -> None:
        lower_thread_priority()  # it renders, or plans, stores and blends for the render processes
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        while not self._stop.is_set():
            if not self.step():
                lo, hi = self.pitch_range   # the next range's slots, committed now rather than in it
                self.cache.warm(hi - lo + 1, stop=lambda: bool(self._request or self._next_synth))
                if self._deferred:  # the render process is starting: it takes the rest
                    self._wake.wait(0.05)
                    self._wake.clear()
                    continue
                self.idle.set()
                if self._request or self._next_synth:  # mail came in meanwhile
                    self.idle.clear()
                self._wake.wait(IDLE_WAIT_S)  # mail sets it; no polling that takes the GIL
                self._wake.clear()

    def _take_mail(self, timbre_only: bool = False) -> bool:
        """Take the mailboxes; True when the timbre changed. `timbre_only`: leave a model
        swap for later (a render of the current model is in flight)."""
        synth = None if timbre_only else _take(self._next_synth)
        if synth is not None:
            self._synth = synth
            self.batch = self._batch_for(synth)
            self.mixer.model_pitches = synth.pitch_range  # a tuple, replaced whole
            if self._thread is not None and self.use_process:
                self._spawn(synth)
            self._model_gen += 1
            self.cache.clear()
            self._anchor_tried = set()
            self._timbre_key = None
        req = _take(self._request)
        if req is not None and req.key == self._timbre_key:
            self._req = req  # the same latent (e.g. a pad move within one grid cell)
        if req is None or req.key == self._timbre_key:
            return False
        self._req, self._timbre_key, self._latent = req, req.key, req.latent
        self._timbre_gen += 1
        lo, hi = self.pitch_range
        self.claims.begin((self._model_gen, req.key), hi - lo + 1)
        return True

    def step(self) -> bool:
        """Do one job (`batch` pitches here; with the render processes ready, keep them busy
        and take one answer); False when the current timbre is complete (nothing to do)."""
        remote = self.render_pool
        if remote is not None and remote.ready.is_set():
            return self._pool_step(remote)
        if self._take_mail():
            self._answer()
        if self._timbre_key is None:
            return False
        todo = self._ordered_jobs()
        if not todo:
            return False
        corner = todo[0][1]
        self._jobs([p for p, c in todo if c == corner][:self.batch], corner)
        return True

    def _pool_step(self, pool: RenderPool) -> bool:
        """Queue the most urgent pitches on the render processes (up to RenderPool.DEPTH each;
        a request a pitch), then store and publish the first answer. A model swap waits until
        nothing of the old model is in flight."""
        if self._take_mail(timbre_only=pool.in_flight > 0):
            self._answer()
        if self.render_pool is not pool:   # a swapped model: its own processes
            return True
        try:
            if self._timbre_key is not None and not self._next_synth:
                self._fill(pool)
            if not pool.in_flight:
                return bool(self._next_synth)
            for landing in pool.receive(self._wait_answering):
                self._land(landing)
        except SynthProcessError as e:   # the first child is gone: render here from now on
            self.process_error = str(e)
            log.warning("%s; rendering in this process from now on", e)
            for key, _ in pool.queued_tags():
                self._unclaim(key)
            self._close_remote()
        return True

    def _fill(self, pool: RenderPool) -> None:
        """Queue the most urgent pitches, a request each, while a child has room."""
        samples = heard_samples(self.loop, self.sample_rate, self._synth)
        for pitch, corner in self._ordered_jobs():
            gen = self._timbre_gen if corner < 0 else None   # corner notes serve every blend: never dropped
            if not pool.can_take(gen):
                return
            keys, latent, missing = self._claim([pitch], corner)
            sent = not missing
            try:
                sent = sent or pool.submit(latent[None], missing, samples, self._prepare_spec,
                                            (keys[pitch], time.perf_counter()), gen)
            finally:
                if not sent:   # no room after all (a helper dropped), or the first child is gone
                    self._unclaim(keys[pitch])

    def _land(self, landing) -> None:
        """A render process's answer (RenderPool.receive)."""
        key, t0 = landing.tag
        if landing.lost:   # its helper died, or dropped it for a newer timbre: render it where still wanted
            self._unclaim(key)
            return
        error = landing.failure or landing.errors[0]
        self._arrive(key, None if error else landing.notes[0], 0 if error else landing.loop_lens[0], error)
        self.last_render_ms = (time.perf_counter() - t0) * 1000.0

    def _arrive(self, key, note: np.ndarray | None, loop_len: int, error: str) -> None:
        """A rendered note (or why it failed: the previous note keeps playing) stored, and
        published where it still belongs: a render for a timbre no longer current (the pad
        moved meanwhile, answered by a blend) is kept in the cache but not played."""
        pitch = key[-1]
        if error:
            self.failures += 1
            log.warning("render of pitch %d failed (%s); keeping the previous note", pitch, error)
        elif (slot := self._store(key, note, loop_len)) is not None:
            self.renders += 1
            if self.claims.is_current(key) or not self.mixer.table[pitch]:
                self.handoff.publish(pitch, slot)
        self.claims.land(key)

    def render_now(self, pitches) -> None:
        """Synchronously make sure these pitches of the newest timbre are published."""
        self._take_mail()
        if self._timbre_key is None:
            return
        lo, hi = self.pitch_range
        need = [int(p) for p in dict.fromkeys(pitches) if lo <= p <= hi and p not in self.claims.done]
        for i in range(0, len(need), self.batch):
            self._jobs(need[i:i + self.batch], -1)

    def run_until_idle(self) -> None:
        """Synchronously render the whole range of the newest timbre."""
        while self.step():
            pass

    def _ordered_jobs(self) -> list[tuple[int, int]]:
        """(pitch, corner) still to render, most urgent first; corner -1 = the current timbre.
        Notes played outside the model's range count for the edge pitch they come from."""
        lo, hi = self.pitch_range
        ranks = refill_ranks((lo, hi), self.mixer.held_count, self.mixer.last_on)  # copies inside
        current = [p for p in range(lo, hi + 1) if p not in self.claims.done]
        jobs = job_order(ranks, current, self._missing_anchors(lo, hi))
        remote = self.render_pool
        self._deferred = remote is not None and not remote.ready.is_set() and not remote.error
        if self._deferred:  # starting: only what a player holds now renders in this process
            jobs = [(p, c) for p, c in jobs if c < 0 and ranks[p][0] == HELD]
        return jobs

    def _missing_anchors(self, lo: int, hi: int) -> list[tuple[int, int]]:
        req = self._req
        if not self.anchors or req is None or not req.corner_keys:
            return []
        gen, out = self._model_gen, []
        for c, ck in enumerate(req.corner_keys):
            if ck == self._timbre_key:
                continue  # the pad sits on this corner: its notes are the current timbre's
            out += [(p, c) for p in range(lo, hi + 1)
                    if (gen, ck, p) not in self.cache and (gen, ck, p) not in self._anchor_tried]
        return out

    def _jobs(self, pitches: list[int], corner: int) -> None:
        """Publish these pitches of the current timbre (corner -1): cache hits at once, the
        rest rendered in one generate call here; or render these notes of one corner instrument."""
        keys, latent, missing = self._claim(pitches, corner)
        if missing:
            self._render_here([keys[p] for p in missing], missing, latent)

    def _claim(self, pitches: list[int], corner: int) -> tuple[dict, np.ndarray, list[int]]:
        """Take these pitches of the current timbre (corner -1; cache hits published at once)
        or of a corner instrument off the to-do list -> (cache keys by pitch, their latent, the
        pitches to render). Claimed pitches to render are pending until they land."""
        req = self._req
        timbre_key, latent = (self._timbre_key, self._latent) if corner < 0 else \
            (req.corner_keys[corner], req.corner_latents[corner])
        keys = {p: (self._model_gen, timbre_key, p) for p in pitches}
        missing = []
        if corner < 0:
            self.claims.done.update(pitches)
            for p in pitches:
                slot = self.cache.get(keys[p])
                if slot is not None:
                    self.handoff.publish(p, slot)
                else:
                    missing.append(p)
        else:
            self._anchor_tried.update(keys.values())
            missing = list(pitches)
        self.claims.send(keys[p] for p in missing)
        return keys, latent, missing

    def _unclaim(self, key) -> None:
        """A claimed note that will not land (its render process died or dropped it): back on the to-do list."""
        if not self.claims.is_current(key):
            self._anchor_tried.discard(key)
        self.claims.drop(key)

    def _render_here(self, keys: list, pitches: list[int], latent: np.ndarray) -> None:
        t0 = time.perf_counter()
        synth = self._synth
        try:
            if synth.threads is None and self.threads is not None and synth.device.type == "cpu":
                torch.set_num_threads(self.threads)
            z = np.repeat(latent[None], len(pitches), axis=0)
            notes = self._render_notes(synth, z, pitches, heard_samples(self.loop, self.sample_rate, synth))
        except Exception as exc:  # keep the previous notes of these pitches
            notes = [(None, 0, f"{type(exc).__name__}: {exc}")] * len(pitches)
        for key, (note, loop_len, error) in zip(keys, notes):
            self._arrive(key, note, loop_len, error)
        self.last_render_ms = (time.perf_counter() - t0) * 1000.0 / len(pitches)

    def _render_notes(self, synth, z: np.ndarray, pitches: list[int], samples: int) -> list:
        """[(playable note float32 [note_frames], loop length, "") or (None, 0, why)] per pitch,
        rendered and prepared in this thread (the render processes' notes come by `_pool_step`)."""
        out = []
        for pitch, wave in zip(pitches, self._generate(synth, z, pitches, samples)):  # at synth.sample_rate
            try:
                out.append((*self.prepare(wave, synth.sample_rate, pitch), ""))
            except ValueError as e:
                out.append((None, 0, str(e)))
        return out

    def _generate(self, synth, z: np.ndarray, pitches: list[int], samples: int | None = None) -> np.ndarray:
        """Raw notes rendered in this thread."""
        return synth.generate(z, pitches, samples)

    def _store(self, key, note: np.ndarray, loop_len: int) -> int | None:
        slot = self.handoff.store(key, note, loop_len)
        if slot is None:
            log.warning("note cache full of notes in use; %r not stored", key[-1])
        return slot

    def prepare(self, wave: np.ndarray, wave_rate: int, pitch: int) -> tuple[np.ndarray, int]:
        """A generated note -> (playable float32 [note_frames] at the output rate, loop length);
        see engine.instrument.noteloop.prepare_note."""
        return prepare_note(wave, wave_rate, pitch, self.sample_rate, self.note_frames, self.loop,
                            self.loop_seconds)

    def inject(self, pitch: int, wave: np.ndarray, wave_rate: int) -> int | None:
        """Publish a given note (e.g. a test tone or an imported sample) for `pitch` as if
        rendered. Call from the thread that renders (or in deterministic use)."""
        note, loop_len = self.prepare(wave, wave_rate, pitch)
        slot = self._store(("injected", self.handoff.next_seq(), pitch), note, loop_len)
        if slot is not None:
            self.handoff.publish(pitch, slot)
        return slot

    def _keep(self, key) -> bool:
        """Notes eviction spares: the current timbre's and, with anchors on, the corners'."""
        req = self._req
        return key[0] == self._model_gen and (key[1] == self._timbre_key or (
            self.anchors and req is not None and key[1] in req.corner_keys))

    # ------------------------------------------------------------ instant answer
    def _wait_answering(self, fds: list[int]) -> list[int]:
        """Until one of `fds` is readable (a render process's answer), answer pad moves;
        -> the readable ones."""
        wake = self._wake_pipe.fileno()
        while True:
            ready, _, _ = select.select(fds + ([wake] if wake is not None else []), [], [])
            if wake in ready:
                self._wake_pipe.drain()
                if self._take_mail(timbre_only=True):
                    self._answer()
            answered = [fd for fd in ready if fd in fds]
            if answered:
                return answered

    def _answer(self) -> None:
        """A new timbre: publish at once, for every held pitch, its cached note or the blend
        of the corners' notes at the new weights (see engine.instrument.refill)."""
        req = self._req
        if not self.anchors or req is None or req.weights is None or not req.corner_keys:
            return
        t0 = time.perf_counter()
        lo, hi = self.pitch_range
        ranks = refill_ranks((lo, hi), self.mixer.held_count, self.mixer.last_on)
        held = sorted((p for p, r in ranks.items() if r[0] == HELD and p not in self.claims.done), key=ranks.get)
        gen = self._model_gen
        for p in held:
            exact = (gen, self._timbre_key, p)
            if exact in self.cache:
                self.handoff.publish(p, self.cache.get(exact))
                self.claims.done.add(p)
                continue
            found = [self.cache.peek((gen, ck, p)) for ck in req.corner_keys]
            w = blend_weights(req.weights, [s is not None for s in found])
            if w is None:
                continue
            use = [(s, float(wi)) for s, wi in zip(found, w) if s is not None and wi > 0.0]
            slot = self.handoff.store_blend(("blend", gen, self._timbre_key, p), [s for s, _ in use],
                                            [wi for _, wi in use])
            if slot is not None:
                self.approximations += 1
                self.handoff.publish(p, slot)
        self.claims.update()
        self.last_answer_ms = (time.perf_counter() - t0) * 1000.0

    def done_pitches(self) -> list[int]:
        return list(self.claims.rendered)
