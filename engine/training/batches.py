"""Training batches: normalized features at every resolution a progressive schedule needs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from engine.gansynth.config import SpectralConfig


class TrainData:
    """Normalized features at every resolution the schedule needs.

    `specs` float16 [N, 2, T, F] (memmap or array), `pitches` MIDI int [N],
    `instruments` contiguous int ids [N]. Pooled levels are computed once on first use
    (or taken from `pooled[block]` when the feature cache already holds them). `spectra`,
    float16 [N, bands] when given: each recording's long-window spectrum in dB, for the
    spectrum loss (`engine.gansynth.reconstruction.long_window_spectrum_db`).
    """

    def __init__(self, specs, pitches, instruments, spectral: SpectralConfig, pooled: dict | None = None,
                 velocities=None, instrument_names: list[str] | None = None, spectra=None):
        self.specs = specs
        self.spectra = None if spectra is None else torch.from_numpy(np.array(spectra, np.float16))  # in memory
        self.pitches = np.asarray(pitches, np.int64)
        self.instruments = np.asarray(instruments, np.int64)
        vel = np.zeros_like(self.instruments) if velocities is None else np.asarray(velocities, np.int64)
        # Dense ids of (instrument, velocity) pairs: GLO's latents when recipe.glo_per_velocity.
        pairs, self.voices = np.unique(np.stack([self.instruments, vel], 1), axis=0, return_inverse=True)
        self.voices = self.voices.reshape(-1).astype(np.int64)
        # Names of the instruments and of the voices (instrument at a velocity), when known.
        self.instrument_names = list(instrument_names) if instrument_names is not None else None
        self.voice_names = None if instrument_names is None else [
            f"{self.instrument_names[i]} v{v}" if v else self.instrument_names[i] for i, v in pairs]
        self.spectral = spectral
        self.num_instruments = int(self.instruments.max()) + 1 if len(self.instruments) else 0
        self._levels: dict[tuple[int, int], torch.Tensor] = {}
        self._given = pooled or {}
        self._full_on_device: torch.Tensor | None = None
        if len(self.pitches) == 0:
            raise ValueError("training data holds no notes")

    def to(self, device) -> "TrainData":
        """Keep every resolution (full included) as float16 tensors on `device` (a GPU holds all of
        a dataset easily; then a batch is a gather on the device, not a memmap read and a copy)."""
        device = torch.device(device)
        if device.type == "cpu" or (self._full_on_device is not None and self._full_on_device.device == device):
            return self
        full = torch.empty((len(self), *self.specs.shape[1:]), dtype=torch.float16, device=device)
        for i in range(0, len(self), 256):
            full[i:i + 256] = torch.from_numpy(np.asarray(self.specs[i:i + 256], np.float16)).to(device)
        self._full_on_device = full
        for shape in self._given:
            self._level(shape)
        self._levels = {k: v.to(device) for k, v in self._levels.items()}
        if self.spectra is not None:
            self.spectra = self.spectra.to(device)
        return self

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
        if level is None and self._full_on_device is not None:
            level = self._full_on_device
        if level is None:
            order = np.argsort(idx)
            x = np.asarray(self.specs[idx[order]], np.float32)
            out = np.empty_like(x)
            out[order] = x
            return torch.from_numpy(out)
        return level[torch.from_numpy(idx).to(level.device)].float()

    def spectra_batch(self, idx: np.ndarray) -> torch.Tensor:
        """float32 [len(idx), bands]: the recordings' long-window spectra in dB."""
        if self.spectra is None:
            raise ValueError("the spectrum loss needs the notes' long-window spectra, and this training data "
                             "has none (the feature cache of `load_train_data` holds them)")
        return self.spectra[torch.from_numpy(idx).to(self.spectra.device)].float()

    def real_batch(self, idx: np.ndarray, shape: tuple[int, int], blend: float) -> torch.Tensor:
        """Real images at `shape`; blend < 1 mixes in the half resolution (nearest-upsampled), as in a fade-in."""
        x = self.images(idx, shape)
        if blend < 1.0 and shape[0] % 2 == 0 and shape[1] % 2 == 0:
            lo = self.images(idx, (shape[0] // 2, shape[1] // 2))
            x = torch.lerp(F.interpolate(lo, scale_factor=2, mode="nearest"), x, blend)
        return x


class StackedRows:
    """Several arrays of equal trailing shape read as one along axis 0, without copying them
    (the feature memmaps of several datasets): slices and integer-array gathers."""

    def __init__(self, parts):
        self.parts = list(parts)
        if len({p.shape[1:] for p in self.parts}) != 1:
            raise ValueError(f"datasets differ in feature shape: {[p.shape[1:] for p in self.parts]}")
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.offsets[-1]), *self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)))
        key = np.asarray(key)
        if key.ndim != 1 or key.dtype.kind not in "iu":
            raise TypeError("StackedRows takes a slice or a 1-d integer array")
        out = np.empty((len(key), *self.shape[1:]), self.dtype)
        part = np.searchsorted(self.offsets, key, side="right") - 1
        for j in np.unique(part):
            rows = part == j
            out[rows] = self.parts[j][key[rows] - self.offsets[j]]
        return out


def load_train_data(data_dirs, spectral: SpectralConfig | None = None) -> TrainData:
    """The feature caches of one or more NSynth-format datasets (computed on first use), as one
    training set. Instruments of different datasets stay different (a FluidR3 piano and another
    SoundFont's piano are two voices)."""
    from engine.training import features  # the cache module; only the trainer needs it

    spectral = spectral or SpectralConfig()
    dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    sets = [features.load_features(d, spectral) for d in dirs]
    if len(sets) == 1:
        fs = sets[0]
        return TrainData(fs.specs, fs.pitches, fs.instruments, fs.spectral_config, fs.pooled, fs.velocities,
                         _instrument_names(dirs[0], fs.instrument_names), fs.spectra)
    offsets = np.cumsum([0] + [fs.num_instruments for fs in sets])
    common = set.intersection(*(set(fs.pooled) for fs in sets))
    pooled = {r: np.concatenate([np.asarray(fs.pooled[r]) for fs in sets]) for r in common}
    return TrainData(StackedRows([fs.specs for fs in sets]),
                     np.concatenate([fs.pitches for fs in sets]),
                     np.concatenate([fs.instruments + o for fs, o in zip(sets, offsets)]),
                     spectral, pooled, np.concatenate([fs.velocities for fs in sets]),
                     [n for d, fs in zip(dirs, sets) for n in _instrument_names(d, fs.instrument_names)],
                     np.concatenate([fs.spectra for fs in sets]))


def _instrument_names(data_dir, instrument_strs: list[str]) -> list[str]:
    """Readable instrument names for latent priors: 'FluidR3_GM/reed_acoustic_071 (Clarinet)' from
    make-dataset's render.json (SoundFont and preset names), else '<folder>/<instrument_str>'."""
    from engine.util.fileio import JsonFileError, read_json

    label, presets = Path(data_dir).resolve().name, {}
    try:
        info = read_json(Path(data_dir) / "render.json")
        label, presets = Path(str(info["soundfont"])).stem, dict(info.get("preset_names") or {})
    except (JsonFileError, KeyError, TypeError, ValueError):
        pass
    names = []
    for inst in instrument_strs:
        preset = presets.get(str(int(inst[-3:]))) if inst[-3:].isdigit() else None
        names.append(f"{label}/{inst}" + (f" ({str(preset).strip()})" if preset else ""))
    return names
