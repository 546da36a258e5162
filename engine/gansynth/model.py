"""Progressive GANSynth generator and discriminator (Magenta's architecture).

Tensors are NCHW: [batch, channels, time, freq]; the final output is
[batch, 2, 128, 1024] for the H representation (channel 0 log-mel, 1 mel-IF,
both normalized to [-1, 1] by tanh).

Each network runs only up to the block that `progress` needs: at progress p,
blocks 1..ceil(p)+1 contribute (Magenta runs every block at full resolution and
masks with alphas; outputs agree up to nearest upsampling).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from engine.gansynth import kernels
from engine.gansynth.config import ModelConfig

LEAKY_SLOPE = 0.2


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean over channels of x^2 + eps); x [batch, channels, ...]."""
    return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + eps)


def he_scale(fan_in: int, slope: float) -> float:
    """Equalized-LR scale sqrt(2 / ((1 + slope^2) fan_in)); slope 0 for body convs, 1 for linear outputs."""
    return math.sqrt(2.0 / ((1.0 + slope * slope) * fan_in))


class EqConv2d(nn.Module):
    """Conv with N(0,1) weights scaled at run time by the He constant, bias added after."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int] | int, padding=0, slope: float = 0.0):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kh, kw))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.scale = he_scale(in_ch * kh * kw, slope)
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.scaled_weight(), inference_bias(self), padding=self.padding)

    def scaled_weight(self) -> torch.Tensor:
        """weight * scale; without autograd, computed once per weight update (an inference call
        would otherwise rescale every weight of the network each time: 1-2 % of a note)."""
        if torch.is_grad_enabled():
            return self.weight * self.scale
        return inference_weight(self, "scaled", lambda: self.weight * self.scale)


def inference_weight(module: nn.Module, name: str, make, source: torch.Tensor | None = None) -> torch.Tensor:
    """`make()`, cached on `module` until `source` (default: its weight) changes (in place:
    optimizer steps, EMA, load_state_dict; or replaced: .to()); under autocast, cast as autocast
    would. Only for use without autograd. A trace (OpenVINO's conversion) records `make()`
    itself, so that every traced call is the same graph."""
    if torch.jit.is_tracing():
        return make()
    w = module.weight if source is None else source
    cast = _autocast_dtype(w)
    key = (w._version, w.data_ptr(), w.dtype, w.device, cast)
    cache = module.__dict__.setdefault("_inference_cache", {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = cache[name] = (key, make() if cast is None else make().to(cast))
    return hit[1]


def inference_bias(module: nn.Module) -> torch.Tensor:
    """module.bias as autocast would cast it (cached like `inference_weight`), else itself."""
    b = module.bias
    if torch.is_grad_enabled() or _autocast_dtype(b) is None:
        return b
    return inference_weight(module, "bias", lambda: b, source=b)


def _autocast_dtype(w: torch.Tensor) -> torch.dtype | None:
    """The dtype autocast would cast a floating weight to in its conv / matmul here, or None.
    Cast once per weight change instead of in every call (a bundled bf16 note cast its 30
    weights and biases every time: 61 pitches 0.722 -> 0.700 s on a Xeon with AMX)."""
    kind = w.device.type
    if not torch.is_autocast_enabled(kind) or not w.is_floating_point():
        return None
    dtype = torch.get_autocast_dtype(kind)
    return None if dtype == w.dtype else dtype


class EqLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, slope: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = he_scale(in_features, slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


# Nearest x2 upsampling followed by a 3x3 conv (padding 1) equals one transposed 3x3->4x4 conv
# of the low-resolution input with stride 2 (padding 1): output row 2i+a reads input rows
# i-1, i (a=0) or i, i+1 (a=1), each through a sum of the original kernel rows. In
# conv_transpose2d's convention, input row i reaches output row 2i+k-1 through tap k, so tap k
# sums the 3x3 rows _TRANSPOSED_TAPS[k, :] (k=1: rows 1+2 for a=0 from row i; k=3: row 0 for a=0
# from row i-1 ...). It executes only the useful multiply-adds (4 of 9 taps per output pixel)
# and writes the upsampled layout directly (no pixel shuffle): on a 2-core AVX2 CPU, channels
# last, ~2x faster than a 4-phase 3x3 conv plus shuffle, and ~4x less memory traffic than
# upsampling first.
_TRANSPOSED_TAPS = torch.tensor([[0., 0., 1.], [0., 1., 1.], [1., 1., 0.], [1., 0., 0.]])


def upsample_conv3x3(x: torch.Tensor, conv: "EqConv2d") -> torch.Tensor:
    """conv(nearest-upsample-x2(x)) for a 3x3 EqConv2d with padding 1, without the upsampled image:
    x [B, in, H, W] -> [B, out, 2H, 2W] (channels_last in, channels_last out); the same sums
    (to float rounding)."""
    return F.conv_transpose2d(x, inference_weight(conv, "transposed", lambda: _transposed_weight(conv)),
                              inference_bias(conv), stride=2, padding=1)


def _transposed_weight(conv: "EqConv2d") -> torch.Tensor:
    w = conv.weight * conv.scale  # [out, in, 3, 3]
    taps = _TRANSPOSED_TAPS.to(w)
    return torch.einsum("kr,lc,oirc->iokl", taps, taps, w)  # [in, out, 4, 4]


def start_conv(x: torch.Tensor, conv: "EqConv2d") -> torch.Tensor:
    """Block 1's conv of the 1x1 input padded by (sh-1, sw-1), without the padding: output pixel
    (i, j) reads only kernel tap (sh-1-i, sw-1-j), so it is one matrix product with the flipped
    kernel, [B, C] x [C, sh*sw*out], laid out channels last (0.28 -> 0.02 ms on a Xeon, fp32: the
    padded conv multiplies zeros; the bundled model's 61 pitches 1.39 -> 1.34 s). x [B, C, 1, 1] -> [B, out, sh, sw]; the same sums."""
    out, c, sh, sw = conv.weight.shape
    dense = inference_weight(conv, "start", lambda: (conv.weight * conv.scale).flip(2, 3)
                             .permute(1, 2, 3, 0).reshape(c, -1).contiguous())
    bias = inference_weight(conv, "start_bias", lambda: conv.bias.repeat(sh * sw), source=conv.bias)
    return torch.addmm(bias, x.flatten(1), dense).view(-1, sh, sw, out).permute(0, 3, 1, 2)


def span_rows(cfg: ModelConfig, rows: int) -> dict[int, int]:
    """{block: rows of its output to keep} so that the first `rows` output rows come out exact.

    Block k (k > 1) is an x2 upsample then two 3x3 convs; cropping its input to R rows makes
    the convs read zero padding below row R-1, which reaches rows 2R-2 and 2R-1 of its output:
    rows below 2R-2 are exact. So block k-1 keeps ceil((need_k + 2) / 2) rows. Only crops that
    remove rows are listed."""
    if rows < 1:
        raise ValueError(f"time_rows must be >= 1, not {rows}")
    keep, need = {}, rows
    for k in range(cfg.num_resolutions, 0, -1):
        if need < cfg.resolution(k)[0]:
            keep[k] = need
        need = -(-(need + 2) // 2)
    return keep


def blocks_for_progress(cfg: ModelConfig, progress: float) -> int:
    """Number of blocks with non-zero weight at `progress` (1..num_resolutions)."""
    return max(1, min(cfg.num_resolutions, math.ceil(progress - 1e-9) + 1))


def generator_alpha(block: int, progress: float) -> float:
    return max(0.0, min(progress - (block - 2), block - progress))


def _act_norm(x: torch.Tensor) -> torch.Tensor:
    """pixel_norm(leaky ReLU(x)); in place when autograd is off (inference: fewer passes over memory)."""
    if torch.is_grad_enabled():
        return pixel_norm(_act(x))
    if kernels.act_norm_(x, LEAKY_SLOPE):  # CPU, channels last: one fused pass (engine.gansynth.kernels)
        return x
    x = F.leaky_relu_(x, LEAKY_SLOPE)
    if x.is_contiguous(memory_format=torch.channels_last):  # channels innermost: one reduction pass
        ms = torch.linalg.vector_norm(x, dim=1, keepdim=True).square_().div_(x.shape[1])
    else:
        ms = torch.mean(x * x, dim=1, keepdim=True)
    return x.mul_(ms.add_(1e-8).rsqrt_())


def _to_output(conv: EqConv2d, x: torch.Tensor) -> torch.Tensor:
    """tanh(conv(x)) for a block's 1x1 output conv. Without autograd on a channels-last x (CPU
    inference): one matrix product [2, C] x [C, pixels] (PyTorch's 1x1 conv with 2 outputs
    ran at a third of that speed) and tanh as 2 sigmoid(2x) - 1 in place (half the time of
    tanh here; they differ by float rounding); [B, 2, H, W]."""
    if torch.is_grad_enabled() or not x.is_contiguous(memory_format=torch.channels_last):
        return torch.tanh(conv(x))
    b, c, h, w = x.shape
    y = torch.addmm(inference_bias(conv)[:, None], conv.scaled_weight()[:, :, 0, 0], x.permute(0, 2, 3, 1).reshape(-1, c).t())
    y = y.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)
    return y.view(-1, b, h, w).transpose(0, 1)


class GeneratorBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, block: int):
        super().__init__()
        out_ch = cfg.num_filters(block)
        if block == 1:
            in_ch = cfg.latent_size + cfg.num_pitches
            sh, sw = cfg.start_shape
            # Magenta pads the 1x1 input by (sh-1, sw-1) then runs a VALID (sh, sw) conv.
            self.conv0 = EqConv2d(in_ch, out_ch, (sh, sw), padding=(sh - 1, sw - 1))
        else:
            self.conv0 = EqConv2d(cfg.num_filters(block - 1), out_ch, cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.conv1 = EqConv2d(out_ch, out_ch, cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.to_rgb = EqConv2d(out_ch, 2, 1, slope=1.0)
        self.first = block == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.conv0(x) if torch.is_grad_enabled() else start_conv(x, self.conv0)
        elif not torch.is_grad_enabled() and self.conv0.weight.shape[2:] == (3, 3):
            x = upsample_conv3x3(x, self.conv0)  # inference
        else:
            x = self.conv0(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = _act_norm(x)
        return _act_norm(self.conv1(x))


class Generator(nn.Module):
    """z [batch, latent] + pitch labels [batch] (0-based) -> [batch, 2, T, F] in [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(GeneratorBlock(cfg, k) for k in range(1, cfg.num_resolutions + 1))

    def forward(self, z: torch.Tensor, labels: torch.Tensor, progress: float | None = None,
                time_rows: int | None = None) -> torch.Tensor:
        """`time_rows` (final progress only): compute just the first rows of the output in time,
        [batch, 2, time_rows, F], equal to those rows of the whole output (to float rounding)."""
        cfg = self.cfg
        progress = cfg.final_progress if progress is None else progress
        n_blocks = blocks_for_progress(cfg, progress)
        keep = span_rows(cfg, time_rows) if time_rows is not None and progress == cfg.final_progress else {}
        onehot = F.one_hot(labels.long(), cfg.num_pitches).to(z.dtype)
        x = pixel_norm(torch.cat([z, onehot], dim=1))[:, :, None, None]  # [B, latent+pitches, 1, 1]
        out = None  # the sum of the faded-in outputs so far (None: all zero)
        for k in range(1, n_blocks + 1):
            block = self.blocks[k - 1]
            x = block(x)
            if k in keep:
                x = x[:, :, :keep[k]]
            alpha = generator_alpha(k, progress)
            if out is not None:
                out = F.interpolate(out, scale_factor=2, mode="nearest")
            if alpha > 0:
                rgb = _to_output(block.to_rgb, x)
                rgb = rgb if alpha == 1.0 else alpha * rgb
                out = rgb if out is None else out + rgb
        if out is None:
            out = torch.zeros(x.shape[0], 2, *x.shape[2:], dtype=x.dtype, device=x.device)
        return out


def minibatch_stddev(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scalar: mean over all features of sqrt(population var over batch + eps)."""
    var = torch.mean((x - x.mean(dim=0, keepdim=True)) ** 2, dim=0)
    return torch.mean(torch.sqrt(var + eps))


class Discriminator(nn.Module):
    """[batch, 2, T, F] at the resolution of `progress` -> (logits [batch], pitch logits [batch, pitches])."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        nf, k_pad = cfg.num_filters, cfg.kernel_size // 2
        self.from_rgb = nn.ModuleList(EqConv2d(2, nf(k), 1) for k in range(1, cfg.num_resolutions + 1))
        self.conv0 = nn.ModuleList()
        self.conv1 = nn.ModuleList()
        for k in range(1, cfg.num_resolutions + 1):
            if k == 1:
                self.conv0.append(EqConv2d(nf(1) + 1, nf(1), cfg.kernel_size, padding=k_pad))
                self.conv1.append(EqConv2d(nf(1), nf(0), cfg.start_shape))
            else:
                self.conv0.append(EqConv2d(nf(k), nf(k), cfg.kernel_size, padding=k_pad))
                self.conv1.append(EqConv2d(nf(k), nf(k - 1), cfg.kernel_size, padding=k_pad))
        self.logits = EqLinear(nf(0), 1)
        self.classifier = EqLinear(nf(0), cfg.num_pitches)

    def forward(self, images: torch.Tensor, progress: float | None = None):
        cfg = self.cfg
        progress = cfg.final_progress if progress is None else progress
        top = blocks_for_progress(cfg, progress)
        x = _act(self.from_rgb[top - 1](images))
        for k in range(top, 1, -1):
            x = _act(self.conv1[k - 1](_act(self.conv0[k - 1](x))))
            x = F.avg_pool2d(x, 2)
            alpha = min(1.0, max(0.0, (k - 1) - progress))
            if alpha > 0:
                lod = F.avg_pool2d(images, 2 ** (top - k + 1))
                x = alpha * _act(self.from_rgb[k - 2](lod)) + (1.0 - alpha) * x
        std = minibatch_stddev(x).expand(x.shape[0], 1, *x.shape[2:])
        x = _act(self.conv0[0](torch.cat([x, std], dim=1)))
        x = _act(self.conv1[0](x)).flatten(1)  # [B, nf(0)]
        return self.logits(x).squeeze(1), self.classifier(x)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)


def make_ema(model: nn.Module) -> nn.Module:
    ema = copy.deepcopy(model)
    ema.requires_grad_(False)
    return ema.eval()
