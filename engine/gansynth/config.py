"""Frozen configuration dataclasses: one per model, stored inside every model file.

`ModelConfig` describes the progressive GAN (widths, schedule, conditioning);
`SpectralConfig` describes the audio <-> spectrogram representation. Both are
rebuilt from `config.json` when a model directory is loaded.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


# How a Synth does its arithmetic (engine.gansynth.synth.resolve_precision).
PRECISIONS = ("fp32", "bf16", "auto")
# How the mel matrix widens narrow bands (engine.gansynth.spectral.linear_to_mel_matrix): "magenta" is
# Magenta's own in-place widening on aliased edge views; "unaliased_edges" is this project's
# construction before 2026-12 (the bundled default model v1 was trained with it).
MEL_CONSTRUCTIONS = ("magenta", "unaliased_edges")
# What a model file written before the field existed was trained with.
LEGACY_MEL_CONSTRUCTION = "unaliased_edges"

PRECISION_HELP = "generator arithmetic: fp32, bf16, or auto (bf16 where the CPU/GPU has it natively)"
# What runs the generator (engine.gansynth.backend); here so that argument parsers need no torch.
BACKENDS = ("torch", "openvino", "ncnn", "auto")
ALTERNATIVES = ("openvino", "ncnn")  # fp32 CPU engines beside torch
BACKEND_HELP = ("generator engine: torch, openvino or ncnn (fp32, same sound), or auto (the fastest "
                "on this CPU for this model, measured once and cached)")


@dataclass(frozen=True)
class SpectralConfig:
    """Audio representation.

    H ("high frequency resolution"): 128 time x 1024 freq, n_fft 2048, hop 512.
    Non-H: 256 x 512, n_fft 1024, hop 256.
    """

    sample_rate: int = 16000
    num_samples: int = 64000
    time_steps: int = 128
    freq_bins: int = 1024
    representation: str = "mel_if"  # "mel_if" | "if"
    # Prespecified normalizer: norm = clip(a*x + b, -1, 1), per channel (logmag, IF).
    norm_a: tuple[float, float] = (0.0661371661726, 0.8)
    norm_b: tuple[float, float] = (0.113718730221, 0.0)
    # Which mel matrix the model was trained with (MEL_CONSTRUCTIONS); only used by "mel_if".
    mel_construction: str = "magenta"

    @property
    def n_fft(self) -> int:
        return 2 * self.freq_bins

    @property
    def hop_length(self) -> int:
        return self.n_fft // 4

    @property
    def pad_left(self) -> int:
        """Samples of left padding so the frames cover num_samples (3072 for H)."""
        return self.hop_length * (self.time_steps - 1) + self.n_fft - self.num_samples

    def __post_init__(self):
        if self.representation not in ("mel_if", "if"):
            raise ValueError(f"representation must be 'mel_if' or 'if', not {self.representation!r}")
        if self.mel_construction not in MEL_CONSTRUCTIONS:
            raise ValueError(f"mel_construction must be one of {MEL_CONSTRUCTIONS}, "
                             f"not {self.mel_construction!r}")
        if self.pad_left < 0:
            raise ValueError("time_steps * hop does not cover num_samples")


@dataclass(frozen=True)
class ModelConfig:
    """Progressive GAN shape.

    Widths follow Magenta: nf(k) = int(min(fmap_base / 2**(k * fmap_decay), fmap_max)).
    Block k (1..num_resolutions) works at start_shape * 2**(k-1).
    """

    latent_size: int = 256
    num_pitches: int = 61
    lowest_pitch: int = 24
    start_shape: tuple[int, int] = (2, 16)
    num_resolutions: int = 7
    fmap_base: int = 4096
    fmap_decay: float = 1.0
    fmap_max: int = 256
    kernel_size: int = 3

    def num_filters(self, block: int) -> int:
        return int(min(self.fmap_base / 2.0 ** (block * self.fmap_decay), self.fmap_max))

    @property
    def widths(self) -> list[int]:
        """nf(0) .. nf(num_resolutions)."""
        return [self.num_filters(k) for k in range(self.num_resolutions + 1)]

    @property
    def highest_pitch(self) -> int:
        return self.lowest_pitch + self.num_pitches - 1

    def resolution(self, block: int) -> tuple[int, int]:
        """(time, freq) of block `block` (1-based)."""
        s = 2 ** (block - 1)
        return (self.start_shape[0] * s, self.start_shape[1] * s)

    @property
    def output_shape(self) -> tuple[int, int]:
        return self.resolution(self.num_resolutions)

    @property
    def final_progress(self) -> float:
        return float(self.num_resolutions - 1)


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig(),
    # Widths / 4: 64,64,64,64,64,32,16,8 and a 64-d latent — CPU-trainable; the bundled model.
    "lite": ModelConfig(latent_size=64, fmap_base=1024, fmap_max=64),
    # For tests: narrow and cheap, full output shape.
    "tiny": ModelConfig(latent_size=16, fmap_base=512, fmap_max=8),
}


def spectral_from_dict(d, source: str = "spectral") -> SpectralConfig:
    """A SpectralConfig from a model file or training state; without `mel_construction`
    (written before the field existed) it is the construction those models were trained on."""
    if isinstance(d, dict) and "mel_construction" not in d:
        d = dict(d, mel_construction=LEGACY_MEL_CONSTRUCTION)
    return from_dict(SpectralConfig, d, source)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(cls, d: dict, source: str = "config"):
    """Build a frozen config from a dict, rejecting unknown or mistyped fields."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: expected an object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {sorted(unknown)}")
    kwargs = {}
    for name, value in d.items():
        default = getattr(cls(), name)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise ValueError(f"{source}: field {name!r} must be a list of {len(default)} numbers")
            value = tuple(type(default[0])(v) for v in value)
        elif isinstance(default, bool) or isinstance(default, str):
            if not isinstance(value, type(default)):
                raise ValueError(f"{source}: field {name!r} must be {type(default).__name__}")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{source}: field {name!r} must be a number")
            if isinstance(default, int) and float(value) != int(value):
                raise ValueError(f"{source}: field {name!r} must be an integer")
            value = type(default)(value)
        kwargs[name] = value
    return cls(**kwargs)
