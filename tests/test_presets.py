"""Preset JSON: round trip, and clear errors naming the file and the field."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.instrument.presets import Preset, PresetError, load_preset, preset_to_dict, save_preset
from engine.instrument.timbre import TimbreState


def _preset(size=16):
    z = np.random.default_rng(3).standard_normal((4, size)).astype(np.float32)
    t = TimbreState.random(z, names=["Glass", "Reed", "Pluck", "Drone"], pad=(0.2, 0.7),
                           mode="bilinear", spherical=True, pad_grid=8)
    return Preset(t, {"attack_s": 0.5, "release_s": 2.0, "morph_held": False, "mod_axis": "x"}, "Test")


def test_round_trip(tmp_path):
    path = save_preset(tmp_path / "p.json", _preset())
    p = load_preset(path, latent_size=16)
    assert p.name == "Test"
    assert p.timbre.names == ("Glass", "Reed", "Pluck", "Drone")
    assert p.timbre.pad == (0.2, 0.7) and p.timbre.mode == "bilinear" and p.timbre.spherical
    assert p.timbre.pad_grid == 8
    np.testing.assert_allclose(p.timbre.latents(), _preset().timbre.latents(), atol=1e-6)
    assert p.settings == {"attack_s": 0.5, "release_s": 2.0, "morph_held": False, "mod_axis": "x"}
    assert [c.colour for c in p.timbre.corners] == [c.colour for c in _preset().timbre.corners]


def test_midi_mappings_travel_in_presets_only_when_asked(tmp_path):
    from engine.devices.midimap import Binding, MappingError, bindings_from_list, bindings_to_list

    assert "midi_map" not in preset_to_dict(_preset())            # older readers see nothing new
    assert load_preset(save_preset(tmp_path / "old.json", _preset())).midi_map is None
    bindings = (Binding("pad_x", "cc", 16, 0), Binding("record", "note", 36))
    with_map = _preset()
    with_map.midi_map = bindings_to_list(bindings)
    path = save_preset(tmp_path / "p.json", with_map)
    assert bindings_from_list(load_preset(path).midi_map, str(path)) == bindings
    data = json.loads(path.read_text())
    data["midi_map"][1]["kind"] = "sysex"
    path.write_text(json.dumps(data))
    with pytest.raises(MappingError, match=r"p.json: bindings\[1\]: unknown source kind"):
        bindings_from_list(load_preset(path).midi_map, str(path))


def _write(tmp_path, mutate):
    d = preset_to_dict(_preset())
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["corners"][2].update(latent=[0.0] * 15), "latent"),
    (lambda d: d["corners"][1].update(latent=[0.0] * 15 + ["x"]), "corners[1].latent[15]"),
    (lambda d: d["corners"][3].update(colour="red"), "corners[3].colour"),
    (lambda d: d["corners"][0].update(name=""), "corners[0].name"),
    (lambda d: d.update(corners=d["corners"][:3]), "corners"),
    (lambda d: d.update(pad={"x": 1.5, "y": 0.5}), "pad.x"),
    (lambda d: d["settings"].update(attack_s=99), "settings.attack_s"),
    (lambda d: d["settings"].update(atack_s=1), "settings.atack_s"),
    (lambda d: d.update(interpolation="cubic"), "interpolation"),
    (lambda d: d.update(format="something"), "format"),
    (lambda d: d.update(latent_size=32), "latent_size"),
    (lambda d: d.update(colour="#000000"), "unknown field"),
    (lambda d: d.update(midi_map={"pad_x": 1}), "midi_map"),
    (lambda d: d.update(midi_map=[1, 2]), "midi_map"),
])
def test_bad_fields_are_named(tmp_path, mutate, field):
    path = _write(tmp_path, mutate)
    with pytest.raises(PresetError) as err:
        load_preset(path, latent_size=16)
    assert str(path) in str(err.value) and field in str(err.value)


def test_latent_size_must_match_the_model(tmp_path):
    path = save_preset(tmp_path / "p.json", _preset(16))
    with pytest.raises(PresetError, match="model needs 256"):
        load_preset(path, latent_size=256)


def test_unreadable_and_corrupt_files(tmp_path):
    with pytest.raises(PresetError, match=r"missing\.json: no such file \(a preset\)"):
        load_preset(tmp_path / "missing.json")
    bad = tmp_path / "corrupt.json"
    bad.write_text('{"format": "gansynth-preset", ')
    with pytest.raises(PresetError, match="corrupt.json.*not valid JSON"):
        load_preset(bad)
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PresetError, match="corrupt.json"):
        load_preset(bad)


def test_shipped_presets_fit_the_bundled_model():
    from engine.util.resources import default_model_path, presets_dir

    config = json.loads((default_model_path() / "config.json").read_text())
    paths = sorted(presets_dir().glob("*.json"))
    assert len(paths) >= 3
    for path in paths:
        p = load_preset(path, latent_size=config["model"]["latent_size"])
        assert p.name and len(set(p.timbre.names)) == 4
