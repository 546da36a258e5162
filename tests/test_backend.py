"""Generator backends: OpenVINO and ncnn give torch's notes, the probe runs once per key and is
cached, explicit choices skip it, and a missing package is named."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from engine.gansynth import backend as backend_mod
from engine.gansynth.backend import PROBE_FILE, BackendUnavailable, probe_key
from engine.gansynth.config import PRESETS, SpectralConfig
from engine.gansynth.model import Generator
from engine.gansynth.ncnngen import NcnnGenerator
from engine.gansynth.synth import Synth


def rel_rms(got, want) -> np.ndarray:
    """Per-row relative RMS of got vs want, [n, ...] -> [n]."""
    got, want = np.asarray(got).reshape(len(got), -1), np.asarray(want).reshape(len(want), -1)
    return np.sqrt(((got - want) ** 2).sum(1) / (want ** 2).sum(1))


@pytest.fixture()
def generator():
    torch.manual_seed(5)
    return Generator(PRESETS["tiny"])


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANSYNTH_CACHE_DIR", str(tmp_path))
    return tmp_path / PROBE_FILE


@pytest.fixture()
def probes(monkeypatch):
    """Counts the probes that run (they run for real)."""
    calls = []
    real = backend_mod.probe

    def counting(generator, threads, runs=2):
        calls.append(threads)
        return real(generator, threads, runs)
    monkeypatch.setattr(backend_mod, "probe", counting)
    return calls


def no_probe(*args, **kwargs):
    raise AssertionError("the probe ran")


@pytest.mark.parametrize("name", ["openvino", "ncnn"])
def test_alternative_backends_give_torch_notes(generator, name):
    reference = Synth(generator, SpectralConfig(), "cpu", threads=1, backend="torch", batch_size=2)
    fast = Synth(generator, SpectralConfig(), "cpu", threads=1, backend=name, batch_size=2)
    assert (reference.backend, fast.backend) == ("torch", name)
    z = reference.random_latents(3, seed=1)
    pitches = [30, 60, 84]
    # whole notes (batches of 2 and 1), and the span the instrument asks for
    assert rel_rms(fast.generate(z, pitches), reference.generate(z, pitches)).max() < 1e-3
    span = 49000
    got, want = fast.generate(z, pitches, samples=span), reference.generate(z, pitches, samples=span)
    assert got.shape == want.shape == (3, span)
    assert rel_rms(got, want).max() < 1e-3
    assert rel_rms(fast.generate_specgrams(z, pitches), reference.generate_specgrams(z, pitches)).max() < 1e-4
    if name == "openvino":
        # one thread, not pinned to a core: render processes side by side must not share one core
        for request in fast._runner._requests.values():
            compiled = request.get_compiled_model()
            assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
            assert compiled.get_property("ENABLE_CPU_PINNING") is False
    else:
        assert fast._runner._net.opt.num_threads == 1
        assert not fast._runner._net.opt.use_fp16_storage and not fast._runner._net.opt.use_bf16_storage


def test_ncnn_crops_every_span_and_follows_weight_changes(generator):
    """One ncnn net serves every span (the crops' shapes are inputs), and a changed weight (a
    training step, a loaded state) rebuilds it."""
    generator.eval()
    run = NcnnGenerator(generator, threads=1)
    z = torch.from_numpy(np.random.default_rng(2).standard_normal((2, generator.cfg.latent_size), np.float32))
    labels = torch.tensor([0, 60])
    for rows in (1, 2, 3, 31, 64, 93, 127, None):
        with torch.inference_mode():
            want = generator(z, labels, time_rows=rows)
        got = run(z, labels, rows)
        assert got.shape == want.shape
        assert rel_rms(got, want).max() < 1e-4, rows
    net = run._net
    with torch.no_grad():
        generator.blocks[3].conv1.weight.mul_(1.5)
    with torch.inference_mode():
        want = generator(z, labels)
    assert rel_rms(run(z, labels), want).max() < 1e-4
    assert run._net is not net


def test_auto_probes_once_per_key_and_caches(generator, cache, probes):
    first = Synth(generator, SpectralConfig(), "cpu", threads=1, backend="auto")
    assert first.backend in ("torch", "openvino", "ncnn") and probes == [1]
    entries = json.loads(cache.read_text())
    entry = entries[probe_key(generator, 1)]
    assert entry["backend"] == first.backend
    assert entry["torch_ms"] > 0 and entry["openvino_ms"] > 0 and entry["ncnn_ms"] > 0
    assert entry["openvino_rel_rms"] < 1e-4 and entry["ncnn_rel_rms"] < 1e-4
    if first.backend != "torch":  # the winner is at least 5 % faster than torch, and the fastest
        assert entry[f"{first.backend}_ms"] <= 0.95 * entry["torch_ms"]
        assert entry[f"{first.backend}_ms"] == min(entry["openvino_ms"], entry["ncnn_ms"])
    again = Synth(generator, SpectralConfig(), "cpu", threads=1, backend="auto")
    assert again.backend == first.backend and probes == [1]  # answered from the cache
    Synth(generator, SpectralConfig(), "cpu", threads=2, backend="auto")
    assert probes == [1, 2]  # another thread count is another question
    assert len(json.loads(cache.read_text())) == 2


@pytest.mark.parametrize("answer", ["torch", "openvino", "ncnn"])
def test_cached_answer_decides(generator, cache, monkeypatch, answer):
    cache.write_text(json.dumps({probe_key(generator, 1): {"backend": answer}}))
    monkeypatch.setattr(backend_mod, "probe", no_probe)
    synth = Synth(generator, SpectralConfig(), "cpu", threads=1, backend="auto")
    assert synth.backend == answer
    assert type(synth._runner).__name__ == {"torch": "NoneType", "openvino": "OpenVinoGenerator",
                                             "ncnn": "NcnnGenerator"}[answer]


def test_unreadable_cache_probes_again(generator, cache, probes):
    cache.write_text("{not json")
    Synth(generator, SpectralConfig(), "cpu", threads=1, backend="auto")
    assert probes == [1]
    assert probe_key(generator, 1) in json.loads(cache.read_text())


def test_explicit_backends_never_probe(generator, cache, monkeypatch):
    monkeypatch.setattr(backend_mod, "probe", no_probe)
    assert Synth(generator, SpectralConfig(), "cpu", threads=1).backend == "torch"  # the library default
    assert Synth(generator, SpectralConfig(), "cpu", threads=1, backend="torch").backend == "torch"
    assert Synth(generator, SpectralConfig(), "cpu", threads=1, backend="openvino").backend == "openvino"
    assert Synth(generator, SpectralConfig(), "cpu", threads=1, backend="ncnn").backend == "ncnn"
    assert not cache.exists()


def test_auto_keeps_torch_for_bf16(generator, cache, monkeypatch):
    monkeypatch.setattr(backend_mod, "probe", no_probe)
    assert Synth(generator, SpectralConfig(), "cpu", precision="bf16", backend="auto").backend == "torch"
    for name in ("openvino", "ncnn"):
        with pytest.raises(BackendUnavailable, match="fp32 on the CPU"):
            Synth(generator, SpectralConfig(), "cpu", precision="bf16", backend=name)
    with pytest.raises(ValueError, match="backend must be one of"):
        Synth(generator, SpectralConfig(), "cpu", backend="onnx")


@pytest.mark.parametrize("name", ["openvino", "ncnn"])
def test_a_missing_package_is_named(generator, cache, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # import <name> -> ImportError
    with pytest.raises(BackendUnavailable, match=rf"needs the '{name}' package.*pip install {name}"):
        Synth(generator, SpectralConfig(), "cpu", backend=name)
    other = {"openvino": "ncnn", "ncnn": "openvino"}[name]
    assert backend_mod.available(other) and not backend_mod.available(name)
    # auto probes what is installed, quietly
    assert Synth(generator, SpectralConfig(), "cpu", threads=1, backend="auto").backend in ("torch", other)
    entry = json.loads(cache.read_text())[probe_key(generator, 1)]
    assert f"{other}_ms" in entry and f"{name}_ms" not in entry
    monkeypatch.setitem(sys.modules, other, None)
    monkeypatch.setattr(backend_mod, "probe", no_probe)
    assert Synth(generator, SpectralConfig(), "cpu", backend="auto").backend == "torch"  # none: no probe


def test_cli_backend_option(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from engine.commands.cli import main

    out = tmp_path / "wavs"
    assert main(["generate", "--model", str(tiny_model_dir), "--count", "1", "-o", str(out),
                 "--backend", "torch"]) == 0
    assert len(list(out.glob("*.wav"))) == 1
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert main(["generate", "--model", str(tiny_model_dir), "--count", "1", "-o", str(out),
                 "--backend", "openvino"]) == 1
    assert "pip install openvino" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["openvino", "ncnn"])
def test_alternative_backends_take_calls_from_several_threads(generator, name):
    """The window's previews, MIDI renders and in-process renders call one Synth from several
    threads: each call gets its own notes, equal to a call alone."""
    import threading

    synth = Synth(generator, SpectralConfig(), "cpu", threads=1, backend=name)
    z = synth.random_latents(4, seed=3)
    alone = [synth.generate(z[i:i + 1], [40 + 10 * i], samples=30000 + 1000 * i) for i in range(4)]
    got, errors = {}, []

    def call(i):
        try:
            for _ in range(5):
                got[i] = synth.generate(z[i:i + 1], [40 + 10 * i], samples=30000 + 1000 * i)
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        np.testing.assert_array_equal(got[i], alone[i])


def test_an_engine_that_fails_here_is_left_out_of_auto(generator, cache, monkeypatch):
    """A CPU or build where an installed engine fails (to build or to run): auto records why,
    picks among the others, and the model loads."""
    from engine.gansynth import ncnngen

    def broken(self, z, labels, time_rows=None):
        raise RuntimeError("ncnn failed to run the generator (status -100)")
    monkeypatch.setattr(ncnngen.NcnnGenerator, "__call__", broken)
    synth = Synth(generator, SpectralConfig(), "cpu", threads=1, backend="auto")
    assert synth.backend in ("torch", "openvino")
    entry = json.loads(cache.read_text())[probe_key(generator, 1)]
    assert entry["ncnn_error"] == "RuntimeError: ncnn failed to run the generator (status -100)"
    assert "ncnn_ms" not in entry and entry["openvino_ms"] > 0
    assert len(synth.generate(synth.random_latents(1, seed=0), [60])[0]) == synth.num_samples


def test_cli_backends_shows_the_kept_answer_and_measures_again(tiny_model_dir, cache, probes, capsys):
    from engine.commands.cli import main
    from engine.gansynth.synth import load_synth

    model = ["backends", "--model", str(tiny_model_dir)]
    assert main(model) == 0
    assert "1 thread(s): not measured yet" in capsys.readouterr().out and probes == []
    assert main(model + ["--probe"]) == 0
    out = capsys.readouterr().out
    generator = load_synth(tiny_model_dir, device="cpu").generator
    entry = json.loads(cache.read_text())[probe_key(generator, 1)]
    assert probes == [1] and entry["probed_at"].endswith("UTC")
    assert f"1 thread(s): {entry['backend']}, measured {entry['probed_at']}: torch " in out
    assert main(model) == 0   # shown from the cache, and the instrument's load uses it
    assert f"measured {entry['probed_at']}" in capsys.readouterr().out and probes == [1]
    assert load_synth(tiny_model_dir, device="cpu", threads=1, backend="auto").backend == entry["backend"]
    assert probes == [1]
    cache.write_text(json.dumps({probe_key(generator, 1): {**entry, "backend": "openvino", "probed_at": "then"}}))
    assert main(model + ["--probe", "--threads", "1,2"]) == 0   # a stale answer is replaced
    entries = json.loads(cache.read_text())
    assert probes == [1, 1, 2] and entries[probe_key(generator, 1)]["probed_at"] != "then"
    assert len(entries) == 2
    assert main(model + ["--threads", "0"]) == 1
    assert "--threads wants counts like 1 or 1,2, not '0'" in capsys.readouterr().err
