"""Preset files (JSON): four named, coloured corner instruments, the pad and settings.

    {
      "format": "gansynth-preset", "version": 1,
      "name": "Glass Harbour",
      "latent_size": 256,
      "corners": [ {"name": "Bell", "colour": "#e4572e", "latent": [256 numbers]}, ... x4 ],
      "pad": {"x": 0.5, "y": 0.5},
      "interpolation": "nsynth", "spherical": false, "pad_grid": 32,
      "settings": {"attack_s": 0.005, "release_s": 0.3, ...},   # see engine.instrument.params.PARAMS
      "midi_map": [{"target": "pad_x", "kind": "cc", "number": 16, "channel": 1}, ...]   # optional
    }

`midi_map` (optional: older presets have none) carries learned MIDI controls when the user
chose so; here it is checked for shape only (a list of at most MAX_MIDI_MAP objects), and
engine.devices.midimap.bindings_from_list checks each entry, naming the file, when applied.

`load_preset` validates everything where it enters and raises `PresetError` naming
the file and the field (e.g. "x.json: corners[2].latent has 16 numbers, the model
needs 256"). Unknown settings are errors too, so typos do not pass silently.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.gansynth.spectral import midi_to_hz
from engine.instrument.params import PARAMS, TIMBRE_PARAMS, check_param
from engine.instrument.timbre import DEFAULT_COLOURS, MODES, Corner, TimbreState
from engine.util.fileio import JsonFileError, atomic_write_text, read_json

FORMAT = "gansynth-preset"
VERSION = 1
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_MIDI_MAP = 512


class PresetError(ValueError):
    """A preset file that cannot be used; the message names the file and the field."""


@dataclass
class Preset:
    timbre: TimbreState
    settings: dict = field(default_factory=dict)  # PARAMS names -> values (no timbre params)
    name: str = ""
    midi_map: list | None = None  # learned MIDI controls (engine.devices.midimap), if saved with it


def preset_to_dict(preset: Preset) -> dict:
    t = preset.timbre
    extra = {} if preset.midi_map is None else {"midi_map": list(preset.midi_map)}
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": preset.name,
        "latent_size": t.latent_size,
        # shortest text that reads back to the same float32: presets reproduce timbres exactly
        "corners": [{"name": c.name, "colour": c.colour, "latent": [float(str(v)) for v in c.latent]}
                    for c in t.corners],
        "pad": {"x": t.pad[0], "y": t.pad[1]},
        "interpolation": t.mode,
        "spherical": t.spherical,
        "pad_grid": t.pad_grid,
        "settings": dict(preset.settings),
        **extra,
    }


def save_preset(path, preset: Preset) -> Path:
    path = Path(os.path.expanduser(str(path)))
    data = json.dumps(preset_to_dict(preset), indent=1)
    return atomic_write_text(path, data)  # never leave a half-written preset behind


def load_preset(path, latent_size: int | None = None) -> Preset:
    """Read and validate a preset; `latent_size` (the model's) must match the corners."""
    path = Path(os.path.expanduser(str(path)))
    try:
        data = read_json(path)
    except JsonFileError as exc:
        raise PresetError(f"{exc} (a preset)") from None
    return preset_from_dict(data, str(path), latent_size)


def preset_from_dict(data, source: str, latent_size: int | None = None) -> Preset:
    def fail(msg):
        raise PresetError(f"{source}: {msg}")

    if not isinstance(data, dict):
        fail("top level must be a JSON object")
    if data.get("format") != FORMAT:
        fail(f"field 'format' must be {FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != VERSION:
        fail(f"field 'version' must be {VERSION}, got {data.get('version')!r}")
    known = {"format", "version", "name", "latent_size", "corners", "pad", "interpolation",
             "spherical", "pad_grid", "settings", "midi_map"}
    unknown = sorted(set(data) - known)
    if unknown:
        fail(f"unknown field(s) {unknown}")
    name = data.get("name", "")
    if not isinstance(name, str):
        fail("field 'name' must be a string")
    corners_data = data.get("corners")
    if not isinstance(corners_data, list) or len(corners_data) != 4:
        fail("field 'corners' must be a list of 4 objects")
    declared = data.get("latent_size")
    if declared is not None and (isinstance(declared, bool) or not isinstance(declared, int)):
        fail("field 'latent_size' must be an integer")
    corners = [_corner(c, i, fail) for i, c in enumerate(corners_data)]
    sizes = {len(c.latent) for c in corners}
    if len(sizes) != 1:
        fail(f"corner latents differ in length: {[len(c.latent) for c in corners]}")
    size = sizes.pop()
    if declared is not None and declared != size:
        fail(f"field 'latent_size' says {declared} but the corner latents have {size} numbers")
    if latent_size is not None and size != latent_size:
        fail(f"corners[0].latent has {size} numbers, the model needs {latent_size}")
    pad = data.get("pad", {"x": 0.5, "y": 0.5})
    if not isinstance(pad, dict) or set(pad) != {"x", "y"}:
        fail("field 'pad' must be an object {\"x\": 0..1, \"y\": 0..1}")
    for axis in ("x", "y"):
        v = pad[axis]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            fail(f"field 'pad.{axis}' must be a number in 0..1, got {v!r}")
    timbre_kwargs = {}
    for key, param in (("interpolation", "interpolation"), ("spherical", "spherical"), ("pad_grid", "pad_grid")):
        if key in data:
            try:
                timbre_kwargs[key] = check_param(param, data[key])
            except ValueError as exc:
                fail(f"field {key!r}: {exc}")
    settings_data = data.get("settings", {})
    if not isinstance(settings_data, dict):
        fail("field 'settings' must be an object")
    settings = {}
    for key, value in settings_data.items():
        if key in TIMBRE_PARAMS or key not in PARAMS:
            fail(f"field 'settings.{key}' is not a known setting")
        try:
            settings[key] = check_param(key, value)
        except ValueError as exc:
            fail(f"field 'settings.{key}': {exc}")
    midi_map = data.get("midi_map")
    if midi_map is not None and (not isinstance(midi_map, list) or len(midi_map) > MAX_MIDI_MAP
                                 or not all(isinstance(b, dict) for b in midi_map)):
        fail(f"field 'midi_map' must be a list of at most {MAX_MIDI_MAP} objects")
    timbre = TimbreState(tuple(corners), pad=(float(pad["x"]), float(pad["y"])),
                         mode=timbre_kwargs.get("interpolation", MODES[0]),
                         spherical=timbre_kwargs.get("spherical", False),
                         pad_grid=timbre_kwargs.get("pad_grid", 32))
    return Preset(timbre, settings, name, midi_map)


def _corner(c, i: int, fail) -> Corner:
    where = f"corners[{i}]"
    if not isinstance(c, dict):
        fail(f"{where} must be an object with name, colour and latent")
    unknown = sorted(set(c) - {"name", "colour", "latent"})
    if unknown:
        fail(f"{where}: unknown field(s) {unknown}")
    name = c.get("name")
    if not isinstance(name, str) or not name.strip():
        fail(f"{where}.name must be a non-empty string")
    colour = c.get("colour", "#888888")
    if not isinstance(colour, str) or not _COLOUR.match(colour):
        fail(f"{where}.colour must look like \"#rrggbb\", got {colour!r}")
    latent = c.get("latent")
    if not isinstance(latent, list) or not latent:
        fail(f"{where}.latent must be a non-empty list of numbers")
    for j, v in enumerate(latent):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            fail(f"{where}.latent[{j}] must be a finite number, got {v!r}")
    return Corner(name, latent, colour)


# ---------------------------------------------------------------- making presets

def describe_note(wave: np.ndarray, sample_rate: int, pitch: int = 60) -> str:
    """A two-word name for a note from its sound: brightness (spectral centroid in
    harmonics of the pitch), noisiness (spectral flatness) and envelope (dB lost in the
    second after the peak). wave: float32 [samples] mono."""
    wave = np.asarray(wave, np.float64)
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave)))) + 1e-12
    freqs = np.fft.rfftfreq(len(wave), 1.0 / sample_rate)
    harmonics = float((spec * freqs).sum() / spec.sum()) / float(midi_to_hz(pitch))
    flatness = float(np.exp(np.mean(np.log(spec))) / np.mean(spec))
    frame = sample_rate // 20
    env = np.sqrt(np.convolve(wave ** 2, np.ones(frame) / frame, mode="valid")[::frame])
    peak_i = int(np.argmax(env))
    later = env[min(len(env) - 1, peak_i + 20)]  # one second after the peak
    decay_db = 20 * np.log10(env[peak_i] / max(later, 1e-9))
    colour = "Dark" if harmonics < 2.4 else "Mellow" if harmonics < 3.2 else "Warm" if harmonics < 4.0 else "Bright"
    if flatness > 0.1:
        colour = "Breathy"
    body = "Pluck" if decay_db > 20 else "Bell" if decay_db > 8 else "Pad"
    return f"{colour} {body}"


def instrument_preset(latent, name: str, settings: dict | None = None) -> Preset:
    """One instrument saved as a preset: its latent on all four corners, so it plays wherever
    the pad is (`render --preset`, the window's Load preset, `export-sfz --preset`)."""
    name = name.strip() or "Instrument"
    corners = tuple(Corner(name, latent, DEFAULT_COLOURS[i]) for i in range(4))
    return Preset(TimbreState(corners), dict(settings or {}), name)


_NOUNS = {"Pluck": ("Pluck", "Harp", "Mallet", "Kalimba"), "Bell": ("Bell", "Chime", "Glass", "Gong"),
          "Pad": ("Pad", "Drone", "Choir", "Strings")}


def make_preset(synth, seed: int, name: str, pad=(0.5, 0.5), settings: dict | None = None,
                probe_pitch: int = 60) -> Preset:
    """Four corners from `synth.random_latents(4, seed)`, each named after how it sounds."""
    z = synth.random_latents(4, seed)
    waves = synth.generate(z, [probe_pitch] * 4)
    names, bodies, corners = [], [], []
    for i in range(4):
        colour, body = describe_note(waves[i], synth.sample_rate, probe_pitch).split()
        noun = _NOUNS[body][bodies.count(body)]  # a different noun for each corner of a kind
        bodies.append(body)
        names.append(f"{colour} {noun}")
        corners.append(Corner(names[-1], z[i], DEFAULT_COLOURS[i]))
    return Preset(TimbreState(tuple(corners), pad=pad), dict(settings or {}), name)


def main(argv=None) -> int:
    """python -m engine.instrument.presets MODEL_DIR OUT_DIR: write the bundled presets for a model."""
    import argparse
    import sys

    from engine.gansynth.synth import load_synth

    parser = argparse.ArgumentParser(prog="python -m engine.instrument.presets", description=main.__doc__)
    parser.add_argument("model")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    synth = load_synth(args.model, device="cpu")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for seed, title, pad, settings in BUNDLED:
        preset = make_preset(synth, seed, title, pad, settings)
        path = save_preset(out / (title.lower().replace(" ", "-") + ".json"), preset)
        print(f"{path}: {', '.join(preset.timbre.names)}", file=sys.stdout)
    return 0


# (seed, title, pad position, settings): the presets shipped in resources/presets/
BUNDLED = [
    (11, "First Light", (0.5, 0.5), {"attack_s": 0.005, "release_s": 0.4}),
    (23, "Slow Tide", (0.3, 0.6), {"attack_s": 0.8, "decay_s": 1.0, "sustain": 0.8, "release_s": 3.0,
                                   "bend_range": 2.0}),
    (37, "Glass Steps", (0.7, 0.3), {"attack_s": 0.002, "decay_s": 0.6, "sustain": 0.5, "release_s": 0.6,
                                     "velocity_curve": 1.6}),
    (52, "Night Organ", (0.5, 0.8), {"attack_s": 0.03, "release_s": 1.2, "morph_held": True,
                                     "mod_axis": "x"}),
]


if __name__ == "__main__":
    raise SystemExit(main())
