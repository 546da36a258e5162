"""How far a generated spectrogram is from a real note: the GLO reconstruction losses.

The trainer's GLO segments (`engine.training.train`) fit the generator and one latent per
voice with these; sound import (`engine.gansynth.latentfit`) fits a latent to a note a
user brings with the same ones. All tensors are normalized model space
[batch, 2, time, freq] (channel 0 log-magnitude or log-mel power, channel 1 (mel-)IF),
silence at -0.8 after the prespecified normalizer.

- energy-weighted spectral L1: a bin's log-magnitude error counts 1 + energy_weight * energy
  of the real bin (energy 0 at silence .. 1 at the loudest): harmonics are a few bins among
  many quiet ones;
- IF gate: a bin's IF error counts min(1, 2 * energy) (the phase of a near-silent bin is noise
  not worth fitting), times 1 + if_energy_weight * energy (a loud bin's IF is its partial's
  frequency, and an error there smears the resynthesis);
- resynthesis loss: the log-magnitude L1 (weighted as the spectrogram's) between the real note
  and the generated spectrogram inverted to audio and analysed again. The spectrogram terms
  fit each IF bin alone; this one sees whether the IF bins of a partial agree, i.e. whether
  the partial survives the inverse;
- long-window spectrum loss: the L1 in dB between the power spectra of the resynthesis and of
  the real recording over 0.3-2.0 s in one window (the stretch the harmonic-to-noise ratio
  reads), in bands of 8 bins (4.7 Hz at 16 kHz, inside the narrowest harmonic band) up to
  7.5 kHz. The frame-wise log-magnitude terms see the noise between partials as a log level
  frame by frame; this sees it as the energy a long window measures, so noise and partials
  weigh as they do in the note's tone.
"""
from __future__ import annotations

import torch

from engine.gansynth.measures import HNR_END_S, HNR_START_S, HNR_TOP_HZ
from engine.gansynth.spectral import SpecgramsHelper

SILENCE = -0.8   # normalized log-magnitude of silence (log 1e-6 under the prespecified normalizer)
SPECTRUM_POOL = 8          # FFT bins per band of the long-window spectrum
SPECTRUM_FLOOR_DB = 80.0   # bands are floored this far below the real note's loudest band
SPECTRUM_SCALE_DB = 20.0   # the spectrum loss's unit: 20 dB of mean error weighs 1


def energy(real: torch.Tensor) -> torch.Tensor:
    """[B, 2, T, F] normalized -> [B, 1, T, F] in 0..1: the real bin's level above silence."""
    return ((real[:, :1] - SILENCE) / (2 * -SILENCE)).clamp(0.0, 1.0)


def spectral_weights(real: torch.Tensor, energy_weight: float = 0.0, if_gate: bool = False,
                     if_energy_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_mag, w_if), each [B, 1, T, F]: the per-bin weights of the two channels' L1."""
    e = energy(real)
    w_mag = 1.0 + energy_weight * e
    w_if = (2.0 * e).clamp(max=1.0) if if_gate else torch.ones_like(e)
    return w_mag, w_if * (1.0 + if_energy_weight * e)


def spectral_l1(fake: torch.Tensor, real: torch.Tensor, w_mag: torch.Tensor, w_if: torch.Tensor) -> torch.Tensor:
    """[2]: the weighted mean L1 of the log-magnitude and of the IF channel."""
    diff = (fake - real).abs()
    return torch.stack([(w_mag * diff[:, :1]).mean(), (w_if * diff[:, 1:]).mean()])


def resynthesis_l1(audio: torch.Tensor, real: torch.Tensor, helper: SpecgramsHelper,
                   w_mag: torch.Tensor) -> torch.Tensor:
    """Scalar: weighted L1 between the real log-magnitude and `audio` (a generated spectrogram
    inverted, `helper.specgrams_to_waves`) analysed again (differentiable: the torch STFT)."""
    again = helper.waves_to_specgrams(audio)[:, :1]
    return (w_mag * (again - real[:, :1]).abs()).mean()


def spectrum_window(num_samples: int, sample_rate: int) -> tuple[int, int]:
    """(start, end) samples of the long window: 0.3-2.0 s, cut to the note; the whole note
    when that leaves fewer than 256 samples (the tiny test configurations)."""
    start, end = int(HNR_START_S * sample_rate), min(int(HNR_END_S * sample_rate), num_samples)
    return (start, end) if end - start >= 256 else (0, num_samples)


def spectrum_bands(num_samples: int, sample_rate: int) -> int:
    """How many bands `long_window_spectrum_db` gives for notes of `num_samples`: whole bands of
    SPECTRUM_POOL FFT bins below 7.5 kHz (or Nyquist)."""
    start, end = spectrum_window(num_samples, sample_rate)
    return min(int(HNR_TOP_HZ * (end - start) / sample_rate), (end - start) // 2 + 1) // SPECTRUM_POOL


def long_window_spectrum_db(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """float32 [B, bands]: dB of the Hann-windowed power over `spectrum_window`, averaged in
    bands of SPECTRUM_POOL bins up to 7.5 kHz (float64 inside: the floor is 80 dB down).
    Differentiable; `audio` is [B, samples]."""
    start, end = spectrum_window(audio.shape[-1], sample_rate)
    seg = audio[:, start:end].double()
    seg = seg * torch.hann_window(end - start, periodic=False, dtype=torch.float64, device=seg.device)
    power = torch.fft.rfft(seg).abs() ** 2
    top = spectrum_bands(audio.shape[-1], sample_rate) * SPECTRUM_POOL
    bands = power[:, :top].reshape(len(power), -1, SPECTRUM_POOL).mean(-1)
    return (10.0 * torch.log10(bands + 1e-10)).float()


def spectrum_l1(fake_db: torch.Tensor, real_db: torch.Tensor) -> torch.Tensor:
    """Scalar: mean |fake - real| over the bands, both floored SPECTRUM_FLOOR_DB below each real
    note's loudest band (how far below silence a band falls does not count), in units of
    SPECTRUM_SCALE_DB."""
    floor = real_db.amax(-1, keepdim=True) - SPECTRUM_FLOOR_DB
    diff = torch.maximum(fake_db, floor) - torch.maximum(real_db, floor)
    return diff.abs().mean() / SPECTRUM_SCALE_DB
