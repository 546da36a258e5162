"""Export one instrument (a latent) as an SFZ sampler patch: WAVs plus a .sfz file.

    report = export_sfz(synth, latent, "out/MyPatch", pitches=range(24, 85), velocity_layers=2,
                        progress=lambda done, total: ...)
    # out/MyPatch/MyPatch.sfz, out/MyPatch/samples/MyPatch_060_C4_v1.wav, ...

The patch:
- one region per sampled pitch, keys split half-way between sampled pitches
  (lokey / hikey / pitch_keycenter); the outermost regions stretch to keys 0 and 127;
- loop_mode=loop_continuous with loop_start / loop_end in the steady part of
  the note, found by a low-discontinuity search (`find_loop`), plus a short
  crossfade baked into the samples before loop_end so the wrap is seamless in
  any sampler; ampeg_attack / ampeg_release as given;
- 24-bit WAVs at the output rate, each normalised to the same peak.

Velocity layers: GANSynth is not conditioned on loudness (NSynth velocities
never reach the model), so a layer cannot be "rendered at velocity v", and
layers that only differ in gain add nothing the sampler's own velocity
tracking (amp_veltrack, on by default) does not already do. So every layer
renders the same note once and the softer layers are made darker, as acoustic
instruments are when played softly: a 2nd-order Butterworth low-pass at
f0 * 2^(1 + 5 t) (t = (layer+1)/layers; the loudest layer is unfiltered),
as a zero-phase gain 1 / (1 + (f/fc)^4) in the frequency domain.
Loudness still follows velocity through amp_veltrack. Layers split 1..127 evenly
(lovel / hivel).

Files are written to temporary names and renamed; the .sfz is written last,
so a patch folder without its .sfz is an unfinished export. A cancelled or
failed export removes the samples it wrote.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.gansynth.spectral import midi_to_hz, pitch_name
from engine.util.fileio import atomic_path, atomic_write_text


class SfzError(Exception):
    """An export that cannot be made (bad arguments, unwritable folder); the message says why."""


class ExportCancelled(Exception):
    """The caller's cancel flag was set; the samples written so far were removed."""


def note_name(pitch: int) -> str:
    """60 -> 'C4', 61 -> 'Cs4' (file-name safe)."""
    return pitch_name(pitch).replace("#", "s")


@dataclass(frozen=True)
class SfzSettings:
    sample_rate: int = 48000
    attack_s: float = 0.005
    release_s: float = 0.3
    peak: float = 0.89                # every sample normalised to this (-1 dBFS)
    crossfade_s: float = 0.02         # baked into the samples before loop_end
    loop_search_s: tuple[float, float] = (0.3, 2.8)  # where a loop may lie (GANSynth notes are held 3 s)


@dataclass
class SfzReport:
    sfz_path: str
    samples: list
    pitches: list
    velocity_layers: int
    elapsed_s: float

    def summary(self) -> str:
        return (f"{len(self.samples)} samples ({len(self.pitches)} pitches x {self.velocity_layers} "
                f"velocity layer(s)) in {self.elapsed_s:.1f} s -> {self.sfz_path}")


# ---- loops -----------------------------------------------------------------------------------

def find_loop(audio: np.ndarray, sample_rate: int, f0_hz: float,
              search_s: tuple[float, float] = (0.3, 2.8)) -> tuple[int, int]:
    """(loop_start, loop_end) sample indices (loop_end inclusive) in a steady part of `audio`.

    The region is where the 20 ms RMS stays within 20 dB of its maximum inside
    `search_s`; the loop spans its later part (up to 1.5 s). Around the target
    points, the start/end pair minimising the squared difference between the
    windows around x[start] and x[end + 1] (normalised by their energy) wins,
    so playing x[end] then x[start] continues the waveform.
    """
    x = np.asarray(audio, np.float64)
    lo, hi = _steady_region(x, sample_rate, search_s)
    period = max(2, int(round(sample_rate / max(f0_hz, 1.0))))
    half = int(np.clip(period // 2, 32, 256))
    end_target = hi - half - 1
    length_target = int(min(1.5 * sample_rate, max(0.5 * (end_target - lo), 4 * period)))
    start_target = max(lo + half, end_target - length_target)
    ends = _candidates(x, end_target - 3 * period, end_target, end_target, 48)
    # Every sample near the start target: with the ends' differing sub-sample phases,
    # some pair lands within a fraction of a sample of a whole number of periods.
    starts = np.arange(max(half, start_target - 3 * period // 2), start_target + 3 * period // 2)
    ends = ends[ends + 1 + half <= len(x)]
    starts = starts[(starts - half >= 0) & (starts + 2 * period < ends.max(initial=0))]
    if len(ends) == 0 or len(starts) == 0:
        return start_target, end_target
    windows = np.lib.stride_tricks.sliding_window_view(x, 2 * half)
    w_start = windows[starts - half]                       # [S, 2h]
    w_end = windows[ends + 1 - half]                       # [E, 2h]
    cross = w_start @ w_end.T                               # [S, E]
    e_start = np.sum(w_start ** 2, axis=1)[:, None]
    e_end = np.sum(w_end ** 2, axis=1)[None, :]
    cost = (e_start - 2 * cross + e_end) / (e_start + e_end + 1e-12)
    s_i, e_i = np.unravel_index(np.argmin(cost), cost.shape)
    return int(starts[s_i]), int(ends[e_i])


def _steady_region(x: np.ndarray, sample_rate: int, search_s) -> tuple[int, int]:
    frame = max(1, int(0.02 * sample_rate))
    lo = min(int(search_s[0] * sample_rate), len(x) - 1)
    hi = min(int(search_s[1] * sample_rate), len(x))
    n = (hi - lo) // frame
    if n < 4:
        return lo, hi
    rms = np.sqrt(np.mean(x[lo:lo + n * frame].reshape(n, frame) ** 2, axis=1)) + 1e-12
    loud = np.flatnonzero(rms >= rms.max() * 0.1)
    # The longest run of loud frames, latest first on ties.
    runs = np.split(loud, np.flatnonzero(np.diff(loud) > 1) + 1)
    best = max(runs, key=lambda r: (len(r), r[0]))
    return lo + int(best[0]) * frame, lo + int(best[-1] + 1) * frame


def _candidates(x: np.ndarray, lo: int, hi: int, target: int, limit: int) -> np.ndarray:
    """Up to `limit` upward zero crossings in [lo, hi) nearest `target` (every sample if none)."""
    lo, hi = max(1, lo), min(len(x) - 1, hi)
    if hi <= lo:
        return np.array([max(0, min(target, len(x) - 1))])
    seg = x[lo - 1:hi]
    idx = np.flatnonzero((seg[:-1] < 0) & (seg[1:] >= 0)) + lo
    if len(idx) == 0:
        idx = np.arange(lo, hi)
    return idx[np.argsort(np.abs(idx - target), kind="stable")[:limit]]


def bake_crossfade(audio: np.ndarray, loop_start: int, loop_end: int, length: int) -> np.ndarray:
    """Blend the samples before loop_end into those before loop_start, in place.

    After it, x[loop_end] flows into x[loop_start] as x[loop_start - 1] does.
    A linear (equal-gain) fade: the search has already aligned the two in phase.
    """
    length = min(length, loop_start, (loop_end - loop_start) // 2)
    if length <= 1:
        return audio
    g = np.linspace(0.0, 1.0, length, dtype=np.float64)
    tail = slice(loop_end + 1 - length, loop_end + 1)
    head = audio[loop_start - length:loop_start].astype(np.float64)
    audio[tail] = audio[tail] * (1.0 - g) + head * g
    return audio


# ---- samples ---------------------------------------------------------------------------------

def velocity_bounds(layers: int) -> list[tuple[int, int]]:
    """[(lovel, hivel)] splitting 1..127 into `layers` ranges, softest first."""
    edges = np.round(np.linspace(0, 127, layers + 1)).astype(int)
    return [(int(edges[i]) + 1, int(edges[i + 1])) for i in range(layers)]


def key_ranges(pitches: list[int], extend: bool = True) -> list[tuple[int, int]]:
    """[(lokey, hikey)] per sampled pitch (sorted), split half-way between neighbours."""
    ranges = []
    for i, p in enumerate(pitches):
        lokey = (pitches[i - 1] + p) // 2 + 1 if i > 0 else (0 if extend else p)
        hikey = (p + pitches[i + 1]) // 2 if i + 1 < len(pitches) else (127 if extend else p)
        ranges.append((lokey, hikey))
    return ranges


def layer_audio(audio: np.ndarray, sample_rate: int, pitch: int, layer: int, layers: int) -> np.ndarray:
    """The note for velocity layer `layer` (0 = softest): darker low-passed copies below the top."""
    t = (layer + 1) / layers
    cutoff = midi_to_hz(pitch) * 2.0 ** (1.0 + 5.0 * t)
    if t >= 1.0 or cutoff >= 0.45 * sample_rate:
        return audio
    # |H|^2 of a 2nd-order Butterworth, applied as a zero-phase gain (what filtfilt does).
    spectrum = np.fft.rfft(audio)
    f = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    return np.fft.irfft(spectrum / (1.0 + (f / cutoff) ** 4), len(audio)).astype(np.float32)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    try:
        with atomic_path(path) as tmp:
            sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_24", format="WAV")
    except (OSError, RuntimeError) as e:
        raise SfzError(f"{path}: cannot write: {e}") from e


def _prepare(audio16: np.ndarray, in_rate: int, pitch: int, layer: int, layers: int,
             settings: SfzSettings) -> tuple[np.ndarray, int, int]:
    """One sample at the output rate: (audio float32, loop_start, loop_end)."""
    import soxr

    audio = layer_audio(np.asarray(audio16, np.float32), in_rate, pitch, layer, layers)
    if settings.sample_rate != in_rate:
        audio = soxr.resample(audio, in_rate, settings.sample_rate).astype(np.float32)
    peak = float(np.max(np.abs(audio)))
    audio = audio * (settings.peak / peak) if peak > 0 and np.isfinite(peak) else np.zeros_like(audio)
    rate = settings.sample_rate
    start, end = find_loop(audio, rate, midi_to_hz(pitch), settings.loop_search_s)
    bake_crossfade(audio, start, end, int(settings.crossfade_s * rate))
    # Keep a little after loop_end: some samplers read ahead for interpolation.
    return audio[:min(len(audio), end + 1 + int(0.05 * rate))], start, end


# ---- export ----------------------------------------------------------------------------------

def _safe_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return safe or "instrument"


def export_sfz(synth, latent, out_dir, pitches=None, velocity_layers: int = 1,
               settings: SfzSettings = SfzSettings(), name: str | None = None, progress=None,
               cancel=None, provenance: dict | None = None) -> SfzReport:
    """Render `latent` (float [latent_size]) at `pitches` and write the patch into `out_dir`.

    pitches: iterable of MIDI pitches in the model's range (default: all of it).
    progress(done, total) counts rendered samples; `cancel` is an Event or a
    callable returning True (raises ExportCancelled).
    """
    t0 = time.perf_counter()
    lo, hi = synth.pitch_range
    pitches = sorted(set(int(p) for p in (range(lo, hi + 1) if pitches is None else pitches)))
    if not pitches:
        raise SfzError("no pitches to export")
    if pitches[0] < lo or pitches[-1] > hi:
        raise SfzError(f"pitches must lie in the model's range {lo}..{hi}, got {pitches[0]}..{pitches[-1]}")
    if not 1 <= velocity_layers <= 16:
        raise SfzError(f"velocity layers must be 1..16, not {velocity_layers}")
    z = np.asarray(latent, np.float32).reshape(1, -1)
    if z.shape[1] != synth.latent_size:
        raise SfzError(f"latent must have {synth.latent_size} numbers, got {z.shape[1]}")
    out_dir = Path(os.path.expanduser(str(out_dir)))
    name = _safe_name(name or out_dir.name)
    sample_dir = _make_dirs(out_dir)
    cancelled = (cancel.is_set if hasattr(cancel, "is_set") else cancel) or (lambda: False)
    regions, written = [], []
    total, batch = len(pitches) * velocity_layers, max(1, getattr(synth, "batch_size", 1))
    try:
        for i in range(0, len(pitches), batch):
            if cancelled():
                raise ExportCancelled("export cancelled")
            chunk = pitches[i:i + batch]
            audio = synth.generate(np.repeat(z, len(chunk), axis=0), np.array(chunk))
            for pitch, wave in zip(chunk, audio):
                for layer in range(velocity_layers):
                    data, start, end = _prepare(wave, synth.sample_rate, pitch, layer, velocity_layers, settings)
                    rel = f"samples/{name}_{pitch:03d}_{note_name(pitch)}_v{layer + 1}.wav"
                    _write_wav(sample_dir / Path(rel).name, data, settings.sample_rate)
                    written.append(out_dir / rel)
                    regions.append((pitch, layer, rel, start, end))
                    if progress is not None:
                        progress(len(written), total)
        sfz_path = out_dir / f"{name}.sfz"
        text = sfz_text(name, regions, pitches, velocity_layers, settings, provenance)
        _write_text(sfz_path, text)
        _write_text(out_dir / f"{name}.json", json.dumps(
            {"name": name, "latent": [round(float(v), 7) for v in z[0]], "pitches": pitches,
             "velocity_layers": velocity_layers, "sample_rate": settings.sample_rate,
             "provenance": provenance or {}}, indent=1))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return SfzReport(str(sfz_path), [str(p) for p in written], pitches, velocity_layers,
                     time.perf_counter() - t0)


def _make_dirs(out_dir: Path) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise SfzError(f"{out_dir}: exists and is not a folder")
    if not out_dir.parent.is_dir():
        raise SfzError(f"{out_dir}: the folder {out_dir.parent} does not exist")
    try:
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SfzError(f"{out_dir}: cannot create folder: {e.strerror or e}") from e
    return out_dir / "samples"


def _write_text(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise SfzError(f"{path}: cannot write: {e.strerror or e}") from e


def sfz_text(name: str, regions, pitches: list[int], layers: int, settings: SfzSettings,
             provenance: dict | None = None) -> str:
    """The .sfz file: regions [(pitch, layer, sample path, loop_start, loop_end)]."""
    keys = dict(zip(pitches, key_ranges(pitches)))
    vels = velocity_bounds(layers)
    lines = [f"// {name}: a GANSynth instrument exported by `gansynth export-sfz`",
             f"// {len(pitches)} pitches, {layers} velocity layer(s); softer layers are low-passed renders",
             *(f"// {k}: {v}" for k, v in (provenance or {}).items()),
             "", "<global>",
             f"ampeg_attack={settings.attack_s:g}",
             f"ampeg_release={settings.release_s:g}",
             "loop_mode=loop_continuous", ""]
    for layer in range(layers):
        lovel, hivel = vels[layer]
        lines += [f"<group> lovel={lovel} hivel={hivel}"]
        for pitch, lay, rel, start, end in regions:
            if lay != layer:
                continue
            lokey, hikey = keys[pitch]
            lines.append(f"<region> sample={rel} lokey={lokey} hikey={hikey} pitch_keycenter={pitch} "
                         f"loop_start={start} loop_end={end}")
        lines.append("")
    return "\n".join(lines)


def export_for_app(synth, timbre, out_dir, progress=None, cancel=None, velocity_layers: int = 1,
                   pitches=None) -> SfzReport:
    """The app's "Export instrument…": the pad's current timbre; progress(fraction 0..1)."""
    fraction = None if progress is None else (lambda done, total: progress(done / max(total, 1)))
    provenance = {"corners": ", ".join(timbre.names), "pad": f"{timbre.pad[0]:.3f}, {timbre.pad[1]:.3f}"}
    return export_sfz(synth, timbre.latent, out_dir, pitches, velocity_layers, progress=fraction,
                      cancel=cancel, provenance=provenance)
