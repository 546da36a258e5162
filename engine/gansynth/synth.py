"""`Synth`: latent + pitch -> 4-second notes. The API every other part uses.

    synth = load_synth("resources/models/default")
    z = synth.random_latents(4, seed=0)            # float32 [4, latent_size]
    audio = synth.generate(z, [60, 62, 64, 65])    # float32 [4, 64000] at 16 kHz
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch

from engine.gansynth.backend import resolve_backend
from engine.gansynth.config import PRECISIONS, ModelConfig, SpectralConfig
from engine.gansynth.latentprior import LatentPrior
from engine.gansynth.model import Generator
from engine.gansynth.modelfile import ModelFileError, is_model_dir, load_model_dir
from engine.gansynth.spectral import SpecgramsHelper
from engine.util.heap import keep_freed_memory


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 pays for itself in these renders: CPUs with AMX or AVX512-BF16
    (2-3x faster than fp32). Not on CUDA: measured on an H200, 61 notes of the bundled model
    took 101 ms in bf16 and 105 ms in exact fp32, and bf16 moved the audio by 3.3 dB of
    log-spectral distance (fp32 with TF32 off: 0.007 dB from the CPU's fp32)."""
    if device.type == "cpu":
        cpu = torch.cpu
        return any(getattr(cpu, name, lambda: False)()
                   for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where it is native, else 'fp32'; other values unchanged (checked)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Synth:
    """A loaded generator plus its spectral inverse.

    `threads` (CPU only) sets torch's intra-op threads in the calling thread
    before each render, so a render worker can use one core beside live audio.
    `precision`: "fp32", "bf16" (autocast), or "auto": bf16 where it is native
    (`native_bf16`), else fp32. The live instrument uses "auto"; offline tools fp32.
    `backend`: "torch", "openvino" or "ncnn" (fp32 on the CPU, the same sound) or "auto": the
    fastest on this CPU for this model (`engine.gansynth.backend`: probed once, cached on disk).
    The commands use "auto"; the library default is torch.
    """

    def __init__(self, generator: Generator, spectral: SpectralConfig, device="auto",
                 threads: int | None = None, precision: str = "fp32", meta: dict | None = None,
                 batch_size: int | None = None, backend: str = "torch"):
        self.device = pick_device(device)
        precision = resolve_precision(precision, self.device)
        if self.device.type == "cuda" and precision == "fp32":
            # TF32 (PyTorch's default for cuDNN convolutions) is not fp32: measured on an H200 it
            # moved the audio by 7 % RMS (0.58 dB log-spectral distance) at no gain in speed.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.config: ModelConfig = generator.cfg
        self.spectral = spectral
        self.threads = threads
        self.precision = precision
        self.meta = meta or {}
        self.source: dict | None = None  # load_synth's arguments, when it made this Synth
        self._prior = _latent_prior(self.meta, self.config.latent_size)  # malformed: fails at load
        memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        if self.device.type == "cpu":
            keep_freed_memory()  # each note reuses the last one's heap, not fresh pages (engine.util.heap)
        self.generator = generator.to(self.device).to(memory_format=memory_format).eval()
        self.generator.requires_grad_(False)
        self.helper = SpecgramsHelper(spectral, self.device)
        self.backend, self._runner = resolve_backend(backend, self.generator, self.device, precision, threads)
        # Batching is not faster per note on a 2-core CPU; it is on a GPU.
        self.batch_size = batch_size or (1 if self.device.type == "cpu" else 16)

    @property
    def sample_rate(self) -> int:
        return self.spectral.sample_rate

    @property
    def num_samples(self) -> int:
        return self.spectral.num_samples

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    @property
    def pitch_range(self) -> tuple[int, int]:
        return (self.config.lowest_pitch, self.config.highest_pitch)

    @property
    def latent_prior(self) -> LatentPrior | None:
        """The model file's latent prior (its learned voices), or None (z ~ N(0, I))."""
        return self._prior

    def random_latents(self, n: int, seed: int | None = None) -> np.ndarray:
        """float32 [n, latent_size]; the same seed gives the same instruments.

        z ~ N(0, I), or, when the model file carries `provenance.latent_prior` (written by
        GLO-trained models), a draw from that prior (`engine.gansynth.latentprior`).
        """
        rng = np.random.default_rng(seed)
        if self._prior is None:
            return rng.standard_normal((n, self.latent_size)).astype(np.float32)
        return self._prior.sample(n, rng)

    def voice_name(self, z) -> str | None:
        """The learned training voice nearest to latent z, e.g. 'FluidR3_GM/reed_acoustic_071
        (Clarinet) v127', when the model file names its voices; else None."""
        return None if self._prior is None else self._prior.nearest_name(z)

    def _check(self, z, pitches) -> tuple[torch.Tensor, torch.Tensor]:
        z = np.asarray(z, np.float32)
        if z.ndim == 1:
            z = z[None]
        pitches = np.atleast_1d(np.asarray(pitches))
        if z.ndim != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"z must be [n, {self.latent_size}], got {z.shape}")
        if pitches.shape != (z.shape[0],):
            raise ValueError(f"pitches must be [{z.shape[0]}], got {pitches.shape}")
        lo, hi = self.pitch_range
        if pitches.size and (pitches.min() < lo or pitches.max() > hi):
            raise ValueError(f"pitches must lie in {lo}..{hi}")
        labels = torch.from_numpy((pitches - lo).astype(np.int64))
        return torch.from_numpy(z), labels

    def _context(self):
        if self.threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run(self, z: torch.Tensor, labels: torch.Tensor, time_rows: int | None = None) -> torch.Tensor:
        """The generator's output [B, 2, time_rows or T, F] by this Synth's backend."""
        if self._runner is not None:
            return self._runner(z, labels, time_rows)
        return self.generator(z.to(self.device), labels.to(self.device), time_rows=time_rows)

    @torch.inference_mode()
    def generate_specgrams(self, z, pitches) -> np.ndarray:
        """Normalized model output, float32 [n, 2, time, freq]."""
        zt, labels = self._check(z, pitches)
        out = []
        with self._context():
            for i in range(0, len(zt), self.batch_size):
                spec = self._run(zt[i:i + self.batch_size], labels[i:i + self.batch_size])
                out.append(spec.float().contiguous().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 2, *self.config.output_shape), np.float32)

    def span_frames(self, samples: int) -> int:
        """Spectrogram frames whose inverse gives the first `samples` samples exactly."""
        c = self.spectral
        return min(c.time_steps, -(-(int(samples) + c.pad_left) // c.hop_length))

    @torch.inference_mode()
    def generate(self, z, pitches, samples: int | None = None) -> np.ndarray:
        """Audio float32 [n, num_samples] at `sample_rate` (z [n, latent], pitches [n] MIDI).

        `samples`: only the first `samples` of each note ([n, samples]), rendering only the
        spectrogram frames they need (what a player can hear of a looped note)."""
        zt, labels = self._check(z, pitches)
        length = self.num_samples if samples is None else max(1, min(int(samples), self.num_samples))
        rows = None if length == self.num_samples else self.span_frames(length)
        out = []
        for i in range(0, len(zt), self.batch_size):
            with self._context():
                spec = self._run(zt[i:i + self.batch_size], labels[i:i + self.batch_size], rows)
            waves = self.helper.specgrams_to_waves(spec.float().contiguous())
            out.append(waves[:, :length].cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, length), np.float32)


def _latent_prior(meta: dict, latent_size: int) -> LatentPrior | None:
    """The model's latent prior, or None; a malformed one raises ModelFileError."""
    prior = (meta.get("provenance") or {}).get("latent_prior")
    if prior is None:
        return None
    if not isinstance(prior, dict):
        raise ModelFileError("config.json: provenance.latent_prior must be an object")
    try:
        return LatentPrior.from_json(prior, latent_size)
    except ValueError as e:
        raise ModelFileError(f"config.json: provenance.latent_prior {e}") from None


def load_synth(path, device: str = "auto", threads: int | None = None, precision: str = "fp32",
               batch_size: int | None = None, backend: str = "torch") -> Synth:
    """Load our model directory, a Magenta GANSynth checkpoint directory, or its .zip."""
    path = Path(os.path.expanduser(str(path)))
    if not path.exists():
        raise ModelFileError(f"{path}: no such file or directory")
    synth = _load(path, device, threads, precision, batch_size, backend)
    # how to load it again (engine.instrument.synthproc loads the same model in a render process)
    synth.source = {"path": str(path.resolve()), "device": str(synth.device), "threads": threads,
                    "precision": synth.precision, "batch_size": batch_size, "backend": synth.backend}
    return synth


def _load(path: Path, device, threads, precision, batch_size, backend) -> Synth:
    if path.is_dir() and is_model_dir(path):
        generator, _, spectral, meta = load_model_dir(path)
        return Synth(generator, spectral, device, threads, precision, meta, batch_size, backend)
    is_magenta = (path.is_dir() and (path / "experiment.json").is_file()) or path.suffix == ".zip"
    if not is_magenta:
        raise ModelFileError(f"{path}: neither a model directory (no config.json) nor a Magenta "
                             "GANSynth checkpoint (a directory with experiment.json, or its .zip)")
    from engine.gansynth.magenta.convert import load_magenta  # only needed for Magenta checkpoints

    generator, spectral, meta = load_magenta(path)
    return Synth(generator, spectral, device, threads, precision, meta, batch_size, backend)
