"""Data-parallel plumbing for the trainer: ranks, gradient averaging, device choice.

Each rank draws the same global batch indices and takes its slice; gradients are averaged
with one all-reduce per network per step (the gradient penalty's double backward rules out
the DDP wrapper's hooks; the arithmetic is the same).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average_grads(self, params) -> None:
        """All-reduce-mean the gradients of `params` in one flat buffer."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast(self, module_or_tensors) -> None:
        if self.world == 1:
            return
        tensors = module_or_tensors if isinstance(module_or_tensors, list) else \
            list(module_or_tensors.state_dict().values())
        for t in tensors:
            torch.distributed.broadcast(t.data if isinstance(t, nn.Parameter) else t, 0)


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend)
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())


def default_device(dist: Dist) -> torch.device:
    """This rank's GPU when CUDA is present (torchrun's LOCAL_RANK), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", dist.rank)) % torch.cuda.device_count())
    return torch.device("cpu")
