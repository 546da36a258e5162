"""Trainer: GLO and GAN steps learn on toy data, resume is exact, 2-process gloo DDP == 1 process,
the CLI trains on a real (TimGM6mb) NSynth-format dataset and exports loadable model files."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch

from engine.gansynth.config import PRESETS, SpectralConfig
from engine.gansynth.reconstruction import long_window_spectrum_db, spectrum_l1
from engine.gansynth.spectral import SpecgramsHelper
from engine.training import checkpoint as ckpt
from engine.training.batches import TrainData
from engine.training.recipe import (CONFIG_PRESETS, Segment, TrainConfig, config_from_dict, config_to_dict,
                                    progressive_segments)
from engine.training.train import build_trainer
from engine.training.trainer import Trainer, train_precision

TINY = CONFIG_PRESETS["tiny"]()
TOY_SPECTRAL = SpectralConfig(num_samples=64, time_steps=8, freq_bins=16, representation="if")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_data(n: int = 32, seed: int = 0) -> TrainData:
    """Tiny 'notes': a bright line whose frequency row follows the pitch, level set by the instrument."""
    rng = np.random.default_rng(seed)
    pitches = rng.choice([36, 48, 60, 72], n)
    instruments = np.arange(n) % 4
    specs = np.full((n, 2, *TINY.model.output_shape), -0.8, np.float32)
    for i, (p, inst) in enumerate(zip(pitches, instruments)):
        specs[i, 0, :, (p - 24) // 4] = 0.2 + 0.1 * inst
        specs[i, 1] = rng.uniform(-0.1, 0.1, specs[i, 1].shape)
    return TrainData(specs.astype(np.float16), pitches, instruments, TOY_SPECTRAL)


def config(*segments, **kw) -> TrainConfig:
    return dataclasses.replace(TINY, segments=tuple(segments), **kw)


def run_steps(trainer: Trainer, n: int) -> list[dict]:
    return [trainer.train_step() for _ in range(n)]


def test_presets_and_config_round_trip():
    paper = CONFIG_PRESETS["paper"]()
    assert len(paper.segments) == 13 and paper.total_images == 11_000_000
    assert [(s.start_progress, s.end_progress) for s in paper.segments[:3]] == [(0, 0), (0, 1), (1, 1)]
    lite = CONFIG_PRESETS["lite"]()
    assert lite.uses_glo and lite.uses_gan and lite.segments[-1].end_progress == lite.model.final_progress
    gpu = CONFIG_PRESETS["gpu"]()  # the v2 default model's run: lite's model and losses, larger batches
    assert gpu.model == lite.model and gpu.total_images == 1_302_976 and not gpu.uses_gan
    assert dataclasses.replace(gpu, segments=lite.segments, checkpoint_minutes=lite.checkpoint_minutes,
                               sample_every=lite.sample_every) == lite
    tone = CONFIG_PRESETS["tone"]()  # gpu continued with the long-window spectrum loss (resumes v2's state)
    assert tone.segments[:-1] == gpu.segments and tone.model == gpu.model and tone.segments[-1].spectrum_weight > 0
    for cfg in (paper, lite, gpu, tone, TINY):
        assert config_from_dict(json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        config_from_dict(dict(config_to_dict(TINY), bogus=1))
    assert Segment("gan", 2.0, 3.0, 100).progress_at(25) == 2.25


def test_auto_precision_is_bf16_only_where_the_device_runs_it_natively():
    from engine.gansynth.synth import native_bf16

    cpu = torch.device("cpu")
    assert train_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert train_precision("bf16", cpu) == "bf16" and train_precision("fp32", cpu) == "fp32"
    assert CONFIG_PRESETS["lite"]().precision == CONFIG_PRESETS["gpu"]().precision == "auto"
    trainer = Trainer(config(Segment("glo", 0.0, 0.0, 64, 8, 1e-3), precision="auto"), toy_data(), "unused",
                      log=False)
    assert trainer.precision == train_precision("auto", cpu)
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(TINY, precision="fp16")


def test_glo_reduces_reconstruction_error():
    trainer = Trainer(config(Segment("glo", 2.0, 2.0, 10_000, 8, 3e-3)), toy_data(), "unused", log=False)
    losses = [s["glo/l1"] for s in run_steps(trainer, 80)]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_glo_loss_weights_loud_bins():
    """Same state, same batch: the energy weights raise the terms they weigh, and only those."""
    def first_step(**kw):
        trainer = Trainer(config(Segment("glo", 2.0, 2.0, 10_000, 8, 3e-3), **kw), toy_data(), "unused", log=False)
        return trainer.train_step()

    plain = first_step()
    gated = first_step(glo_if_gate=True)
    weighted = first_step(glo_if_gate=True, glo_if_energy_weight=8.0)
    mag = first_step(glo_energy_weight=4.0)
    assert gated["glo/l1_if"] < plain["glo/l1_if"]               # quiet bins' IF no longer counts
    assert weighted["glo/l1_if"] > gated["glo/l1_if"]            # loud bins' IF counts more
    assert weighted["glo/l1_logmag"] == pytest.approx(gated["glo/l1_logmag"])
    assert mag["glo/l1_logmag"] > plain["glo/l1_logmag"] and mag["glo/l1_if"] == pytest.approx(plain["glo/l1_if"])


def test_audio_loss_fits_the_resynthesis():
    """A segment's audio_weight adds the L1 between the real log-magnitude and the generated
    spectrogram's resynthesis analysed again, at full resolution only, and training lowers it."""
    data = toy_data()

    def trainer(weight, progress=2.0):
        return Trainer(config(Segment("glo", progress, progress, 10_000, 8, 3e-3, audio_weight=weight)),
                       data, "unused", log=False)

    plain, audio = trainer(0.0).train_step(), trainer(1.0).train_step()
    assert "glo/l1_audio" not in plain and audio["glo/l1_audio"] > 0
    assert audio["glo/l1"] == pytest.approx(plain["glo/l1"] + audio["glo/l1_audio"], rel=1e-5)
    assert "glo/l1_audio" not in trainer(1.0, progress=1.0).train_step()   # below full resolution
    errors = [s["glo/l1_audio"] for s in run_steps(trainer(1.0), 60)]
    assert np.mean(errors[-10:]) < 0.8 * np.mean(errors[:10])
    with pytest.raises(ValueError, match="GLO segments only"):
        Segment("gan", 2.0, 2.0, 100, audio_weight=1.0)


def test_long_window_spectrum_sees_noise_between_partials_as_energy():
    """0.3-2.0 s in one Hann window, 4.7 Hz bands to 7.5 kHz: white noise of power p reads
    p * sum(w^2) in every band; a partial stands far above it; the loss floors bands 80 dB below
    the real note's loudest and grows with the noise added."""
    rate = 16000
    t = torch.arange(4 * rate, dtype=torch.float64) / rate
    tone = (0.5 * torch.sin(2 * np.pi * 200.0 * t))[None]
    noise = torch.from_numpy(np.random.default_rng(3).standard_normal((1, len(t))))
    window = torch.hann_window(int(1.7 * rate), periodic=False, dtype=torch.float64)
    spectrum = long_window_spectrum_db(1e-2 * noise, rate)
    assert spectrum.shape == (1, int(7500 * 1.7) // 8) and spectrum.dtype == torch.float32
    expected = 10 * np.log10(1e-4 * float((window ** 2).sum()))
    mean_power_db = 10 * np.log10(float((10.0 ** (spectrum.double() / 10)).mean()))
    assert mean_power_db == pytest.approx(expected, abs=0.2)
    partial = long_window_spectrum_db(tone, rate)
    band = int(200.0 * 1.7) // 8                                        # the band holding 200 Hz
    assert float(partial[0, band]) > float(partial[0, band + 20:].amax()) + 60
    assert float(spectrum_l1(partial, partial)) == 0.0
    below = partial < partial.amax() - 80.0
    assert 0 < int(below.sum()) < below.numel()
    assert float(spectrum_l1(torch.where(below, partial - 50.0, partial), partial)) == 0.0   # floored
    assert float(spectrum_l1(partial + 6.0, partial)) == pytest.approx(6.0 / 20.0 * float((~below).float().mean()),
                                                                        rel=1e-3)
    losses = [float(spectrum_l1(long_window_spectrum_db(tone + a * noise, rate), partial)) for a in (1e-4, 1e-3, 1e-2)]
    assert losses == sorted(losses) and losses[0] > 0


def _with_spectra(data: TrainData) -> TrainData:
    """The toy notes' long-window spectra, of their real spectrograms inverted (the toy data has no
    recordings)."""
    helper = SpecgramsHelper(data.spectral)
    audio = helper.specgrams_to_waves(torch.from_numpy(np.asarray(data.specs, np.float32)))
    spectra = long_window_spectrum_db(audio, data.spectral.sample_rate).numpy().astype(np.float16)
    return TrainData(data.specs, data.pitches, data.instruments, data.spectral, spectra=spectra)


def test_spectrum_loss_fits_the_resynthesis_long_window_spectrum():
    """A segment's spectrum_weight adds the long-window spectrum L1 of the resynthesis, at full
    resolution only, and training lowers it; data without spectra is refused by name."""
    data = _with_spectra(toy_data())

    def trainer(weight, progress=2.0, data=data):
        return Trainer(config(Segment("glo", progress, progress, 10_000, 8, 3e-3, audio_weight=1.0,
                                      spectrum_weight=weight)), data, "unused", log=False)

    plain, spectrum = trainer(0.0).train_step(), trainer(2.0).train_step()
    assert "glo/l1_spectrum" not in plain and spectrum["glo/l1_spectrum"] > 0
    assert spectrum["glo/l1"] == pytest.approx(plain["glo/l1"] + 2.0 * spectrum["glo/l1_spectrum"], rel=1e-5)
    assert spectrum["glo/l1_audio"] == pytest.approx(plain["glo/l1_audio"], rel=1e-5)
    assert "glo/l1_spectrum" not in trainer(2.0, progress=1.0).train_step()   # below full resolution
    errors = [s["glo/l1_spectrum"] for s in run_steps(trainer(2.0), 60)]
    assert np.mean(errors[-10:]) < 0.8 * np.mean(errors[:10])
    with pytest.raises(ValueError, match="long-window spectra"):
        trainer(2.0, data=toy_data()).train_step()
    with pytest.raises(ValueError, match="GLO segments only"):
        Segment("gan", 2.0, 2.0, 100, spectrum_weight=1.0)


def test_gan_steps_reduce_discriminator_loss():
    trainer = Trainer(config(Segment("gan", 2.0, 2.0, 10_000, 8, 2e-3)), toy_data(), "unused", log=False)
    stats = run_steps(trainer, 40)
    d_loss = [s["d/loss"] for s in stats]
    assert np.mean(d_loss[-8:]) < np.mean(d_loss[:8])
    assert all(np.isfinite(s["d/gp"]) and np.isfinite(s["g/loss"]) for s in stats)


def _schedule() -> TrainConfig:
    return config(Segment("glo", 0.0, 0.0, 16, 8), Segment("glo", 0.0, 1.0, 16, 8),
                  Segment("gan", 1.0, 1.0, 16, 8), Segment("gan", 1.0, 2.0, 16, 8), Segment("gan", 2.0, 2.0, 16, 8))


def _all_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    tensors, _ = trainer.state()
    return {k: v for k, v in tensors.items() if not k.startswith("rng.")}


def test_resume_equals_uninterrupted(tmp_path):
    data = toy_data()
    whole = build_trainer(_schedule(), data, tmp_path / "whole", log=False)
    whole.run(progress_bar=False)
    assert whole.done and whole.step == 10

    part = build_trainer(_schedule(), data, tmp_path / "part", log=False)
    part.run(max_steps=3, progress_bar=False)       # stops inside the fade-in segment
    assert (part.segment, part.seg_images) == (1, 8)
    part2 = build_trainer(_schedule(), data, tmp_path / "part", resume=True, log=False)
    assert (part2.segment, part2.seg_images, part2.step) == (1, 8, 3)
    part2.run(max_steps=4, progress_bar=False)       # stops inside the GAN segments
    part3 = build_trainer(_schedule(), data, tmp_path / "part", resume=True, log=False)
    part3.run(progress_bar=False)
    assert part3.done and part3.step == 10
    a, b = _all_tensors(whole), _all_tensors(part3)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_checkpoint_exports_model_with_latent_prior(tmp_path):
    from engine.gansynth.modelfile import load_model_dir

    trainer = build_trainer(_schedule(), toy_data(), tmp_path, log=False)
    trainer.run(max_steps=3, progress_bar=False)
    generator, cfg, spectral, meta = load_model_dir(tmp_path / "model")
    # the model as each finished segment left it (segment 0 is 2 steps; segment 1 is not done)
    assert load_model_dir(tmp_path / "model-segment0")[1] == cfg and not (tmp_path / "model-segment1").exists()
    assert cfg == TINY.model and spectral == TOY_SPECTRAL
    prior = meta["provenance"]["latent_prior"]
    assert len(prior["mean"]) == cfg.latent_size and len(prior["basis"]) == 4  # 4 toy instruments
    np.testing.assert_allclose(prior["centers"], trainer.latents.detach().numpy(), atol=1e-5)
    assert prior["spread"] == TINY.glo_sample_spread and prior["radius"] == trainer.latent_radius
    torch.testing.assert_close(generator.state_dict()["blocks.0.conv0.weight"],
                               trainer.ema.state_dict()["blocks.0.conv0.weight"])
    # Synth.random_latents draws from that prior: four instruments near four different learned ones.
    from engine.gansynth.synth import load_synth

    synth = load_synth(tmp_path / "model", device="cpu")
    z = synth.random_latents(4, seed=3)
    nearest = np.linalg.norm(z[:, None] - np.asarray(prior["centers"])[None], axis=2).argmin(1)
    assert sorted(nearest) == [0, 1, 2, 3]
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), trainer.latent_radius, rtol=1e-5)
    np.testing.assert_array_equal(synth.random_latents(2, seed=3), synth.random_latents(2, seed=3))
    from engine.gansynth.modelfile import ModelFileError

    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "model", bad)
    meta = json.loads((bad / "config.json").read_text())
    meta["provenance"]["latent_prior"]["mean"] = [0.0, 1.0]
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="latent_prior"):
        load_synth(bad, device="cpu")
    # The same model files come out of the checkpoint alone (no data), optionally as float16.
    from engine.training.train import export_checkpoint

    export_checkpoint(tmp_path, tmp_path / "fp16", torch.float16)
    g16, *_ = load_model_dir(tmp_path / "fp16")
    torch.testing.assert_close(g16.state_dict()["blocks.0.conv0.weight"], generator.state_dict()["blocks.0.conv0.weight"],
                               rtol=1e-3, atol=1e-3)


def test_corrupt_or_mismatched_checkpoint_is_a_clear_error(tmp_path):
    trainer = build_trainer(_schedule(), toy_data(), tmp_path, log=False)
    trainer.run(max_steps=1, progress_bar=False)
    path = tmp_path / ckpt.CHECKPOINT_FILE
    other = dataclasses.replace(_schedule(), model=dataclasses.replace(TINY.model, latent_size=4))
    with pytest.raises(ckpt.CheckpointError, match="model config"):
        build_trainer(other, toy_data(), tmp_path, resume=True, log=False)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError, match="checkpoint.safetensors"):
        build_trainer(_schedule(), toy_data(), tmp_path, resume=True, log=False)


def test_compact_state_resumes_the_schedule(tmp_path):
    trainer = build_trainer(_schedule(), toy_data(), tmp_path, log=False)
    trainer.run(max_steps=5, progress_bar=False)
    tensors, header = trainer.state(compact=True)
    assert all(t.dtype in (torch.bfloat16, torch.uint8, torch.float32) for t in tensors.values())
    assert not any(k.endswith(".exp_avg") for k in tensors)
    assert not any(k.startswith("opt.g_glo.") for k in tensors)    # the saved segment is adversarial
    ckpt.save(tmp_path / "compact" / ckpt.CHECKPOINT_FILE, tensors, header)
    resumed = build_trainer(_schedule(), toy_data(), tmp_path / "compact", resume=True, log=False)
    assert (resumed.segment, resumed.step) == (trainer.segment, trainer.step)
    torch.testing.assert_close(resumed.G.state_dict()["blocks.0.conv1.weight"],
                               trainer.G.state_dict()["blocks.0.conv1.weight"], rtol=1e-2, atol=1e-2)
    resumed.run(max_steps=2, progress_bar=False)
    assert resumed.step == 7


# ----------------------------------------------------------------------------- DDP (2 gloo processes)

def _ddp_config(micro_batches: int) -> TrainConfig:
    return config(Segment("glo", 2.0, 2.0, 8, 8, 3e-3), Segment("gan", 2.0, 2.0, 8, 8, 3e-3),
                  micro_batches=micro_batches)


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from engine.training.distributed import Dist

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    try:
        trainer = Trainer(_ddp_config(1), toy_data(), out_dir, dist=Dist(rank, world), log=False)
        run_steps(trainer, 2)  # one GLO step, one GAN step
        if rank == 0:
            tensors, _ = trainer.state()
            ckpt.save(os.path.join(out_dir, "ddp.safetensors"), tensors, {})
        # Both ranks done before either tears down: rank 0 hosts the store, and a rank still
        # talking to it when it goes aborts ("terminate called without an active exception").
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process_with_same_global_batch(tmp_path):
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2,
                                          join=True, start_method="spawn")
    ddp, _ = ckpt.load(tmp_path / "ddp.safetensors")
    single = Trainer(_ddp_config(2), toy_data(), tmp_path, log=False)  # 2 chunks of 4 == 2 ranks of 4
    run_steps(single, 2)
    ref = _all_tensors(single)
    assert any(not torch.equal(ref[k], Trainer(_ddp_config(2), toy_data(), tmp_path, log=False).state()[0][k])
               for k in ("g.blocks.0.conv0.weight",))  # the step changed the weights
    for k in ref:
        if k.startswith(("g.", "d.", "ema.", "latents")):
            torch.testing.assert_close(ddp[k], ref[k], rtol=1e-4, atol=1e-5, msg=k)


# ----------------------------------------------------------------------------- CLI on a real dataset

def test_cli_trains_resumes_and_exports(tmp_path, tiny_nsynth_dir, capsys):
    from engine.commands.cli import main
    from engine.gansynth.synth import load_synth

    data = tmp_path / "data"
    shutil.copytree(tiny_nsynth_dir, data)
    model = PRESETS["tiny"]  # full 128x1024 output, narrow: stages 0-1 run on pooled 2x16 / 4x32 data
    segs = progressive_segments("glo", 7, [16, 16] + [0] * 11, [8] * 13, [1e-3] * 13)
    segs += (Segment("gan", 1.0, 1.0, 16, 8, 1e-3),)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(config_to_dict(TrainConfig(model=model, segments=segs, precision="fp32",
                                                              channels_last=False, log_every=1,
                                                              sample_every=2))))
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--config", str(cfg_file), "--threads", "1"]
    assert main(args + ["--max-minutes", "0"]) == 0      # stops at once, still checkpoints
    assert main(args) == 2                               # refuses to overwrite a run
    capsys.readouterr()
    assert main(args + ["--resume", "--precision", "auto"]) == 0   # the file's fp32, overridden
    assert f"{train_precision('auto', torch.device('cpu'))} on cpu" in capsys.readouterr().out
    _, header = ckpt.load(run / ckpt.CHECKPOINT_FILE)
    assert header["step"] == 6 and header["images_per_segment"] == [16, 16, 16]
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "logs").iterdir())
    synth = load_synth(run / "model", device="cpu")
    assert synth.voice_name(synth.random_latents(1, seed=0)[0]).startswith("data/")  # its training voice
    audio = synth.generate(synth.random_latents(1, seed=0), [60])
    assert audio.shape == (1, 64000) and np.isfinite(audio).all()
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")]) == 2
    # Compact state (what the repository keeps) resumes elsewhere; fp16 model files load.
    state = tmp_path / "state"
    assert main(["train", "--out", str(run), "--export-state", str(state)]) == 0
    assert (state / ckpt.CHECKPOINT_FILE).stat().st_size < (run / ckpt.CHECKPOINT_FILE).stat().st_size
    more = tmp_path / "more.json"
    more.write_text(json.dumps(config_to_dict(dataclasses.replace(
        config_from_dict(json.loads(cfg_file.read_text())), segments=segs + (Segment("gan", 1.0, 1.0, 8, 8),)))))
    assert main(["train", "--data", str(data), "--out", str(state), "--resume", "--config", str(more)]) == 0
    assert ckpt.load(state / ckpt.CHECKPOINT_FILE)[1]["step"] == 7
    assert main(["train", "--out", str(run), "--export", str(tmp_path / "m16"), "--fp16"]) == 0
    assert load_synth(tmp_path / "m16", device="cpu").generate(np.zeros((1, model.latent_size)), [60]).shape == (1, 64000)


def test_several_datasets_train_as_one_with_their_instruments_apart(tmp_path, tiny_nsynth_dir):
    from engine.training.batches import StackedRows, load_train_data

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_nsynth_dir, a)
    shutil.copytree(tiny_nsynth_dir, b)
    one = load_train_data(a)
    both = load_train_data([a, b])
    n, k = len(one), one.num_instruments
    assert isinstance(both.specs, StackedRows) and len(both) == 2 * n
    assert both.num_instruments == 2 * k          # the same program in two datasets: two instruments
    assert (both.instruments[n:] == one.instruments + k).all()
    assert int(both.voices.max()) + 1 == 2 * (int(one.voices.max()) + 1)
    idx = np.array([2 * n - 1, 0, n, 5])            # rows from both parts, out of order
    full = both.images(idx, tuple(both.specs.shape[2:]))
    expected = torch.from_numpy(np.asarray(one.specs[idx % n], np.float32))
    assert torch.equal(full, expected)
    assert torch.equal(both.images(idx, (8, 64)), one.images(idx % n, (8, 64)))
    assert np.array_equal(both.specs[1:3], one.specs[1:3]) and both.specs[n:n + 2].shape[0] == 2
    # Voices keep their dataset in their names (the latent prior of the model carries them).
    assert len(both.voice_names) == int(both.voices.max()) + 1 == len(set(both.voice_names))
    assert both.voice_names[0].startswith("a/") and both.voice_names[-1].startswith("b/")
    assert both.voice_names[0].endswith(" v100") and "acoustic" in both.voice_names[0]


def test_card_flatness_separates_tone_from_noise():
    from engine.training.cardfigures import spectral_flatness

    t = np.arange(64000) / 16000
    tone = np.sin(2 * np.pi * 440 * t)
    noise = np.random.default_rng(0).standard_normal(64000)
    assert spectral_flatness(tone) < 0.01 < 0.3 < spectral_flatness(noise)
