"""Model files: round trip, and one clear error naming the file for every kind of damage."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine import ModelFileError, load_synth
from engine.gansynth.config import PRESETS, SpectralConfig
from engine.gansynth.model import Generator
from engine.gansynth.modelfile import CONFIG_FILE, WEIGHTS_FILE, load_model_dir, save_model_dir
from tests.conftest import make_tiny_model_dir


def test_roundtrip_same_audio(tmp_path):
    d = make_tiny_model_dir(tmp_path / "m", seed=3)
    g, cfg, spectral, meta = load_model_dir(d)
    assert cfg == PRESETS["tiny"] and spectral == SpectralConfig()
    assert meta["provenance"]["seed"] == 3
    torch.manual_seed(3)
    ref = Generator(PRESETS["tiny"]).eval()
    z, labels = torch.randn(2, 16), torch.tensor([0, 60])
    with torch.no_grad():
        assert torch.equal(g(z, labels), ref(z, labels))


def test_fp16_storage_loads_as_fp32(tmp_path):
    g = Generator(PRESETS["tiny"])
    save_model_dir(tmp_path, g, SpectralConfig(), dtype=torch.float16)
    loaded, *_ = load_model_dir(tmp_path)
    w = next(loaded.parameters())
    assert w.dtype == torch.float32
    assert torch.allclose(w, next(g.parameters()).half().float())


def test_synth_api(tiny_model_dir):
    synth = load_synth(tiny_model_dir, device="cpu", threads=1)
    assert synth.sample_rate == 16000 and synth.latent_size == 16 and synth.pitch_range == (24, 84)
    z = synth.random_latents(3, seed=7)
    assert z.dtype == np.float32 and z.shape == (3, 16)
    assert np.array_equal(z, synth.random_latents(3, seed=7))
    audio = synth.generate(z, [24, 60, 84])
    assert audio.dtype == np.float32 and audio.shape == (3, 64000) and np.isfinite(audio).all()
    assert np.allclose(synth.generate(z[1:2], [60])[0], audio[1], atol=1e-5)
    assert synth.generate_specgrams(z, [24, 60, 84]).shape == (3, 2, 128, 1024)
    with pytest.raises(ValueError, match="pitches must lie in 24..84"):
        synth.generate(z[:1], [85])
    with pytest.raises(ValueError, match="z must be"):
        synth.generate(np.zeros((1, 5)), [60])


def test_precision_auto_is_bf16_only_where_native(tiny_model_dir):
    from engine.gansynth.synth import native_bf16
    fp32 = load_synth(tiny_model_dir, device="cpu", threads=1)
    auto = load_synth(tiny_model_dir, device="cpu", threads=1, precision="auto")
    assert fp32.precision == "fp32"
    assert auto.precision == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    bf16 = load_synth(tiny_model_dir, device="cpu", threads=1, precision="bf16")
    z = fp32.random_latents(1, seed=1)
    a, b = fp32.generate_specgrams(z, [60]), bf16.generate_specgrams(z, [60])
    assert 0 < np.sqrt(np.mean((a - b) ** 2) / np.mean(a ** 2)) < 0.3  # bf16 rounds (random tiny weights: ~0.1)
    with pytest.raises(ValueError, match="precision must be one of"):
        load_synth(tiny_model_dir, device="cpu", precision="fp8")


@pytest.fixture
def model_copy(tmp_path):
    return make_tiny_model_dir(tmp_path / "model")


def test_wrong_path(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_synth(tmp_path / "nope")


def test_missing_weights(model_copy):
    (model_copy / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelFileError, match=f"{WEIGHTS_FILE}: missing"):
        load_model_dir(model_copy)


def test_corrupt_json(model_copy):
    (model_copy / CONFIG_FILE).write_text("{ not json")
    with pytest.raises(ModelFileError, match=f"{CONFIG_FILE}: not valid JSON"):
        load_model_dir(model_copy)


def test_bad_field(model_copy):
    meta = json.loads((model_copy / CONFIG_FILE).read_text())
    meta["model"]["fmap_max"] = "wide"
    (model_copy / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="fmap_max"):
        load_model_dir(model_copy)


def test_truncated_weights(model_copy):
    data = (model_copy / WEIGHTS_FILE).read_bytes()
    (model_copy / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model_dir(model_copy)


def test_mismatched_config(model_copy):
    meta = json.loads((model_copy / CONFIG_FILE).read_text())
    meta["model"]["fmap_max"] = 16
    (model_copy / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="shape"):
        load_model_dir(model_copy)


def test_nan_weights(tmp_path):
    g = Generator(PRESETS["tiny"])
    with torch.no_grad():
        g.blocks[0].conv1.bias[0] = float("nan")
    save_model_dir(tmp_path, g, SpectralConfig())
    with pytest.raises(ModelFileError, match="NaN"):
        load_model_dir(tmp_path)


def test_pickle_is_never_loaded(model_copy):
    """A pickle disguised as the weights file is rejected, not executed."""
    marker = model_copy / "pwned"
    payload = f"import os\nos.system('touch {marker}')"
    torch.save({"x": torch.zeros(1)}, model_copy / WEIGHTS_FILE)  # a zip/pickle, not safetensors
    with pytest.raises(ModelFileError):
        load_model_dir(model_copy)
    assert not marker.exists() and payload


def test_engine_imports_no_qt():
    code = (
        "import pkgutil, importlib, sys, engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'app', 'shiboken6')]\n"
        "print(len(sys.modules)); assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr


def test_cli_generate_writes_wavs(tiny_model_dir, tmp_path):
    import soundfile as sf

    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "engine.commands.cli", "generate", "--model", str(tiny_model_dir),
                             "--count", "2", "--pitch", "60", "--seed", "1", "-o", str(out)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2
    audio, sr = sf.read(wavs[0])
    assert sr == 16000 and audio.shape == (64000,) and 0.5 < np.abs(audio).max() <= 0.9 + 1e-6


def test_cli_generate_bad_model_is_clear(tmp_path):
    result = subprocess.run([sys.executable, "-m", "engine.commands.cli", "generate", "--model", str(tmp_path),
                             "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=240)
    assert result.returncode == 1 and str(tmp_path) in result.stderr


def test_files_without_mel_construction_load_as_they_were_trained(tmp_path):
    """Model files written before the field existed were trained on the unaliased mel matrix."""
    d = make_tiny_model_dir(tmp_path / "m", seed=3)
    meta = json.loads((d / CONFIG_FILE).read_text())
    assert meta["spectral"]["mel_construction"] == "magenta"  # new files record Magenta's
    del meta["spectral"]["mel_construction"]
    (d / CONFIG_FILE).write_text(json.dumps(meta))
    _, _, spectral, _ = load_model_dir(d)
    assert spectral.mel_construction == "unaliased_edges"
    meta["spectral"]["mel_construction"] = "slaney"
    (d / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match=r"config\.json.*mel_construction"):
        load_model_dir(d)


def test_bundled_model_keeps_the_mel_matrix_it_was_trained_on():
    """The exported model's spectral config (mel construction included) is the one its training
    state recorded: a model decoded with another mel matrix than it learned sounds wrong."""
    from engine.gansynth.config import MEL_CONSTRUCTIONS, spectral_from_dict
    from engine.training import checkpoint
    from engine.util.resources import default_model_path

    _, _, spectral, _ = load_model_dir(default_model_path())
    _, header = checkpoint.load(default_model_path() / "training_state" / "checkpoint.safetensors")
    assert spectral == spectral_from_dict(header["spectral"])
    assert spectral.mel_construction in MEL_CONSTRUCTIONS


def test_a_config_nested_thousands_deep_is_a_clear_error(tmp_path):
    """Found by a corpus of malformed files: RecursionError escaped load_synth."""
    d = make_tiny_model_dir(tmp_path / "m", seed=3)
    (d / CONFIG_FILE).write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(ModelFileError, match=r"config\.json: JSON nested too deeply"):
        load_synth(d)
    (d / CONFIG_FILE).write_text('{"a": ' * 100 + "1" + "}" * 100)  # parses, but 100 levels
    with pytest.raises(ModelFileError, match=r"config\.json: JSON nested 100 levels deep \(at most 64\)"):
        load_synth(d)


def test_synth_renders_a_span_equal_to_the_start_of_the_whole_note(tiny_model_dir):
    synth = load_synth(tiny_model_dir, device="cpu", threads=1)
    z = synth.random_latents(2, seed=4)
    whole = synth.generate(z, [40, 70])
    assert synth.span_frames(46600) == 98 and synth.span_frames(64000) == 128
    for samples in (1, 20000, 46600, 64000, 99999):
        span = synth.generate(z, [40, 70], samples=samples)
        n = min(samples, synth.num_samples)
        assert span.shape == (2, n)
        np.testing.assert_allclose(span, whole[:, :n], rtol=0, atol=1e-4 * np.abs(whole).max())
