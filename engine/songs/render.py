"""Render a MIDI file with instruments that morph over time (GANSynth's demo, faster).

    synth = load_synth("resources/models/default")
    palette = synth.random_latents(3, seed=1)                 # instruments 0, 1, 2
    report = render_midi_file("song.mid", "song.wav", synth, palette,
                              instruments=[0, 2, 1], times=[0, 0.5, 1],
                              progress=lambda done, total: ...)

How a note is made (as Magenta's generate_util, except where noted):
1. Schedule: anchors (palette instrument, time). `times` are fractions of the
   song (end of its last note); `secs_per_instrument` places anchors every S
   seconds, cycling through the palette (the original draws a fresh instrument
   per anchor: give `--random N` with N large enough for that).
2. Each note's latent is the slerp between the two anchors around its start:
   idx = searchsorted(times, start) - 1 (kept inside the anchors),
   f = (start - t[idx]) / (t[idx+1] - t[idx]); omega from the normalised
   vectors, weights sin((1-f) omega)/sin omega and sin(f omega)/sin omega on
   the raw vectors; lerp when sin omega = 0. `morph_steps` > 0 rounds f to
   that many steps per transition so more notes share a render.
3. Distinct (latent, pitch) pairs are rendered once, in batches, in the order
   the notes need them; a render is kept only while a later note still needs
   it (at most `max_cached_renders`, farthest-next-use evicted), so memory
   stays bounded for any number of notes.
4. Each note: render[:len] * envelope (linear attack inside the sustain, linear
   release after min(duration, max_note_s)), divided by its ABSOLUTE peak (the
   original divides by the signed max), times velocity/127, added to the mix at
   the model's rate.
5. The mix is normalised to `peak`, resampled to `sample_rate` with soxr in
   chunks and written as a WAV to a temporary file, then renamed.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.instrument.timbre import slerp_rows
from engine.songs.midifile import MidiNotes, read_midi
from engine.util.fileio import atomic_path


class RenderCancelled(Exception):
    """The caller's cancel flag was set; nothing was written."""


class RenderError(Exception):
    """A render could not be made (bad arguments, unwritable output); the message says why."""


@dataclass(frozen=True)
class RenderSettings:
    """Note shaping and engine knobs (seconds, Hz)."""

    sample_rate: int = 48000
    attack_s: float = 0.010
    release_s: float = 0.3
    max_note_s: float = 3.0
    peak: float = 0.9               # final mix peak (linear)
    morph_steps: int = 0            # 0: every note its own latent (as the original)
    batch_size: int = 8             # distinct renders requested per synth call
    max_cached_renders: int = 128   # renders held at once (each num_samples float32)
    dedup: bool = True              # False: one render per note (the benchmark baseline)
    subtype: str = "PCM_24"         # soundfile WAV subtype
    max_minutes: float = 60.0       # longer songs are refused (raise it to render them anyway)

    def validate(self) -> None:
        checks = [(self.sample_rate >= 8000, "sample_rate must be >= 8000"),
                  (self.attack_s >= 0, "attack must be >= 0"),
                  (self.release_s >= 0, "release must be >= 0"),
                  (self.max_note_s > 0, "max note length must be > 0"),
                  (0 < self.peak <= 1, "peak must be in (0, 1]"),
                  (self.morph_steps >= 0, "morph steps must be >= 0"),
                  (self.batch_size >= 1, "batch size must be >= 1"),
                  (self.max_minutes > 0, "max minutes must be > 0"),
                  (self.max_cached_renders >= self.batch_size, "max_cached_renders must be >= batch_size")]
        for ok, message in checks:
            if not ok:
                raise RenderError(message)


@dataclass
class RenderReport:
    """What a render did; `summary()` is the text the CLI prints."""

    out_path: str
    midi_summary: str
    notes: int
    distinct_renders: int
    renders: int                    # synth renders made (distinct + re-renders after eviction)
    max_renders_held: int
    duration_s: float
    elapsed_s: float
    plot_path: str | None = None
    anchors: list = field(default_factory=list)  # [(instrument, time_s)]

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio made per second of work."""
        return self.duration_s / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    def summary(self) -> str:
        return f"{self.midi_summary}\n{self.render_line()}"

    def render_line(self) -> str:
        return (f"{self.notes} notes, {self.distinct_renders} distinct "
                f"(latent, pitch) renders ({self.renders} made, at most {self.max_renders_held} held); "
                f"{self.duration_s:.1f} s of audio in {self.elapsed_s:.1f} s "
                f"({self.realtime_factor:.1f}x real time) -> {self.out_path}")


# ---- schedule and latents -------------------------------------------------------------------

def instrument_schedule(num_instruments: int, duration_s: float, instruments=None, times=None,
                        secs_per_instrument: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Anchors: (palette index int64 [K], time float64 [K] seconds, ascending).

    `times` are fractions 0..1 of `duration_s`; with neither `instruments` nor
    `secs_per_instrument`, the whole palette is spread evenly over the song.
    """
    if num_instruments < 1:
        raise RenderError("no instruments to render with")
    if secs_per_instrument is not None:
        if instruments is not None or times is not None:
            raise RenderError("give either secs-per-instrument or instruments/times, not both")
        if not secs_per_instrument > 0:
            raise RenderError(f"secs-per-instrument must be > 0, not {secs_per_instrument}")
        count = max(2, int(duration_s / secs_per_instrument))
        ids = np.arange(count) % num_instruments
        return ids.astype(np.int64), np.linspace(0.0, duration_s, count)
    if instruments is None:
        instruments = list(range(num_instruments))
    ids = np.asarray(list(instruments), np.int64).reshape(-1)
    if ids.size == 0:
        raise RenderError("the instrument list is empty")
    if ids.min() < 0 or ids.max() >= num_instruments:
        raise RenderError(f"instrument indices must lie in 0..{num_instruments - 1}, got {ids.tolist()}")
    if times is None:
        fractions = np.linspace(0.0, 1.0, ids.size) if ids.size > 1 else np.zeros(1)
    else:
        fractions = np.asarray(list(times), np.float64).reshape(-1)
        if fractions.shape != ids.shape:
            raise RenderError(f"{ids.size} instruments but {fractions.size} times")
        if np.any(np.diff(fractions) < 0) or fractions.min() < 0 or fractions.max() > 1:
            raise RenderError("times must be ascending fractions of the song between 0 and 1")
    return ids, fractions * duration_s


def note_latent_keys(start_s: np.ndarray, anchor_ids: np.ndarray, anchor_times: np.ndarray,
                     morph_steps: int = 0) -> np.ndarray:
    """Per note (instrument a, instrument b, fraction f): float64 [n, 3], canonical.

    The note's latent is slerp(palette[a], palette[b], f); f == 0 means
    palette[a] alone, so equal latents get equal keys.
    """
    start_s = np.asarray(start_s, np.float64)
    k = len(anchor_ids)
    if k == 1:
        keys = np.zeros((len(start_s), 3))
        keys[:, :2] = anchor_ids[0]
        return keys
    idx = np.searchsorted(anchor_times, start_s, side="left") - 1
    idx = np.clip(idx, 0, k - 2)
    t0, t1 = anchor_times[idx], anchor_times[idx + 1]
    span = t1 - t0
    f = np.where(span > 0, (start_s - t0) / np.where(span > 0, span, 1.0), 1.0)
    f = np.clip(f, 0.0, 1.0)
    if morph_steps > 0:
        f = np.round(f * morph_steps) / morph_steps
    a, b = anchor_ids[idx].astype(np.float64), anchor_ids[idx + 1].astype(np.float64)
    a = np.where(f >= 1.0, b, a)
    same = (a == b) | (f <= 0.0) | (f >= 1.0)
    b = np.where(same, a, b)
    f = np.where(same, 0.0, f)
    return np.stack([a, b, f], axis=1)


def latents_for_keys(palette: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """float32 [n, L] latents of keys [n, 3] from `note_latent_keys`."""
    a = keys[:, 0].astype(np.int64)
    b = keys[:, 1].astype(np.int64)
    return slerp_rows(palette[a], palette[b], keys[:, 2])


# ---- note shaping --------------------------------------------------------------------------

class _Shaper:
    """Envelope lengths and ramps at the model's rate (precomputed once)."""

    def __init__(self, sample_rate: int, num_samples: int, settings: RenderSettings):
        self.release = min(int(round(settings.release_s * sample_rate)), num_samples - 1)
        self.attack = int(round(settings.attack_s * sample_rate))
        self.max_sustain = min(int(settings.max_note_s * sample_rate), num_samples - self.release)
        self.sample_rate = sample_rate
        self.attack_ramp = np.linspace(0.0, 1.0, self.attack, endpoint=False, dtype=np.float32)
        self.release_ramp = np.linspace(1.0, 0.0, self.release, dtype=np.float32)

    def lengths(self, duration_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sustain samples int64 [n], total samples int64 [n])."""
        sustain = np.minimum((np.maximum(duration_s, 0.0) * self.sample_rate).astype(np.int64),
                             self.max_sustain)
        return sustain, sustain + self.release

    def shape(self, audio: np.ndarray, sustain: int, velocity: int) -> np.ndarray:
        """render[:sustain+release] * envelope / |peak| * velocity/127 -> new float32 array."""
        seg = audio[:sustain + self.release].copy()
        a = min(self.attack, len(seg))
        seg[:a] *= self.attack_ramp[:a]
        seg[sustain:] *= self.release_ramp[:len(seg) - sustain]
        peak = float(np.max(np.abs(seg))) if len(seg) else 0.0
        if peak > 0.0 and np.isfinite(peak):
            seg *= (velocity / 127.0) / peak
        else:
            seg[:] = 0.0
        return seg


# ---- the render loop -------------------------------------------------------------------------

class _RenderCache:
    """Distinct renders, held only while a later note needs them (farthest next use evicted)."""

    def __init__(self, job_of_note: np.ndarray, capacity: int):
        self.job_of_note = job_of_note
        self.capacity = capacity
        n_jobs = int(job_of_note.max()) + 1 if len(job_of_note) else 0
        self.order = np.argsort(job_of_note, kind="stable")        # note indices grouped by job
        counts = np.bincount(job_of_note, minlength=n_jobs)
        self.first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.count = counts.astype(np.int64)
        self.used = np.zeros(n_jobs, np.int64)                     # occurrences already mixed
        self.held: dict[int, np.ndarray] = {}
        self.max_held = 0
        self.renders = 0

    def next_use(self, job: int) -> float:
        u = self.used[job]
        return float(self.order[self.first[job] + u]) if u < self.count[job] else float("inf")

    def mark_used(self, job: int) -> None:
        self.used[job] += 1
        if self.used[job] >= self.count[job]:
            self.held.pop(job, None)

    def make_room(self, needed: int) -> None:
        """Evict the held renders needed farthest in the future (Belady) until `needed` fit."""
        while self.held and len(self.held) + needed > self.capacity:
            del self.held[max(self.held, key=self.next_use)]

    def store(self, jobs: list[int], audio: np.ndarray) -> None:
        for j, a in zip(jobs, audio):
            self.held[j] = np.array(a, np.float32)  # a copy: a view would pin the whole batch
        self.renders += len(jobs)
        self.max_held = max(self.max_held, len(self.held))


def _upcoming_jobs(cache: _RenderCache, start: int, limit: int) -> list[int]:
    """Up to `limit` distinct jobs not held, in the order notes from `start` need them."""
    jobs, seen = [], set()
    jobs_of_notes = cache.job_of_note
    stop = min(len(jobs_of_notes), start + 16 * cache.capacity)
    for i in range(start, stop):
        j = int(jobs_of_notes[i])
        if j not in cache.held and j not in seen:
            seen.add(j)
            jobs.append(j)
            if len(jobs) == limit:
                break
    return jobs


def _cancel_fn(cancel):
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    return cancel


def render_notes(synth, notes: MidiNotes, palette: np.ndarray, anchor_ids: np.ndarray,
                 anchor_times: np.ndarray, settings: RenderSettings = RenderSettings(),
                 progress=None, cancel=None) -> tuple[np.ndarray, dict]:
    """Mix of all notes at the model's rate: float32 [samples] (peak-normalised), stats dict.

    progress(done_notes, total_notes) is called every ~0.5 % of the notes; `cancel`
    (an Event or a callable returning True) is polled as often and raises `RenderCancelled`.
    """
    settings.validate()
    cancelled = _cancel_fn(cancel)
    n = len(notes)
    sr = synth.sample_rate
    shaper = _Shaper(sr, synth.num_samples, settings)
    keys = note_latent_keys(notes.start_s, anchor_ids, anchor_times, settings.morph_steps)
    if settings.dedup:
        table = np.concatenate([keys, notes.pitch[:, None].astype(np.float64)], axis=1)
        uniq, job_of_note = np.unique(table, axis=0, return_inverse=True)
        job_of_note = job_of_note.reshape(-1)
    else:
        uniq, job_of_note = np.concatenate([keys, notes.pitch[:, None]], axis=1), np.arange(n)
    cache = _RenderCache(job_of_note.astype(np.int64), settings.max_cached_renders)
    start_idx = np.round(notes.start_s * sr).astype(np.int64)
    sustain, length = shaper.lengths(notes.end_s - notes.start_s)
    total = int((start_idx + length).max())
    _check_song_length(notes.path, total, sr, settings)
    mix = np.zeros(total, np.float32)
    done_reported, report_every = 0, max(1, n // 200)
    for i in range(n):
        job = int(job_of_note[i])
        if i - done_reported >= report_every:
            if cancelled():
                raise RenderCancelled("render cancelled")
            if progress is not None:
                progress(i, n)
            done_reported = i
        if job not in cache.held:
            if cancelled():
                raise RenderCancelled("render cancelled")
            batch = _upcoming_jobs(cache, i, settings.batch_size)
            cache.make_room(len(batch))
            rows = uniq[batch]
            z = latents_for_keys(palette, rows[:, :3])
            audio = synth.generate(z, rows[:, 3].astype(np.int64))
            cache.store(batch, audio)
        seg = shaper.shape(cache.held[job], int(sustain[i]), int(notes.velocity[i]))
        s = int(start_idx[i])
        mix[s:s + len(seg)] += seg
        cache.mark_used(job)
    if progress is not None:
        progress(n, n)
    peak = float(np.max(np.abs(mix))) if len(mix) else 0.0
    if peak > 0 and np.isfinite(peak):
        mix *= settings.peak / peak
    stats = {"distinct_renders": int(len(uniq)), "renders": cache.renders,
             "max_renders_held": cache.max_held}
    return mix, stats


# ---- output --------------------------------------------------------------------------------

def _check_output(path) -> None:
    """Fail before any work if `path` cannot be an output file."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise RenderError(f"{path}: is a folder, not a file name")
    if not path.parent.is_dir():
        raise RenderError(f"{path}: the folder {path.parent} does not exist")


def _check_song_length(source: str, samples: int, sample_rate: int, settings: RenderSettings) -> None:
    """Refuse a song longer than settings.max_minutes, or one this machine's memory cannot hold.

    What the render holds at its peak: the float32 mix at the model's rate (the resample
    to the output rate goes in chunks), so 4 bytes a sample (16 kHz: 5.5 GB a day of audio).
    """
    seconds = samples / sample_rate
    minutes = seconds / 60.0
    found = f"{source}: the song is {_clock(seconds)} long (its last note ends there)"
    if minutes > settings.max_minutes:
        raise RenderError(f"{found}; songs longer than {settings.max_minutes:g} minutes are refused. "
                          f"If that is right, render it anyway with --max-minutes {int(np.ceil(minutes))} "
                          f"(needs about {_bytes(4.0 * samples)} of memory)")
    needed, available = 4.0 * samples * 1.25, _available_memory()
    if available is not None and needed > available:
        raise RenderError(f"{found}; rendering it needs about {_bytes(needed)} of memory and "
                          f"{_bytes(available)} is available")


def _clock(seconds: float) -> str:
    hours, rest = divmod(int(round(seconds)), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d} (h:mm:ss)"


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000.0


def _available_memory() -> float | None:
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def write_wav(path, audio: np.ndarray, in_rate: int, out_rate: int, subtype: str = "PCM_24",
              chunk: int = 1 << 16) -> Path:
    """Resample mono float audio in chunks (soxr) and write a WAV via a temp file + rename."""
    import soundfile as sf
    import soxr

    path = Path(path)
    _check_output(path)
    try:
        with atomic_path(path) as tmp, \
                sf.SoundFile(tmp, "w", samplerate=out_rate, channels=1, subtype=subtype, format="WAV") as f:
            stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32") if in_rate != out_rate else None
            for pos in range(0, max(len(audio), 1), chunk):
                block = np.ascontiguousarray(audio[pos:pos + chunk], np.float32)
                last = pos + chunk >= len(audio)
                if stream is not None:
                    block = stream.resample_chunk(block, last=last)
                f.write(np.clip(block, -1.0, 1.0))
    except (OSError, RuntimeError) as e:  # soundfile's LibsndfileError is a RuntimeError
        raise RenderError(f"{path}: cannot write: {e}") from e
    return path


def render_midi_file(midi_path, out_wav, synth, palette, instruments=None, times=None,
                     secs_per_instrument: float | None = None, tempo_scale: float = 1.0,
                     settings: RenderSettings = RenderSettings(), plot_path=None,
                     progress=None, cancel=None, log=None) -> RenderReport:
    """Read `midi_path`, render it with `synth` morphing through `palette` [P, L], write `out_wav`.

    Raises MidiFileError (bad file, no notes in range), RenderError (bad
    arguments, unwritable output) or RenderCancelled; `log(str)` gets the
    MIDI summary before rendering starts.
    """
    t0 = time.perf_counter()
    settings.validate()
    palette = np.asarray(palette, np.float32)
    if palette.ndim != 2 or palette.shape[1] != synth.latent_size:
        raise RenderError(f"instrument latents must be [n, {synth.latent_size}], got {palette.shape}")
    for out in (out_wav, plot_path):
        _check_output(out)
    notes = read_midi(midi_path, pitch_range=synth.pitch_range, tempo_scale=tempo_scale)
    if log is not None:
        log(notes.summary())
    anchor_ids, anchor_times = instrument_schedule(len(palette), notes.duration_s, instruments, times,
                                                   secs_per_instrument)
    mix, stats = render_notes(synth, notes, palette, anchor_ids, anchor_times, settings, progress, cancel)
    if _cancel_fn(cancel)():
        raise RenderCancelled("render cancelled")
    out = write_wav(out_wav, mix, synth.sample_rate, settings.sample_rate, settings.subtype)
    plot = None
    if plot_path is not None:
        from engine.gansynth.rainbowgram import rainbowgram, save_png

        plot = str(save_png(rainbowgram(mix, synth.sample_rate, max_frames=2400), plot_path, scale=(4, 1)))
    return RenderReport(out_path=str(out), midi_summary=notes.summary(), notes=len(notes),
                        duration_s=len(mix) / synth.sample_rate,
                        elapsed_s=time.perf_counter() - t0, plot_path=plot,
                        anchors=list(zip(anchor_ids.tolist(), anchor_times.tolist())), **stats)


def render_for_app(synth, timbre, midi_path, wav_path, progress=None, cancel=None, morph: bool = False,
                   settings: RenderSettings = RenderSettings(), plot_path=None) -> RenderReport:
    """The app's "Render MIDI file…": the pad's current timbre (or, with `morph`, corners
    0-3 evenly over the song). progress(fraction 0..1); `cancel` as in `render_notes`."""
    palette, _ = timbre_palette(timbre)
    fraction = None if progress is None else (lambda done, total: progress(done / max(total, 1)))
    return render_midi_file(midi_path, wav_path, synth, palette, [0, 1, 2, 3] if morph else [4],
                            settings=settings, plot_path=plot_path, progress=fraction, cancel=cancel)


def timbre_palette(timbre) -> tuple[np.ndarray, list[str]]:
    """A TimbreState's instruments: corners 0-3, then the pad's current blend as 4."""
    latents = np.concatenate([timbre.latents(), timbre.latent[None]]).astype(np.float32)
    return latents, [*timbre.names, "pad"]
