"""Shared fixtures: a tiny random-weight model directory (fast, full output shape)."""
from __future__ import annotations

import os

import pytest
import torch

from engine.gansynth.config import PRESETS, SpectralConfig
from engine.gansynth.model import Generator
from engine.gansynth.modelfile import save_model_dir
from tests.jack import jack_server  # noqa: F401  (a JACK dummy device; started on first use)


def make_tiny_model_dir(path, seed: int = 0, representation: str = "mel_if"):
    torch.manual_seed(seed)
    generator = Generator(PRESETS["tiny"])
    return save_model_dir(path, generator, SpectralConfig(representation=representation),
                          provenance={"note": "random weights for tests", "seed": seed})


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """The backend probe's answers (engine.gansynth.backend) go to a test-session folder, not
    the user's cache: each session probes afresh."""
    old = os.environ.get("GANSYNTH_CACHE_DIR")
    os.environ["GANSYNTH_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("GANSYNTH_CACHE_DIR", None)
    else:
        os.environ["GANSYNTH_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A model directory (tiny config, random weights, mel-IF H representation)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))


# TimGM6mb (shipped inside the pretty_midi wheel): 7 programs x 6 pitches x velocity 100.
# Oboe (68) is silent at pitch 24 in this SoundFont, so 41 notes are written and 1 skipped.
TINY_NSYNTH_PROGRAMS = (0, 11, 24, 40, 56, 68, 73)
TINY_NSYNTH_PITCHES = (24, 36, 48, 60, 72, 84)


def timgm6mb_path():
    import pretty_midi
    from pathlib import Path

    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


@pytest.fixture(scope="session")
def tiny_nsynth_dir(tmp_path_factory):
    """An NSynth-format dataset rendered from TimGM6mb by `render_dataset` (read-only: copy it
    before changing files)."""
    from engine.training.soundfont import render_dataset

    out = tmp_path_factory.mktemp("tiny_nsynth")
    render_dataset(timgm6mb_path(), out, list(TINY_NSYNTH_PROGRAMS), list(TINY_NSYNTH_PITCHES),
                   [100], progress=False)
    return out


def traced_allocation(fn, repeats: int) -> tuple[int, int]:
    """(bytes still held, peak bytes) allocated by `repeats` calls of fn(), via tracemalloc."""
    import tracemalloc

    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(repeats):
            fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current - base, peak - base
