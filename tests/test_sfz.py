"""engine.songs.sfz: the written patch parses, every sample exists and is a valid WAV; loops; layers."""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.commands.cli import main as cli_main
from engine.commands.export_sfz import parse_pitches
from engine.gansynth.synth import load_synth
from engine.songs.sfz import (ExportCancelled, SfzError, bake_crossfade, export_for_app, export_sfz, find_loop,
                              key_ranges, velocity_bounds)


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return load_synth(tiny_model_dir)


def parse_sfz(path: Path) -> list[dict]:
    """Regions of an SFZ file as dicts, with <global> and <group> opcodes inherited."""
    text = re.sub(r"//[^\n]*", "", path.read_text())
    regions, scope, global_, group, current = [], None, {}, {}, None
    for token in re.findall(r"<\w+>|[A-Za-z_0-9]+=[^\s<]+", text):
        if token.startswith("<"):
            scope = token
            if scope == "<group>":
                group = {}
            if scope == "<region>":
                current = {**global_, **group}
                regions.append(current)
            continue
        key, value = token.split("=", 1)
        {"<global>": global_, "<group>": group, "<region>": current}[scope][key] = value
    return regions


def check_patch(sfz_path: Path, sample_rate: int, layers: int) -> list[dict]:
    regions = parse_sfz(sfz_path)
    assert regions
    for r in regions:
        sample = sfz_path.parent / r["sample"]
        assert sample.is_file(), sample
        info = sf.info(sample)                               # raises on an invalid file
        assert (info.format, info.subtype, info.channels, info.samplerate) == \
            ("WAV", "PCM_24", 1, sample_rate)
        lokey, hikey, centre = int(r["lokey"]), int(r["hikey"]), int(r["pitch_keycenter"])
        assert 0 <= lokey <= centre <= hikey <= 127
        start, end = int(r["loop_start"]), int(r["loop_end"])
        assert 0 < start < end < info.frames
        assert r["loop_mode"] == "loop_continuous" and float(r["ampeg_release"]) == 0.3
        audio, _ = sf.read(sample)
        jump = abs(audio[start] - audio[end])                # what the sampler plays at the wrap
        assert jump <= np.abs(np.diff(audio[start:end + 1])).max() + 1e-6
    by_layer = {}
    for r in regions:
        by_layer.setdefault((int(r["lovel"]), int(r["hivel"])), []).append(r)
    assert len(by_layer) == layers
    assert sorted(by_layer) == velocity_bounds(layers)
    for group in by_layer.values():                          # each layer covers every key once
        covered = sorted(k for r in group for k in range(int(r["lokey"]), int(r["hikey"]) + 1))
        assert covered == list(range(128))
    return regions


def test_export_writes_a_patch_any_sampler_can_open(synth, tmp_path):
    z = synth.random_latents(1, seed=11)[0]
    progress = []
    report = export_sfz(synth, z, tmp_path / "Bright Pad", pitches=[36, 60, 84], velocity_layers=2,
                        progress=lambda d, t: progress.append((d, t)))
    sfz_path = Path(report.sfz_path)
    assert sfz_path.name == "Bright_Pad.sfz"
    regions = check_patch(sfz_path, 48000, 2)
    assert len(regions) == 6 and len(report.samples) == 6
    assert progress == [(i, 6) for i in range(1, 7)]
    centres = sorted({int(r["pitch_keycenter"]) for r in regions})
    assert centres == [36, 60, 84]
    meta = json.loads((sfz_path.parent / "Bright_Pad.json").read_text())
    np.testing.assert_allclose(meta["latent"], z, atol=1e-6)
    assert not list(sfz_path.parent.rglob(".*partial"))
    # Softer layer = the same note, darker: low-passed at f0 * 2^3.5 (2.96 kHz for C4, the
    # softer of 2 layers), so far less energy above 4 kHz, where that filter passes ~5 % of it.
    soft, _ = sf.read(sfz_path.parent / "samples" / "Bright_Pad_060_C4_v1.wav")
    loud, _ = sf.read(sfz_path.parent / "samples" / "Bright_Pad_060_C4_v2.wav")
    n = min(len(soft), len(loud))

    def high_share(x):
        spec = np.abs(np.fft.rfft(x[:n])) ** 2
        freqs = np.fft.rfftfreq(n, 1 / 48000)
        return spec[freqs > 4000].sum() / spec.sum()

    assert high_share(soft) < 0.25 * high_share(loud)


def test_find_loop_on_a_steady_tone_spans_whole_periods():
    sr, f0 = 48000, 196.0
    t = np.arange(4 * sr) / sr
    x = np.sin(2 * np.pi * f0 * t) + 0.4 * np.sin(2 * np.pi * 3 * f0 * t + 0.7)
    x *= np.minimum(1.0, t / 0.1) * np.where(t < 3.0, 1.0, 0.0)
    start, end = find_loop(x, sr, f0)
    periods = (end + 1 - start) * f0 / sr
    assert abs(periods - round(periods)) < 0.02
    assert 0.3 * sr <= start < end <= 3.0 * sr
    assert end - start > 0.5 * sr
    assert abs(x[end + 1] - x[start]) < 0.02                 # the wrap continues the waveform
    y = x.copy()
    bake_crossfade(y, start, end, 960)
    assert y[end] == pytest.approx(x[start - 1])             # after the fade x[end] -> x[start] is seamless
    np.testing.assert_array_equal(y[:end - 960], x[:end - 960])


def test_find_loop_stays_in_the_loud_part_of_a_decaying_note():
    sr, f0 = 48000, 440.0
    t = np.arange(4 * sr) / sr
    x = np.sin(2 * np.pi * f0 * t) * np.where(t < 1.2, 1.0, 1e-3)   # loud for 1.2 s, then nearly silent
    start, end = find_loop(x, sr, f0)
    assert end < 1.2 * sr and start > 0.3 * sr - 1


def test_key_and_velocity_ranges():
    assert key_ranges([24, 27, 30]) == [(0, 25), (26, 28), (29, 127)]
    assert key_ranges([60], extend=False) == [(60, 60)]
    assert velocity_bounds(1) == [(1, 127)]
    assert velocity_bounds(3) == [(1, 42), (43, 85), (86, 127)]
    assert parse_pitches("24-30:3") == [24, 27, 30]
    assert parse_pitches("36,48,60") == [36, 48, 60]


def test_cli_export_with_random_and_preset(synth, tiny_model_dir, tmp_path, capsys):
    from engine.instrument.presets import Preset, save_preset
    from engine.instrument.timbre import TimbreState

    model = ["--model", str(tiny_model_dir)]
    rc = cli_main(["export-sfz", *model, "--random", "3", "--seed", "1", "--instrument", "2",
                   "--pitches", "48-50:2", "-o", str(tmp_path / "rand"), "--sample-rate", "44100"])
    assert rc == 0, capsys.readouterr().err
    check_patch(tmp_path / "rand" / "rand.sfz", 44100, 1)
    meta = json.loads((tmp_path / "rand" / "rand.json").read_text())
    np.testing.assert_allclose(meta["latent"], synth.random_latents(3, seed=1)[2], atol=1e-6)

    timbre = TimbreState.random(synth, seed=2, pad=(0.9, 0.1))
    preset = save_preset(tmp_path / "p.json", Preset(timbre, name="p"))
    rc = cli_main(["export-sfz", *model, "--preset", str(preset), "--pitches", "60",
                   "-o", str(tmp_path / "pre"), "--name", "My Patch"])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "pre" / "My_Patch.json").read_text())
    np.testing.assert_allclose(meta["latent"], timbre.latent, atol=1e-6)     # the pad's timbre
    assert "1 samples" in capsys.readouterr().out


def test_cli_export_bad_inputs(tiny_model_dir, tmp_path, capsys):
    model = ["--model", str(tiny_model_dir)]
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    cases = [(["--pitches", "10-20"], "pitches must lie in the model's range 24..84"),
             (["--pitches", "60", "--velocity-layers", "0"], "velocity layers must be 1..16"),
             (["--pitches", "60", "--random", "2", "--instrument", "5"], "--instrument must be 0..1"),
             (["--preset", str(bad_json)], "bad.json: not valid JSON"),
             (["--pitches", "60", "-o", str(tmp_path / "no" / "dir")], "does not exist")]
    for args, message in cases:
        out = [] if "-o" in args else ["-o", str(tmp_path / "x")]
        rc = cli_main(["export-sfz", *model, *out, *args])
        err = capsys.readouterr().err
        assert rc == 1 and message in err, (args, err)
    assert cli_main(["export-sfz", *model, "-o", str(tmp_path / "x"), "--pitches", "a-b"]) == 2
    assert not (tmp_path / "x").exists()       # every check runs before anything is written


def test_cancel_removes_the_samples_written(synth, tmp_path):
    cancel = threading.Event()

    def progress(done, total):
        cancel.set()                                          # cancel after the first sample

    with pytest.raises(ExportCancelled):
        export_sfz(synth, synth.random_latents(1)[0], tmp_path / "c", pitches=[40, 41], progress=progress,
                   cancel=cancel)
    assert list((tmp_path / "c" / "samples").iterdir()) == []
    assert not list((tmp_path / "c").glob("*.sfz"))


def test_app_entry_exports_the_pad_timbre(synth, tmp_path):
    from engine.instrument.timbre import TimbreState

    timbre = TimbreState.random(synth, seed=6, pad=(0.5, 0.5))
    fractions = []
    report = export_for_app(synth, timbre, tmp_path / "app", progress=fractions.append, pitches=[55])
    assert fractions == [1.0]
    check_patch(Path(report.sfz_path), 48000, 1)
    assert "Random 6.1" in Path(report.sfz_path).read_text()
    with pytest.raises(SfzError, match="latent must have 16 numbers"):
        export_sfz(synth, np.zeros(3), tmp_path / "bad")
