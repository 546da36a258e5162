"""Feature cache: normalized spectral features computed once per dataset and representation.

Training epochs then read float16 memory maps and do no STFTs:

    fs = load_features("/data/fluidr3", SpectralConfig())   # builds DIR/cache/ on first use
    fs.specs          # np.memmap float16 [N, 2, 128, 1024], normalized (model space, ~[-0.8, 0.8])
    fs.pitches        # int64 [N], MIDI
    fs.instruments    # int64 [N], contiguous 0..fs.num_instruments-1 (sorted instrument_str)
    fs.velocities     # int64 [N]
    fs.note_ids       # list[str], note_str of each row
    fs.downsampled((32, 256))   # np.memmap float16 [N, 2, 32, 256]
    fs.spectra        # np.memmap float16 [N, bands]: each recording's long-window spectrum, dB
                      # (engine.gansynth.reconstruction.long_window_spectrum_db; the spectrum loss)

Lower resolutions are 2x2^k average pools of the normalized float32 features
(Magenta's `blend_images` avg-pools real data the same way), precomputed for
every factor in `POOL_FACTORS`, so a trainer that runs stage k at its own
resolution streams `fs.downsampled(cfg.resolution(k))` directly.

Files, for a selection of notes (`stem` = `<representation>_<T>x<F>`, plus
`_<hash>` when the selection is not every note of examples.json):
    DIR/cache/<stem>.npy              float16 [N, 2, T, F]
    DIR/cache/<stem>_pool<t>x<f>.npy  float16 [N, 2, t, f] for each pooled resolution
    DIR/cache/<stem>_spectra.npy      float16 [N, bands], long-window spectra in dB
    DIR/cache/<stem>.json             index: note ids, pitches, instruments, velocities,
                                      spectral config, each WAV's mtime and size
The cache is rebuilt when the spectral config, the selection or any WAV (mtime or
size) changes. Every file is written to a temporary name and renamed into place;
a lock file serialises builders (e.g. several DDP ranks starting together).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.gansynth.config import SpectralConfig, to_dict
from engine.gansynth.reconstruction import long_window_spectrum_db, spectrum_bands
from engine.gansynth.spectral import SpecgramsHelper
from engine.training.nsynth import (GANSYNTH_PITCHES, DatasetError, Note,
                                    filter_notes, instrument_ids, load_wave, read_examples)
from engine.util.fileio import atomic_write_text

CACHE_VERSION = 2   # 2: the long-window spectra
POOL_FACTORS = (2, 4, 8, 16, 32, 64)


@dataclass
class FeatureSet:
    """Normalized spectral features of a selection of notes (rows in note_str order)."""

    specs: np.ndarray  # memmap float16 [N, 2, T, F]
    pitches: np.ndarray  # int64 [N]
    instruments: np.ndarray  # int64 [N], 0..num_instruments-1
    velocities: np.ndarray  # int64 [N]
    note_ids: list[str]
    instrument_names: list[str]  # instrument_str of each id
    spectral_config: SpectralConfig
    pooled: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    spectra: np.ndarray | None = None  # memmap float16 [N, bands], dB

    def __len__(self) -> int:
        return len(self.note_ids)

    @property
    def num_instruments(self) -> int:
        return len(self.instrument_names)

    @property
    def resolution(self) -> tuple[int, int]:
        return (self.specs.shape[2], self.specs.shape[3])

    @property
    def resolutions(self) -> list[tuple[int, int]]:
        """Every (time, freq) available, full resolution first."""
        return [self.resolution] + sorted(self.pooled, reverse=True)

    def downsampled(self, resolution: tuple[int, int]) -> np.ndarray:
        """float16 [N, 2, t, f]: the features average-pooled to `resolution` (cached on disk)."""
        resolution = tuple(int(r) for r in resolution)
        if resolution == self.resolution:
            return self.specs
        if resolution not in self.pooled:
            raise ValueError(f"no cached resolution {resolution}; available: {self.resolutions}")
        return self.pooled[resolution]


# ----------------------------------------------------------------------------- computation

def compute_features(waves: np.ndarray, helper: SpecgramsHelper) -> torch.Tensor:
    """float32 waves [B, samples] -> normalized float32 specgrams [B, 2, T, F]."""
    with torch.inference_mode():
        waves = torch.from_numpy(np.asarray(waves, np.float32)).to(helper.device)
        return helper.waves_to_specgrams(waves).cpu()


def pool_features(specs: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, 2, T, F] -> [B, 2, T/factor, F/factor] by average pooling."""
    if factor == 1:
        return specs
    return torch.nn.functional.avg_pool2d(specs, kernel_size=factor, stride=factor)


def pooled_resolutions(config: SpectralConfig, factors=POOL_FACTORS) -> list[tuple[int, int]]:
    t, f = config.time_steps, config.freq_bins
    return [(t // k, f // k) for k in factors if t % k == 0 and f % k == 0]


# ----------------------------------------------------------------------------- cache files

def _stem(config: SpectralConfig, note_ids: list[str], all_ids: list[str]) -> str:
    stem = f"{config.representation}_{config.time_steps}x{config.freq_bins}"
    if note_ids != all_ids:
        digest = hashlib.sha1("\n".join(note_ids).encode()).hexdigest()[:10]
        stem += f"_{digest}"
    return stem


def _file_stats(notes: list[Note]) -> list[list[int]]:
    stats = []
    for n in notes:
        try:
            st = n.path.stat()
        except OSError as e:
            raise DatasetError(f"{n.path}: missing audio file for note {n.note_str} ({e.strerror})") from None
        stats.append([st.st_mtime_ns, st.st_size])
    return stats


def _pool_path(cache_dir: Path, stem: str, res: tuple[int, int]) -> Path:
    return cache_dir / f"{stem}_pool{res[0]}x{res[1]}.npy"


def _index_matches(index_path: Path, expected: dict) -> bool:
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        return False
    keys = ("version", "spectral_config", "note_ids", "files", "resolutions")
    return isinstance(index, dict) and all(index.get(k) == expected[k] for k in keys)


def _open_cached(cache_dir: Path, stem: str, n: int, config: SpectralConfig,
                 resolutions: list[tuple[int, int]]):
    """(full memmap, {res: memmap}, spectra memmap) or None when a file is missing or has the
    wrong shape."""
    try:
        full = np.load(cache_dir / f"{stem}.npy", mmap_mode="r")
        pooled = {r: np.load(_pool_path(cache_dir, stem, r), mmap_mode="r") for r in resolutions}
        spectra = np.load(cache_dir / f"{stem}_spectra.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if full.shape != (n, 2, config.time_steps, config.freq_bins) or full.dtype != np.float16:
        return None
    if any(m.shape != (n, 2, *r) or m.dtype != np.float16 for r, m in pooled.items()):
        return None
    if spectra.shape != (n, spectrum_bands(config.num_samples, config.sample_rate)) or spectra.dtype != np.float16:
        return None
    return full, pooled, spectra


def _build(cache_dir: Path, stem: str, notes: list[Note], config: SpectralConfig,
           resolutions: list[tuple[int, int]], batch_size: int, progress: bool) -> None:
    from tqdm import tqdm

    cuda = torch.cuda.is_available()  # the STFTs of a large dataset take seconds on a GPU
    helper = SpecgramsHelper(config, "cuda" if cuda else "cpu")
    batch_size = batch_size * 8 if cuda else batch_size
    n = len(notes)
    tag = f"{os.getpid()}"
    targets = {None: cache_dir / f"{stem}.npy", "spectra": cache_dir / f"{stem}_spectra.npy"}
    targets.update({r: _pool_path(cache_dir, stem, r) for r in resolutions})
    temps = {k: p.with_name(f".{p.name}.{tag}.tmp") for k, p in targets.items()}
    bands = spectrum_bands(config.num_samples, config.sample_rate)
    shapes = {None: (2, config.time_steps, config.freq_bins), "spectra": (bands,),
              **{r: (2, *r) for r in resolutions}}
    try:
        outs = {k: np.lib.format.open_memmap(temps[k], mode="w+", dtype=np.float16,
                                             shape=(n, *shapes[k])) for k in targets}
        bar = tqdm(total=n, unit="note", disable=not progress, desc=f"features {stem}")
        for start in range(0, n, batch_size):
            batch = notes[start:start + batch_size]
            waves = np.stack([load_wave(x.path, config.sample_rate, config.num_samples) for x in batch])
            specs = compute_features(waves, helper)  # [B, 2, T, F] float32
            outs[None][start:start + len(batch)] = specs.numpy().astype(np.float16)
            with torch.inference_mode():
                spectra = long_window_spectrum_db(torch.from_numpy(waves), config.sample_rate)
            outs["spectra"][start:start + len(batch)] = spectra.numpy().astype(np.float16)
            for r in resolutions:
                factor = config.time_steps // r[0]
                outs[r][start:start + len(batch)] = pool_features(specs, factor).numpy().astype(np.float16)
            bar.update(len(batch))
        bar.close()
        for k, m in outs.items():
            m.flush()
            del m
        outs.clear()
        for k in targets:
            os.replace(temps[k], targets[k])
    finally:
        for p in temps.values():
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- public entry

def load_features(data_dir, spectral_config: SpectralConfig | None = None, *,
                  sources=("acoustic",), pitch_range=GANSYNTH_PITCHES, families=None,
                  velocities=None, instruments=None, notes: list[Note] | None = None,
                  batch_size: int = 16, progress: bool = True,
                  pool_factors=POOL_FACTORS) -> FeatureSet:
    """Features of the notes of an NSynth-format dataset, from the cache or built into it.

    The selection is `filter_notes(read_examples(data_dir), sources, pitch_range,
    families, velocities, instruments)` (defaults: GANSynth's acoustic 24..84), or
    `notes` when given (e.g. one side of `split_by_instrument`). Raises DatasetError
    naming the file when examples.json or a WAV is missing or malformed, or when the
    selection is empty.
    """
    config = spectral_config or SpectralConfig()
    data_dir = Path(data_dir)
    all_notes = read_examples(data_dir)
    if notes is None:
        notes = filter_notes(all_notes, sources, pitch_range, families, velocities, instruments)
    notes = sorted(notes, key=lambda x: x.note_str)
    if not notes:
        raise DatasetError(f"{data_dir}: no notes match the filters")
    note_ids = [x.note_str for x in notes]
    stem = _stem(config, note_ids, [x.note_str for x in all_notes])
    resolutions = pooled_resolutions(config, pool_factors)
    cache_dir = data_dir / "cache"
    cache_dir.mkdir(exist_ok=True)
    index_path = cache_dir / f"{stem}.json"
    inst_ids, inst_names = instrument_ids(notes)
    index = {
        "version": CACHE_VERSION,
        "spectral_config": json.loads(json.dumps(to_dict(config))),
        "note_ids": note_ids,
        "files": _file_stats(notes),
        "resolutions": [list(r) for r in resolutions],
        "pitches": [x.pitch for x in notes],
        "velocities": [x.velocity for x in notes],
        "instrument_names": inst_names,
        "instruments": inst_ids.tolist(),
    }
    with _locked(cache_dir / f".{stem}.lock"):
        opened = None
        if _index_matches(index_path, index):
            opened = _open_cached(cache_dir, stem, len(notes), config, resolutions)
        if opened is None:
            index_path.unlink(missing_ok=True)  # an interrupted rebuild must not look valid
            _build(cache_dir, stem, notes, config, resolutions, batch_size, progress)
            atomic_write_text(index_path, json.dumps(index))
            opened = _open_cached(cache_dir, stem, len(notes), config, resolutions)
            assert opened is not None, "feature cache unreadable right after writing it"
    full, pooled, spectra = opened
    return FeatureSet(specs=full, pitches=np.array(index["pitches"], np.int64), instruments=inst_ids,
                      velocities=np.array(index["velocities"], np.int64), note_ids=note_ids,
                      instrument_names=inst_names, spectral_config=config, pooled=pooled, spectra=spectra)
