"""Training throughput: images/s for each stage of the lite config, ours vs Magenta's way.

Each stable stage (progress 0..6) is timed two ways in the same run, on random
normalized "real" images:
- ours:    G and D run only up to the stage's block, real data pooled to its resolution;
- magenta: the same step with every network at full resolution (Magenta keeps all
           blocks in the graph and masks them with alphas, so every stage costs about
           a full-resolution step; timed here as our step at progress 6).
For both the GAN step (D step with gradient penalty + G step) and the GLO step
(G forward/backward against an L1 target), in the precision the lite recipe's `auto` picks
here (bf16 where native, else fp32) and, for the top stage, the other precision (capped to
one small step where it is not native) and channels_last variants.

    python -m benchmarks.train [--quick] [--threads N]
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from benchmarks.common import summary
from engine.gansynth.config import SpectralConfig
from engine.training.batches import TrainData
from engine.training.recipe import CONFIG_PRESETS, Segment
from engine.training.trainer import Trainer


def _data(cfg, n: int = 64) -> TrainData:
    rng = np.random.default_rng(0)
    specs = rng.uniform(-0.8, 0.8, (n, 2, *cfg.model.output_shape)).astype(np.float16)
    pitches = rng.integers(cfg.model.lowest_pitch, cfg.model.highest_pitch + 1, n)
    return TrainData(specs, pitches, np.arange(n) % 8, SpectralConfig())


def images_per_second(trainer: Trainer, phase: str, progress: float, batch: int, seconds: float) -> float:
    """Steps at a fixed progress until `seconds` pass (after one warm-up step)."""
    seg = Segment(phase, progress, progress, 10 ** 9, batch, 1e-4)
    step = trainer.glo_step if phase == "glo" else trainer.gan_step
    step(seg, progress)
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        step(seg, progress)
        n += 1
    return n * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seconds = 2.0 if args.quick else 6.0
    base = CONFIG_PRESETS["lite"]()
    data = _data(base)
    trainer = Trainer(base, data, "unused", log=False)
    native = trainer.precision   # what the recipe's `auto` picks on this machine
    final = base.model.final_progress
    figures: dict = {"threads": args.threads, "precision": native}
    print(f"lite model widths {base.model.widths}, latent {base.model.latent_size}, {native} (the recipe's "
          f"auto on {trainer.device}), {args.threads} thread(s); images/s")
    print(f"{'stage':>10} {'phase':>5} {'batch':>5} {'ours':>8} {'magenta':>8} {'speed-up':>8}")
    for phase, batch in (("glo", 8), ("gan", 8)):
        full = images_per_second(trainer, phase, final, batch, seconds)
        for k in range(base.model.num_resolutions):
            t, f = base.model.resolution(k + 1)
            ours = full if k == final else images_per_second(trainer, phase, float(k), batch, seconds)
            print(f"{t:>4}x{f:<5} {phase:>5} {batch:>5} {ours:8.1f} {full:8.1f} {ours / full:7.1f}x")
            figures[f"{phase}_{t}x{f}_img_s"] = round(ours, 1)
        figures[f"{phase}_full_res_img_s"] = round(full, 1)
    # Precision / layout variants of the costly top stage (GLO step). A precision this machine does
    # not run natively (bf16 emulated on an AVX2 CPU: seconds an image) gets one small step, not minutes.
    other = "fp32" if native == "bf16" else "bf16"
    for precision, channels_last in ((native, True), (other, False), (other, True)):
        cfg = dataclasses.replace(base, precision=precision, channels_last=channels_last)
        capped = precision == "bf16" and native != "bf16"   # emulated
        rate = images_per_second(Trainer(cfg, data, "unused", log=False), "glo", final, 2 if capped else 8,
                                 0.0 if capped else seconds)
        name = f"{precision}{'_channels_last' if channels_last else ''}"
        print(f"top stage GLO step, {name}: {rate:.2f} images/s ({native} plain: {figures['glo_full_res_img_s']})"
              f"{'; not native here: one step of 2 images' if capped else ''}")
        figures[f"glo_full_res_{name}_img_s"] = round(rate, 2)
    summary("train", figures)


if __name__ == "__main__":
    main()
