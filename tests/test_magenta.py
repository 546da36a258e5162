"""Magenta GANSynth checkpoints -> our Generator, checked against references independent of engine.gansynth.model.

Fixtures (tests/fixtures/magenta/, written by real TensorFlow, see make_magenta_fixtures.py):
- hires_ema: mel-IF, start 2x16, widths 8,8,8,8,8,6,3 for blocks 1..7, latent 16,
  EMA shadows, final stage, global_step 11M (progress 6), 3 shards;
- lores_raw_partial: linear IF, start 4x8, latent 8, raw weights only, stage 5 at progress 2.5;
- trained_by_magenta: hi-res mel-IF, latent 16, widths as hires_ema, written by Magenta's own
  training code (gansynth_train.run: its graph, losses, Adam, EMA), final stage only;
- trained_by_magenta_reference.npz: Magenta's own Model.load_from_path(...).generate_samples_from_z
  on trained_by_magenta (3 notes) and hires_ema (1 note), see make_magenta_references.py.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import ModelFileError, load_synth
from engine.commands.cli import main as cli_main
from engine.gansynth.config import ModelConfig
from engine.gansynth.magenta.convert import (StagedGenerator, compute_progress, discriminator_state_dict, fit_fmap,
                                             load_magenta)
from engine.gansynth.magenta.files import MagentaError, MagentaImportWarning
from engine.gansynth.magenta.tfcheckpoint import CheckpointReader
from engine.gansynth.model import Discriminator
from engine.gansynth.spectral import SpecgramsHelper

FIXTURES = Path(__file__).parent / "fixtures" / "magenta"
TRAINED = FIXTURES / "trained_by_magenta"
MAGENTA_AUDIO = np.load(FIXTURES / "trained_by_magenta_reference.npz")
HIRES = FIXTURES / "hires_ema"
LORES = FIXTURES / "lores_raw_partial"
G = "Generator/progressive_gan_generator/progressive_gan_block_{}/{}"


# ----------------------------------------------------------------------------- independent reference

def _conv(x, w, pad):
    """x [B, H, W, Cin] float64, w [kh, kw, Cin, Cout]: zero pad (ph, pw) per side, then VALID."""
    x = np.pad(x, [(0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)])
    kh, kw = w.shape[:2]
    h, wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], h, wd, w.shape[3]))
    for dy in range(kh):
        for dx in range(kw):
            out += x[:, dy:dy + h, dx:dx + wd, :] @ w[dy, dx]
    return out


def _layer(x, w, b, pad, slope):
    """Equalized-LR layer: He scale sqrt(2 / ((1 + slope^2) fan_in)) applied before the bias."""
    scale = np.sqrt(2.0 / ((1.0 + slope ** 2) * np.prod(w.shape[:-1])))
    return scale * _conv(x, w, pad) + b


def _pn(x):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-8)


def _act(x):
    return _pn(np.where(x > 0, x, 0.2 * x))


def _up(x, s):
    return x.repeat(s, axis=1).repeat(s, axis=2)


def reference_forward(reader, z, labels, num_pitches, progress, ema=True, num_res=7):
    """Magenta's generator in float64 numpy from the facts; returns NHWC [B, T, F, 2]."""
    suffix = "/ExponentialMovingAverage" if ema else ""

    def var(k, layer, kind):
        sub = "conv2d/kernel" if kind == "kernel" else "bias"
        return reader.read(G.format(k, layer) + "/" + sub + suffix).astype(np.float64)

    blocks = 0
    while G.format(blocks + 1, "conv0") + "/conv2d/kernel" in reader:
        blocks += 1
    onehot = np.eye(num_pitches)[labels]
    x = _pn(np.concatenate([z.astype(np.float64), onehot], axis=1)[:, None, None, :])  # one-hot included
    sh, sw = reader.variables()[G.format(1, "conv0") + "/conv2d/kernel"].shape[:2]
    lods = []
    for k in range(1, blocks + 1):
        if k == 1:
            x = _act(_layer(x, var(1, "conv0", "kernel"), var(1, "conv0", "bias"), (sh - 1, sw - 1), 0.0))
        else:
            x = _act(_layer(_up(x, 2), var(k, "conv0", "kernel"), var(k, "conv0", "bias"), (1, 1), 0.0))
        x = _act(_layer(x, var(k, "conv1", "kernel"), var(k, "conv1", "bias"), (1, 1), 0.0))
        lods.append(x)
    out = 0.0
    for k in range(1, blocks + 1):
        alpha = max(0.0, min(progress - (k - 2), k - progress))
        rgb = np.tanh(_layer(lods[k - 1], var(k, "to_rgb", "kernel"), var(k, "to_rgb", "bias"), (0, 0), 1.0))
        out = out + alpha * _up(rgb, 2 ** (num_res - k))
    return out


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _load_quiet(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MagentaImportWarning)
        return load_magenta(path, **kw)


# ----------------------------------------------------------------------------- conversion

def test_config_inferred_from_tensor_shapes_and_flags():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a final-stage EMA checkpoint converts without warnings
        generator, spectral, meta = load_magenta(HIRES)
    cfg = generator.cfg
    assert type(generator).__name__ == "Generator"
    assert (cfg.latent_size, cfg.num_pitches, cfg.lowest_pitch) == (16, 61, 24)
    assert cfg.start_shape == (2, 16) and cfg.num_resolutions == 7 and cfg.kernel_size == 3
    assert cfg.widths[1:] == [8, 8, 8, 8, 8, 6, 3]
    assert (spectral.representation, spectral.time_steps, spectral.freq_bins) == ("mel_if", 128, 1024)
    assert spectral.norm_a == (0.0661371661726, 0.8) and spectral.norm_b == (0.113718730221, 0.0)
    assert meta["weights"] == "ema" and meta["progress"] == 6.0 and meta["global_step"] == 11_000_000
    assert meta["stage"] == 12 and meta["checkpoint"].endswith("model.ckpt-11000000")


def test_generator_matches_float64_reference_final_stage():
    generator, _, _ = load_magenta(HIRES)
    reader = CheckpointReader(HIRES / "stage_00012")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 16)).astype(np.float32)
    labels = np.array([0, 36, 60])  # MIDI 24, 60, 84
    with torch.no_grad():
        ours = generator(torch.from_numpy(z), torch.from_numpy(labels)).numpy().transpose(0, 2, 3, 1)
    ref = reference_forward(reader, z, labels, 61, progress=6.0)
    assert ours.shape == ref.shape == (3, 128, 1024, 2)
    assert _rel(ours, ref) < 1e-4
    raw = reference_forward(reader, z, labels, 61, progress=6.0, ema=False)
    assert _rel(raw, ref) > 0.05  # the EMA shadows really differ: using raw weights would be caught


def test_staged_generator_matches_reference_mid_transition():
    with pytest.warns(MagentaImportWarning) as record:
        generator, spectral, meta = load_magenta(LORES)
    messages = " ".join(str(w.message) for w in record)
    assert "raw generator weights" in messages and "not at the final stage" in messages
    assert isinstance(generator, StagedGenerator) and generator.progress == 2.5
    assert meta["weights"] == "raw" and meta["blocks"] == 4 and meta["global_step"] == 176
    assert (spectral.representation, spectral.time_steps, spectral.freq_bins) == ("if", 256, 512)
    assert generator.cfg.start_shape == (4, 8) and generator.cfg.latent_size == 8
    reader = CheckpointReader(LORES / "stage_00005")
    z = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    labels = np.array([5, 60])
    with torch.no_grad():
        ours = generator(torch.from_numpy(z), torch.from_numpy(labels)).numpy().transpose(0, 2, 3, 1)
    ref = reference_forward(reader, z, labels, 61, progress=2.5, ema=False)
    assert ours.shape == ref.shape == (2, 256, 512, 2)
    assert _rel(ours, ref) < 1e-4


def _rel_rms(ours: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((ours - want) ** 2, axis=-1) / np.mean(want ** 2, axis=-1))


@pytest.mark.parametrize("name", ["trained", "hires_ema"])
def test_audio_is_magentas_generate_samples_from_z(name):
    """Done-when: load_synth(dir).generate == Magenta's own Model.generate_samples_from_z."""
    path = TRAINED if name == "trained" else HIRES
    synth = load_synth(path, device="cpu")
    assert synth.spectral.mel_construction == "magenta"
    want = MAGENTA_AUDIO[f"{name}_waves"]
    waves = synth.generate(MAGENTA_AUDIO[f"{name}_z"], MAGENTA_AUDIO[f"{name}_pitches"])
    assert waves.shape == want.shape
    assert (_rel_rms(waves, want) <= 1e-3).all(), _rel_rms(waves, want)


def test_checkpoint_trained_by_magenta_loads_from_a_zip(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    synth = load_synth(_zip_dir(TRAINED, tmp_path / "mine.zip", top="mine"), device="cpu")
    assert synth.meta["weights"] == "ema"
    waves = synth.generate(MAGENTA_AUDIO["trained_z"], MAGENTA_AUDIO["trained_pitches"])
    assert (_rel_rms(waves, MAGENTA_AUDIO["trained_waves"]) <= 1e-3).all()


def test_the_unaliased_mel_matrix_would_be_the_wrong_sound():
    """The trap this guards: the same network through the earlier mel matrix is far off."""
    synth = load_synth(TRAINED, device="cpu")
    spec = synth.generate_specgrams(MAGENTA_AUDIO["trained_z"][:1], MAGENTA_AUDIO["trained_pitches"][:1])
    wrong = SpecgramsHelper(dataclasses.replace(synth.spectral, mel_construction="unaliased_edges"))
    waves = wrong.specgrams_to_waves(torch.as_tensor(spec)).numpy()
    assert _rel_rms(waves, MAGENTA_AUDIO["trained_waves"][:1])[0] > 0.1


def test_raw_weights_on_request_warn():
    with pytest.warns(MagentaImportWarning, match="raw generator weights .*requested"):
        raw, _, meta = load_magenta(HIRES, prefer_ema=False)
    assert meta["weights"] == "raw"
    ema, _, _ = load_magenta(HIRES)
    reader = CheckpointReader(HIRES / "stage_00012")
    name = G.format(3, "conv1") + "/conv2d/kernel"
    assert torch.equal(raw.blocks[2].conv1.weight, torch.from_numpy(reader.read(name).transpose(3, 2, 0, 1)))
    assert torch.equal(ema.blocks[2].conv1.weight,
                       torch.from_numpy(reader.read(name + "/ExponentialMovingAverage").transpose(3, 2, 0, 1)))


def test_discriminator_mapping_loads_strictly():
    generator, _, _ = load_magenta(HIRES)
    reader = CheckpointReader(HIRES / "stage_00012")
    disc = Discriminator(generator.cfg)
    disc.load_state_dict(discriminator_state_dict(reader, generator.cfg))  # strict: names and shapes match
    kernel = reader.read("Discriminator/discriminator_cond/classification_logits/dense/kernel")
    assert torch.equal(disc.classifier.weight, torch.from_numpy(kernel.T.copy()))
    logits, classes = disc(torch.zeros(2, 2, 128, 1024))
    assert logits.shape == (2,) and classes.shape == (2, 61)


# ----------------------------------------------------------------------------- shapes -> fmap, progress

def test_fit_fmap_reproduces_widths():
    paper = {k: ModelConfig().num_filters(k) for k in range(1, 8)}  # 256 x5, 128, 64, 32
    assert fit_fmap(paper, (4096, 1.0, 256)) == (4096, 1.0, 256)
    base, decay, fmax = fit_fmap(paper, (512, 1.0, 128))  # Magenta's defaults do not fit: search
    cfg = ModelConfig(fmap_base=base, fmap_decay=decay, fmap_max=fmax)
    assert [cfg.num_filters(k) for k in range(1, 8)] == list(paper.values())
    odd = {1: 12, 2: 12, 3: 12, 4: 12, 5: 8, 6: 4, 7: 2}
    base, decay, fmax = fit_fmap(odd, (4096, 1.0, 256))
    fitted = ModelConfig(fmap_base=base, fmap_decay=decay, fmap_max=fmax)
    assert [fitted.num_filters(k) for k in odd] == list(odd.values())
    with pytest.raises(MagentaError, match="cannot be written as"):
        fit_fmap({1: 8, 2: 9, 3: 8}, (4096, 1.0, 256))


@pytest.mark.parametrize("step, blocks, want", [
    (0, 7, 0.0), (800_000, 7, 0.0), (1_200_000, 7, 0.5), (1_600_000, 7, 1.0),
    (10_399_999, 7, 6.0), (11_000_000, 7, 6.0), (11_000_000, 4, 3.0), (176, 4, 3.0),
])
def test_compute_progress(step, blocks, want):
    flags = {"stable_stage_num_images": 800_000, "transition_stage_num_images": 800_000}
    if step == 176:
        flags = {"stable_stage_num_images": 32, "transition_stage_num_images": 32}
        want = 2.5
    assert compute_progress(step, flags, blocks) == pytest.approx(want)


# ----------------------------------------------------------------------------- zip, import, CLI

def _zip_dir(src: Path, dest: Path, top: str = "acoustic_only") -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file() and f.name != "manifest.json":
                zf.write(f, f"{top}/{f.relative_to(src)}")
    return dest


def test_zip_loads_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive = _zip_dir(HIRES, tmp_path / "acoustic_only.zip")
    z = np.random.default_rng(2).standard_normal((1, 16)).astype(np.float32)
    from_zip = load_synth(archive, device="cpu")
    assert from_zip.meta["zip_sha256"] and from_zip.meta["weights"] == "ema"
    from_dir = load_synth(HIRES, device="cpu")
    assert np.array_equal(from_zip.generate_specgrams(z, [60]), from_dir.generate_specgrams(z, [60]))
    extracted = list((tmp_path / "cache" / "gansynth-instrument" / "magenta").iterdir())
    assert len(extracted) == 1 and (extracted[0] / ".complete").is_file()
    marker_time = (extracted[0] / ".complete").stat().st_mtime_ns
    load_synth(archive, device="cpu")
    assert (extracted[0] / ".complete").stat().st_mtime_ns == marker_time  # not extracted again


def test_import_magenta_cli_writes_equivalent_model(tmp_path, capsys):
    out = tmp_path / "model"
    assert cli_main(["import-magenta", str(HIRES), "-o", str(out)]) == 0
    assert "ema weights" in capsys.readouterr().out
    provenance = json.loads((out / "config.json").read_text())["provenance"]
    assert provenance["weights"] == "ema" and provenance["global_step"] == 11_000_000
    assert json.loads((out / "config.json").read_text())["spectral"]["mel_construction"] == "magenta"
    z = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    a = load_synth(out, device="cpu").generate_specgrams(z, [30, 70])
    b = load_synth(HIRES, device="cpu").generate_specgrams(z, [30, 70])
    assert np.array_equal(a, b)


def test_import_refuses_a_checkpoint_short_of_the_final_stage(tmp_path, capsys):
    assert cli_main(["import-magenta", str(LORES), "-o", str(tmp_path / "m")]) == 1
    assert "progress 2.5 of 6" in capsys.readouterr().err
    assert not (tmp_path / "m" / "config.json").exists()


# ----------------------------------------------------------------------------- bad input

@pytest.fixture
def hires_copy(tmp_path):
    return Path(shutil.copytree(HIRES, tmp_path / "ckpt"))


def _set_flags(root: Path, **changes):
    flags = json.loads((root / "experiment.json").read_text())
    flags.update(changes)
    (root / "experiment.json").write_text(json.dumps(flags))


@pytest.mark.parametrize("change, match", [
    (dict(data_type="phase"), "data_type 'phase' is not supported"),
    (dict(to_rgb_activation="linear"), "to_rgb_activation='linear' is not supported"),
    (dict(data_normalizer="specgrams_freq_normalizer"), "data_normalizer .* not supported"),
    (dict(data_normalizer="specgrams_simple_normalizer"), "simple normalizer"),
    (dict(stable_stage_num_images="many"), "malformed training flags"),
])
def test_unsupported_or_malformed_flags(hires_copy, change, match):
    _set_flags(hires_copy, **change)
    with pytest.raises(MagentaError, match=match):
        _load_quiet(hires_copy)


def test_simple_normalizer_read_from_assets(hires_copy):
    _set_flags(hires_copy, data_normalizer="specgrams_simple_normalizer")
    (hires_copy / "assets").mkdir()
    np.savez(hires_copy / "assets" / "specgrams_simple_normalizer.npz", normalizer=np.array([0.1, 0.2, 0.7, -0.05]))
    _, spectral, _ = load_magenta(hires_copy)
    assert spectral.norm_a == (0.1, 0.7) and spectral.norm_b == (0.2, -0.05)


def test_missing_experiment_json_warns_and_uses_magentas_defaults(hires_copy):
    (hires_copy / "experiment.json").unlink()
    with pytest.warns(MagentaImportWarning, match="experiment.json: missing"):
        generator, spectral, meta = load_magenta(hires_copy)
    assert spectral.representation == "mel_if" and meta["progress"] == 6.0
    assert generator.cfg.widths[1:] == [8, 8, 8, 8, 8, 6, 3]


def test_last_stage_with_a_checkpoint_is_used(hires_copy):
    (hires_copy / "stage_00013").mkdir()
    (hires_copy / "stage_00002").mkdir()
    with pytest.warns(MagentaImportWarning, match="stage_00013: holds no checkpoint"):
        _, _, meta = load_magenta(hires_copy)
    assert meta["stage"] == 12


def test_stage_dir_or_unzip_folder_given_directly(tmp_path):
    _, _, meta = load_magenta(HIRES / "stage_00012")
    assert meta["stage"] == 12
    shutil.copytree(HIRES, tmp_path / "unzipped" / "acoustic_only")
    _, _, meta = load_magenta(tmp_path / "unzipped")
    assert meta["checkpoint"].startswith(str(tmp_path / "unzipped" / "acoustic_only"))


def test_missing_shard_names_the_file(hires_copy):
    (hires_copy / "stage_00012" / "model.ckpt-11000000.data-00000-of-00003").unlink()
    with pytest.raises(ModelFileError, match=r"data-00000-of-00003: missing data shard 1 of 3"):
        load_magenta(hires_copy)


def test_corrupt_index_is_a_model_file_error(hires_copy):
    index = hires_copy / "stage_00012" / "model.ckpt-11000000.index"
    index.write_bytes(index.read_bytes()[:-7])
    with pytest.raises(ModelFileError, match="model.ckpt-11000000.index: bad magic"):
        load_magenta(hires_copy)


@pytest.mark.parametrize("case", ["missing", "empty_dir", "not_zip", "corrupt_zip", "zip_without_checkpoint"])
def test_bad_paths(tmp_path, monkeypatch, case):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "x.zip"
    if case == "empty_dir":
        path = tmp_path / "dir"
        path.mkdir()
    elif case == "not_zip":
        path.write_text("hello")
    elif case == "corrupt_zip":
        data = _zip_dir(HIRES, tmp_path / "ok.zip").read_bytes()
        path.write_bytes(data[:200] + bytes(500) + data[700:])
    elif case == "zip_without_checkpoint":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("readme.txt", "nothing here")
    with pytest.raises(ModelFileError, match=str(path.name)):
        load_synth(path, device="cpu")


def test_inconsistent_shapes_are_clear_errors():
    from engine.gansynth.magenta.convert import infer_model_config
    from engine.gansynth.magenta.files import DEFAULT_FLAGS

    shapes = {n: i.shape for n, i in CheckpointReader(HIRES / "stage_00012").variables().items()}
    bad = dict(shapes)
    bad[G.format(3, "conv1") + "/conv2d/kernel"] = (3, 3, 8, 7)
    with pytest.raises(MagentaError, match=r"block_3/conv1/conv2d/kernel has shape \[3, 3, 8, 7\]"):
        infer_model_config(bad, DEFAULT_FLAGS)
    bad = dict(shapes)
    del bad[G.format(2, "to_rgb") + "/bias"]
    with pytest.raises(MagentaError, match="block_2/to_rgb/bias is missing"):
        infer_model_config(bad, DEFAULT_FLAGS)
    with pytest.raises(MagentaError, match="no generator variables"):
        infer_model_config({"global_step": ()}, DEFAULT_FLAGS)
    with pytest.raises(MagentaError, match="num_resolutions=5"):
        infer_model_config(shapes, dict(DEFAULT_FLAGS, num_resolutions=5))
