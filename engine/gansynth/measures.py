"""How close one note is to another, and how clean a note is: figures for sound import.

- `log_spectral_distance_db(reference, test, helper)`: the frame-wise log-spectral distance
  between two notes, in dB, on our analysis STFT (n_fft 2048, hop 512 for the H config):
  per frame the RMS over frequency bins of the difference of the log power spectra, averaged
  over the frames where the reference sounds (within `range_db` of its loudest frame). Both
  spectra are floored `floor_db` below the reference's loudest bin (below it nobody hears a
  difference), and the test note is first scaled to the reference's energy over those frames
  (loudness is not timbre: the instrument plays every note peak-normalised).
  `SpectralReference` is the same figure with the reference worked out once, differentiable
  in the test note's power (`power(helper, waves)`): the latent fit's last stage descends it.
- `harmonic_to_noise_db(wave, f0_hz, sample_rate)`: energy within +-(6 Hz + 0.4 % * f) of the
  multiples of f0, against everything else from 0.5 * f0 to 7.5 kHz, over 0.3-2.0 s of the
  note (issue 18's definition); f0 is refined within +-`refine_cents` to where the harmonic
  energy is largest, so a tracker's few cents of error do not push the upper harmonics out
  of their bands.
"""
from __future__ import annotations

import numpy as np
import torch

from engine.gansynth.spectral import SpecgramsHelper

HNR_START_S, HNR_END_S = 0.3, 2.0
HNR_TOP_HZ = 7500.0


def power(helper: SpecgramsHelper, waves: torch.Tensor) -> torch.Tensor:
    """float64 [..., time, freq]: |STFT|^2 of notes [..., samples] (cropped or padded to the
    config's length); differentiable."""
    flat = waves.reshape(-1, waves.shape[-1])
    stft = helper.waves_to_stfts(flat)
    return (stft.abs().double() ** 2).reshape(*waves.shape[:-1], *stft.shape[-2:])


def _power(helper: SpecgramsHelper, wave: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return power(helper, torch.from_numpy(np.asarray(wave, np.float32).reshape(-1)).to(helper.device)).cpu()


class SpectralReference:
    """A reference note's side of the log-spectral distance, worked out once: its floored log
    power over the frames where it sounds. `distance(test_power)` is differentiable in the
    test note, so the latent fit can descend the very figure its report gives."""

    def __init__(self, ref_power: torch.Tensor, floor_db: float = 80.0, range_db: float = 60.0):
        ref = ref_power.double()
        frame_energy = ref.sum(-1)
        if float(frame_energy.max()) <= 0:
            raise ValueError("the reference note is silent")
        self.sounding = frame_energy >= frame_energy.max() * 10.0 ** (-range_db / 10.0)
        self.floor = ref.max() * 10.0 ** (-floor_db / 10.0)
        self.energy = ref[self.sounding].sum()
        self.log_ref = torch.log10(ref[self.sounding].clamp_min(self.floor))

    def distance(self, test_power: torch.Tensor) -> torch.Tensor:
        """dB (>= 0), float64 scalar: the test note [time, freq] power scaled to the reference's
        energy over the sounding frames, then per frame the RMS over bins of the difference of
        the floored log powers, averaged over those frames."""
        tst = test_power.double()[self.sounding]
        tst = tst * (self.energy / tst.sum().clamp_min(1e-30))
        diff = 10.0 * (self.log_ref - torch.log10(tst.clamp_min(self.floor)))
        # (clamped: the root's gradient at an exact match would be 0/0)
        return torch.sqrt((diff ** 2).mean(-1).clamp_min(1e-20)).mean()


def log_spectral_distance_db(reference: np.ndarray, test: np.ndarray, helper: SpecgramsHelper,
                             floor_db: float = 80.0, range_db: float = 60.0) -> float:
    """dB (>= 0) between two notes, float32 [samples] each at the helper's sample rate."""
    ref = SpectralReference(_power(helper, reference), floor_db, range_db)
    return float(ref.distance(_power(helper, test)))


def harmonic_mask(freqs_hz: np.ndarray, f0_hz: float, top_hz: float = HNR_TOP_HZ) -> np.ndarray:
    """bool [freqs]: within +-(6 Hz + 0.4 % f) of a multiple k * f0 (k >= 1) below top_hz."""
    k = np.maximum(1.0, np.round(freqs_hz / f0_hz))
    centre = k * f0_hz
    return (np.abs(freqs_hz - centre) <= 6.0 + 0.004 * centre) & (centre <= top_hz)


def harmonic_to_noise_db(wave: np.ndarray, f0_hz: float, sample_rate: int,
                         start_s: float = HNR_START_S, end_s: float = HNR_END_S,
                         refine_cents: float = 20.0) -> float:
    """dB: harmonic energy over the rest between 0.5 * f0 and 7.5 kHz, in start_s..end_s of
    `wave` (float [samples], the note starting at 0). nan for a silent stretch."""
    seg = np.asarray(wave, np.float64)[int(start_s * sample_rate):int(end_s * sample_rate)]
    if len(seg) < 16 or not np.any(seg):
        return float("nan")
    power = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2
    freqs = np.fft.rfftfreq(len(seg), 1.0 / sample_rate)
    band = (freqs >= 0.5 * f0_hz) & (freqs <= HNR_TOP_HZ)
    best = None
    for cents in np.arange(-refine_cents, refine_cents + 0.5, 1.0):
        mask = harmonic_mask(freqs, f0_hz * 2.0 ** (cents / 1200.0)) & band
        harmonic = power[mask].sum()
        if best is None or harmonic > best[0]:
            best = (harmonic, power[band & ~mask].sum())
    harmonic, noise = best
    if harmonic <= 0:
        return float("nan")
    return float(10.0 * np.log10(harmonic / max(noise, 1e-30)))
