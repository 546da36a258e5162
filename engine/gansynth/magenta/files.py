"""Where a Magenta GANSynth checkpoint lies: its training root, the training flags
(experiment.json over Magenta's defaults), the last stage's checkpoint, and a zip extracted
once into the cache. Also the errors and warnings of an import (engine/gansynth/magenta/convert.py).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path

from engine.gansynth.magenta.tfcheckpoint import CheckpointError, latest_checkpoint
from engine.gansynth.modelfile import ModelFileError
from engine.util.fileio import JsonFileError, read_json

# Magenta's lib/model.py set_flags defaults: used where experiment.json is silent, as Magenta does.
DEFAULT_FLAGS = {
    "data_type": "mel", "audio_length": 64000, "sample_rate": 16000,
    "data_normalizer": "specgrams_prespecified_normalizer",
    "mag_normalizer_a": 0.0661371661726, "mag_normalizer_b": 0.113718730221,
    "p_normalizer_a": 0.8, "p_normalizer_b": 0.0,
    "stable_stage_num_images": 32, "transition_stage_num_images": 32, "total_num_images": 320,
    "train_progressive": True, "train_time_limit": None, "train_time_stage_multiplier": 1.0,
    "g_fn": "specgram", "latent_vector_size": 256, "kernel_size": 3, "start_height": 4, "start_width": 8,
    "scale_mode": "ALL", "scale_base": 2, "num_resolutions": 7, "simple_arch": False,
    "to_rgb_activation": "tanh", "fmap_base": 512, "fmap_decay": 1.0, "fmap_max": 128,
}


class MagentaError(ModelFileError):
    """A Magenta checkpoint cannot be converted (missing, corrupt or an unsupported variant)."""


class MagentaImportWarning(UserWarning):
    """The checkpoint converts, but not exactly as Magenta's own sampling would use it."""


def warn(meta: dict, message: str) -> None:
    """Record `message` in the import's meta and warn with it (MagentaImportWarning)."""
    meta.setdefault("warnings", []).append(message)
    warnings.warn(message, MagentaImportWarning, stacklevel=3)


# ----------------------------------------------------------------------------- locating files

def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gansynth-instrument"


def find_root(path: Path) -> Path:
    """The directory holding experiment.json / stage_* dirs (given it, its parent or a stage dir)."""
    if (path / "experiment.json").is_file() or any(path.glob("stage_*")):
        return path
    if path.name.startswith("stage_") and (path.parent / "experiment.json").is_file():
        return path.parent
    inner = [p for p in path.iterdir() if p.is_dir() and (p / "experiment.json").is_file()]
    if len(inner) == 1:  # the folder a zip was unpacked into
        return inner[0]
    raise MagentaError(f"{path}: not a Magenta GANSynth checkpoint directory "
                       "(expected experiment.json and stage_* sub-directories)")


def read_flags(root: Path, meta: dict) -> dict:
    """experiment.json over Magenta's defaults (a missing file warns, as Magenta does)."""
    path = root / "experiment.json"
    flags = dict(DEFAULT_FLAGS)
    if not path.is_file():
        warn(meta, f"{path}: missing; assuming Magenta's default flags (mel-IF, prespecified normalizer)")
        return flags
    try:
        loaded = read_json(path)
    except JsonFileError as e:
        raise MagentaError(str(e)) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("jobs"), dict):  # internal hparam sweeps
        loaded = loaded["jobs"].get(root.name)
    if not isinstance(loaded, dict):
        raise MagentaError(f"{path}: expected a JSON object of training flags")
    flags.update(loaded)
    flags["_given"] = frozenset(loaded)
    return flags


def find_stage(root: Path, meta: dict) -> tuple[int, Path]:
    """(stage id, checkpoint prefix) of the last stage_* dir that holds a checkpoint."""
    stages = sorted((p for p in root.glob("stage_*") if p.is_dir() and re.fullmatch(r"stage_\d+", p.name)),
                    key=lambda p: int(p.name.split("_")[1]))
    if not stages:
        raise MagentaError(f"{root}: no stage_* directories (is this the training root?)")
    for i, stage in enumerate(reversed(stages)):
        try:
            prefix = latest_checkpoint(stage)
        except CheckpointError:
            continue
        if i:
            warn(meta, f"{stages[-1]}: holds no checkpoint; using {stage.name}")
        return int(stage.name.split("_")[1]), prefix
    raise MagentaError(f"{root}: none of the stage_* directories holds a checkpoint")


def zip_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _zip_root(names: list[str], path: Path) -> str:
    """Prefix inside the zip of the directory holding experiment.json (or the stage dirs)."""
    marks = [n[: -len("experiment.json")] for n in names if n == "experiment.json" or n.endswith("/experiment.json")]
    if not marks:
        marks = [n[: n.index("stage_")] for n in names if re.search(r"(^|/)stage_\d+/", n)]
    if not marks:
        raise MagentaError(f"{path}: the zip holds no experiment.json or stage_* directory")
    return min(marks, key=len)


def extraction_dir(sha256: str, cache: Path | None = None) -> Path:
    """Where `extract_zip` puts the zip with this SHA-256."""
    return (cache or cache_root()) / "magenta" / sha256[:20]


def extract_zip(path, cache: Path | None = None) -> Path:
    """Extract a checkpoint zip once into the cache (keyed by its SHA-256); returns the training root."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            prefix = _zip_root(names, path)
            target = extraction_dir(zip_sha256(path), cache)
            if (target / ".complete").is_file():
                return target / prefix
            wanted = [n for n in names if n.startswith(prefix) and not n.endswith("/")]
            for name in wanted:
                if name.startswith("/") or ".." in Path(name).parts or ":" in name:
                    raise MagentaError(f"{path}: unsafe member path {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
            try:
                for name in wanted:
                    zf.extract(name, tmp)
                (tmp / ".complete").write_text(str(path) + "\n")
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise MagentaError(f"{path}: not a valid zip archive or corrupt ({e})") from None
    except OSError as e:
        raise MagentaError(f"{path}: cannot extract ({e})") from None
    return target / prefix
