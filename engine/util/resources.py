"""Paths of bundled resources (model, presets, demo MIDI)."""
from __future__ import annotations

from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def default_model_path() -> Path:
    return RESOURCES / "models" / "default"


def presets_dir() -> Path:
    return RESOURCES / "presets"


def midi_dir() -> Path:
    return RESOURCES / "midi"
