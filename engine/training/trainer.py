"""The trainer: progressive GANSynth training with an optional GLO warm start
(`gansynth train` is engine/training/train.py).

The schedule is a list of segments (engine/training/recipe.py). GAN segments are
Magenta's progressive WGAN-GP: gradient penalty (weight 10), drift 0.001 * D(real)^2,
AC-GAN pitch cross-entropy on D (real labels) and G (sampled labels), Adam
beta = (0, 0.99), EMA generator. Unlike Magenta, G and D run only up to the block that
the current progress needs, and the real images are average-pooled to that resolution
(blended with the next-lower resolution during a fade-in).

GLO segments (generative latent optimisation) fit G to the training notes: each
training instrument gets a learned latent, G(latent, pitch) is pulled to the real
normalized spectrogram by L1. New instruments are then sampled near the learned
latents (`engine.gansynth.latentprior`: a learned voice plus `glo_sample_spread` times their
covariance); the exported model files carry the prior as `provenance.latent_prior`.

Data parallel runs: start the same command under `torchrun --nproc_per_node N`; ranks
talk over gloo (CPU) or nccl (CUDA). Each rank draws the same global batch indices and
takes its slice; gradients are averaged with one all-reduce per network per step (the
gradient-penalty's double backward rules out the DDP wrapper's hooks; the arithmetic
is the same). D's minibatch-stddev sees the local slice, as in any data-parallel GAN.

Checkpoints (`RUN/checkpoint.safetensors`) are written atomically every
`checkpoint_minutes`, at segment ends and on exit; each also exports the EMA generator
as model files in `RUN/model/`. `--resume` continues the same segment and step with the
saved RNG states, so resumed == uninterrupted.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine.gansynth.config import to_dict
from engine.gansynth.latentprior import LatentPrior
from engine.gansynth.model import Discriminator, Generator, blocks_for_progress, ema_update, make_ema
from engine.gansynth.modelfile import save_model_dir
from engine.gansynth.reconstruction import (long_window_spectrum_db, resynthesis_l1, spectral_l1, spectral_weights,
                                           spectrum_l1)
from engine.gansynth.spectral import SpecgramsHelper
from engine.gansynth.synth import native_bf16
from engine.training import checkpoint as ckpt
from engine.training.batches import TrainData
from engine.training.distributed import Dist, default_device
from engine.training.recipe import TrainConfig, config_from_dict, config_to_dict


# ----------------------------------------------------------------------------- trainer

def train_precision(precision: str, device: torch.device) -> str:
    """The autocast a run uses: 'auto' -> 'bf16' where the device runs it natively (a CUDA GPU
    with bf16; a CPU with AMX or AVX512-BF16), else 'fp32'. Emulated bf16 on an AVX2-only CPU
    trained the lite model 14x (8x64) to 35x (32x256) slower than fp32 (measured, 2 threads)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and native_bf16(device) else "fp32"


class Trainer:
    """Owns the networks, optimisers, schedule position and RNG of one run."""

    def __init__(self, cfg: TrainConfig, data: TrainData, out_dir, dist: Dist | None = None,
                 threads: int | None = None, log: bool = True, device: str | torch.device | None = None):
        self.cfg, self.data, self.out = cfg, data, Path(out_dir)
        self.dist = dist or Dist()
        self.spectral = data.spectral
        m = cfg.model
        if tuple(data.specs.shape[1:]) != (2, *m.output_shape):
            raise ValueError(f"data images are {tuple(data.specs.shape[1:])}, the model makes "
                             f"{(2, *m.output_shape)}")
        lo, hi = m.lowest_pitch, m.highest_pitch
        if data.pitches.min() < lo or data.pitches.max() > hi:
            raise ValueError(f"data pitches span {data.pitches.min()}..{data.pitches.max()}, "
                             f"the model covers {lo}..{hi}")
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed)
        self.device = torch.device(device) if device is not None else default_device(self.dist)
        self.precision = train_precision(cfg.precision, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one shape per stage: let cuDNN pick its kernels
            data.to(self.device)
        self.G = Generator(m).to(self.device)
        self.D = Discriminator(m).to(self.device)
        self.glo_ids = data.voices if cfg.glo_per_velocity else data.instruments
        self.latent_names = data.voice_names if cfg.glo_per_velocity else data.instrument_names
        self.latent_radius = cfg.glo_latent_radius or math.sqrt(m.latent_size)
        n_inst = int(self.glo_ids.max()) + 1
        lat = torch.randn(n_inst, m.latent_size)
        self.latents = nn.Parameter((lat * self.latent_radius / lat.norm(dim=1, keepdim=True)).to(self.device))
        if cfg.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.dist.broadcast(self.G)
        self.dist.broadcast(self.D)
        self.dist.broadcast([self.latents])
        self.ema = make_ema(self.G)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)  # all sampling: batches, z, eps, noise
        b = cfg.glo_betas
        self.opts = {
            "g_glo": torch.optim.Adam(self.G.parameters(), lr=1e-3, betas=b),
            "latents": torch.optim.Adam([self.latents], lr=1e-3, betas=b),
            "g_gan": torch.optim.Adam(self.G.parameters(), lr=1e-3, betas=cfg.gan_betas),
            "d": torch.optim.Adam(self.D.parameters(), lr=1e-3, betas=cfg.gan_betas),
        }
        self.segment = 0          # index into cfg.segments
        self.seg_images = 0       # images seen in the current segment
        self.seg_steps = 0
        self.step = 0
        self.images_total = 0
        self.seconds = 0.0        # training wall time over all sessions
        self.images_per_segment = [0] * len(cfg.segments)
        self.writer = None
        self.log_enabled = log and self.dist.main
        self._fixed = None
        self._helper = None

    # ------------------------------------------------------------------ sampling
    def _global_indices(self, n: int) -> np.ndarray:
        return torch.randint(0, len(self.data), (n,), generator=self.gen).numpy()

    def _local(self, x):
        """This rank's slice of a global batch."""
        n = len(x) // self.dist.world
        return x[self.dist.rank * n:(self.dist.rank + 1) * n]

    def latent_prior(self) -> LatentPrior:
        """The prior of the learned GLO latents, as the exported model files carry it."""
        names = self.latent_names if self.latent_names and len(self.latent_names) == len(self.latents) else None
        return LatentPrior.fit(self.latents.detach().float().cpu().numpy(), self.cfg.glo_sample_spread,
                               self.latent_radius, names)

    def sample_latents(self, n: int) -> torch.Tensor:
        """Latents for fakes: N(0, I), or the learned latents' prior (drawn from the run's RNG)."""
        if not self.cfg.uses_glo:
            return torch.randn((n, self.cfg.model.latent_size), generator=self.gen).to(self.device)
        rng = np.random.default_rng(int(torch.randint(2 ** 62, (1,), generator=self.gen)))
        return torch.from_numpy(self.latent_prior().sample(n, rng)).to(self.device)

    def _labels(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.data.pitches[idx] - self.cfg.model.lowest_pitch).to(self.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    # ------------------------------------------------------------------ steps
    def glo_step(self, seg, progress: float) -> dict:
        cfg, m = self.cfg, self.cfg.model
        n_blocks = blocks_for_progress(m, progress)
        shape = m.resolution(n_blocks)
        blend = progress - (n_blocks - 2) if n_blocks > 1 else 1.0
        idx = self._local(self._global_indices(seg.batch_size))
        noise = self._local(torch.randn(seg.batch_size, m.latent_size, generator=self.gen)).to(self.device)
        real = self._prep(self.data.real_batch(idx, shape, min(1.0, blend)).to(self.device))
        z = self.latents[torch.from_numpy(self.glo_ids[idx]).to(self.device)]
        z = z + cfg.glo_latent_noise * self.latent_radius / math.sqrt(m.latent_size) * noise
        with self._autocast():
            fake = self.G(z, self._labels(idx), progress)
        # engine.gansynth.reconstruction: energy-weighted L1, IF gate, resynthesis loss
        w_mag, w_if = spectral_weights(real, cfg.glo_energy_weight, cfg.glo_if_gate, cfg.glo_if_energy_weight)
        err = spectral_l1(fake.float(), real, w_mag, w_if)  # [2]: logmag, IF
        loss = err[0] + cfg.glo_if_weight * err[1]
        stats = {}
        if (seg.audio_weight or seg.spectrum_weight) and tuple(shape) == tuple(m.output_shape):
            helper = self._spectral_helper()
            audio = helper.specgrams_to_waves(fake.float())
            if seg.audio_weight:
                err_audio = resynthesis_l1(audio, real, helper, w_mag)
                loss = loss + seg.audio_weight * err_audio
                stats["glo/l1_audio"] = err_audio.item()
            if seg.spectrum_weight:
                real_db = self.data.spectra_batch(idx).to(self.device)
                err_spectrum = spectrum_l1(long_window_spectrum_db(audio, self.spectral.sample_rate), real_db)
                loss = loss + seg.spectrum_weight * err_spectrum
                stats["glo/l1_spectrum"] = err_spectrum.item()
        for o in ("g_glo", "latents"):
            self.opts[o].zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_grads(list(self.G.parameters()) + [self.latents])
        self.opts["g_glo"].step()
        self.opts["latents"].step()
        with torch.no_grad():  # GLO keeps latents on a sphere
            self.latents.mul_(self.latent_radius / self.latents.norm(dim=1, keepdim=True))
        return {"glo/l1": loss.item(), "glo/l1_logmag": err[0].item(), "glo/l1_if": err[1].item(), **stats}

    def _spectral_helper(self):
        """The spectral inverse and analysis on the training device (built on first use)."""
        if self._helper is None:
            self._helper = SpecgramsHelper(self.spectral, self.device)
        return self._helper

    def gan_step(self, seg, progress: float) -> dict:
        cfg, m = self.cfg, self.cfg.model
        n_blocks = blocks_for_progress(m, progress)
        shape = m.resolution(n_blocks)
        blend = progress - (n_blocks - 2) if n_blocks > 1 else 1.0
        B = seg.batch_size
        real_idx = self._local(self._global_indices(B))
        fake_idx = self._local(self._global_indices(B))  # labels from the training pitch histogram
        z_d = self._local(self.sample_latents(B))
        eps = self._local(torch.rand(B, 1, 1, 1, generator=self.gen)).to(self.device)
        g_idx = self._local(self._global_indices(B))
        z_g = self._local(self.sample_latents(B))
        real = self.data.real_batch(real_idx, shape, min(1.0, blend)).to(self.device)
        real_labels, fake_labels, g_labels = (self._labels(i) for i in (real_idx, fake_idx, g_idx))
        k = self.cfg.micro_batches  # chunks per rank, gradients summed (D's minibatch-stddev sees one chunk)
        chunks = lambda x: torch.chunk(x, k)  # noqa: E731
        stats: dict[str, float] = {}

        def add(name, value):
            stats[name] = stats.get(name, 0.0) + float(value) / k

        # D step
        self.D.requires_grad_(True)
        self.opts["d"].zero_grad(set_to_none=True)
        for r, zd, e, rl, fl in zip(chunks(real), chunks(z_d), chunks(eps), chunks(real_labels), chunks(fake_labels)):
            r = self._prep(r)
            with torch.no_grad(), self._autocast():
                fake = self.G(zd, fl, progress).float()
            mix = (r + e * (fake - r)).requires_grad_(True)
            with self._autocast():
                d_real, cls_real = self.D(r, progress)
                d_fake, _ = self.D(self._prep(fake), progress)
                d_mix, _ = self.D(self._prep(mix), progress)
            d_real, d_fake, cls_real = d_real.float(), d_fake.float(), cls_real.float()
            grad, = torch.autograd.grad(d_mix.float().sum(), mix, create_graph=True)
            gp = ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
            wass = d_fake.mean() - d_real.mean()
            drift = (d_real ** 2).mean()
            ce_real = F.cross_entropy(cls_real, rl)
            d_loss = wass + cfg.gp_weight * gp + cfg.drift_weight * drift + cfg.aux_weight * ce_real
            (d_loss / k).backward()
            for name, v in (("d/loss", d_loss), ("d/wasserstein", wass), ("d/gp", gp), ("d/drift", drift),
                            ("d/ce_real", ce_real),
                            ("d/pitch_acc_real", (cls_real.argmax(1) == rl).float().mean())):
                add(name, v.item())
        self.dist.average_grads(list(self.D.parameters()))
        self.opts["d"].step()

        # G step
        self.D.requires_grad_(False)
        self.opts["g_gan"].zero_grad(set_to_none=True)
        for zg, gl in zip(chunks(z_g), chunks(g_labels)):
            with self._autocast():
                fake_g = self.G(zg, gl, progress)
                d_g, cls_g = self.D(self._prep(fake_g.float()), progress)
            ce_fake = F.cross_entropy(cls_g.float(), gl)
            g_loss = -d_g.float().mean() + cfg.aux_weight * ce_fake
            (g_loss / k).backward()
            add("g/loss", g_loss.item())
            add("g/ce_fake", ce_fake.item())
            add("d/pitch_acc_fake", (cls_g.argmax(1) == gl).float().mean().item())
        self.dist.average_grads(list(self.G.parameters()))
        self.opts["g_gan"].step()
        return stats

    def train_step(self) -> dict:
        """One step of the current segment; advances the schedule position."""
        cfg = self.cfg
        seg = cfg.segments[self.segment]
        progress = seg.progress_at(self.seg_images)
        lr = seg.lr
        for name, opt in self.opts.items():
            scale = cfg.glo_latent_lr_scale if name == "latents" else cfg.d_lr_scale if name == "d" else 1.0
            for group in opt.param_groups:
                group["lr"] = lr * scale
        self.G.train()
        stats = self.glo_step(seg, progress) if seg.phase == "glo" else self.gan_step(seg, progress)
        decay = min(cfg.ema_decay, (1.0 + self.seg_steps) / (cfg.ema_warmup + self.seg_steps))
        ema_update(self.ema, self.G, decay)
        self.step += 1
        self.seg_steps += 1
        self.seg_images += seg.batch_size
        self.images_total += seg.batch_size
        self.images_per_segment[self.segment] += seg.batch_size
        stats.update(progress=progress, lr=lr, ema_decay=decay)
        if self.seg_images >= seg.images:
            self.segment += 1
            self.seg_images = 0
            self.seg_steps = 0
        return stats

    @property
    def done(self) -> bool:
        return self.segment >= len(self.cfg.segments)

    @property
    def progress(self) -> float:
        if self.done:
            return self.cfg.segments[-1].end_progress if self.cfg.segments else self.cfg.model.final_progress
        return self.cfg.segments[self.segment].progress_at(self.seg_images)

    # ------------------------------------------------------------------ state
    def _rngs(self) -> dict[str, torch.Tensor]:
        return {"gen": self.gen.get_state(), "torch": torch.get_rng_state()}

    def _header(self) -> dict:
        return {"config": config_to_dict(self.cfg), "segment": self.segment, "seg_images": self.seg_images,
                "seg_steps": self.seg_steps, "step": self.step, "images_total": self.images_total,
                "seconds": self.seconds, "images_per_segment": self.images_per_segment,
                "num_instruments": int(self.latents.shape[0]), "spectral": to_dict(self.spectral),
                "latent_names": self.latent_names}

    def state(self, compact: bool = False) -> tuple[dict, dict]:
        tensors, header = ckpt.pack({"g": self.G, "ema": self.ema, "d": self.D}, {"latents": self.latents.data},
                                    self.opts, self._rngs(), self._header())
        return compact_state(tensors, header) if compact else (tensors, header)

    def load_state(self, tensors: dict, header: dict, source) -> None:
        saved = config_from_dict(header["config"], f"{source}: config")
        if saved.model != self.cfg.model:  # a new schedule for the same model may continue a run
            raise ckpt.CheckpointError(f"{source}: model config differs from this run's")
        if int(header["num_instruments"]) != self.latents.shape[0]:
            raise ckpt.CheckpointError(f"{source}: {header['num_instruments']} instruments, the data has "
                                       f"{self.latents.shape[0]}")
        for prefix, module in (("g", self.G), ("ema", self.ema), ("d", self.D)):
            ckpt.unpack_module(tensors, prefix, module, source)
        self.latents.data.copy_(tensors["latents"].float())
        for name, opt in self.opts.items():
            ckpt.unpack_optimizer(tensors, header, name, opt)
        if "rng.gen" in tensors:
            self.gen.set_state(tensors["rng.gen"])
            torch.set_rng_state(tensors["rng.torch"])
        for key in ("segment", "seg_images", "seg_steps", "step", "images_total"):
            setattr(self, key, int(header[key]))
        self.seconds = float(header["seconds"])
        if self.latent_names is None and isinstance(header.get("latent_names"), list):
            self.latent_names = [str(n) for n in header["latent_names"]]  # an export without the data
        ipc = list(header["images_per_segment"])
        self.images_per_segment = (ipc + [0] * len(self.cfg.segments))[:len(self.cfg.segments)]

    def save_checkpoint(self) -> Path | None:
        if not self.dist.main:
            return None
        tensors, header = self.state()
        path = ckpt.save(self.out / ckpt.CHECKPOINT_FILE, tensors, header)
        self.export_model(self.out / "model")
        return path

    def provenance(self) -> dict:
        cfg = self.cfg
        prov = {"trainer": "gansynth train", "step": self.step, "images_total": self.images_total,
                "progress": self.progress, "train_seconds": round(self.seconds, 1),
                "images_per_segment": [
                    {"phase": s.phase, "progress": [s.start_progress, s.end_progress], "images": n}
                    for s, n in zip(cfg.segments, self.images_per_segment)],
                "train_config": config_to_dict(cfg)}
        if cfg.uses_glo:
            prov["latent_prior"] = self.latent_prior().to_json()
        return prov

    def export_model(self, path, dtype: torch.dtype = torch.float32) -> Path:
        ema = make_ema(self.ema).to(memory_format=torch.contiguous_format)
        return save_model_dir(path, ema, self.spectral, self.provenance(), dtype=dtype)

    # ------------------------------------------------------------------ logging
    def _log(self, stats: dict) -> None:
        if not self.log_enabled:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "logs"))
        if self.step % self.cfg.log_every == 0:
            for k, v in stats.items():
                self.writer.add_scalar(k, v, self.images_total)
        if self.step % self.cfg.sample_every == 0:
            self._log_samples()

    @torch.no_grad()
    def _log_samples(self) -> None:
        m = self.cfg.model
        if self._fixed is None:  # the same draws each time (the prior moves with the latents)
            pitches = torch.tensor([36, 48, 60, 72]).clamp(m.lowest_pitch, m.highest_pitch)
            self._fixed = (torch.randn(4, m.latent_size, generator=torch.Generator().manual_seed(1234)),
                           pitches - m.lowest_pitch)
        z, labels = self._fixed
        if self.cfg.uses_glo:
            z = torch.from_numpy(self.latent_prior().sample(4, np.random.default_rng(1234)))
        progress = min(self.progress, m.final_progress)
        spec = self.ema(z.to(self.device), labels.to(self.device), progress).float().cpu()  # [4, 2, t, f]
        img = torch.cat(list(spec), dim=-1)            # [2, t, 4f]: logmag over IF
        img = torch.cat([img[0], img[1]], dim=0).T.flip(0)  # freq up, time right
        self.writer.add_image("samples/logmag_if", ((img + 1) / 2).clamp(0, 1)[None], self.images_total)
        if tuple(spec.shape[2:]) == m.output_shape:
            waves = self._spectral_helper().specgrams_to_waves(spec[:2].to(self.device)).cpu()
            for i, w in enumerate(waves):
                self.writer.add_audio(f"samples/audio_{i}", w[None].clamp(-1, 1), self.images_total,
                                      sample_rate=self.spectral.sample_rate)

    # ------------------------------------------------------------------ loop
    def run(self, max_minutes: float | None = None, max_steps: int | None = None, progress_bar: bool = True) -> None:
        """Train until the schedule ends, `max_minutes` pass or `max_steps` more steps ran; checkpoints on exit."""
        from tqdm import tqdm

        total = self.cfg.total_images
        bar = tqdm(total=total, initial=self.images_total, unit="img", dynamic_ncols=True,
                   disable=not (progress_bar and self.dist.main))
        start = last_ckpt = time.monotonic()
        steps = 0
        _checkpoint_on_sigterm()
        try:
            while not self.done:
                if max_steps is not None and steps >= max_steps:
                    break
                if max_minutes is not None and time.monotonic() - start >= 60 * max_minutes:
                    break
                seg_before = self.segment
                t0 = time.monotonic()
                stats = self.train_step()
                self.seconds += time.monotonic() - t0
                steps += 1
                bar.update(self.cfg.segments[seg_before].batch_size)
                if steps % 10 == 0:
                    bar.set_postfix_str(f"seg {seg_before} p {stats['progress']:.2f} "
                                        + " ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in stats.items()
                                                   if k in ("glo/l1", "d/loss", "g/loss", "d/gp")))
                self._log(stats)
                now = time.monotonic()
                if self.segment != seg_before or now - last_ckpt >= 60 * self.cfg.checkpoint_minutes:
                    self.save_checkpoint()
                    last_ckpt = now
                if self.segment != seg_before and self.dist.main:   # kept: the next segment may be worse
                    self.export_model(self.out / f"model-segment{seg_before}")
        finally:
            bar.close()
            self.save_checkpoint()
            if self.writer is not None:
                self.writer.flush()


def _checkpoint_on_sigterm() -> None:
    """`kill PID` of a background run raises SystemExit so `run` still writes its checkpoint."""
    import signal
    import threading

    def stop(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


PHASE_OPTIMIZERS = {"glo": ("g_glo", "latents"), "gan": ("g_gan", "d")}   # what each phase steps


def compact_state(tensors: dict, header: dict) -> tuple[dict, dict]:
    """`ckpt.compact` keeping the Adam state of the optimisers the saved segment steps."""
    segments, index = header["config"]["segments"], int(header["segment"])
    keep = PHASE_OPTIMIZERS[segments[index]["phase"]] if index < len(segments) else ()
    return ckpt.compact(tensors, header, keep)
