"""The fused leaky ReLU + pixel norm (engine/gansynth/kernels.c) against PyTorch's own ops."""
import pytest
import torch
from torch.nn import functional as F

from engine.gansynth import kernels
from engine.gansynth.config import PRESETS
from engine.gansynth.model import LEAKY_SLOPE, Generator, pixel_norm


def reference(x: torch.Tensor) -> torch.Tensor:
    return pixel_norm(F.leaky_relu(x.double(), LEAKY_SLOPE))


def test_the_kernels_are_built():
    assert kernels.available(), "engine.gansynth._kernels is missing: run `make setup` (pip install -e .)"


@pytest.mark.parametrize("c", [1, 2, 4, 8, 16, 32, 64, 256])
@pytest.mark.parametrize("hw", [(2, 16), (3, 5), (64, 512)])  # (3, 5): rows that leave a tail of < 16 lanes
def test_fp32_equals_pytorch_to_float_rounding(c, hw):
    torch.manual_seed(c)
    x = torch.randn(2, c, *hw).contiguous(memory_format=torch.channels_last) * 3
    x[0, :, 0, 0] = 0.0  # an all-zero pixel stays zero (eps), as in PyTorch
    want = reference(x)
    assert kernels.act_norm_(x, LEAKY_SLOPE)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x.double(), want, rtol=1e-5, atol=1e-6), (x.double() - want).abs().max()
    assert torch.all(x[0, :, 0, 0] == 0)


@pytest.mark.parametrize("c", [8, 16, 64])
def test_bf16_is_the_fp32_result_rounded_once(c):
    torch.manual_seed(1)
    x = torch.randn(1, c, 32, 64).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    want = reference(x.float())
    assert kernels.act_norm_(x, LEAKY_SLOPE)
    assert x.dtype == torch.bfloat16
    # bf16 keeps 8 significant bits: rounding once is within half a unit in the last place
    assert torch.all((x.double() - want).abs() <= want.abs() * 2 ** -8 + 1e-30)
    assert (x.double() - want).norm() / want.norm() < 3e-3


@pytest.mark.parametrize("case", ["contiguous", "float64", "grad", "odd width", "3d"])
def test_what_it_does_not_take_is_left_alone(case):
    x = torch.randn(1, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    if case == "contiguous":
        x = x.contiguous()
    elif case == "float64":
        x = x.double()
    elif case == "grad":
        x.requires_grad_(True)
    elif case == "odd width":
        x = torch.randn(1, 12, 4, 4).contiguous(memory_format=torch.channels_last)
    else:
        x = torch.randn(8, 4, 4)
    before = x.detach().clone()
    assert not kernels.act_norm_(x, LEAKY_SLOPE)
    assert torch.equal(x.detach(), before)


def test_a_generator_renders_the_same_with_and_without_the_kernels(monkeypatch):
    """The whole lite generator, fp32 and bf16 autocast, channels last as the Synth runs it."""
    torch.manual_seed(0)
    g = Generator(PRESETS["lite"]).eval().to(memory_format=torch.channels_last)
    z, labels = torch.randn(2, PRESETS["lite"].latent_size), torch.tensor([3, 50])
    calls = []
    fused = kernels.act_norm_
    monkeypatch.setattr(kernels, "act_norm_", lambda x, slope: calls.append(x.shape[1]) or fused(x, slope))
    with torch.inference_mode():
        fast = g(z, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast_bf16 = g(z, labels).float()
    assert len(calls) == 2 * 2 * len(g.blocks)  # every block's two act-norms, both precisions
    monkeypatch.setattr(kernels, "act_norm_", lambda x, slope: False)
    with torch.inference_mode():
        slow = g(z, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            slow_bf16 = g(z, labels).float()
    assert ((fast - slow).norm() / slow.norm()).item() < 1e-5
    # bf16: both paths round activations to 8 bits; the fused one rounds once per act-norm, not thrice
    assert ((fast_bf16 - slow).norm() / slow.norm()).item() <= ((slow_bf16 - slow).norm() / slow.norm()).item() * 1.5
