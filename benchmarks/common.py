"""Shared benchmark helpers: timing with warm-up, matmul roofline, JSON summary line, model arguments."""
from __future__ import annotations

import json
import statistics
import time


def time_ms(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def matmul_gflops(threads: int, dtype=None, n: int = 2048) -> float:
    """GFLOP/s of a large square matmul (`dtype`, float32 by default) at `threads` intra-op threads:
    the machine's practical bound. torch is imported here, so the benchmarks that only take the
    argument helpers (benchmarks.live, whose load processes nice themselves first) do not load it."""
    import torch

    dtype = dtype or torch.float32
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    ms = time_ms(lambda: a @ b, repeat=7, warmup=2)
    return 2 * n ** 3 / (ms * 1e-3) / 1e9


def summary(name: str, figures: dict) -> None:
    print(json.dumps({"benchmark": name, **figures}))


def add_model_args(p) -> None:
    """--model PATH, else --config: random weights of that size; --backend and --precision as the
    window loads (auto): benchmarks.live.build_synth."""
    p.add_argument("--model", default=None)
    p.add_argument("--config", default="paper", choices=("paper", "lite", "tiny"))
    add_engine_args(p)


def add_engine_args(p) -> None:
    """--backend and --precision, defaults as the window loads a model (auto)."""
    from engine.gansynth.config import BACKENDS, PRECISIONS

    p.add_argument("--backend", default="auto", choices=BACKENDS, help="the render engine (the window's: auto)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="the generator's arithmetic (the window's: auto, bf16 where this CPU runs it natively)")
