"""Feature cache: values match direct computation, reuse, invalidation, selections."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.gansynth.config import SpectralConfig
from engine.gansynth.reconstruction import long_window_spectrum_db
from engine.gansynth.spectral import SpecgramsHelper
from engine.training.features import compute_features, load_features, pool_features
from engine.training.nsynth import DatasetError, filter_notes, load_wave, read_examples, split_by_instrument

CONFIG = SpectralConfig()  # mel_if 128 x 1024, as trained
# 1 s notes at 128 x 256 (n_fft 512): the same code paths 16x cheaper, for the cache-logic tests.
SMALL = SpectralConfig(num_samples=16000, time_steps=128, freq_bins=256)


@pytest.fixture()
def dataset(tiny_nsynth_dir, tmp_path):
    """A private copy of the tiny dataset (tests here write caches and edit WAVs)."""
    return shutil.copytree(tiny_nsynth_dir, tmp_path / "data")


def _direct(paths, config=CONFIG):
    waves = np.stack([load_wave(p, num_samples=config.num_samples) for p in paths])
    return compute_features(waves, SpecgramsHelper(config))


def test_cache_matches_direct_computation(dataset):
    fs = load_features(dataset, CONFIG, pitch_range=(72, 84), progress=False)
    notes = filter_notes(read_examples(dataset), pitch_range=(72, 84))
    assert fs.note_ids == [n.note_str for n in notes] and len(fs) == 14
    assert isinstance(fs.specs, np.memmap) and fs.specs.dtype == np.float16
    assert fs.specs.shape == (14, 2, 128, 1024)
    assert fs.pitches.tolist() == [n.pitch for n in notes] and fs.pitches.dtype == np.int64
    assert fs.velocities.tolist() == [100] * 14
    assert sorted(set(fs.instruments.tolist())) == list(range(fs.num_instruments)) == list(range(7))
    assert [fs.instrument_names[i] for i in fs.instruments] == [n.instrument_str for n in notes]
    rows = [0, 7, 13]
    direct = _direct([notes[i].path for i in rows])
    cached = torch.from_numpy(fs.specs[rows].astype(np.float32))
    assert torch.allclose(cached, direct, atol=2e-3, rtol=0)  # float16 rounding of values in [-1, 1]
    assert float((direct[:, 0] > -0.7).float().mean()) > 0.01  # not an all-silent comparison
    assert fs.resolutions == [(128, 1024), (64, 512), (32, 256), (16, 128), (8, 64), (4, 32), (2, 16)]
    for res in fs.resolutions[1:]:
        pooled = fs.downsampled(res)
        assert pooled.shape == (14, 2, *res) and pooled.dtype == np.float16
        expected = pool_features(direct, 128 // res[0])
        assert torch.allclose(torch.from_numpy(pooled[rows].astype(np.float32)), expected, atol=2e-3)
    assert fs.downsampled((128, 1024)) is fs.specs
    waves = np.stack([load_wave(notes[i].path, num_samples=CONFIG.num_samples) for i in rows])
    spectra = long_window_spectrum_db(torch.from_numpy(waves), CONFIG.sample_rate)
    assert fs.spectra.shape == (14, spectra.shape[1]) and fs.spectra.dtype == np.float16
    assert torch.allclose(torch.from_numpy(fs.spectra[rows].astype(np.float32)), spectra, atol=0.07, rtol=0)
    with pytest.raises(ValueError, match="available"):
        fs.downsampled((3, 16))


def test_cache_is_reused_then_invalidated_when_a_wav_changes(dataset):
    fs = load_features(dataset, SMALL, progress=False)
    npy = dataset / "cache" / "mel_if_128x256.npy"
    index = json.loads((dataset / "cache" / "mel_if_128x256.json").read_text())
    assert index["note_ids"] == fs.note_ids
    inode = npy.stat().st_ino
    assert load_features(dataset, SMALL, progress=False).specs.shape == fs.specs.shape
    assert npy.stat().st_ino == inode  # not rebuilt

    name = "keyboard_acoustic_000-060-100"
    row = fs.note_ids.index(name)
    wav = dataset / "audio" / f"{name}.wav"
    quieter = load_wave(wav) * 0.25
    sf.write(wav, quieter, 16000, subtype="PCM_24")  # a different file: new size and mtime
    fs2 = load_features(dataset, SMALL, progress=False)
    assert npy.stat().st_ino != inode
    expected = _direct([wav], SMALL)[0]
    got = torch.from_numpy(fs2.specs[row].astype(np.float32))
    assert torch.allclose(got, expected, atol=2e-3)
    assert not np.allclose(fs.specs[row].astype(np.float32), fs2.specs[row].astype(np.float32), atol=0.05)
    other = (row + 5) % len(fs2)
    assert np.array_equal(fs2.specs[other], np.load(npy, mmap_mode="r")[other])
    assert not list((dataset / "cache").glob(".*.tmp"))  # temporaries renamed or removed


def test_a_different_config_or_selection_gets_its_own_cache(dataset):
    full = load_features(dataset, SMALL, progress=False)
    train, valid = split_by_instrument(filter_notes(read_examples(dataset)), 0.3, seed=0)
    fs_valid = load_features(dataset, SMALL, notes=valid, progress=False)
    assert fs_valid.note_ids == sorted(n.note_str for n in valid)
    assert list(fs_valid.instruments) == sorted(fs_valid.instruments)  # contiguous ids 0..k-1
    row = full.note_ids.index(fs_valid.note_ids[0])
    assert np.array_equal(fs_valid.specs[0], full.specs[row])
    high = load_features(dataset, SMALL, pitch_range=(72, 84), progress=False)
    assert set(high.pitches.tolist()) == {72, 84}
    lin = load_features(dataset, SpectralConfig(num_samples=16000, time_steps=128, freq_bins=256, representation="if"),
                        pitch_range=(84, 84), progress=False)
    assert not np.array_equal(lin.specs[0], full.specs[full.note_ids.index(lin.note_ids[0])])
    names = sorted(p.name for p in (dataset / "cache").glob("*.npy")
                   if "_pool" not in p.name and "_spectra" not in p.name)
    assert names[0].startswith("if_128x256_") and "mel_if_128x256.npy" in names and len(names) == 4


def test_missing_wav_or_empty_selection_is_a_clear_error(dataset):
    (dataset / "audio" / "keyboard_acoustic_000-060-100.wav").unlink()
    with pytest.raises(DatasetError, match="keyboard_acoustic_000-060-100.wav"):
        load_features(dataset, SMALL, progress=False)
    with pytest.raises(DatasetError, match="no notes"):
        load_features(dataset, SMALL, families=("vocal",), progress=False)
