"""The instrument's settings: name -> default and range, and their validation.

`Instrument.settings` holds these names; preset files store them (engine/instrument/presets.py).
"""
from __future__ import annotations

import numpy as np

from engine.instrument.timbre import MODES

# name -> (default, lo, hi) for numbers; (default, allowed values) for choices.
PARAMS: dict[str, tuple] = {
    "attack_s": (0.005, 0.001, 4.0),
    "decay_s": (0.3, 0.001, 4.0),
    "sustain": (1.0, 0.0, 1.0),
    "release_s": (0.3, 0.001, 10.0),
    "volume": (0.5, 0.0, 1.0),
    "velocity_curve": (1.0, 0.25, 4.0),   # gain = floor + (1 - floor) * (velocity/127) ** curve
    "velocity_floor": (0.0, 0.0, 1.0),
    "polyphony": (64, 1, 256),             # capped at max_voices
    "bend_range": (2.0, 0.0, 24.0),        # semitones
    "morph_held": (True, (True, False)),   # held notes crossfade to the new timbre's render
    "mod_axis": ("y", ("x", "y", "none")),  # the pad axis the mod wheel (CC1) drives
    "interpolation": ("nsynth", MODES),
    "spherical": (False, (True, False)),
    "pad_grid": (32, 0, 256),              # pad snaps to a (grid+1)^2 lattice; 0 = continuous
}
TIMBRE_PARAMS = ("interpolation", "spherical", "pad_grid")
INT_PARAMS = ("polyphony", "pad_grid")


def check_param(name: str, value):
    """Validate a setting; returns the value in its canonical type or raises ValueError."""
    if name not in PARAMS:
        raise ValueError(f"unknown setting {name!r}; known: {sorted(PARAMS)}")
    spec = PARAMS[name]
    if len(spec) == 2:
        if isinstance(spec[0], bool):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"setting {name!r} must be true or false, got {value!r}")
            return bool(value)
        if value not in spec[1]:
            raise ValueError(f"setting {name!r} must be one of {spec[1]}, got {value!r}")
        return value
    _, lo, hi = spec
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"setting {name!r} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"setting {name!r} must lie in {lo}..{hi}, got {value!r}")
    if name in INT_PARAMS:
        if int(value) != value:
            raise ValueError(f"setting {name!r} must be an integer, got {value!r}")
        return int(value)
    return float(value)
