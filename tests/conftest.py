"""Shared fixtures: a tiny random-weight model directory (fast, full output shape)."""
from __future__ import annotations

import pytest
import torch

from engine.config import PRESETS, SpectralConfig
from engine.model import Generator
from engine.modelfile import save_model_dir
from tests.jack import jack_server  # noqa: F401  (a JACK dummy device; started on first use)


def make_tiny_model_dir(path, seed: int = 0, representation: str = "mel_if"):
    torch.manual_seed(seed)
    generator = Generator(PRESETS["tiny"])
    return save_model_dir(path, generator, SpectralConfig(representation=representation),
                          provenance={"note": "random weights for tests", "seed": seed})


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A model directory (tiny config, random weights, mel-IF H representation)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))
