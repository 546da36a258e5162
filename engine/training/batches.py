"""Training batches: normalized features at every resolution a progressive schedule needs."""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from engine.gansynth.config import SpectralConfig


class TrainData:
    """Normalized features at every resolution the schedule needs.

    `specs` float16 [N, 2, T, F] (memmap or array), `pitches` MIDI int [N],
    `instruments` contiguous int ids [N]. Pooled levels are computed once on first use
    (or taken from `pooled[block]` when the feature cache already holds them).
    """

    def __init__(self, specs, pitches, instruments, spectral: SpectralConfig, pooled: dict | None = None,
                 velocities=None):
        self.specs = specs
        self.pitches = np.asarray(pitches, np.int64)
        self.instruments = np.asarray(instruments, np.int64)
        vel = np.zeros_like(self.instruments) if velocities is None else np.asarray(velocities, np.int64)
        # Dense ids of (instrument, velocity) pairs: GLO's latents when recipe.glo_per_velocity.
        _, self.voices = np.unique(np.stack([self.instruments, vel], 1), axis=0, return_inverse=True)
        self.voices = self.voices.reshape(-1).astype(np.int64)
        self.spectral = spectral
        self.num_instruments = int(self.instruments.max()) + 1 if len(self.instruments) else 0
        self._levels: dict[tuple[int, int], torch.Tensor] = {}
        self._given = pooled or {}
        if len(self.pitches) == 0:
            raise ValueError("training data holds no notes")

    def __len__(self) -> int:
        return len(self.pitches)

    def _level(self, shape: tuple[int, int]) -> torch.Tensor | None:
        """fp16 [N, 2, t, f] average-pooled to `shape`, or None for full resolution."""
        full = tuple(self.specs.shape[2:])
        if shape == full:
            return None
        if shape not in self._levels:
            given = self._given.get(shape)
            if given is not None:
                self._levels[shape] = torch.from_numpy(np.array(given))
            else:
                kt, kf = full[0] // shape[0], full[1] // shape[1]
                parts = []
                for i in range(0, len(self), 256):
                    x = torch.from_numpy(np.asarray(self.specs[i:i + 256], np.float32))
                    parts.append(F.avg_pool2d(x, (kt, kf)).half())
                self._levels[shape] = torch.cat(parts)
        return self._levels[shape]

    def images(self, idx: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
        """float32 [len(idx), 2, *shape]."""
        level = self._level(shape)
        if level is None:
            order = np.argsort(idx)
            x = np.asarray(self.specs[idx[order]], np.float32)
            out = np.empty_like(x)
            out[order] = x
            return torch.from_numpy(out)
        return level[torch.from_numpy(idx)].float()

    def real_batch(self, idx: np.ndarray, shape: tuple[int, int], blend: float) -> torch.Tensor:
        """Real images at `shape`; blend < 1 mixes in the half resolution (nearest-upsampled), as in a fade-in."""
        x = self.images(idx, shape)
        if blend < 1.0 and shape[0] % 2 == 0 and shape[1] % 2 == 0:
            lo = self.images(idx, (shape[0] // 2, shape[1] // 2))
            x = torch.lerp(F.interpolate(lo, scale_factor=2, mode="nearest"), x, blend)
        return x


def load_train_data(data_dir, spectral: SpectralConfig | None = None) -> TrainData:
    """The feature cache of an NSynth-format dataset (computed on first use)."""
    from engine.training import features  # the cache module; only the trainer needs it

    spectral = spectral or SpectralConfig()
    fs = features.load_features(data_dir, spectral)
    pooled = getattr(fs, "pooled", None)
    return TrainData(fs.specs, fs.pitches, fs.instruments, getattr(fs, "spectral_config", spectral),
                     pooled if isinstance(pooled, dict) else None, getattr(fs, "velocities", None))
