"""`Instrument`: the engine's live face. The stream, the offline driver and the GUI use it.

    inst = Instrument(load_synth("resources/models/default"), sample_rate=48000)
    inst.start()                          # background render worker
    inst.post(NoteOn(60, 100))            # any thread
    block = inst.process(256)             # audio thread: float32 [256], valid until the next call

THREAD MODEL (who may touch what, and who may block)

  GUI thread       post(), settings.x = v, set_corner(), set_pad(), load/save_preset(),
                   swap_model() (with a Synth it loaded elsewhere), reads timbre / stats() /
                   note_audio(). May block briefly (preset files, the timbre lock).
  MIDI callback    post() only: it translates messages into events. May take the timbre
                   lock for a moment (mod wheel -> pad axis); never waits on audio or renders.
  audio callback   process() only, then copies the block into `outdata`. Never blocks: no
                   locks, no allocation of arrays, no logging, no file I/O, no torch. It drains
                   the per-producer event queues, installs finished renders (`mixer.ready`)
                   and mixes. An exception in there yields a silent block and is counted
                   (stats: audio_errors, last_audio_error), never raised into the callback.
  render worker    Renderer thread (engine.instrument.renderer): torch generate, soxr, writes cache
                   slots that the mixer does not use, publishes (pitch, slot) to mixer.ready.
                   A slot is rewritten only when no voice or pitch-table entry refers to it
                   (mixer.slot_refs, written by the audio thread) and every publication of it
                   has been taken (mixer.consumed_seq): the audio thread never reads a note
                   being written. The only thread that calls torch (besides whoever loads a
                   model). Blocks freely (waits for work on an Event).
  offline driver   plays the audio thread's part (process) and, in deterministic mode, the
                   worker's (renders synchronously in between); OfflineClockOutput likewise paces
                   process() in real time when there is no device.
  recorder writer  never touches the Instrument: the audio stream hands it copies of the
                   blocks through its own ring buffer.

  Cross-thread data, three patterns only:
  * single-producer event queues: each posting thread gets its own collections.deque of
    frozen events (engine.instrument.events); the audio thread pops them (deque append/popleft are
    atomic). Renders come back the same way: the worker is the only producer of
    mixer.ready.
  * latest-value mailboxes: the pad/timbre request and next-model slots of the renderer;
    the `TimbreState` reference (immutable, replaced whole); mixer meters and the
    held-pitch / last-played arrays the worker reads for its priorities.
  * prepared object + flag: a new Synth is built off the audio thread and swapped in by
    the worker between jobs; the tuple of event queues is rebuilt and replaced whole.
"""
from __future__ import annotations

import collections
import logging
import threading

import numpy as np

from engine.instrument import events as ev
from engine.instrument.mixer import Mixer
from engine.instrument.notecache import NoteCache
from engine.instrument.params import PARAMS, TIMBRE_PARAMS, check_param
from engine.instrument.presets import Preset, load_preset, save_preset
from engine.instrument.noteloop import loop_points
from engine.instrument.renderer import Renderer
from engine.instrument.renderpool import render_process_count
from engine.instrument.timbre import TimbreState

log = logging.getLogger(__name__)

def _corners(timbre: TimbreState) -> dict:
    """The renderer's blend inputs: the corners' keys and latents, their weights at the pad."""
    return {"corner_keys": timbre.corner_keys(), "corner_latents": timbre.latents(), "weights": timbre.weights()}


class Settings:
    """Current settings (attributes named as in PARAMS). Assigning posts a SetParam event."""

    def __init__(self, instrument: "Instrument"):
        object.__setattr__(self, "_inst", instrument)
        object.__setattr__(self, "_values", {k: v[0] for k, v in PARAMS.items()})

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}") from None

    def __setattr__(self, name, value):
        self._inst.post(ev.SetParam(name, value))

    def as_dict(self) -> dict:
        return dict(self._values)

    def update(self, values: dict) -> None:
        for name, value in values.items():
            setattr(self, name, value)


class Instrument:
    """Events in, audio out (see the thread model above).

    synth: a loaded `engine.gansynth.synth.Synth`. sample_rate: output rate (notes are resampled
    to it by the worker). cache_mb: note cache budget (raised to the minimum the mixer
    needs: one note per pitch plus two per voice). max_voices: polyphony ceiling.
    timbre: initial corners/pad (default: four random instruments from `seed`).
    render_process: render in child processes once started (CPU), `render_processes` of them
    (default: a core each but one, 1 to 4), a pitch each at a time.
    """

    def __init__(self, synth, sample_rate: int = 48000, cache_mb: float = 512, max_voices: int = 64,
                 render_threads: int = 1, timbre: TimbreState | None = None, seed: int = 0,
                 max_block: int = 256, render_process: bool = True, render_processes: int | None = None,
                 approximate: bool = True):
        self.sample_rate = int(sample_rate)
        self.max_voices = int(max_voices)
        self.note_frames = int(round(synth.num_samples * self.sample_rate / synth.sample_rate))
        spare = max(4, self.max_voices // 4)
        lo, hi = synth.pitch_range
        min_slots = (hi - lo + 1) + 2 * (self.max_voices + spare) + 8
        self.cache = NoteCache(self.note_frames, cache_mb * 2**20, min_slots)
        if self.cache.budget_raised:
            log.info("note cache raised to %d slots (%.0f MB) to cover every pitch and voice",
                     self.cache.capacity, self.cache.capacity * self.cache.slot_bytes / 2**20)
        loop_start, loop_end, _ = loop_points(self.note_frames, self.sample_rate)
        self.mixer = Mixer(self.cache.pool, self.sample_rate, (loop_start, loop_end), (lo, hi),
                           max_voices=self.max_voices, spare_voices=spare, max_block=max_block)
        self.renderer = Renderer(synth, self.cache, self.mixer, self.sample_rate, self.note_frames,
                                 threads=render_threads, process=render_process, processes=render_processes)
        self._processes_chosen = render_processes is not None   # else sized by the audio thread
        # the corners' notes (4 per pitch) beside what min_slots covers: only when they fit
        self.renderer.anchors = approximate and self.cache.capacity >= min_slots + 4 * (hi - lo + 1)
        self._synth = synth
        self.settings = Settings(self)
        self._timbre_lock = threading.Lock()
        self._timbre = timbre or TimbreState.random(synth, seed)
        if self._timbre.latent_size != synth.latent_size:
            raise ValueError(f"timbre latents have {self._timbre.latent_size} values, "
                             f"the model needs {synth.latent_size}")
        self._sync_timbre_settings(self._timbre)
        self._queues: tuple[collections.deque, ...] = ()
        self.audio_errors = 0
        self.last_audio_error: Exception | None = None
        self._producers: list[tuple[threading.Thread, collections.deque]] = []
        self._queues_lock = threading.Lock()
        self._local = threading.local()
        self._request_render(self._timbre)

    # ------------------------------------------------------------------ any thread
    @property
    def synth(self):
        """The model this instrument plays (after swap_model: the new one, even before the
        worker has switched to it)."""
        return self._synth

    def post(self, event) -> None:
        """Hand an event to the instrument (thread-safe; validated here, ValueError if bad)."""
        event = ev.validate(event)
        if isinstance(event, ev.SetParam):
            value = check_param(event.name, event.value)
            if event.name == "polyphony":
                value = min(value, self.max_voices)
            event = ev.SetParam(event.name, value)
            self.settings._values[event.name] = value
            if event.name in TIMBRE_PARAMS:
                self._update_timbre(**{{"interpolation": "mode"}.get(event.name, event.name): value})
                return
        elif isinstance(event, ev.PadMove):
            self._update_timbre(pad=(event.x, event.y))
        elif isinstance(event, ev.ControlChange) and event.control == ev.CC_MOD_WHEEL:
            axis = self.settings.mod_axis
            if axis != "none":
                x, y = self._timbre.pad
                v = event.value / 127.0
                self._update_timbre(pad=(v, y) if axis == "x" else (x, v))
            return
        self._queue().append(event)

    def set_pad(self, x: float, y: float) -> None:
        self.post(ev.PadMove(x, y))

    def _queue(self) -> collections.deque:
        """This thread's own event queue (single producer), made on its first post."""
        q = getattr(self._local, "queue", None)
        if q is None:
            q = collections.deque()
            self._local.queue = q
            with self._queues_lock:
                # drop drained queues of threads that have ended, add ours; the tuple is
                # replaced whole, so the audio thread never sees a half-built one
                self._producers = [(t, dq) for t, dq in self._producers if t.is_alive() or dq]
                self._producers.append((threading.current_thread(), q))
                self._queues = tuple(dq for _, dq in self._producers)
        return q

    # ------------------------------------------------------------------ audio thread
    def process(self, frames: int) -> np.ndarray:
        """Next `frames` samples, float32 mono, a view valid until the next call."""
        mixer = self.mixer
        try:
            mixer.take_ready()  # first, so a note posted after its render was published finds it
            for q in self._queues:
                while q:
                    mixer.handle(q.popleft())
            return mixer.process(frames)
        except Exception as exc:  # never kill the audio callback: silence, and report it elsewhere
            self.audio_errors += 1
            self.last_audio_error = exc  # mailbox; stats() shows it, the caller's thread may log it
            out = mixer._out[:frames]
            out.fill(0.0)
            return out

    # ------------------------------------------------------------------ timbre (GUI / MIDI threads)
    @property
    def timbre(self) -> TimbreState:
        return self._timbre

    def set_timbre(self, timbre: TimbreState) -> None:
        if timbre.latent_size != self.synth.latent_size:
            raise ValueError(f"timbre latents have {timbre.latent_size} values, "
                             f"the model needs {self.synth.latent_size}")
        with self._timbre_lock:
            self._timbre = timbre
        self._sync_timbre_settings(timbre)
        self._request_render(timbre)

    def set_corner(self, i: int, latent, name: str, colour: str | None = None) -> None:
        with self._timbre_lock:
            self._timbre = timbre = self._timbre.with_corner(i, latent, name, colour)
        self._request_render(timbre)

    def _update_timbre(self, **changes) -> None:
        from dataclasses import replace

        with self._timbre_lock:
            self._timbre = timbre = replace(self._timbre, **changes)
        self._request_render(timbre)

    def _sync_timbre_settings(self, timbre: TimbreState) -> None:
        self.settings._values.update(interpolation=timbre.mode, spherical=timbre.spherical,
                                     pad_grid=timbre.pad_grid)

    def _request_render(self, timbre: TimbreState) -> None:
        self.renderer.request(timbre.key(), timbre.latent, **_corners(timbre))

    # ------------------------------------------------------------------ GUI thread
    def start(self) -> None:
        """Start the background render worker."""
        self.renderer.start()

    def stop(self) -> None:
        self.renderer.stop()

    def load_preset(self, path) -> Preset:
        """Load corners, pad and settings from a preset JSON (PresetError names file and field);
        returns it (its `midi_map` is the caller's to apply)."""
        preset = load_preset(path, latent_size=self.synth.latent_size)
        self.set_timbre(preset.timbre)
        for name, value in preset.settings.items():
            if name not in TIMBRE_PARAMS:
                setattr(self.settings, name, value)
        return preset

    def save_preset(self, path, name: str | None = None, midi_map: list | None = None) -> None:
        settings = {k: v for k, v in self.settings.as_dict().items() if k not in TIMBRE_PARAMS}
        save_preset(path, Preset(self._timbre, settings, name or "", midi_map))

    def audio_thread_realtime(self, realtime: bool) -> None:
        """The output says (any thread) whether its callback thread is realtime-scheduled: then
        the render processes may take every core, else all but one (`render_process_count`),
        unless `render_processes` was given. Applied from the next render job on."""
        if not self._processes_chosen:
            self.renderer.set_processes(render_process_count(realtime))

    def swap_model(self, synth, timbre: TimbreState | None = None, seed: int = 0) -> None:
        """Play a different model (loaded by the caller off the audio thread).

        If its latent size differs and no timbre is given, the corners become random
        instruments of the new model."""
        if timbre is None:
            timbre = self._timbre
            if timbre.latent_size != synth.latent_size:
                timbre = TimbreState.random(synth, seed, pad=timbre.pad, mode=timbre.mode,
                                            spherical=timbre.spherical, pad_grid=timbre.pad_grid)
        if timbre.latent_size != synth.latent_size:
            raise ValueError(f"timbre latents have {timbre.latent_size} values, "
                             f"the model needs {synth.latent_size}")
        with self._timbre_lock:
            self._timbre = timbre
            self._synth = synth
        self.renderer.swap_model(synth, timbre.key(), timbre.latent, **_corners(timbre))

    def note_audio(self, pitch: int) -> np.ndarray | None:
        """A copy of the newest render of `pitch` at the output rate (float32), or None."""
        slot = int(self.mixer.table[pitch])
        if not slot:
            return None
        return self.cache.pool[slot, :self.mixer.loop_end].copy()

    def stats(self) -> dict:
        """Meters: cache counters, render progress of the current timbre (0..1), voices."""
        r, m = self.renderer, self.mixer
        out = self.cache.stats()
        out.update(render_progress=r.claims.progress, renders=r.renders, render_failures=r.failures,
                   last_render_ms=r.last_render_ms, range_render_s=r.claims.range_seconds,
                   rendered_pitches=r.done_pitches(), voices=m.active_voices(),
                   fallback_notes=m.fallback_notes, silent_notes=m.silent_notes,
                   held_pitches=[int(p) for p in np.flatnonzero(m.held_count)],
                   approximate=r.anchors, approximations=r.approximations, last_answer_ms=r.last_answer_ms,
                   render_process=r.process_state,
                   render_processes=r.render_pool.ready_count if r.render_pool is not None else 0, audio_errors=self.audio_errors,
                   last_audio_error=repr(self.last_audio_error) if self.last_audio_error else "")
        return out
