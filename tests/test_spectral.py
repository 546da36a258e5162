"""Spectral pipeline: round trips, batch consistency, Magenta's traps, mel matrix."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.gansynth.config import SpectralConfig
from engine.gansynth.spectral import (SpecgramsHelper, frame_waves, hertz_to_mel, if_to_phase,
                                      linear_to_mel_matrix, mel_to_hertz, mel_to_linear_matrix, overlap_add,
                                      phase_to_if)

SR = 16000
H = SpectralConfig()
NON_H = SpectralConfig(time_steps=256, freq_bins=512)


def tones(n=3, length=64000, seed=0):
    """Harmonic tones with decaying envelopes, float32 [n, length]."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SR
    out = []
    for _ in range(n):
        f0 = rng.uniform(60, 900)
        w = sum(rng.uniform(0.1, 1) / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6))
                for h in range(1, 6) if f0 * h < SR / 2)
        out.append(0.5 * w * np.exp(-t * rng.uniform(0.2, 1.5)))
    return torch.tensor(np.stack(out), dtype=torch.float32)


def rms(x):
    return float(torch.sqrt(torch.mean(x.double() ** 2)))


@pytest.mark.parametrize("cfg,tolerance", [(H, 1e-5), (NON_H, 5e-5)], ids=["H", "nonH"])
def test_linear_roundtrip_away_from_edges(cfg, tolerance):
    """Within 1e-5 RMS for the model's 128 frames. The phase is the float32 integral of the IF
    (a matrix product), whose rounding depends on the CPU's GEMM kernel: over nonH's 256 frames
    (phases up to ~800 rad, whose float32 spacing is 6e-5) it gave 3.1e-5 with AVX-512 (Intel
    Xeon, AMX) and under 1e-5 with AVX2 (AMD EPYC); H's 128 frames 2.2e-6 on the Xeon."""
    helper = SpecgramsHelper(cfg)
    waves = tones()
    spec = helper.stfts_to_specgrams(helper.waves_to_stfts(waves))
    assert spec.shape == (3, 2, cfg.time_steps, cfg.freq_bins)
    back = helper.stfts_to_waves(helper.specgrams_to_stfts(spec))
    assert back.shape == waves.shape
    inner = slice(cfg.n_fft, cfg.num_samples - cfg.n_fft)
    assert rms(back[:, inner] - waves[:, inner]) < tolerance
    # The tail is attenuated (no edge renormalisation), as in Magenta.
    assert rms(back[:, -256:]) < 0.9 * rms(waves[:, -256:])


def test_mel_roundtrip_bound():
    """Mel-IF is lossy: the log-magnitude of harmonic tones comes back within a stated bound."""
    helper = SpecgramsHelper(H)
    waves = tones(seed=1)
    lin = helper.stfts_to_specgrams(helper.waves_to_stfts(waves))
    back = helper.melspecgrams_to_specgrams(helper.specgrams_to_melspecgrams(lin))
    mag, mag_back = torch.exp(lin[:, 0]), torch.exp(back[:, 0])
    rel = torch.linalg.norm(mag_back - mag) / torch.linalg.norm(mag)
    assert rel < 0.3  # measured 0.14-0.18 on such tones (mel bands merge neighbouring bins)
    # Audio through the full mel chain keeps the tone's energy and fundamental.
    audio = helper.specgrams_to_waves(helper.waves_to_specgrams(waves))
    inner = slice(4096, 60000)
    ratio = rms(audio[:, inner]) / rms(waves[:, inner])
    assert 0.5 < ratio < 2.0
    for w, a in zip(waves, audio):
        fw, fa = np.abs(np.fft.rfft(w[inner].numpy())), np.abs(np.fft.rfft(a[inner].numpy()))
        assert abs(int(np.argmax(fw)) - int(np.argmax(fa))) <= 2


@pytest.mark.parametrize("cfg", [H, NON_H], ids=["H", "nonH"])
def test_batch_consistency(cfg):
    helper = SpecgramsHelper(cfg)
    waves = tones(4, seed=2)
    spec = helper.waves_to_specgrams(waves)
    single = torch.cat([helper.waves_to_specgrams(w[None]) for w in waves])
    assert torch.allclose(spec, single, atol=1e-5)
    audio = helper.specgrams_to_waves(spec)
    single_audio = torch.cat([helper.specgrams_to_waves(s[None]) for s in spec])
    assert torch.allclose(audio, single_audio, atol=1e-5)


def test_normalizer_maps_ranges_onto_0_8():
    helper = SpecgramsHelper(H)
    x = torch.zeros(1, 2, 1, 2)
    x[0, 0, 0] = torch.tensor([math.log(1e-6), 10.3766])
    x[0, 1, 0] = torch.tensor([-1.0, 1.0])
    n = helper.normalize(x)
    assert torch.allclose(n[0, :, 0], torch.tensor([[-0.8, 0.8], [-0.8, 0.8]]), atol=1e-4)
    assert torch.allclose(helper.denormalize(n), x, atol=1e-4)
    assert helper.normalize(torch.full((1, 2, 1, 1), 100.0)).max() == 1.0


def test_traps_dc_dropped_nyquist_kept_left_padding_periodic_hann():
    helper = SpecgramsHelper(H)
    # Nyquist tone: all energy in the last kept bin.
    nyq = torch.tensor([[(-1.0) ** i for i in range(64000)]])
    mag = helper.waves_to_stfts(nyq).abs()[0, 64]
    assert mag.shape == (1024,) and int(torch.argmax(mag)) == 1023
    # Constant signal: DC energy is dropped; periodic Hann leaks only into bin 1.
    dc = helper.waves_to_stfts(torch.ones(1, 64000)).abs()[0, 64]
    assert dc[0] == pytest.approx(512.0, rel=1e-4) and dc[2:].max() < 1e-2
    # All 3072 padding samples are on the left.
    impulse = torch.zeros(1, 64000)
    impulse[0, 0] = 1
    frames = frame_waves(impulse, 2048, 512, H.pad_left)
    assert frames.shape == (1, 128, 2048) and frames[0, :3].abs().sum() == 0
    assert frames[0, 3, 3072 - 3 * 512] == 1 and frames[0, 6, 0] == 1
    periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2048) / 2048)
    assert np.allclose(helper.window.numpy(), periodic_hann, atol=1e-7)
    assert torch.allclose(helper.synthesis_window, helper.window / 1.5, atol=1e-7)


def test_if_of_steady_tone_is_constant_and_correct():
    helper = SpecgramsHelper(H)
    k = 100  # bin index (0-based after DC drop -> FFT bin 101)
    f = (k + 1) * SR / 2048
    wave = torch.sin(2 * math.pi * f * torch.arange(64000) / SR)[None]
    spec = helper.stfts_to_specgrams(helper.waves_to_stfts(wave))
    ifreq = spec[0, 1, 10:120, k]
    expected = (2 * math.pi * f * 512 / SR + math.pi) % (2 * math.pi) - math.pi
    assert torch.allclose(ifreq, torch.full_like(ifreq, expected / math.pi), atol=1e-3)


def test_phase_to_if_wraps():
    phase = torch.tensor([[0.0, 3.0, -3.0, 0.5]])[..., None]
    out = phase_to_if(phase)[0, :, 0] * math.pi
    assert torch.allclose(out, torch.tensor([0.0, 3.0, 2 * math.pi - 6.0, 3.5 - 2 * math.pi]), atol=1e-6)


def test_overlap_add_matches_loop():
    frames = torch.randn(2, 5, 8)
    out = overlap_add(frames, 2)
    ref = torch.zeros(2, 2 * 4 + 8)
    for t in range(5):
        ref[:, 2 * t:2 * t + 8] += frames[:, t]
    assert torch.allclose(out, ref, atol=1e-6)


MAGENTA = np.load(Path(__file__).parent / "fixtures" / "magenta" / "magenta_spectral.npz")


def _magenta_dense(name: str) -> np.ndarray:
    """A matrix saved sparse by make_magenta_references.py from Magenta's own spectral_ops."""
    m = np.zeros(tuple(MAGENTA[f"{name}_shape"]))
    m[MAGENTA[f"{name}_rows"], MAGENTA[f"{name}_cols"]] = MAGENTA[f"{name}_values"]
    return m


def test_mel_matrix_is_magentas():
    m = linear_to_mel_matrix(1024, 1024, 16000)
    ref = _magenta_dense("mel")
    assert m.dtype == np.float64 and m.shape == ref.shape == (1024, 1024)
    assert np.abs(m - ref).max() <= 1e-12
    assert np.count_nonzero(m) == 2042
    assert not m[0].any() and not m[1023].any() and not m[:, 0].any()


def test_mel_inverse_is_magentas():
    ours = mel_to_linear_matrix(linear_to_mel_matrix(1024, 1024, 16000))
    ref = _magenta_dense("mel_inv")
    assert np.sqrt(np.mean((ours - ref) ** 2) / np.mean(ref ** 2)) <= 1e-4
    assert np.abs(ours - ref).max() <= 1e-12


def test_unaliased_construction_is_kept_for_older_models():
    """The construction the bundled v1 model was trained on: each band widened from the
    untouched linspace. It differs from Magenta's, and stays reproducible."""
    old = linear_to_mel_matrix(1024, 1024, 16000, construction="unaliased_edges")
    assert np.count_nonzero(old) == 2343
    assert np.abs(old - _magenta_dense("mel")).max() > 0.5
    with pytest.raises(ValueError, match="mel construction"):
        linear_to_mel_matrix(1024, 1024, 16000, construction="librosa")
    helper = SpecgramsHelper(SpectralConfig(mel_construction="unaliased_edges"))
    assert np.array_equal(helper.mel_matrix_f64, old)


@pytest.mark.parametrize("representation,key", [("mel_if", "forward_mel_if"), ("if", "forward_linear_if")])
def test_waves_to_specgrams_match_magenta(representation, key):
    """Magenta's waves_to_(mel)specgrams + prespecified normalizer on one note, frames
    0-7 (frame 0 keeps the raw phase), 60-67 and 120-127."""
    helper = SpecgramsHelper(SpectralConfig(representation=representation))
    spec = helper.waves_to_specgrams(torch.from_numpy(MAGENTA["forward_wave"])[None])[0].numpy()
    ours = spec[:, MAGENTA["forward_frames"]].transpose(1, 2, 0)  # -> [time, freq, channel] as TF
    ref = MAGENTA[key]
    assert np.abs(ours[..., 0] - ref[..., 0]).max() <= 2e-4
    frame0 = MAGENTA["forward_frames"] == 0
    assert np.abs(ours[frame0, :, 1] - ref[frame0, :, 1]).max() <= 1e-5
    # IF is a wrapped phase difference: where it lies at +-pi, float rounding picks either end
    # (a jump of 2 x 0.8 after normalization). Compare modulo that, and count the flips.
    diff = np.abs(ours[..., 1] - ref[..., 1])
    flipped = np.abs(diff - 1.6) < 1e-3
    assert flipped.mean() <= 1e-3
    assert np.where(flipped, np.abs(diff - 1.6), diff).max() <= 1e-3


@pytest.mark.parametrize("representation,key", [("mel_if", "inverse_mel_if_waves"),
                                                ("if", "inverse_linear_if_waves")])
def test_specgrams_to_waves_match_magenta(representation, key):
    """Magenta's denormalize + (mel)specgrams_to_waves on a seeded normalized spectrogram."""
    rng = np.random.default_rng(int(MAGENTA["inverse_seed"]))
    normalized = rng.uniform(-1.0, 1.0, size=(1, 128, 1024, 2)).astype(np.float32)  # TF layout
    helper = SpecgramsHelper(SpectralConfig(representation=representation))
    ours = helper.specgrams_to_waves(torch.from_numpy(normalized).permute(0, 3, 1, 2))[0].numpy()
    ref = MAGENTA[key]
    assert ours.shape == ref.shape == (64000,)
    assert np.sqrt(np.mean((ours - ref) ** 2) / np.mean(ref ** 2)) <= 1e-4


def test_mel_scale_inverse():
    f = np.array([0.0, 100.0, 700.0, 8000.0])
    assert np.allclose(mel_to_hertz(hertz_to_mel(f)), f)
    assert hertz_to_mel(700.0) == pytest.approx(1127.0 * math.log(2))


def test_if_to_phase_after_inference_mode_still_has_a_gradient():
    """The inverse's cumsum matrix is cached; one made under inference_mode (a note's render)
    must still serve autograd (the sound fit's resynthesis loss)."""
    with torch.inference_mode():
        if_to_phase(torch.randn(1, 7, 5))
    x = torch.randn(1, 7, 5, requires_grad=True)
    if_to_phase(x).sum().backward()
    assert torch.allclose(x.grad[0, :, 0], math.pi * torch.arange(7, 0, -1, dtype=torch.float32))
