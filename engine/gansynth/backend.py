"""Which engine runs the generator's arithmetic: torch (eager, the reference) or OpenVINO.

OpenVINO runs the same network, converted from the torch module by its PyTorch frontend, in
fp32: its output differs from torch's by float rounding only (relative RMS ~3e-6 of the
spectrogram, ~1e-5 of the audio). Which is faster depends on the CPU and on the model's widths.
Measured on a 2-core AVX2-only AMD EPYC (benchmarks/backends.py): the paper-size model
(what the official Magenta checkpoints are) ~0.8x torch's time with OpenVINO, the bundled
narrow model ~1.1x (slower). So "auto" decides by a short probe on this CPU, for this model's
architecture and thread count, the first time it is asked, and keeps the answer on disk:

    <cache dir>/backend_probe.json   {key: {"backend": ..., "torch_ms": ..., "openvino_ms": ..., ...}}

keyed by the CPU's model name and flags, the torch and OpenVINO versions, the model's
architecture (`ModelConfig`) and the thread count: a new CPU, a new version or another
architecture probes again. The cache dir is $GANSYNTH_CACHE_DIR, else
$XDG_CACHE_HOME/gansynth-instrument, else ~/.cache/gansynth-instrument.

OpenVINO is an optional package (`pip install 'gansynth-instrument[openvino]'`, part of
`[all]`): "auto" without it is torch; asking for "openvino" without it raises
`BackendUnavailable`, which says how to install it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from engine.gansynth.model import Generator
from engine.util.fileio import atomic_write_text

BACKENDS = ("torch", "openvino", "auto")
BACKEND_HELP = ("generator engine: torch, openvino (fp32, same sound), or auto (the faster on this "
                "CPU for this model, measured once and cached)")
PROBE_FILE = "backend_probe.json"
PROBE_RUNS = 5              # timed rounds (after one warm-up each); each backend's minimum counts
OPENVINO_MARGIN = 0.95      # OpenVINO is chosen only when at most this fraction of torch's time
MAX_REL_RMS = 1e-4          # ... and its spectrogram this close to torch's (it is ~3e-6)


class BackendUnavailable(ValueError):
    """The backend asked for cannot run here (its package is missing, or not with this device
    or precision); the message says why and what to do. A ValueError: a bad option value."""


def import_openvino():
    """The openvino module, or BackendUnavailable naming the package to install."""
    try:
        import openvino
    except ImportError as e:
        raise BackendUnavailable(
            f"the openvino backend needs the 'openvino' package ({e}): "
            "pip install openvino (or pip install 'gansynth-instrument[openvino]'), "
            "or choose --backend torch") from None
    return openvino


def openvino_available() -> bool:
    try:
        import_openvino()
    except BackendUnavailable:
        return False
    return True


class _FixedRows(torch.nn.Module):
    """generator(z, labels, time_rows=rows) with `rows` fixed, for tracing one shape."""

    def __init__(self, generator: Generator, rows: int | None):
        super().__init__()
        self.generator, self.rows = generator, rows

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.generator(z, labels, time_rows=self.rows)


class OpenVinoGenerator:
    """A `Generator`'s final-progress forward pass run by OpenVINO's CPU plugin, fp32.

    One compiled model per input shape (batch, time_rows), converted on first use (the paper-size
    model: ~5 s; the bundled one: ~2 s). Call it as the generator: z float32 [B, latent], labels
    int64 [B] (0-based), time_rows -> float32 torch tensor [B, 2, time_rows or T, F].
    Not thread-safe: one caller at a time (as a Synth is used).
    """

    def __init__(self, generator: Generator, threads: int | None = None):
        ov = import_openvino()
        self._ov = ov
        self._core = ov.Core()
        self.generator = generator
        self.threads = threads
        self._requests: dict[tuple[int, int | None], object] = {}

    def _request(self, z: torch.Tensor, labels: torch.Tensor, rows: int | None):
        key = (int(z.shape[0]), rows)
        if key not in self._requests:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on the generator's Python branches
                model = self._ov.convert_model(_FixedRows(self.generator, rows), example_input=(z, labels))
            # Unpinned: OpenVINO pins its threads to cores from the first on, so two render
            # processes of one thread each shared one core (12 paper notes: 4.7 s each side by
            # side, 2.4-2.7 s unpinned), and a pinned render cannot step aside for the audio.
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}
            if self.threads is not None:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
            self._requests[key] = self._core.compile_model(model, "CPU", config).create_infer_request()
        return self._requests[key]

    def __call__(self, z: torch.Tensor, labels: torch.Tensor, time_rows: int | None = None) -> torch.Tensor:
        z = z.detach().to(torch.float32).cpu().contiguous()
        labels = labels.detach().to(torch.int64).cpu().contiguous()
        request = self._request(z, labels, time_rows)
        out = request.infer([z.numpy(), labels.numpy()])[0]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))


def cache_dir() -> Path:
    if os.environ.get("GANSYNTH_CACHE_DIR"):
        return Path(os.environ["GANSYNTH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gansynth-instrument"


def cpu_identity() -> str:
    """The CPU's model name and flags (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        name = flags = ""
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not flags:
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
        if name or flags:
            return f"{name} | {flags}"
    except OSError:
        pass
    return f"{platform.machine()} | {platform.processor()}"


def probe_key(generator: Generator, threads: int | None) -> str:
    """What the probe's answer depends on: CPU, versions, our generator code (a faster torch
    path can turn the answer), architecture, threads (hashed)."""
    ov_version = getattr(import_openvino(), "__version__", "?")
    code = hashlib.sha256(Path(inspect.getfile(Generator)).read_bytes()).hexdigest()[:16]
    parts = {"cpu": cpu_identity(), "torch": torch.__version__, "openvino": ov_version, "generator_code": code,
             "model": dataclasses.asdict(generator.cfg), "threads": threads or torch.get_num_threads()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _interleaved_min_ms(fns, runs: int) -> list[float]:
    """Minimum wall ms of each fn over `runs` rounds that call them in turn (after one warm-up
    each): a neighbour's load that comes and goes hits both alike."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], (time.perf_counter() - t0) * 1e3)
    return best


def probe(generator: Generator, threads: int | None, runs: int = PROBE_RUNS) -> tuple[dict, OpenVinoGenerator]:
    """Time torch and OpenVINO on one whole note of this generator at `threads` and compare
    their outputs (the paper-size model: ~8 s with the conversion; the bundled one ~3 s).
    Returns ({"backend", "torch_ms", "openvino_ms", "rel_rms"}, the OpenVINO runner)."""
    ov_gen = OpenVinoGenerator(generator, threads)
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((1, generator.cfg.latent_size), np.float32))
    labels = torch.tensor([generator.cfg.num_pitches // 2])
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            want = generator(z, labels).float()
            got = ov_gen(z, labels)
            torch_ms, openvino_ms = _interleaved_min_ms([lambda: generator(z, labels), lambda: ov_gen(z, labels)], runs)
    finally:
        torch.set_num_threads(old_threads)
    rel_rms = float((got - want).norm() / want.norm().clamp_min(1e-12))
    faster = openvino_ms <= OPENVINO_MARGIN * torch_ms and rel_rms <= MAX_REL_RMS
    return ({"backend": "openvino" if faster else "torch", "torch_ms": round(torch_ms, 2),
             "openvino_ms": round(openvino_ms, 2), "rel_rms": rel_rms}, ov_gen)


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: probe again and rewrite it
    return data if isinstance(data, dict) else {}


def choose_backend(generator: Generator, threads: int | None) -> tuple[str, OpenVinoGenerator | None]:
    """'auto' on a CPU: the cached probe answer for this CPU/versions/model/threads, probing
    (and caching) on a miss. Returns (backend, the OpenVINO runner when it is chosen and
    already built)."""
    if not openvino_available():
        return "torch", None
    path = cache_dir() / PROBE_FILE
    key = probe_key(generator, threads)
    entry = _read_cache(path).get(key)
    if isinstance(entry, dict) and entry.get("backend") in ("torch", "openvino"):
        return entry["backend"], None
    result, ov_gen = probe(generator, threads)
    cache = _read_cache(path)  # re-read: another process may have added its own answer
    cache[key] = {**result, "cpu": cpu_identity().split(" | ")[0], "threads": threads,
                  "model_params": sum(p.numel() for p in generator.parameters())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only home: probe again next time
    return result["backend"], (ov_gen if result["backend"] == "openvino" else None)


def resolve_backend(backend: str, generator: Generator, device: torch.device, precision: str,
                    threads: int | None) -> tuple[str, OpenVinoGenerator | None]:
    """'torch' | 'openvino' | 'auto' -> (the backend that will run, its OpenVINO runner or None).

    OpenVINO runs fp32 on the CPU; 'auto' elsewhere (a GPU, bf16) is torch, and asking for
    'openvino' there raises BackendUnavailable."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "torch":
        return "torch", None
    runs_here = device.type == "cpu" and precision == "fp32"
    if backend == "openvino":
        if not runs_here:
            raise BackendUnavailable(f"the openvino backend runs fp32 on the CPU, not {precision} on {device.type}")
        return "openvino", OpenVinoGenerator(generator, threads)
    if not runs_here:
        return "torch", None
    name, runner = choose_backend(generator, threads)
    if name == "openvino" and runner is None:
        runner = OpenVinoGenerator(generator, threads)
    return name, runner
