"""`gansynth train`: progressive GANSynth training with an optional GLO warm start.

    gansynth train --data DIR [DIR ...] --out RUN [--config paper|lite|gpu|tone|tiny|FILE.json] [--resume]
                   [--max-minutes M] [--precision auto|bf16|fp32]

The training itself is `Trainer` (engine/training/trainer.py). Here: a new or resumed run
(`build_trainer`), and model files or a compact resumable state exported from a run's
checkpoint without its data.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from engine.gansynth.config import SpectralConfig, spectral_from_dict
from engine.training import checkpoint as ckpt
from engine.training.batches import TrainData, load_train_data
from engine.training.distributed import init_distributed
from engine.training.recipe import TRAIN_PRECISIONS, TrainConfig, config_from_dict, resolve_config
from engine.training.trainer import Trainer, compact_state


def build_trainer(cfg: TrainConfig, data: TrainData, out_dir, resume: bool = False, **kwargs) -> Trainer:
    trainer = Trainer(cfg, data, out_dir, **kwargs)
    path = Path(out_dir) / ckpt.CHECKPOINT_FILE
    if resume:
        tensors, header = ckpt.load(path)
        trainer.load_state(tensors, header, path)
    return trainer


def export_checkpoint(run_dir, out_dir, dtype: torch.dtype = torch.float32) -> Path:
    """Model files (EMA generator + latent prior) from RUN/checkpoint.safetensors, no data needed."""
    path = Path(run_dir) / ckpt.CHECKPOINT_FILE
    tensors, header = ckpt.load(path)
    cfg = config_from_dict(header["config"], f"{path}: config")
    spectral = spectral_from_dict(header.get("spectral", {}), f"{path}: spectral")
    n = int(header["num_instruments"])
    fake = TrainData(np.broadcast_to(np.zeros((1, 2, *cfg.model.output_shape), np.float16),
                                     (n, 2, *cfg.model.output_shape)),
                     [cfg.model.lowest_pitch] * n, np.arange(n), spectral)  # only sizes the latents
    trainer = Trainer(cfg, fake, run_dir, log=False, device="cpu")
    trainer.load_state(tensors, header, path)
    return trainer.export_model(out_dir, dtype=dtype)


def export_compact_state(run_dir, out_dir) -> Path:
    """A small resumable copy of RUN's checkpoint (`compact_state`)."""
    tensors, header = ckpt.load(Path(run_dir) / ckpt.CHECKPOINT_FILE)
    return ckpt.save(Path(out_dir) / ckpt.CHECKPOINT_FILE, *compact_state(tensors, header))


# ----------------------------------------------------------------------------- CLI

def add_arguments(parser) -> None:
    parser.add_argument("--data", nargs="+", metavar="DIR",
                        help="dataset directories (NSynth json/wav layout); several train as one set, "
                             "their instruments kept apart")
    parser.add_argument("--out", required=True,
                        help="run directory (checkpoint, logs, model/, and model-segmentN/ as each segment ended)")
    parser.add_argument("--config", default=None,
                        help="paper | lite | gpu | tone | tiny | FILE.json (default lite; with --resume: a new "
                             "schedule for the same model, continued from the saved segment and step)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after M minutes")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--precision", choices=TRAIN_PRECISIONS, default=None,
                        help="autocast, over the recipe's (or the resumed run's): bf16, fp32, or auto = bf16 "
                             "where this device runs it natively (a CUDA GPU with bf16, a CPU with AMX or "
                             "AVX512-BF16), else fp32")
    parser.add_argument("--representation", default="mel_if", choices=("mel_if", "if"))
    parser.add_argument("--export", metavar="DIR", help="only write model files from --out's checkpoint to DIR")
    parser.add_argument("--fp16", action="store_true", help="with --export: store the weights as float16")
    parser.add_argument("--export-state", metavar="DIR",
                        help="only write a compact (bf16, resumable) copy of --out's checkpoint to DIR; "
                             "continue it later with --out DIR --resume")


def run(args) -> int:
    import sys

    out = Path(args.out)
    ck = out / ckpt.CHECKPOINT_FILE
    if args.export or args.export_state:
        try:
            if args.export_state:
                path = export_compact_state(out, args.export_state)
            else:
                path = export_checkpoint(out, args.export, torch.float16 if args.fp16 else torch.float32)
        except (ValueError, ckpt.CheckpointError, OSError) as e:
            print(f"gansynth train: {e}", file=sys.stderr)
            return 2
        print(f"exported {path}")
        return 0
    if not args.data:
        print("gansynth train: --data is required to train", file=sys.stderr)
        return 2
    try:
        spectral = SpectralConfig(representation=args.representation)
        if args.resume:
            _, header = ckpt.load(ck)
            cfg = config_from_dict(header["config"], f"{ck}: config")
            # A resumed run keeps the representation (and mel matrix) it was trained on.
            spectral = spectral_from_dict(header.get("spectral", {}), f"{ck}: spectral")
            if args.config is not None:
                new = resolve_config(args.config)
                if new.model != cfg.model:
                    raise ValueError(f"--config {args.config}: its model differs from the run's in {ck}")
                cfg = new
        else:
            if ck.exists():
                print(f"gansynth train: {ck} exists; pass --resume to continue it", file=sys.stderr)
                return 2
            cfg = resolve_config(args.config or "lite")
        if args.precision is not None:   # how this machine computes, not what is learned: a resumed run may change it
            cfg = dataclasses.replace(cfg, precision=args.precision)
        data = load_train_data(args.data, spectral)
        dist = init_distributed()
        trainer = build_trainer(cfg, data, out, resume=args.resume, dist=dist, threads=args.threads)
    except (ValueError, ckpt.CheckpointError, OSError) as e:
        print(f"gansynth train: {e}", file=sys.stderr)
        return 2
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        print(f"training {cfg.total_images} images in {len(cfg.segments)} segments on {len(data)} notes "
              f"({data.num_instruments} instruments), world size {dist.world}, {trainer.precision} on "
              f"{trainer.device}; run dir {out}")
    trainer.run(max_minutes=args.max_minutes)
    return 0
