"""The generator's forward pass run by ncnn (Tencent's inference library), fp32 on the CPU.

ncnn computes the 3x3 convolutions with Winograd transforms (F(6x6,3x3) and kin on x86 with
AVX2/FMA, and on ARM NEON): about 2.3x fewer multiplications than a direct convolution, which
PyTorch's oneDNN kernels already run at the FMA peak of such a CPU. On the paper-size model
that is most of a note's time. The sums differ from torch's by float rounding only (relative
RMS ~4e-6 of the spectrogram).

The network is written here as an ncnn param text from the generator's weights, never read
from a file: block 1 (its 1x1 -> 2x16 convolution of the pixel-normed latent and pitch is a
dense layer), blocks 2..N (nearest x2 upsample, two 3x3 convolutions with the leaky ReLU fused
in, pixel norm as ncnn's across-channel `Normalize` scaled by sqrt(C)), the crops of a
`time_rows` span, the last block's 1x1 output convolution and tanh. Only the final progress
(the playing network). Half-precision storage and arithmetic are switched off, so a CPU with
fp16 or bf16 units still computes in fp32.

ncnn is an optional package (`pip install ncnn`, part of `[all]`); `engine.gansynth.backend`
checks that it is installed and names it when it is not.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import torch

from engine.gansynth.model import LEAKY_SLOPE, Generator, span_rows

FP32_ONLY = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage",
             "use_bf16_packed", "use_int8_inference")
# From this block on, the upsample + 3x3 conv runs as one 3x3 conv of the low-resolution input
# with 4 phase kernels per output channel (nearest x2 makes each output phase a fixed sum of
# kernel rows and columns), then a pixel shuffle: the same multiplications under Winograd, no
# upsampled copy. Measured (2-core AVX2 EPYC, 1 thread, span note): paper-size 133 -> 123 ms,
# bundled 20.0 -> 15.7 ms; on the small first blocks the plain form is as fast.
PHASE_FROM = 4
_PHASE_ROWS = torch.tensor([[[1., 0., 0.], [0., 1., 1.], [0., 0., 0.]],
                            [[0., 0., 0.], [1., 1., 0.], [0., 0., 1.]]])
_RAW_FP32 = np.zeros(1, np.int32).tobytes()  # a weight blob's tag: float32 data follows


UNSUPPORTED = "the ncnn backend runs generators of 3x3 convolutions and 2 or more blocks"


def supports(cfg) -> bool:
    """Whether this generator architecture (`ModelConfig`) can run as an ncnn net here."""
    return cfg.kernel_size == 3 and cfg.num_resolutions >= 2


def network(generator: Generator) -> tuple[str, bytes]:
    """(ncnn param text, weight blob) of the generator (one `supports` accepts: `NcnnGenerator`
    checks) at final progress. Input blob "x0" is the
    pixel-normed latent and one-hot pitch [latent + pitches]; "rows<k>" (k = 1..N) a 2-D blob
    [rows, F] whose shape says how many rows of block k's output to keep (`span_rows`; all of
    them: no crop); output blob "out" [2, rows, F]. One net serves every `time_rows`: a net
    holds the weights' Winograd transforms (~250 MB more than torch holds for the paper-size
    model)."""
    cfg = generator.cfg
    layers = ["Input input 0 1 x0"] + [f"Input rows_input{k} 0 1 rows{k}" for k in range(1, cfg.num_resolutions + 1)]
    blobs = []
    fused = f" 9=2 -23310=1,{LEAKY_SLOPE:e}"   # leaky ReLU

    def weights(weight, bias):
        blobs.extend([_RAW_FP32, weight.detach().to(torch.float32).cpu().contiguous().numpy().tobytes(),
                      bias.detach().to(torch.float32).cpu().numpy().tobytes()])

    def conv(name, src, dst, weight, bias, act=True):
        out_ch, _, kh, kw = weight.shape
        layers.append(f"Convolution {name} 1 1 {src} {dst} 0={out_ch} 1={kw} 11={kh} 4={kh // 2} 5=1 "
                      f"6={weight.numel()}{fused if act else ''}")
        weights(weight, bias)

    def norm(name, src, dst, channels):
        # x * sqrt(C) / sqrt(sum_c x^2 + C eps) = x / sqrt(mean_c x^2 + eps): pixel_norm
        layers.append(f"Normalize {name} 1 1 {src} {dst} 0=0 1=1 2={channels * 1e-8:e} 3=1 4=1 9=0")
        blobs.append(np.array([math.sqrt(channels)], np.float32).tobytes())

    src = "x0"
    for k in range(1, cfg.num_resolutions + 1):
        block, channels = generator.blocks[k - 1], cfg.num_filters(k)
        weight = block.conv0.weight * block.conv0.scale
        if k == 1:
            # the (sh, sw) conv of the 1x1 input padded by (sh-1, sw-1): output (i, j) reads kernel
            # tap (sh-1-i, sw-1-j), so it is a dense layer of the flipped kernel, reshaped
            sh, sw = cfg.start_shape
            dense = weight.flip(2, 3).permute(0, 2, 3, 1).reshape(channels * sh * sw, -1)
            layers.append(f"InnerProduct dense1 1 1 x0 d1 0={channels * sh * sw} 1=1 2={dense.numel()}{fused}")
            weights(dense, block.conv0.bias.repeat_interleave(sh * sw))
            layers.append(f"Reshape shape1 1 1 d1 a1 0={sw} 1={sh} 2={channels}")
        elif k >= PHASE_FROM:
            rows = _PHASE_ROWS.to(weight)
            phases = torch.einsum("akr,blc,oirc->oabikl", rows, rows, weight).reshape(4 * channels, -1, 3, 3)
            conv(f"conv0_{k}", src, f"p{k}", phases, block.conv0.bias.repeat_interleave(4))
            layers.append(f"PixelShuffle shuffle{k} 1 1 p{k} a{k} 0=2 1=0")
        else:
            layers.append(f"Interp up{k} 1 1 {src} u{k} 0=1 1=2.0 2=2.0")
            conv(f"conv0_{k}", f"u{k}", f"a{k}", weight, block.conv0.bias)
        norm(f"norm0_{k}", f"a{k}", f"b{k}", channels)
        conv(f"conv1_{k}", f"b{k}", f"c{k}", block.conv1.weight * block.conv1.scale, block.conv1.bias)
        norm(f"norm1_{k}", f"c{k}", f"x{k}", channels)
        layers.append(f"Crop crop{k} 2 1 x{k} rows{k} y{k}")
        src = f"y{k}"
    rgb = generator.blocks[-1].to_rgb
    conv("to_rgb", src, "rgb", rgb.weight * rgb.scale, rgb.bias, act=False)
    layers.append("TanH tanh 1 1 rgb out")
    names = {b for line in layers for b in _blob_names(line)}
    return f"7767517\n{len(layers)} {len(names)}\n" + "\n".join(layers) + "\n", b"".join(blobs)


def _blob_names(line: str) -> list[str]:
    parts = line.split()
    n_in, n_out = int(parts[2]), int(parts[3])
    return parts[4:4 + n_in + n_out]


class NcnnGenerator:
    """Call it as the generator: z float32 [B, latent], labels int64 [B] (0-based), time_rows ->
    float32 torch tensor [B, 2, time_rows or T, F]. The ncnn net is built on first use (the
    paper-size model: ~0.3 s, when the weights' Winograd transforms are made), and again if the
    generator's weights or the thread count change. Batches run note by note. Thread-safe: the
    window's previews and renders call one Synth from several threads; each call runs its own
    extractor on the net it started with (kept alive by the call, should a rebuild replace it)."""

    def __init__(self, generator: Generator, threads: int | None = None):
        import ncnn  # an optional package: engine.gansynth.backend checks it is there first

        if not supports(generator.cfg):
            raise ValueError(UNSUPPORTED)
        self._ncnn = ncnn
        self.generator = generator
        self._parameters = list(generator.parameters())   # walking the modules per call: 0.3 ms
        self.threads = threads
        self._net = None
        self._weights = b""  # ncnn may read the weights in place: kept as long as the net
        self._weights_key = None
        self._row_blobs: dict[int | None, dict[str, object]] = {}
        self._lock = threading.Lock()

    def _built(self) -> tuple[object, bytes]:
        """(net, the weights it reads) for now; under the lock."""
        threads = self.threads or torch.get_num_threads()
        key = (threads, *(p._version for p in self._parameters))
        if self._net is None or key != self._weights_key:
            param, weights = network(self.generator)
            net = self._ncnn.Net()
            for option in FP32_ONLY:
                if hasattr(net.opt, option):
                    setattr(net.opt, option, False)
            net.opt.num_threads = threads
            net.load_param_mem(param)
            net.load_model_mem(weights)
            self._net, self._weights, self._weights_key = net, weights, key
        return self._net, self._weights

    def _rows(self, time_rows: int | None) -> dict[str, object]:
        """The "rows<k>" shape blobs for this span (never written or read: only their shapes)."""
        if time_rows not in self._row_blobs:
            cfg = self.generator.cfg
            keep = span_rows(cfg, time_rows) if time_rows is not None else {}
            self._row_blobs[time_rows] = {
                f"rows{k}": self._ncnn.Mat(cfg.resolution(k)[1], keep.get(k, cfg.resolution(k)[0]))
                for k in range(1, cfg.num_resolutions + 1)}
        return self._row_blobs[time_rows]

    def __call__(self, z: torch.Tensor, labels: torch.Tensor, time_rows: int | None = None) -> torch.Tensor:
        cfg = self.generator.cfg
        with self._lock:
            net, weights, rows = *self._built(), self._rows(time_rows)
        z = z.detach().to(device="cpu", dtype=torch.float32).numpy()
        x = np.zeros((len(z), cfg.latent_size + cfg.num_pitches), np.float32)
        x[:, :cfg.latent_size] = z
        x[np.arange(len(z)), cfg.latent_size + labels.detach().cpu().numpy().astype(np.int64)] = 1.0
        x *= 1.0 / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + np.float32(1e-8))  # pixel norm
        out = []
        for item in x:   # each row contiguous: ncnn reads it in place, alive until extracted
            extractor = net.create_extractor()
            extractor.input("x0", self._ncnn.Mat(item))
            for name, blob in rows.items():
                extractor.input(name, blob)
            status, y = extractor.extract("out")
            if status != 0:
                raise RuntimeError(f"ncnn failed to run the generator (status {status})")
            out.append(np.array(y, dtype=np.float32, copy=True))
        del net, weights   # held until every extraction is done (a rebuild may have replaced them)
        return torch.from_numpy(np.stack(out))
