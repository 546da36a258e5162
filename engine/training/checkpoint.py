"""Training checkpoints: one safetensors file holding every tensor plus a JSON header.

Layout of the tensor names:
    g.<param>, ema.<param>, d.<param>, latents,
    opt.<name>.<param index>.<exp_avg|exp_avg_sq|step>, rng.<name> (uint8 generator states)
The JSON (safetensors metadata key "state") holds the train config, the position in the
schedule and the optimisers' param groups. One file renamed into place = atomic: a killed
run loses at most the last interval, never the checkpoint.

`compact(...)` makes a small copy for the repository: bf16 tensors, no exp_avg (Adam's
first moment is the last gradient when beta1 = 0 and is re-learned in a few steps), and Adam
state only for the optimisers the next segment steps (the others restart when their phase
comes); a run resumed from it continues the schedule but is not bit-exact.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from engine.util.fileio import atomic_path, parse_json

CHECKPOINT_FILE = "checkpoint.safetensors"


class CheckpointError(Exception):
    """A training checkpoint is missing, corrupt or does not match the run."""


def pack(modules: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor],
         optimizers: dict[str, torch.optim.Optimizer], rngs: dict[str, torch.Tensor],
         state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten everything into (name -> tensor, JSON-able header)."""
    out: dict[str, torch.Tensor] = {}

    def put(name, t):
        out[name] = t.detach().cpu().contiguous().clone()

    for prefix, module in modules.items():
        for k, v in module.state_dict().items():
            put(f"{prefix}.{k}", v)
    for k, v in tensors.items():
        put(k, v)
    groups = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        groups[name] = sd["param_groups"]
        for idx, slot in sd["state"].items():
            for key, value in slot.items():
                put(f"opt.{name}.{idx}.{key}", torch.as_tensor(value))
    for k, v in rngs.items():
        out[f"rng.{k}"] = v.clone()
    header = dict(state, optimizer_groups=groups, compact=False)
    return out, header


def compact(tensors: dict[str, torch.Tensor], header: dict,
            keep_optimizers) -> tuple[dict[str, torch.Tensor], dict]:
    """The small copy (module docstring) of a packed state; Adam state of `keep_optimizers` only."""
    small = {}
    for name, t in tensors.items():
        if name.startswith("opt.") and (name.endswith(".exp_avg") or name.split(".")[1] not in keep_optimizers):
            continue
        keep = name.startswith("rng.") or name.endswith(".step") or not t.is_floating_point()
        small[name] = t if keep else t.to(torch.bfloat16)
    return small, dict(header, compact=True)


def save(path, tensors: dict[str, torch.Tensor], header: dict) -> Path:
    """Atomic write of a checkpoint file (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"state": json.dumps(header)})
    return path


def load(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint; raises CheckpointError naming the file when it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        header = parse_json(meta["state"], f"{path}: state header")
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({e})") from None
    return tensors, header


def unpack_module(tensors: dict[str, torch.Tensor], prefix: str, module: torch.nn.Module, source) -> None:
    sd = module.state_dict()
    missing = [k for k in sd if f"{prefix}.{k}" not in tensors]
    if missing:
        raise CheckpointError(f"{source}: {prefix} lacks {missing[:3]} (config mismatch?)")
    new = {}
    for k, v in sd.items():
        t = tensors[f"{prefix}.{k}"]
        if t.shape != v.shape:
            raise CheckpointError(f"{source}: {prefix}.{k} has shape {tuple(t.shape)}, expected {tuple(v.shape)}")
        new[k] = t.to(v.dtype)
    module.load_state_dict(new)


def unpack_optimizer(tensors: dict[str, torch.Tensor], header: dict, name: str,
                     opt: torch.optim.Optimizer) -> None:
    """Restore Adam slots; missing exp_avg (compact checkpoints) restarts at zero."""
    groups = header["optimizer_groups"].get(name)
    if groups is None:
        return
    state = {}
    params = [p for g in opt.param_groups for p in g["params"]]
    for idx, p in enumerate(params):
        step = tensors.get(f"opt.{name}.{idx}.step")
        if step is None:
            continue
        sq = tensors[f"opt.{name}.{idx}.exp_avg_sq"].to(p.dtype)
        avg = tensors.get(f"opt.{name}.{idx}.exp_avg")
        avg = torch.zeros_like(p) if avg is None else avg.to(p.dtype)
        state[idx] = {"step": step.float(), "exp_avg": avg, "exp_avg_sq": sq}
    sd = {"state": state, "param_groups": groups}
    opt.load_state_dict(sd)
