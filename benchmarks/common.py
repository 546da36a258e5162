"""Shared benchmark helpers: timing with warm-up, matmul roofline, JSON summary line, the host's own
realtime latency (cyclictest)."""
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


class HostLatency:
    """What the machine itself does to a realtime thread over a span: rt-tests' `cyclictest`
    (a SCHED_FIFO 80 thread per CPU waking every 1 ms, `--laptop`: no CPU-latency request)
    run beside the benchmark. Its late wake-ups are the floor no audio code can beat (on a VM,
    the host descheduling the virtual CPU). `result()`: None where cyclictest is missing
    (Debian: `apt install rt-tests`) or failed, else {"max_ms", "wakeups", "late_wakeups": those
    later than `late_ms`, "late_ms"}."""

    def __init__(self, seconds: float, late_ms: float):
        import shutil
        import subprocess

        self.late_ms = late_ms
        exe = shutil.which("cyclictest")
        self.proc = None if exe is None else subprocess.Popen(
            [exe, "-q", "-m", "--laptop", "-p", "80", "-t", "-i", "1000", "-d", "0", "-D", str(max(1, round(seconds))),
             "-h", "20000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def result(self) -> dict | None:
        if self.proc is None:
            return None
        import subprocess

        try:
            text = self.proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:   # a stuck cyclictest: no figure, not a failed benchmark
            self.proc.kill()
            return None
        counts, over, maxima = 0, 0, []
        for line in text.splitlines():
            if line.startswith("# Max Latencies:"):
                maxima = [int(v) for v in line.split(":")[1].split()]
            elif line.startswith("# Histogram Overflows:"):   # all beyond the histogram: late
                n = sum(int(v) for v in line.split(":")[1].split())
                counts += n
                over += n
            elif line[:1].isdigit():
                us, *per_cpu = (int(v) for v in line.split())
                n = sum(per_cpu)
                counts += n
                over += n if us > self.late_ms * 1000 else 0
        if not maxima or self.proc.returncode:
            return None
        return {"max_ms": max(maxima) / 1000, "wakeups": counts, "late_wakeups": over, "late_ms": self.late_ms}

    @staticmethod
    def describe(result: dict | None) -> str:
        if result is None:
            return "not measured (no cyclictest: rt-tests)"
        return (f"{result['late_wakeups']} of {result['wakeups']} wake-ups of cyclictest's realtime threads later "
                f"than {result['late_ms']:.2f} ms, max {result['max_ms']:.2f} ms")
