"""Bring your own sound: recorded notes -> one playable instrument (a latent), with an honest report.

    result = import_sound(synth, ["oboe_c4.wav", "oboe_c5.wav"], progress=fn, cancel=event)
    result.latent          # float32 [latent_size]: play it, morph it, save it as a preset
    result.name            # "oboe c4" (after the first file)
    result.notes[0].lsd_fit_db, .lsd_roundtrip_db, .hnr_fit_db, ...
    result.problems        # files left out, each message naming its file
    print(result.table())

Each file is read and checked (`engine.gansynth.noteaudio`), its pitch tracked by CREPE (or
given), then one latent is fitted to all the notes (`engine.gansynth.latentfit`). The report
puts the fit beside the floor no latent can beat: the original through our own mel-IF round
trip (analysis to the model's spectrogram and the inverse), by the log-spectral distance to
the original and the harmonic-to-noise ratio (`engine.gansynth.measures`), and checks the
fitted note's pitch with CREPE.

Bad files do not stop the others: their messages go to `problems`; only when no note is
left does `import_sound` raise SoundImportError (all the messages).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.gansynth.latentfit import FitResult, FitSettings, fit_latent, make_targets
from engine.gansynth.measures import harmonic_to_noise_db, log_spectral_distance_db
from engine.gansynth.noteaudio import (NoteAudio, SoundImportError, check_pitch, detect_pitch, pitch_tracker,
                                       read_note)
from engine.gansynth.pitch import hz_to_cents
from engine.gansynth.spectral import midi_to_hz, pitch_name

NAME_CHARS = 40
# shares of the progress bar: reading and tracking, the fit, the report
_READ, _FIT = 0.1, 0.8


@dataclass(frozen=True)
class NoteFit:
    """One note's figures. LSD in dB against the original (lower is closer); HNR in dB."""

    path: str
    pitch: int
    f0_hz: float | None            # tracked by CREPE (None: the pitch was given)
    onset_s: float
    gain_db: float                 # applied to reach the model's level
    lsd_fit_db: float
    lsd_roundtrip_db: float        # the floor: the original through our mel-IF round trip
    hnr_original_db: float
    hnr_roundtrip_db: float
    hnr_fit_db: float
    fit_f0_hz: float | None = None     # CREPE on the fitted note (None: not checked)
    notices: tuple[str, ...] = ()

    @property
    def lsd_ratio(self) -> float:
        return self.lsd_fit_db / self.lsd_roundtrip_db if self.lsd_roundtrip_db > 0 else float("inf")

    @property
    def fit_cents(self) -> float | None:
        """CREPE's f0 of the fitted note against the pitch, in cents (None: not checked or unvoiced)."""
        if self.fit_f0_hz is None or not np.isfinite(self.fit_f0_hz):
            return None
        return float(hz_to_cents(self.fit_f0_hz) - hz_to_cents(midi_to_hz(self.pitch)))


@dataclass
class SoundImport:
    name: str
    latent: np.ndarray                              # float32 [latent_size]
    notes: list[NoteFit]
    fit: FitResult
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lsd = np.mean([n.lsd_fit_db for n in self.notes])
        floor = np.mean([n.lsd_roundtrip_db for n in self.notes])
        left = f"; {len(self.problems)} file(s) left out" if self.problems else ""
        return (f"{self.name!r} from {len(self.notes)} note(s) in {self.seconds:.1f} s: log-spectral distance "
                f"{lsd:.2f} dB (round-trip floor {floor:.2f} dB){left}")

    def table(self) -> str:
        rows = [f"{'note':<28} {'pitch':>7} {'LSD fit':>8} {'floor':>6} {'ratio':>6} "
                f"{'HNR orig':>8} {'rt':>6} {'fit':>6} {'fit cents':>9}"]
        for n in self.notes:
            cents = "" if n.fit_cents is None else f"{n.fit_cents:+.0f}"
            rows.append(f"{Path(n.path).name[:28]:<28} {pitch_name(n.pitch):>7} {n.lsd_fit_db:8.2f} "
                        f"{n.lsd_roundtrip_db:6.2f} {n.lsd_ratio:6.2f} {n.hnr_original_db:8.1f} "
                        f"{n.hnr_roundtrip_db:6.1f} {n.hnr_fit_db:6.1f} {cents:>9}")
        rows.append(f"fit: {self.fit.steps} steps from {self.fit.start} (loss {self.fit.start_loss:.3f} -> "
                    f"{self.fit.loss:.3f}, log-spectral distance {self.fit.distance_db:.2f} dB) in {self.fit.seconds:.1f} s; "
                    f"all {self.seconds:.1f} s")
        return "\n".join(rows)

    def to_json(self) -> dict:
        fit = {k: v for k, v in asdict(self.fit).items() if k != "latent"}
        notes = [dict(asdict(n), lsd_ratio=n.lsd_ratio, fit_cents=n.fit_cents) for n in self.notes]
        return {"name": self.name, "notes": notes, "fit": fit, "problems": list(self.problems),
                "seconds": round(self.seconds, 2)}


def instrument_name(paths) -> str:
    """After the first file: its stem, underscores as spaces, at most NAME_CHARS."""
    stem = Path(str(paths[0])).stem.replace("_", " ").strip() or "Imported"
    return stem[:NAME_CHARS]


def _progress(progress, start: float, share: float):
    """A (done, total) callback mapped onto start..start+share of `progress(done, total=1000)`."""
    def call(done, total):
        if progress is not None:
            progress(int(1000 * (start + share * done / max(total, 1))), 1000)
    return call


def read_notes(synth, paths, pitches=None, tracker=None, progress=None):
    """([(NoteAudio, pitch, f0_hz | None)], problems). `pitches`: None (track each), one pitch
    for all, or one per path; a pitch outside the model's range is a problem of its file."""
    paths = [Path(str(p)) for p in paths]
    if pitches is not None and len(pitches) not in (1, len(paths)):
        raise ValueError(f"give one pitch, or one per file ({len(paths)}), not {len(pitches)}")
    notes, problems = [], []
    for i, path in enumerate(paths):
        try:
            note = read_note(path, synth.sample_rate, synth.num_samples)
            if pitches is None:
                tracker = tracker or pitch_tracker()
                pitch, f0 = detect_pitch(note, tracker, synth.pitch_range)
            else:
                pitch, f0 = check_pitch(path, int(pitches[0 if len(pitches) == 1 else i]), synth.pitch_range), None
            notes.append((note, pitch, f0))
        except SoundImportError as exc:
            problems.append(str(exc))
        if progress is not None:
            progress(i + 1, len(paths))
    return notes, problems


def import_sound(synth, paths, pitches=None, name: str | None = None, settings: FitSettings = FitSettings(),
                 tracker=None, verify_pitch: bool = True, progress=None, cancel=None) -> SoundImport:
    """One instrument from the notes in `paths` (see the module doc). `tracker`: a
    PitchTracker (default: CREPE full, built on first need). `progress(done, total)`;
    `cancel` (an Event or a callable) raises `FitCancelled`."""
    t0 = time.perf_counter()
    paths = list(paths)
    if not paths:
        raise ValueError("import_sound needs at least one file")
    notes, problems = read_notes(synth, paths, pitches, tracker, _progress(progress, 0.0, _READ))
    if not notes:
        raise SoundImportError("\n".join(problems))
    if verify_pitch and tracker is None:
        tracker = pitch_tracker()
    waves = [n.wave for n, _, _ in notes]
    targets = make_targets(synth, waves, [p for _, p, _ in notes])
    fit = fit_latent(synth, targets, settings, _progress(progress, _READ, _FIT), cancel)
    report = [_measure(synth, note, target, fit.latent, f0, tracker if verify_pitch else None)
              for (note, _, f0), target in zip(notes, targets)]
    if progress is not None:
        progress(1000, 1000)
    return SoundImport(name or instrument_name(paths), fit.latent, report, fit, problems,
                       time.perf_counter() - t0)


def _measure(synth, note: NoteAudio, target, latent: np.ndarray, f0_hz, tracker) -> NoteFit:
    with torch.inference_mode():
        roundtrip = synth.helper.specgrams_to_waves(target.spec[None].to(synth.device))[0].cpu().numpy()
    fitted = synth.generate(latent[None], [target.pitch])[0]
    helper, rate = synth.helper, synth.sample_rate
    f0 = f0_hz if f0_hz is not None else float(midi_to_hz(target.pitch))
    nominal = float(midi_to_hz(target.pitch))
    fit_f0 = None
    if tracker is not None:
        fit_f0 = float(tracker.f0(fitted[None].astype(np.float32))[0][0])
    return NoteFit(
        path=str(note.path), pitch=target.pitch, f0_hz=f0_hz, onset_s=round(note.onset_s, 3),
        gain_db=round(20.0 * float(np.log10(target.gain)), 2),
        lsd_fit_db=log_spectral_distance_db(note.wave, fitted, helper),
        lsd_roundtrip_db=log_spectral_distance_db(note.wave, roundtrip, helper),
        hnr_original_db=harmonic_to_noise_db(note.wave, f0, rate),
        hnr_roundtrip_db=harmonic_to_noise_db(roundtrip, f0, rate),
        hnr_fit_db=harmonic_to_noise_db(fitted, nominal, rate),
        fit_f0_hz=fit_f0, notices=note.notices)
