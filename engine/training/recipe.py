"""Training recipes: one frozen `TrainConfig` stored inside every checkpoint.

A recipe is a list of `Segment`s run in order. Each segment is one phase
("glo" = generator fitted to per-instrument latents by L1 reconstruction,
"gan" = progressive WGAN-GP with auxiliary pitch loss) over a progress range:
a stable stage has start == end, a fade-in stage goes from k to k+1. Progress
moves linearly with the images seen in the segment; G and D run only up to
the block that progress needs (block = ceil(progress) + 1).

Presets:
- `paper`: Magenta's schedule (13 GAN stages x 800k images, batch 8, lr 8e-4).
- `lite`:  the CPU recipe that trained the bundled default model (GLO warm
  start over all stages, cheap images at low resolutions, then a short
  low-LR adversarial fine-tune at full resolution).
- `gpu`:   the same model and losses on a CUDA GPU: larger batches, ~13x the images, in
  about 6 minutes on an H200 (the v2 default model's run, as run).
- `tone`:  `gpu` continued on a CPU with the long-window spectrum loss (engine.gansynth.reconstruction);
  the model card's experiment, not the shipped model.
- `tiny`:  for tests (tiny widths, a few images per stage).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from engine.gansynth.config import PRESETS, ModelConfig, from_dict, to_dict
from engine.util.fileio import read_json

PHASES = ("glo", "gan")
TRAIN_PRECISIONS = ("auto", "bf16", "fp32")  # training autocast (engine.gansynth.config.PRECISIONS is the Synth's)


@dataclass(frozen=True)
class Segment:
    """One stage of the schedule. Images count real examples seen (global batch)."""

    phase: str = "gan"
    start_progress: float = 0.0
    end_progress: float = 0.0
    images: int = 800_000
    batch_size: int = 8
    lr: float = 8e-4
    # GLO at full resolution only: weight of the resynthesis loss, the log-magnitude L1 (weighted
    # as the spectrogram's) between the real note and the generated spectrogram inverted to audio
    # and analysed again. The spectrogram losses fit each IF bin alone; this one sees whether the
    # IF bins of a partial agree, i.e. whether the partial survives the inverse.
    audio_weight: float = 0.0
    # GLO at full resolution only: weight of the long-window spectrum loss, the L1 in dB between the
    # 0.3-2.0 s power spectra of that resynthesis and of the real recording
    # (engine.gansynth.reconstruction): it weighs the noise between partials as energy, as the
    # harmonic-to-noise ratio does, where the frame-wise log terms see it as a log level.
    spectrum_weight: float = 0.0

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"segment phase must be one of {PHASES}, not {self.phase!r}")
        if (self.images < 0 or self.batch_size < 1 or self.lr <= 0 or self.audio_weight < 0
                or self.spectrum_weight < 0):
            raise ValueError(f"segment needs images >= 0, batch_size >= 1, lr > 0, audio_weight >= 0, "
                             f"spectrum_weight >= 0: {self}")
        if (self.audio_weight or self.spectrum_weight) and self.phase != "glo":
            raise ValueError(f"audio_weight and spectrum_weight apply to GLO segments only: {self}")
        if not (0.0 <= self.start_progress <= self.end_progress):
            raise ValueError(f"segment progress must grow: {self}")

    def progress_at(self, images_done: int) -> float:
        """Linear progress inside the segment after `images_done` images."""
        if self.images == 0 or self.start_progress == self.end_progress:
            return self.end_progress
        frac = min(1.0, images_done / self.images)
        return self.start_progress + frac * (self.end_progress - self.start_progress)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in checkpoints; `--config FILE.json` takes this shape)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    segments: tuple[Segment, ...] = ()
    precision: str = "auto"            # autocast: bf16, fp32, or auto = bf16 where the device runs it natively
                                       # (`trainer.train_precision`); fp32 for exactness tests
    channels_last: bool = True
    seed: int = 0
    # GAN losses and optimiser (Magenta's values).
    gp_weight: float = 10.0
    drift_weight: float = 0.001
    aux_weight: float = 10.0           # AC-GAN pitch CE, on D (real) and G (fake)
    gan_betas: tuple[float, float] = (0.0, 0.99)
    d_lr_scale: float = 1.0            # D lr = segment lr * d_lr_scale
    micro_batches: int = 1             # GAN steps split each rank's batch into this many chunks (grads summed)
    # EMA of G: decay, warmed up per segment as min(decay, (1 + s) / (ema_warmup + s)), s = step in segment.
    ema_decay: float = 0.999
    ema_warmup: float = 10.0
    # GLO warm start: a learned latent per training instrument, kept on the sphere of radius sqrt(latent_size).
    glo_betas: tuple[float, float] = (0.9, 0.99)
    glo_latent_lr_scale: float = 10.0  # latent lr = segment lr * this
    glo_latent_noise: float = 0.3      # N(0, noise^2) per dimension added to latents while fitting
    glo_if_weight: float = 1.0         # L1 weight of the IF channel relative to log-magnitude
    glo_per_velocity: bool = True      # one latent per (instrument, velocity) rather than per instrument
    glo_energy_weight: float = 0.0     # log-magnitude L1 weight 1 + this * energy of the real bin (0..1)
    glo_if_gate: bool = False          # IF L1 weighted by min(1, 2 * energy): silent bins' IF ignored
    glo_if_energy_weight: float = 0.0  # IF L1 further weighted 1 + this * energy: a loud bin's IF is its
                                       # partial's frequency, and an error there smears the resynthesis
    glo_sample_spread: float = 0.3     # new instruments: a learned latent + this x their covariance
                                       # (engine.gansynth.latentprior); 0 = the learned voices themselves
    glo_latent_radius: float = 0.0     # latents kept at this norm; 0 = sqrt(latent_size). G pixel-norms
                                       # [z, one-hot] together, so a small radius makes the pitch a strong input
    # Bookkeeping.
    checkpoint_minutes: float = 10.0
    log_every: int = 50                # steps between scalar logs
    sample_every: int = 1000           # steps between spectrogram / audio summaries

    def __post_init__(self):
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"precision must be one of {TRAIN_PRECISIONS}, not {self.precision!r}")
        for seg in self.segments:
            if seg.end_progress > self.model.final_progress:
                raise ValueError(f"segment {seg} goes past final progress {self.model.final_progress}")

    @property
    def uses_glo(self) -> bool:
        return any(s.phase == "glo" for s in self.segments)

    @property
    def uses_gan(self) -> bool:
        return any(s.phase == "gan" for s in self.segments)

    @property
    def total_images(self) -> int:
        return sum(s.images for s in self.segments)


def progressive_segments(phase: str, num_resolutions: int, images: list[int], batch_sizes: list[int],
                         lrs: list[float]) -> tuple[Segment, ...]:
    """Magenta-style stable/fade-in list: 2 * num_resolutions - 1 stages; stage s at block s // 2 + 1.

    `images`, `batch_sizes` and `lrs` have one entry per stage; a stage with 0 images is dropped.
    """
    n = 2 * num_resolutions - 1
    if not (len(images) == len(batch_sizes) == len(lrs) == n):
        raise ValueError(f"need {n} entries per list for {num_resolutions} resolutions")
    out = []
    for s in range(n):
        start = float(s // 2)
        end = float(s // 2 + s % 2)
        if images[s] > 0:
            out.append(Segment(phase, start, end, images[s], batch_sizes[s], lrs[s]))
    return tuple(out)


def _paper() -> TrainConfig:
    m = PRESETS["paper"]
    n = 2 * m.num_resolutions - 1
    segs = progressive_segments("gan", m.num_resolutions, [800_000] * (n - 1) + [1_400_000], [8] * n, [8e-4] * n)
    return TrainConfig(model=m, segments=segs, precision="fp32", channels_last=False)


# The default model: engine.gansynth.config's `lite` (widths 64..8, 64-d latent).
DEFAULT_MODEL = PRESETS["lite"]


def _lite() -> TrainConfig:
    """The default model's recipe: GLO from 8x64 up (the 2x16 and 4x32 stages taught only spectral
    envelopes in probes), most steps where harmonics first resolve, a few hundred at the costly top
    stages, then more full-resolution fitting and a low-LR adversarial fine-tune (both continued in
    the background after the default model was shipped)."""
    m = DEFAULT_MODEL
    segs = (
        Segment("glo", 2.0, 2.0, 56_000, 32, 5e-3),   # 8x64
        Segment("glo", 2.0, 3.0, 8_000, 32, 4e-3),
        Segment("glo", 3.0, 3.0, 12_000, 32, 4e-3),   # 16x128
        Segment("glo", 3.0, 4.0, 2_000, 16, 3e-3),
        Segment("glo", 4.0, 4.0, 3_000, 16, 3e-3),    # 32x256
        Segment("glo", 4.0, 5.0, 1_000, 16, 3e-3),
        Segment("glo", 5.0, 5.0, 1_500, 16, 2e-3),    # 64x512
        Segment("glo", 5.0, 6.0, 500, 8, 2e-3),
        Segment("glo", 6.0, 6.0, 4_500, 8, 2e-3),     # 128x1024 (the shipped default ends here)
        Segment("glo", 6.0, 6.0, 40_000, 8, 1e-3),    # more full-resolution fitting (background)
        Segment("glo", 6.0, 6.0, 10_000, 8, 5e-4),
        Segment("glo", 6.0, 6.0, 20_000, 8, 3e-4, audio_weight=1.0),  # resynthesis loss
        Segment("glo", 6.0, 6.0, 16_000, 8, 2e-4, audio_weight=1.0),
        Segment("gan", 6.0, 6.0, 20_000, 8, 1e-4),
    )
    # Without channels_last measured fastest for these narrow top blocks (benchmarks/train.py); bf16
    # where it is native, else fp32 (bf16 emulated on an AVX2 CPU: 14-35x slower, measured).
    # Latents on the unit sphere: G pixel-norms [z, one-hot] together, so the pitch is a strong input.
    return TrainConfig(model=m, segments=segs, precision="auto", channels_last=False, checkpoint_minutes=5.0,
                       sample_every=500, glo_latent_noise=0.0, glo_latent_radius=1.0, glo_energy_weight=4.0,
                       glo_if_gate=True, glo_if_energy_weight=8.0)


def _gpu() -> TrainConfig:
    """The v2 default model's recipe, as run on one H200 (bf16 autocast, `auto` there): `lite`'s stages and losses
    with batches of 128/64/32 instead of 32/16/8, each stage's images sized from measured step
    rates to a share of a 344 s budget (8x64 12.9k images/s, 16x128 10.0k, 32x256 4.6k, 64x512
    4.1k, 128x1024 1.56k, 1.13k with the resynthesis loss). 1.30M images; 341 s of steps."""
    m = DEFAULT_MODEL
    segs = (
        Segment("glo", 2.0, 2.0, 444_544, 128, 5e-3),  # 8x64
        Segment("glo", 2.0, 3.0, 103_296, 128, 4e-3),
        Segment("glo", 3.0, 3.0, 241_024, 128, 4e-3),  # 16x128
        Segment("glo", 3.0, 4.0, 31_744, 64, 3e-3),
        Segment("glo", 4.0, 4.0, 63_552, 64, 3e-3),    # 32x256
        Segment("glo", 4.0, 5.0, 27_840, 64, 3e-3),
        Segment("glo", 5.0, 5.0, 69_632, 64, 2e-3),    # 64x512
        Segment("glo", 5.0, 6.0, 16_128, 32, 2e-3),
        Segment("glo", 6.0, 6.0, 53_792, 32, 2e-3),    # 128x1024
        Segment("glo", 6.0, 6.0, 96_832, 32, 1e-3),
        Segment("glo", 6.0, 6.0, 53_792, 32, 5e-4),
        Segment("glo", 6.0, 6.0, 54_272, 32, 3e-4, audio_weight=1.0),  # resynthesis loss
        Segment("glo", 6.0, 6.0, 46_528, 32, 2e-4, audio_weight=1.0),
    )
    return dataclasses.replace(_lite(), model=m, segments=segs, checkpoint_minutes=2.0, sample_every=2000)


def _tone() -> TrainConfig:
    """`gpu` continued at full resolution with the long-window spectrum loss, as run on a 2-core CPU
    (AMX bf16, 52 minutes) from the v2 model's committed state: `gansynth train --data ... --out RUN
    --resume --config tone` with RUN holding a copy of resources/models/default/training_state.
    Not shipped: it brought v2's HNR median and top octave to the real notes' but lost some NDB
    and pitch accuracy; weight 2 overshot (the model card has both)."""
    segs = _gpu().segments + (
        Segment("glo", 6.0, 6.0, 30_616, 8, 1e-4, audio_weight=1.0, spectrum_weight=0.5),
    )
    return dataclasses.replace(_gpu(), segments=segs, checkpoint_minutes=5.0, sample_every=500)


def _tiny() -> TrainConfig:
    m = ModelConfig(latent_size=8, fmap_base=64, fmap_max=8, start_shape=(2, 4), num_resolutions=3)
    segs = progressive_segments("glo", 3, [32, 32, 32, 32, 32], [8] * 5, [1e-3] * 5)
    segs += progressive_segments("gan", 3, [32, 32, 32, 32, 32], [8] * 5, [1e-3] * 5)
    return TrainConfig(model=m, segments=segs, precision="fp32", channels_last=False,
                       checkpoint_minutes=1e9, log_every=1, sample_every=4)


CONFIG_PRESETS = {"paper": _paper, "lite": _lite, "gpu": _gpu, "tone": _tone, "tiny": _tiny}


def config_to_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["model"] = to_dict(cfg.model)
    d["segments"] = [dataclasses.asdict(s) for s in cfg.segments]
    return d


def config_from_dict(d: dict, source: str = "train config") -> TrainConfig:
    """Inverse of `config_to_dict`; unknown or mistyped fields raise ValueError naming `source`."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: expected a JSON object")
    d = dict(d)
    model = from_dict(ModelConfig, d.pop("model", {}), f"{source}: field 'model'")
    segs_raw = d.pop("segments", [])
    if not isinstance(segs_raw, list):
        raise ValueError(f"{source}: field 'segments' must be a list")
    segs = tuple(from_dict(Segment, s, f"{source}: segment {i}") for i, s in enumerate(segs_raw))
    rest = from_dict(_Flat, d, source)
    return TrainConfig(model=model, segments=segs, **dataclasses.asdict(rest))


# TrainConfig's scalar fields (all but model and segments), for validation by `engine.gansynth.config.from_dict`.
_Flat = dataclasses.make_dataclass(
    "_Flat", [(f.name, f.type, field(default=f.default)) for f in dataclasses.fields(TrainConfig)
              if f.name not in ("model", "segments")], frozen=True)


def resolve_config(spec: str) -> TrainConfig:
    """A preset name or a JSON file path -> TrainConfig."""
    if spec in CONFIG_PRESETS:
        return CONFIG_PRESETS[spec]()
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--config {spec!r}: not a preset ({', '.join(CONFIG_PRESETS)}) nor a file")
    data = read_json(path)  # JsonFileError is a ValueError naming the file
    return config_from_dict(data, str(path))
