"""gansynth eval: pitch tracker, k-means, NDB, spectral measures, and the command end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.commands.cli import main
from engine.gansynth.spectral import midi_to_hz
from engine.training.evaluate import (PitchTracker, SpectralMeasures, assign_bins, choose_real_notes, hnr_report,
                                      kmeans, ndb, pitch_correct)
from engine.training.nsynth import Note, note_str

SR = 16000


def _harmonic_tone(f0_hz: float, seconds: float = 4.0, partials: int = 8) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, partials + 1) if k * f0_hz < SR / 2)
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


@pytest.fixture(scope="module")
def tracker():
    return PitchTracker("tiny")


def test_tracker_finds_the_pitch_of_harmonic_tones(tracker):
    pitches = np.array([45, 57, 69, 81])
    waves = np.stack([_harmonic_tone(f) for f in midi_to_hz(pitches)])
    f0, voiced = tracker.f0(waves)
    cents = 1200 * np.log2(f0 / midi_to_hz(pitches))
    assert np.all(np.abs(cents) < 25), cents
    assert np.all(voiced > 0.9)
    assert pitch_correct(f0, pitches).all()
    assert not pitch_correct(f0, pitches + 1).any()  # a semitone off is wrong
    # Silence has no voiced frame: f0 is nan and the note counts as wrong.
    f0_silent, voiced_silent = tracker.f0(np.zeros((1, 64000), np.float32))
    assert np.isnan(f0_silent[0]) and voiced_silent[0] == 0.0
    assert not pitch_correct(f0_silent, np.array([60])).any()


def test_kmeans_and_ndb():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 10
    real = np.concatenate([c + rng.normal(size=(100, 16)) for c in centres])
    c = kmeans(real, 4, seed=1)
    bins = assign_bins(real, c)
    assert sorted(np.bincount(bins, minlength=4).tolist()) == [100, 100, 100, 100]
    same = np.concatenate([cc + rng.normal(size=(50, 16)) for cc in centres])
    assert ndb(bins, assign_bins(same, c), 4)["ndb"] == 0
    collapsed = centres[0] + rng.normal(size=(200, 16))  # mode collapse onto one cluster
    result = ndb(bins, assign_bins(collapsed, c), 4)
    assert result["ndb"] == 4 and result["ndb_fraction"] == 1.0


def test_held_out_sets_are_whole_instruments_and_independent_notes(tmp_path):
    pitches = list(range(60, 70))
    notes = [Note(note_str(f"inst_{i}", p, v), p, v, f"inst_{i}", "keyboard", "acoustic", tmp_path / "x.wav")
             for i in range(12) for p in pitches for v in (75, 127) if not (i == 0 and p == 65)]
    fit, inst, held = choose_real_notes(notes, pitches, 3, max_fit=10_000, seed=4)
    names = {n.instrument_str for n in inst}
    assert len(names) == 3 and "inst_0" not in names  # instruments lacking a pitch come last
    assert sorted(n.pitch for n in inst) == sorted(pitches * 3)  # one note per pitch each
    assert sorted(n.pitch for n in held) == sorted(pitches * 3)
    ids = [n.note_str for n in fit + inst + held]
    assert len(ids) == len(set(ids)) == len(notes)  # disjoint, nothing lost
    assert choose_real_notes(notes, pitches, 3, 10_000, seed=4) == (fit, inst, held)  # the seed decides
    assert {n.instrument_str for n in choose_real_notes(notes, pitches, 3, 10_000, seed=5)[1]} != names


def test_spectral_flatness_separates_noise_from_tones():
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(64000)).astype(np.float32)
    m = SpectralMeasures().measure(np.stack([_harmonic_tone(220.0), noise]))
    assert m["flatness"][0] < 0.05 < 0.3 < m["flatness"][1]
    assert m["ndb_features"].shape == (2, 32 * 128) and m["mean_logmel"].shape == (2, 1024)


def test_hnr_report_ranks_clean_tones_above_noisy_ones_per_band():
    rng = np.random.default_rng(0)
    pitches = np.array([36, 40, 60, 64, 76, 80])
    clean = np.stack([_harmonic_tone(f) for f in midi_to_hz(pitches)])
    noisy = clean + (0.02 * rng.standard_normal(clean.shape)).astype(np.float32)
    a, b = hnr_report(clean, pitches, SR), hnr_report(noisy, pitches, SR)
    assert a["hnr_notes"] == b["hnr_notes"] == 6
    assert a["hnr_q25_db"] <= a["hnr_median_db"] <= a["hnr_q75_db"]
    assert a["hnr_median_db"] > 40 and b["hnr_median_db"] < a["hnr_median_db"] - 10
    for band in ("24_47", "48_71", "72_84"):
        assert a[f"hnr_median_{band}_db"] > b[f"hnr_median_{band}_db"]
    # A silent note has no HNR: it is left out, not counted as 0 dB or -inf.
    silent = hnr_report(np.concatenate([clean[:1], np.zeros((1, 64000), np.float32)]), pitches[:2], SR)
    assert silent["hnr_notes"] == 1 and np.isfinite(silent["hnr_median_db"])


def test_eval_end_to_end(tiny_model_dir, tiny_nsynth_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(tiny_nsynth_dir), "--latents", "2",
                 "--pitches", "60,72", "--bins", "4", "--draws", "2", "--out", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "generated" in table and "real, 2 instr." in table and "real, any notes" in table and "NDB/4" in table
    report = json.loads(out.read_text())
    gen, real, inst = report["generated"], report["real_heldout"], report["real_instruments"]
    assert report["pitches"] == [60, 72] and gen["count"] == real["count"] == inst["count"] == 4
    assert len(inst["instruments"]) == 2  # two whole instruments, one note per pitch each
    assert report["real_fit_count"] == 7 * 2 - 4 - 4  # 7 programs at the 2 pitches, minus both held-out sets
    assert inst["pitch_accuracy_48_84"] >= 0.8
    assert set(gen["pitch_accuracy_per_pitch"]) == {"60", "72"}
    # FluidSynth notes are in tune; random-weight generator output is not.
    assert real["pitch_accuracy_48_84"] >= 0.8
    assert real["pitch_accuracy"] > gen["pitch_accuracy"]
    assert 0 <= real["ndb"] <= 4 and 0 <= gen["ndb"] <= 4
    draws = report["ndb_draws"]  # draw 0 is the main one; draw 1 has its own split, bins and latents
    assert [d["seed"] for d in draws] == [0, 1] and draws[0]["generated"] == gen["ndb"]
    assert draws[0]["real_instruments"] == inst["ndb"] and all(0 <= d["generated"] <= 4 for d in draws)
    assert "NDB over 2 draws, generated" in table
    pooled = report["hnr_draws"]  # both draws' notes: twice draw 0's
    assert pooled["generated"]["draws"] == 2 and pooled["generated"]["hnr_notes"] == 2 * gen["hnr_notes"]
    assert pooled["real_instruments"]["hnr_notes"] == 8 and "HNR dB over 2 draws" in table
    assert "hnr_values" not in gen
    assert real["log_spectrum_distance_db"] < gen["log_spectrum_distance_db"]
    assert 0 < real["spectral_flatness"] < 1 and 0 < gen["spectral_flatness"] < 1
    # FluidSynth's notes are cleaner tones than a random-weight generator's.
    assert real["hnr_median_db"] > gen["hnr_median_db"] and "HNR dB" in table
    # The same real instruments through the model's mel-IF and back: still in tune, close to the
    # recordings, but the upper partials' fine structure lost (lower HNR), as a perfect model would play them.
    rt = report["real_roundtrip"]
    assert rt["count"] == inst["count"] and rt["pitch_accuracy_48_84"] >= 0.8 and "round trip" in table
    assert rt["log_spectrum_distance_db"] < gen["log_spectrum_distance_db"]
    assert rt["hnr_median_db"] < inst["hnr_median_db"] - 1.0
    assert pooled["real_roundtrip"]["hnr_notes"] == 8 and [d["real_roundtrip"] is not None for d in draws] == [1, 1]


def test_eval_scores_the_same_notes_against_held_out_instruments(tiny_model_dir, tiny_nsynth_dir, tmp_path,
                                                                 capsys):
    out = tmp_path / "report.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(tiny_nsynth_dir), "--latents", "2",
                 "--pitches", "60,72", "--bins", "4", "--heldout-data", str(tiny_nsynth_dir), "--out", str(out)])
    assert code == 0
    assert "never trained on" in capsys.readouterr().out
    report = json.loads(out.read_text())
    held = report["heldout_programs"]
    assert held["data"] == [str(tiny_nsynth_dir.resolve())] and held["pitches"] == [60, 72]
    # One set of generated notes, scored twice: the per-note figures agree, the bins are the second set's.
    for key in ("hnr_median_db", "spectral_flatness", "pitch_accuracy", "count"):
        assert held["generated"][key] == report["generated"][key]
    assert 0 <= held["generated"]["ndb"] <= 4 and held["real_heldout"]["hnr_notes"] == 4
    # 7 instruments: at most 3 form the real rows, the rest fit the bins.
    assert len(held["real_instruments"]["instruments"]) == 2 and held["real_fit_count"] > 0


def test_eval_refuses_a_too_small_held_out_set_before_generating(tiny_model_dir, tiny_nsynth_dir, tmp_path,
                                                                 capsys):
    examples = json.loads((tiny_nsynth_dir / "examples.json").read_text())
    keep = sorted({e["instrument_str"] for e in examples.values()})[:2]
    small = tmp_path / "heldout"
    small.mkdir()
    (small / "audio").symlink_to(tiny_nsynth_dir / "audio")
    (small / "examples.json").write_text(json.dumps(
        {k: e for k, e in examples.items() if e["instrument_str"] in keep}))
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(tiny_nsynth_dir), "--latents", "2",
                 "--pitches", "60,72", "--bins", "4", "--heldout-data", str(small)])
    err = capsys.readouterr().err
    assert code == 1 and str(small) in err and "beyond the" in err
    assert "generating" not in err  # it said so at once, not after the first set's minutes


def test_eval_bad_paths_are_clear_errors(tiny_model_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path)]) == 1
    assert "examples.json" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nope"), "--data", str(tmp_path)]) == 1
    assert "nope" in capsys.readouterr().err
