"""A note a user brings: read, checked and cut to the model's note (sound import's entry).

    note = read_note("oboe.wav", sample_rate=16000, num_samples=64000)
    note.wave        # float32 [num_samples] at sample_rate, mono, the onset at sample 0
    note.notices     # what was done to it: "2 channels mixed to mono", "resampled from 44100 Hz", ...
    pitch, f0_hz = detect_pitch(note, tracker, (24, 84))

Any file soundfile reads (WAV, FLAC, OGG, MP3, AIFF, ...), any channel count and sample rate
from 8 kHz up: channels are averaged (the loudest one alone when they cancel), soxr resamples
to the model's rate, the note starts a few milliseconds before its onset (the first 10 ms frame
within 35 dB of the loudest) and lasts the model's note length (zero-padded, or cut with a
short fade). Only the first `LONG_S` seconds of a long file are read.

Everything a file can be wrong in raises `SoundImportError` naming the file: not audio,
empty, a sample rate below 8 kHz, non-finite samples, silent, too short, clipped, no
detectable pitch, a pitch outside the model's range.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.gansynth.spectral import midi_to_hz, pitch_name

MIN_RATE = 8000            # Hz: below this a note has nothing above 4 kHz
LONG_S = 30.0              # only this much of a file is read (the note must start in it)
SILENT_DBFS = -80.0        # peak below this: silent
MIN_SOUND_S = 0.25         # a note must sound at least this long after its onset
ONSET_DB = 35.0            # the onset is the first frame within this of the loudest frame
SOUND_DB = 50.0            # a frame "sounds" while within this of the loudest (for the length)
PREROLL_S = 0.005          # kept before the onset
FADE_S = 0.02              # fade at a cut
FRAME_S = 0.010
CLIP_LEVEL = 0.99          # of full scale
CLIP_RUN = 4               # consecutive equal samples at CLIP_LEVEL make a flat top ...
CLIP_RUNS = 3              # ... and this many flat tops make a note clipped
PITCH_WINDOW_S = (0.05, 1.5)  # where CREPE listens, from the onset
MIN_VOICED = 3             # voiced CREPE frames needed for a pitch
TRACKER_RATE = 16000       # CREPE's


class SoundImportError(ValueError):
    """A sound that cannot become an instrument; the message names the file and what is wrong."""


@dataclass(frozen=True)
class NoteAudio:
    path: Path
    wave: np.ndarray          # float32 [num_samples] at sample_rate, onset at sample 0
    sample_rate: int
    onset_s: float            # where the note starts in the file
    sound_s: float            # how long it sounds from the onset (within SOUND_DB of its peak)
    source_rate: int
    channels: int
    notices: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.name


def read_note(path, sample_rate: int, num_samples: int) -> NoteAudio:
    """The note in `path` as the model hears it. Raises SoundImportError naming the file."""
    path = Path(os.path.expanduser(str(path)))
    audio, rate, notices = _read(path)

    def fail(msg):
        raise SoundImportError(f"{path}: {msg}")

    channels = audio.shape[1]
    if not np.isfinite(audio).all():
        fail("holds NaN or infinite samples")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 10.0 ** (SILENT_DBFS / 20.0):
        fail(f"silent (peak {_dbfs(peak)})")
    mono, how = _mono(audio)
    if how:
        notices.append(how)
    onset, sound = _onset(mono, rate)
    if sound < MIN_SOUND_S:
        fail(f"too short: {sound:.2f} s of sound after the onset at {onset / rate:.2f} s "
             f"(a note needs at least {MIN_SOUND_S} s)")
    segment = mono[onset:onset + int(np.ceil(num_samples * rate / sample_rate))]
    clipped = _flat_tops(segment)
    if clipped >= CLIP_RUNS:
        fail(f"clipped: {clipped} flat tops at full scale in the note; record it again with less gain")
    wave = _resample(segment, rate, sample_rate, notices)
    wave = _fit_length(wave, num_samples, int(FADE_S * sample_rate), sound > num_samples / sample_rate, notices)
    return NoteAudio(path, wave, sample_rate, onset / rate, sound, rate, channels, tuple(notices))


def _read(path: Path) -> tuple[np.ndarray, int, list[str]]:
    """(float32 [frames, channels], rate, notices) of the first LONG_S seconds."""
    import soundfile as sf

    if not path.exists():
        raise SoundImportError(f"{path}: no such file")
    if not path.is_file():
        raise SoundImportError(f"{path}: not a file")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise SoundImportError(f"{path}: not an audio file soundfile can read ({_reason(exc)})") from None
    except OSError as exc:
        raise SoundImportError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    rate, frames = int(info.samplerate), int(info.frames)
    if rate < MIN_RATE:
        raise SoundImportError(f"{path}: sample rate {rate} Hz is too low (the model needs at least "
                               f"{MIN_RATE} Hz)")
    if frames <= 0:
        raise SoundImportError(f"{path}: empty (no samples)")
    notices = []
    limit = int(LONG_S * rate)
    if frames > limit:
        notices.append(f"{frames / rate:.1f} s long: the note is taken from its first {LONG_S:.0f} s")
    try:
        audio, _ = sf.read(str(path), frames=min(frames, limit), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise SoundImportError(f"{path}: cannot decode it ({_reason(exc)})") from None
    if len(audio) == 0:
        raise SoundImportError(f"{path}: empty (no samples)")
    return audio, rate, notices


def _reason(exc: Exception) -> str:
    return str(exc).split(": ", 1)[-1].strip() or type(exc).__name__


def _dbfs(amplitude: float) -> str:
    return f"{20 * np.log10(amplitude):.0f} dBFS" if amplitude > 0 else "all zeros"


def _mono(audio: np.ndarray) -> tuple[np.ndarray, str]:
    """[frames, channels] -> ([frames], what was done or "")."""
    channels = audio.shape[1]
    if channels == 1:
        return audio[:, 0], ""
    mix = audio.mean(1)
    rms = np.sqrt((audio.astype(np.float64) ** 2).mean(0))
    if np.sqrt((mix.astype(np.float64) ** 2).mean()) < 0.1 * rms.max():   # out of phase: they cancel
        loudest = int(np.argmax(rms))
        return audio[:, loudest], f"{channels} channels cancel when mixed: channel {loudest + 1} alone is used"
    return mix, f"{channels} channels mixed to mono"


def _frame_db(mono: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """(dB [frames] of each FRAME_S frame's mean power, frame length in samples)."""
    n = max(1, int(FRAME_S * rate))
    frames = len(mono) // n
    if frames == 0:
        return 10.0 * np.log10(np.array([np.mean(mono.astype(np.float64) ** 2) + 1e-20])), n
    power = (mono[:frames * n].astype(np.float64) ** 2).reshape(frames, n).mean(1)
    return 10.0 * np.log10(power + 1e-20), n


def _onset(mono: np.ndarray, rate: int) -> tuple[int, float]:
    """(onset sample, seconds the note sounds from there)."""
    db, n = _frame_db(mono, rate)
    loud = db.max()
    first = int(np.argmax(db >= loud - ONSET_DB))
    sounding = np.flatnonzero(db >= loud - SOUND_DB)
    last = int(sounding[-1]) if len(sounding) else first
    onset = max(0, first * n - int(PREROLL_S * rate))
    sound = min(len(mono), (last + 1) * n) - first * n
    return onset, sound / rate


def _flat_tops(x: np.ndarray) -> int:
    """How many runs of >= CLIP_RUN consecutive equal magnitudes at >= CLIP_LEVEL full scale."""
    mag = np.abs(x)
    hot = mag >= CLIP_LEVEL
    flat = np.zeros(len(mag), bool)
    flat[1:] = hot[1:] & hot[:-1] & (np.abs(mag[1:] - mag[:-1]) <= 1e-4)
    # runs of True in `flat` of length >= CLIP_RUN - 1 (pairs of equal neighbours)
    edges = np.diff(np.concatenate([[0], flat.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int(np.sum(ends - starts >= CLIP_RUN - 1))


def _resample(x: np.ndarray, rate: int, target: int, notices: list) -> np.ndarray:
    if rate == target:
        return np.ascontiguousarray(x, np.float32)
    import soxr

    if rate < target:
        notices.append(f"upsampled from {rate} Hz: nothing above {rate / 2000:.1f} kHz")
    else:
        notices.append(f"resampled from {rate} Hz")
    return soxr.resample(np.ascontiguousarray(x, np.float32), rate, target).astype(np.float32)


def _fit_length(wave: np.ndarray, num_samples: int, fade: int, cut: bool, notices: list) -> np.ndarray:
    """Zero-padded to num_samples, or cut there with a linear fade of `fade` samples."""
    out = np.zeros(num_samples, np.float32)
    n = min(num_samples, len(wave))
    out[:n] = wave[:n]
    if cut:
        fade = max(1, min(fade, n))
        out[n - fade:n] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        notices.append(f"sounds longer than the model's note: cut at {num_samples} samples")
    return out


# ----------------------------------------------------------------------------- pitch

def check_pitch(path, pitch: int, pitch_range: tuple[int, int], f0_hz: float | None = None) -> int:
    """`pitch` if the model plays it, else SoundImportError naming the file."""
    lo, hi = pitch_range
    if not lo <= pitch <= hi:
        hz = f0_hz if f0_hz is not None else float(midi_to_hz(pitch))
        raise SoundImportError(f"{path}: its pitch {pitch} ({pitch_name(pitch)}, {hz:.0f} Hz) is outside the "
                               f"model's range {lo}..{hi} ({pitch_name(lo)}..{pitch_name(hi)})")
    return pitch


def pitch_tracker(capacity: str = "full"):
    """A CREPE tracker listening over PITCH_WINDOW_S of a note, every 64 ms (23 frames).

    `full` by default: on 94 FluidR3 notes of 20 programs at pitches 36-84 it named 87
    right (the misses: a drawbar organ an octave or two low, a tubular bell, a bass a
    semitone flat), ~2.3 s a note on one thread; `tiny` (~0.3 s) named 78, most misses
    below C4 an octave or a twelfth high."""
    from engine.gansynth.pitch import PitchTracker

    return PitchTracker(capacity, start_s=PITCH_WINDOW_S[0], end_s=PITCH_WINDOW_S[1], hop_length=1024)


def detect_pitch(note: NoteAudio, tracker, pitch_range: tuple[int, int]) -> tuple[int, float]:
    """(MIDI pitch, f0 Hz) of a note by `tracker` (an `engine.gansynth.pitch.PitchTracker`, see
    `pitch_tracker`). Raises SoundImportError naming the file."""
    wave = note.wave
    if note.sample_rate != TRACKER_RATE:
        import soxr

        wave = soxr.resample(wave, note.sample_rate, TRACKER_RATE).astype(np.float32)
    f0, voiced = tracker.f0(wave[None])
    frames = int(round(float(voiced[0]) * tracker.frame_count))
    if not np.isfinite(f0[0]) or frames < MIN_VOICED:
        raise SoundImportError(f"{note.path}: no detectable pitch (the pitch tracker found no steady tone "
                               f"in {PITCH_WINDOW_S[0]}-{PITCH_WINDOW_S[1]} s after the onset); "
                               "name its pitch (import-sound --pitch)")
    f0_hz = float(f0[0])
    pitch = int(round(69.0 + 12.0 * np.log2(f0_hz / 440.0)))
    return check_pitch(note.path, pitch, pitch_range, f0_hz), f0_hz

