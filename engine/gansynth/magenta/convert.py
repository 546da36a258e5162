"""Magenta GANSynth checkpoints -> our `Generator` (no TensorFlow needed).

A Magenta training directory holds `experiment.json` (the training flags) and
`stage_000NN/` sub-directories with V2 checkpoints; the official downloads are
that directory zipped. Magenta samples with the last stage's latest checkpoint
and the generator's exponential-moving-average shadows, so we do the same:

    generator, spectral, meta = load_magenta("acoustic_only")      # or "acoustic_only.zip"
    gansynth import-magenta acoustic_only.zip -o models/acoustic   # convert once

Everything about the network is read from the tensors themselves (widths,
blocks, start shape, latent size, pitch count); experiment.json supplies the
representation (mel-IF or IF), the normalizer and the progressive schedule.
Failures raise `MagentaError` (a `ModelFileError`) naming the file and problem. Finding
the root, the flags and the stage, and unpacking zips, is engine/gansynth/magenta/files.py.
"""
from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from engine.gansynth.config import ModelConfig, SpectralConfig
from engine.gansynth.magenta.files import (MagentaError, extract_zip, find_root, find_stage, read_flags, warn,
                                           zip_sha256)
from engine.gansynth.magenta.tfcheckpoint import CheckpointError, CheckpointReader
from engine.gansynth.model import Generator
from engine.gansynth.modelfile import save_model_dir

G_SCOPE = "Generator/progressive_gan_generator"
D_SCOPE = "Discriminator/progressive_gan_discriminator"
EMA_SUFFIX = "/ExponentialMovingAverage"
LOWEST_PITCH = 24  # Magenta's labels index the sorted NSynth pitches 24..84

_REPRESENTATIONS = {"mel": "mel_if", "linear": "if"}


# ----------------------------------------------------------------------------- shapes -> config

def _g_name(block: int, layer: str, kind: str) -> str:
    sub = "conv2d/kernel" if kind == "kernel" else "bias"
    return f"{G_SCOPE}/progressive_gan_block_{block}/{layer}/{sub}"


def _blocks_present(shapes: dict, where) -> int:
    n = 0
    while _g_name(n + 1, "conv0", "kernel") in shapes:
        n += 1
    if n == 0:
        raise MagentaError(f"{where}: no generator variables ({_g_name(1, 'conv0', 'kernel')} is missing)")
    return n


def _fmap_candidates(widths: dict[int, int], hint: tuple[int, float, int]):
    """(base, decay, max) triples that may give nf(k) = widths[k] for every k."""
    hint_base, hint_decay, hint_max = hint
    top = max(widths.values())
    for decay in dict.fromkeys([float(hint_decay), 1.0, 0.5, 2.0, 0.25, 0.75, 1.5]):
        if decay <= 0:
            continue
        for fmax in dict.fromkeys([int(hint_max), top]):
            if fmax < top:
                continue
            lo, hi = 1.0, math.inf
            for k, w in widths.items():
                factor = 2.0 ** (k * decay)
                if w == fmax:
                    lo = max(lo, w * factor)
                else:
                    lo, hi = max(lo, w * factor), min(hi, (w + 1) * factor)
            if lo >= hi:
                continue
            choices = [int(hint_base)] if lo <= hint_base < hi else []
            choices += [2 ** math.ceil(math.log2(lo)), math.ceil(lo)]
            yield from ((b, decay, fmax) for b in choices if lo <= b < hi)


def fit_fmap(widths: dict[int, int], hint: tuple[int, float, int], num_resolutions: int = 7,
             where="checkpoint") -> tuple[int, float, int]:
    """fmap_base, fmap_decay, fmap_max reproducing the observed block widths exactly
    (and giving every later block at least one filter)."""
    for base, decay, fmax in _fmap_candidates(widths, hint):
        cfg = ModelConfig(fmap_base=base, fmap_decay=decay, fmap_max=fmax)
        if (all(cfg.num_filters(k) == w for k, w in widths.items())
                and all(cfg.num_filters(k) >= 1 for k in range(1, num_resolutions + 1))):
            return base, decay, fmax
    raise MagentaError(f"{where}: block widths {dict(sorted(widths.items()))} cannot be written as "
                       "int(min(fmap_base / 2**(k * fmap_decay), fmap_max)); our ModelConfig cannot hold them")


def infer_model_config(shapes: dict[str, tuple], flags: dict, where="checkpoint") -> tuple[ModelConfig, int]:
    """ModelConfig from tensor shapes (+ flags for what shapes cannot tell); returns (config, blocks present)."""
    blocks = _blocks_present(shapes, where)
    num_res = int(flags["num_resolutions"])
    if num_res < blocks:
        raise MagentaError(f"{where}: {blocks} generator blocks, but experiment.json says num_resolutions={num_res}")
    sh, sw, in_ch, _ = _shape(shapes, _g_name(1, "conv0", "kernel"), 4, where)
    kernel = _shape(shapes, _g_name(1, "conv1", "kernel"), 4, where)[0]
    widths = _block_widths(shapes, blocks, kernel, where)
    num_pitches = _num_pitches(shapes, flags, in_ch, where)
    hint = (int(flags["fmap_base"]), float(flags["fmap_decay"]), int(flags["fmap_max"]))
    base, decay, fmax = fit_fmap(widths, hint, num_res, where)
    cfg = ModelConfig(latent_size=in_ch - num_pitches, num_pitches=num_pitches, lowest_pitch=LOWEST_PITCH,
                      start_shape=(sh, sw), num_resolutions=num_res, fmap_base=base, fmap_decay=decay,
                      fmap_max=fmax, kernel_size=kernel)
    return cfg, blocks


def _block_widths(shapes, blocks: int, kernel: int, where) -> dict[int, int]:
    """nf(k) for the blocks present, checking every kernel's shape against its neighbours."""
    widths: dict[int, int] = {}
    for k in range(1, blocks + 1):
        kh, kw, cin, cout = _shape(shapes, _g_name(k, "conv0", "kernel"), 4, where)
        expected = {"conv1": (kernel, kernel, cout, cout), "to_rgb": (1, 1, cout, 2)}
        if k > 1:
            expected["conv0"] = (kernel, kernel, widths[k - 1], cout)
        for layer, want in expected.items():
            name = _g_name(k, layer, "kernel")
            if _shape(shapes, name, 4, where) != want:
                raise MagentaError(f"{where}: {name} has shape {list(shapes[name])}, expected {list(want)}")
            bias = _g_name(k, layer, "bias")
            if tuple(shapes.get(bias, ())) != (want[3],):
                raise MagentaError(f"{where}: {bias} is missing or not of shape [{want[3]}]")
        widths[k] = cout
    return widths


def _shape(shapes, name, rank, where) -> tuple:
    if name not in shapes:
        raise MagentaError(f"{where}: missing variable {name}")
    shape = tuple(shapes[name])
    if len(shape) != rank:
        raise MagentaError(f"{where}: {name} has shape {list(shape)}, expected rank {rank}")
    return shape


def _num_pitches(shapes, flags, in_ch, where) -> int:
    """Pitch count from the discriminator's class head, else from the flags' latent size, else 61."""
    head = "Discriminator/discriminator_cond/classification_logits/dense/kernel"
    latent_given = "latent_vector_size" in flags.get("_given", ())
    if head in shapes and len(shapes[head]) == 2:
        pitches = int(shapes[head][1])
        if latent_given and in_ch - int(flags["latent_vector_size"]) != pitches:
            raise MagentaError(f"{where}: generator input has {in_ch} channels and the class head "
                               f"{pitches} pitches, but experiment.json says latent_vector_size="
                               f"{flags['latent_vector_size']}")
    elif latent_given:
        pitches = in_ch - int(flags["latent_vector_size"])
    else:
        pitches = 61  # every GANSynth dataset: MIDI 24..84
    if pitches < 1 or in_ch - pitches < 1:
        raise MagentaError(f"{where}: cannot split the {in_ch} generator input channels into latent + pitches")
    return pitches


def spectral_from_flags(flags: dict, cfg: ModelConfig, root: Path) -> SpectralConfig:
    """Representation, frame layout and normalizer as Magenta's data helper builds them."""
    where = root / "experiment.json"
    rep = _REPRESENTATIONS.get(flags["data_type"])
    if rep is None:
        raise MagentaError(f"{where}: data_type {flags['data_type']!r} is not supported "
                           "(only 'mel' = mel-IF and 'linear' = IF)")
    for key, want in (("g_fn", "specgram"), ("scale_mode", "ALL"), ("scale_base", 2),
                      ("simple_arch", False), ("to_rgb_activation", "tanh")):
        if flags.get(key) != want:
            raise MagentaError(f"{where}: {key}={flags.get(key)!r} is not supported (needs {want!r})")
    time_steps, freq_bins = cfg.output_shape
    if freq_bins & (freq_bins - 1):
        raise MagentaError(f"{where}: {freq_bins} frequency bins is not a power of two")
    norm_a, norm_b = _normalizer(flags, root)
    try:
        return SpectralConfig(sample_rate=int(flags["sample_rate"]), num_samples=int(flags["audio_length"]),
                              time_steps=time_steps, freq_bins=freq_bins, representation=rep,
                              norm_a=norm_a, norm_b=norm_b, mel_construction="magenta")
    except ValueError as e:
        raise MagentaError(f"{where}: {e}") from None


def _normalizer(flags: dict, root: Path) -> tuple[tuple[float, float], tuple[float, float]]:
    kind = flags["data_normalizer"]
    if kind == "specgrams_prespecified_normalizer":
        return ((float(flags["mag_normalizer_a"]), float(flags["p_normalizer_a"])),
                (float(flags["mag_normalizer_b"]), float(flags["p_normalizer_b"])))
    if kind == "none":
        return (1.0, 1.0), (0.0, 0.0)
    if kind == "specgrams_simple_normalizer":
        path = root / "assets" / "specgrams_simple_normalizer.npz"
        try:
            with np.load(path, allow_pickle=False) as npz:
                m_a, m_b, p_a, p_b = (float(v) for v in np.asarray(npz["normalizer"], np.float64).ravel())
        except (OSError, KeyError, ValueError) as e:
            raise MagentaError(f"{path}: cannot read the simple normalizer ({e})") from None
        return (m_a, p_a), (m_b, p_b)
    raise MagentaError(f"{root / 'experiment.json'}: data_normalizer {kind!r} is not supported")


# ----------------------------------------------------------------------------- progress

def compute_progress(global_step: int, flags: dict, num_blocks: int) -> float:
    """Magenta's networks.compute_progress: stable/transition phases, capped at num_blocks - 1."""
    stable, trans = int(flags["stable_stage_num_images"]), int(flags["transition_stage_num_images"])
    capped = min(int(global_step), num_blocks * stable + (num_blocks - 1) * trans - 1)
    period = stable + trans
    return float(capped // period) + max(0.0, float(capped % period - stable) / trans)


def compute_progress_from_time(train_time: float, flags: dict, num_blocks: int) -> float:
    """Magenta's compute_progress_from_time for runs with a wall-clock train_time_limit."""
    num_stages = 2 * int(flags["num_resolutions"]) - 1
    times = np.ones(num_stages) * float(flags["train_time_stage_multiplier"]) ** np.arange(num_stages)
    times = np.cumsum(times * float(flags["train_time_limit"]) / times.sum())
    progress = sum(min(1.0, max(0.0, (train_time - times[i - 1]) / (times[i] - times[i - 1])))
                   for i in range(1, num_stages, 2))
    return float(min(progress, num_blocks - 1))


def _progress(reader: CheckpointReader, flags: dict, blocks: int, meta: dict) -> float:
    if not flags.get("train_progressive", True):
        return float(blocks - 1)
    if flags.get("train_time_limit") is not None:
        if "Variable" not in reader:
            warn(meta, f"{reader.index_path}: no train_time 'Variable'; assuming the final stage")
            return float(blocks - 1)
        return compute_progress_from_time(float(reader.read("Variable")), flags, blocks)
    if "global_step" not in reader:
        warn(meta, f"{reader.index_path}: no global_step; assuming the final stage")
        return float(blocks - 1)
    step = int(np.asarray(reader.read("global_step")).reshape(-1)[0])
    meta["global_step"] = step
    return compute_progress(step, flags, blocks)


# ----------------------------------------------------------------------------- weights

class StagedGenerator(Generator):
    """A generator frozen at a training progress short of the last stage.

    Runs the blocks that progress needs and nearest-upsamples the mix to the
    full output size, as Magenta's generator does at every stage.
    """

    def __init__(self, cfg: ModelConfig, progress: float):
        super().__init__(cfg)
        self.progress = float(progress)

    def forward(self, z, labels, progress=None):
        out = super().forward(z, labels, self.progress if progress is None else progress)
        scale = self.cfg.output_shape[0] // out.shape[2]
        return F.interpolate(out, scale_factor=scale, mode="nearest") if scale > 1 else out


def _pick(reader, name: str, prefer_ema: bool, used: dict) -> np.ndarray:
    if prefer_ema and name + EMA_SUFFIX in reader:
        used["ema"] += 1
        return reader.read(name + EMA_SUFFIX)
    used["raw"] += 1
    return reader.read(name)


def generator_state_dict(reader: CheckpointReader, cfg: ModelConfig, blocks: int,
                         prefer_ema: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Our Generator's state dict (OIHW kernels) from Magenta's HWIO variables.

    Blocks the checkpoint does not have yet (early stages) are zero: progress never reaches them.
    Returns the state dict and {"ema": n, "raw": n} counts of the variables used.
    """
    used = {"ema": 0, "raw": 0}
    with torch.device("meta"):  # shapes only, no weights allocated
        template = Generator(cfg).state_dict()
    state = {}
    for k in range(1, cfg.num_resolutions + 1):
        for layer in ("conv0", "conv1", "to_rgb"):
            w_key, b_key = f"blocks.{k - 1}.{layer}.weight", f"blocks.{k - 1}.{layer}.bias"
            if k > blocks:
                state[w_key] = torch.zeros(template[w_key].shape)
                state[b_key] = torch.zeros(template[b_key].shape)
                continue
            kernel = _pick(reader, _g_name(k, layer, "kernel"), prefer_ema, used)
            bias = _pick(reader, _g_name(k, layer, "bias"), prefer_ema, used)
            if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
                raise MagentaError(f"{reader.index_path}: NaN or infinite values in block {k} {layer}")
            state[w_key] = torch.from_numpy(np.ascontiguousarray(kernel.astype(np.float32).transpose(3, 2, 0, 1)))
            state[b_key] = torch.from_numpy(bias.astype(np.float32).reshape(-1))
            for key in (w_key, b_key):
                if state[key].shape != template[key].shape:
                    raise MagentaError(f"{reader.index_path}: {key} converts to shape {tuple(state[key].shape)}, "
                                       f"expected {tuple(template[key].shape)}")
    return state, used


def discriminator_state_dict(reader: CheckpointReader, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our Discriminator's state dict from Magenta's D variables (full-grown checkpoints only)."""
    def conv(name):
        return torch.from_numpy(np.ascontiguousarray(reader.read(name + "/conv2d/kernel").transpose(3, 2, 0, 1)))

    def dense(name):
        return torch.from_numpy(np.ascontiguousarray(reader.read(name + "/dense/kernel").T))

    state = {}
    for k in range(1, cfg.num_resolutions + 1):
        scope = f"{D_SCOPE}/progressive_gan_block_{k}"
        for ours, theirs in (("from_rgb", "from_rgb"), ("conv0", "conv0"), ("conv1", "conv1")):
            state[f"{ours}.{k - 1}.weight"] = conv(f"{scope}/{theirs}")
            state[f"{ours}.{k - 1}.bias"] = torch.from_numpy(reader.read(f"{scope}/{theirs}/bias"))
    for ours, theirs in (("logits", f"{D_SCOPE}/progressive_gan_block_1/logits"),
                         ("classifier", "Discriminator/discriminator_cond/classification_logits")):
        state[f"{ours}.weight"] = dense(theirs)
        state[f"{ours}.bias"] = torch.from_numpy(reader.read(f"{theirs}/bias"))
    return state


# ----------------------------------------------------------------------------- public API

def load_magenta(path, prefer_ema: bool = True) -> tuple[Generator, SpectralConfig, dict]:
    """Load a Magenta GANSynth training dir (experiment.json + stage_*) or its .zip.

    Returns (generator in eval mode, spectral config, meta). meta holds the checkpoint
    path, global_step, progress, which weights were used ("ema"/"raw") and any warnings.
    """
    path = Path(os.path.expanduser(str(path)))
    meta: dict = {"source": "magenta-gansynth", "path": str(path)}
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise MagentaError(f"{path}: not a zip archive (expected a Magenta checkpoint .zip or directory)")
        meta["zip_sha256"] = zip_sha256(path)
        root = extract_zip(path)
    elif path.is_dir():
        root = find_root(path)
    else:
        raise MagentaError(f"{path}: no such file or directory")
    flags = read_flags(root, meta)
    stage, prefix = find_stage(root, meta)
    try:
        reader = CheckpointReader(prefix)
        shapes = {name: info.shape for name, info in reader.variables().items()}
        cfg, blocks = infer_model_config(shapes, flags, reader.index_path)
        spectral = spectral_from_flags(flags, cfg, root)
        progress = _progress(reader, flags, blocks, meta)
        state, used = generator_state_dict(reader, cfg, blocks, prefer_ema)
    except CheckpointError as e:
        raise MagentaError(str(e)) from None
    except (TypeError, ValueError, KeyError) as e:  # a flag of the wrong type in experiment.json
        raise MagentaError(f"{root / 'experiment.json'}: malformed training flags ({e!r})") from None
    meta.update(checkpoint=str(prefix), stage=stage, progress=progress, blocks=blocks,
                representation=spectral.representation)
    meta["weights"] = "ema" if not used["raw"] else ("raw" if not used["ema"] else "mixed")
    if meta["weights"] != "ema":
        reason = "requested" if not prefer_ema else "the checkpoint has no ExponentialMovingAverage shadows"
        warn(meta, f"{reader.index_path}: using raw generator weights for {used['raw']} variables ({reason}); "
                    "Magenta samples with the EMA weights, so the sound will differ")
    if cfg.num_pitches != 61:
        warn(meta, f"{reader.index_path}: {cfg.num_pitches} pitch classes (not 61); assuming label 0 is MIDI "
                    f"{LOWEST_PITCH}")
    final = float(cfg.num_resolutions - 1)
    if progress < final:
        warn(meta, f"{reader.index_path}: checkpoint is not at the final stage (stage {stage}, "
                    f"global_step {meta.get('global_step', '?')}, progress {progress:g} of {final:g}); "
                    "generating at that progress")
        generator = StagedGenerator(cfg, progress)
    else:
        generator = Generator(cfg)
    generator.load_state_dict(state)
    return generator.eval(), spectral, meta


def import_checkpoint(src, out, prefer_ema: bool = True) -> tuple[Path, dict]:
    """Convert once into our model files; refuses checkpoints short of the final stage."""
    generator, spectral, meta = load_magenta(src, prefer_ema=prefer_ema)
    if isinstance(generator, StagedGenerator):
        raise MagentaError(f"{src}: checkpoint stops at progress {generator.progress:g} of "
                           f"{generator.cfg.final_progress:g}; model files hold fully grown generators only "
                           "(play it directly with load_synth / --model instead)")
    provenance = {k: meta[k] for k in ("source", "path", "checkpoint", "global_step", "weights", "zip_sha256",
                                       "representation") if k in meta}
    return save_model_dir(out, generator, spectral, provenance), meta
