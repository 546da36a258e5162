"""The generator's fused CPU kernels (kernels.c, built at install as engine.gansynth._kernels).

`act_norm_(x, slope)`: leaky ReLU then pixel norm, in place, for a channels-last CPU tensor
in fp32 or bf16 without autograd: one pass over memory where PyTorch takes three, and where
its broadcast multiply over channels-innermost data runs in loops only as long as the channel
count. In the bundled model's two last blocks (16 and 8 channels at 64x512 and 128x1024) that
was the memory-bound half of a note. Returns False, leaving x alone, for anything else (other
dtypes, devices or layouts, widths the kernel does not take, a trace being recorded): the
caller then runs PyTorch's ops.
"""
from __future__ import annotations

import torch

try:
    from engine.gansynth._kernels import ffi, lib
except ImportError:  # not built (a source tree without `make setup`): PyTorch's ops do the work
    ffi = lib = None

_CALLS = {torch.float32: ("float *", "gs_act_norm_f32"), torch.bfloat16: ("uint16_t *", "gs_act_norm_bf16")}


def available() -> bool:
    return lib is not None


def act_norm_(x: torch.Tensor, slope: float, eps: float = 1e-8) -> bool:
    """x <- pixel_norm(leaky_relu(x, slope)) in place over dim 1; True if done here (the kernel
    itself refuses, untouched, the channel counts it does not take)."""
    call = _CALLS.get(x.dtype)
    if (lib is None or call is None or x.device.type != "cpu" or x.dim() != 4 or x.requires_grad
            or not x.is_contiguous(memory_format=torch.channels_last) or torch.jit.is_tracing()):
        return False
    pointer, name = call
    b, c, h, w = x.shape
    return getattr(lib, name)(ffi.cast(pointer, x.data_ptr()), b * h * w, c, slope, eps) == 0
