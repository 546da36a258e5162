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
  the partial survives the inverse.
"""
from __future__ import annotations

import torch

from engine.gansynth.spectral import SpecgramsHelper

SILENCE = -0.8   # normalized log-magnitude of silence (log 1e-6 under the prespecified normalizer)


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


def resynthesis_l1(fake: torch.Tensor, real: torch.Tensor, helper: SpecgramsHelper,
                   w_mag: torch.Tensor) -> torch.Tensor:
    """Scalar: weighted L1 between the real log-magnitude and `fake` inverted to audio and
    analysed again (differentiable: the torch inverse and STFT)."""
    audio = helper.waves_to_specgrams(helper.specgrams_to_waves(fake))[:, :1]
    return (w_mag * (audio - real[:, :1]).abs()).mean()
