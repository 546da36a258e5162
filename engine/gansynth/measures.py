"""How close one note is to another, and how clean a note is: figures for sound import.

- `log_spectral_distance_db(reference, test, helper)`: the frame-wise log-spectral distance
  between two notes, in dB, on our analysis STFT (n_fft 2048, hop 512 for the H config):
  per frame the RMS over frequency bins of the difference of the log power spectra, averaged
  over the frames where the reference sounds (within `range_db` of its loudest frame). Both
  spectra are floored `floor_db` below the reference's loudest bin (below it nobody hears a
  difference), and the test note is first scaled to the reference's energy over those frames
  (loudness is not timbre: the instrument plays every note peak-normalised).
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


def _power(helper: SpecgramsHelper, wave: np.ndarray) -> np.ndarray:
    """float64 [time, freq]: |STFT|^2 of one note (cropped or padded to the config's length)."""
    with torch.inference_mode():
        stft = helper.waves_to_stfts(torch.from_numpy(np.asarray(wave, np.float32).reshape(1, -1)))
    return (stft[0].abs().double() ** 2).cpu().numpy()


def log_spectral_distance_db(reference: np.ndarray, test: np.ndarray, helper: SpecgramsHelper,
                             floor_db: float = 80.0, range_db: float = 60.0) -> float:
    """dB (>= 0) between two notes, float32 [samples] each at the helper's sample rate."""
    ref, tst = _power(helper, reference), _power(helper, test)
    frame_energy = ref.sum(1)
    if frame_energy.max() <= 0:
        raise ValueError("the reference note is silent")
    sounding = frame_energy >= frame_energy.max() * 10.0 ** (-range_db / 10.0)
    tst = tst * (ref[sounding].sum() / max(tst[sounding].sum(), 1e-30))
    floor = ref.max() * 10.0 ** (-floor_db / 10.0)
    diff = 10.0 * (np.log10(np.maximum(ref[sounding], floor)) - np.log10(np.maximum(tst[sounding], floor)))
    return float(np.sqrt((diff ** 2).mean(1)).mean())


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
