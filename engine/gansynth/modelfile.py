"""Model directories: `config.json` + `generator.safetensors` (the EMA generator).

Loading never unpickles. Every failure raises `ModelFileError` naming the file
and what is wrong with it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from engine.gansynth.config import ModelConfig, SpectralConfig, from_dict, spectral_from_dict, to_dict
from engine.gansynth.model import Generator
from engine.util.fileio import JsonFileError, atomic_path, atomic_write_text, read_json

FORMAT = "gansynth-instrument-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "generator.safetensors"


class ModelFileError(Exception):
    """A model file is missing, corrupt, truncated or does not match its config."""


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def save_model_dir(path, generator: Generator, spectral: SpectralConfig,
                   provenance: dict | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write model files atomically (temp files renamed into place)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in generator.state_dict().items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": to_dict(generator.cfg),
        "spectral": to_dict(spectral),
        "dtype": str(dtype).replace("torch.", ""),
        "provenance": provenance or {},
    }
    with atomic_path(path / WEIGHTS_FILE) as tmp:
        save_file(state, tmp)
    atomic_write_text(path / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return path


def read_meta(path) -> dict:
    """Parse and validate config.json; returns the raw dict plus parsed configs."""
    cfg_path = Path(path) / CONFIG_FILE
    if not Path(path).is_dir():
        raise ModelFileError(f"{path}: not a model directory")
    if not cfg_path.is_file():
        raise ModelFileError(f"{cfg_path}: missing (a model directory holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        meta = read_json(cfg_path)
    except JsonFileError as e:
        raise ModelFileError(str(e)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{cfg_path}: not a {FORMAT} config (field 'format')")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{cfg_path}: unsupported format_version {meta.get('format_version')!r}")
    try:
        meta["model_config"] = from_dict(ModelConfig, meta.get("model"), "field 'model'")
        meta["spectral_config"] = spectral_from_dict(meta.get("spectral"), "field 'spectral'")
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{cfg_path}: {e}") from None
    return meta


def load_model_dir(path, device="cpu") -> tuple[Generator, ModelConfig, SpectralConfig, dict]:
    """Rebuild the generator from config.json and load its safetensors weights (float32)."""
    meta = read_meta(path)
    cfg, spectral = meta["model_config"], meta["spectral_config"]
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{weights}: unreadable or truncated safetensors file ({e})") from None
    generator = Generator(cfg)
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ModelFileError(f"{weights}: tensors do not match config.json "
                             f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ModelFileError(f"{weights}: tensor {name} has shape {tuple(tensor.shape)}, "
                                 f"config.json implies {tuple(expected[name].shape)}")
        if not torch.isfinite(tensor).all():
            raise ModelFileError(f"{weights}: tensor {name} holds NaN or infinite values")
    generator.load_state_dict({k: v.float() for k, v in state.items()})
    return generator.to(device).eval(), cfg, spectral, meta
