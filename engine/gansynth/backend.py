"""Which engine runs the generator's arithmetic: torch (eager, the reference), OpenVINO or ncnn.

OpenVINO runs the same network, converted from the torch module by its PyTorch frontend;
ncnn runs it as a network written from the weights (`engine.gansynth.ncnngen`), with Winograd
3x3 convolutions. Both compute in fp32: their output differs from torch's by float rounding
only (relative RMS ~4e-6 of the spectrogram, ~1e-5 of the audio). Which is fastest depends on
the CPU and on the model's widths. Measured on a 2-core AVX2-only AMD EPYC
(benchmarks/backends.py): the paper-size model (what the official Magenta checkpoints are)
~0.8x torch's time with OpenVINO and ~0.6x with ncnn; the bundled narrow model ~1.1x
(slower) with OpenVINO. So "auto" decides by a short probe on this CPU, for this model's
architecture and thread count, the first time it is asked, and keeps the answer on disk:

    <cache dir>/backend_probe.json   {key: {"backend": ..., "torch_ms": ..., "ncnn_ms": ..., ...}}

keyed by the CPU's model name and flags, the torch, OpenVINO and ncnn versions, the model's
architecture (`ModelConfig`) and the thread count: a new CPU, a new version or another
architecture probes again. The cache dir is $GANSYNTH_CACHE_DIR, else
$XDG_CACHE_HOME/gansynth-instrument, else ~/.cache/gansynth-instrument. The answer is kept
until one of those changes: `gansynth backends` shows it (with when it was measured), and
`gansynth backends --probe` measures again, for an answer taken while the machine was busy.

OpenVINO and ncnn are optional packages (`pip install 'gansynth-instrument[openvino,ncnn]'`,
part of `[all]`): "auto" probes those installed; asking for one that is missing raises
`BackendUnavailable`, which says how to install it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import platform
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from engine.gansynth import kernels, ncnngen
from engine.gansynth.config import ALTERNATIVES, BACKENDS
from engine.gansynth.model import Generator
from engine.util.fileio import atomic_write_text

PROBE_FILE = "backend_probe.json"
PROBE_RUNS = 5              # timed rounds (after one warm-up each); each backend's minimum counts
MARGIN = 0.95               # another engine is chosen only when at most this fraction of torch's time
MAX_REL_RMS = 1e-4          # ... and its spectrogram this close to torch's (it is ~4e-6)


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


def import_ncnn():
    """The ncnn module, or BackendUnavailable naming the package to install."""
    try:
        import ncnn
    except ImportError as e:
        raise BackendUnavailable(
            f"the ncnn backend needs the 'ncnn' package ({e}): "
            "pip install ncnn (or pip install 'gansynth-instrument[ncnn]'), "
            "or choose --backend torch") from None
    return ncnn


def _module(name: str):
    """The alternative engine's package, or BackendUnavailable naming what to install."""
    return import_openvino() if name == "openvino" else import_ncnn()


def available(name: str) -> bool:
    """Whether the alternative engine `name` ("openvino", "ncnn") is installed."""
    try:
        _module(name)
    except BackendUnavailable:
        return False
    return True


def installed() -> list[str]:
    """The alternative engines installed here."""
    return [name for name in ALTERNATIVES if available(name)]


def usable(name: str, generator: Generator) -> bool:
    """Whether the alternative engine `name` is installed and runs this architecture."""
    return available(name) and (name != "ncnn" or ncnngen.supports(generator.cfg))


def make_runner(name: str, generator: Generator, threads: int | None):
    """The generator run by the alternative engine `name`, at `threads` threads."""
    _module(name)
    if name == "openvino":
        return OpenVinoGenerator(generator, threads)
    if not ncnngen.supports(generator.cfg):
        raise BackendUnavailable(ncnngen.UNSUPPORTED)
    return ncnngen.NcnnGenerator(generator, threads)


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
    Thread-safe by turns: an infer request serves one call at a time (the window's previews
    and renders call one Synth from several threads).
    """

    def __init__(self, generator: Generator, threads: int | None = None):
        ov = import_openvino()
        self._ov = ov
        self._core = ov.Core()
        self.generator = generator
        self.threads = threads
        self._requests: dict[tuple[int, int | None], object] = {}
        self._lock = threading.Lock()

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
        with self._lock:
            out = self._request(z, labels, time_rows).infer([z.numpy(), labels.numpy()])[0]
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


def _versions() -> dict[str, str]:
    """The installed alternative engines' versions (those not installed are absent)."""
    return {name: str(getattr(_module(name), "__version__", "?")) for name in installed()}


def probe_key(generator: Generator, threads: int | None) -> str:
    """What the probe's answer depends on: CPU, versions, our generator code and its fused
    kernels, whether built (a faster torch path can turn the answer), architecture, threads
    (hashed)."""
    sources = [Path(inspect.getfile(Generator)), Path(__file__).with_name("kernels.c")]
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sources)
                          + str(kernels.available()).encode()).hexdigest()[:16]
    parts = {"cpu": cpu_identity(), "torch": torch.__version__, **_versions(), "generator_code": code,
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


def probe(generator: Generator, threads: int | None, runs: int = PROBE_RUNS) -> tuple[dict, dict]:
    """Time torch and every installed alternative on one whole note of this generator at
    `threads` and compare their outputs with torch's (the paper-size model: ~10 s with the
    conversions; the bundled one ~4 s). The fastest whose time is at most MARGIN x torch's and
    whose output is within MAX_REL_RMS of torch's wins. An engine that fails to build or run
    here is left out, its error recorded: it never stops a model from loading. Returns
    ({"backend", "torch_ms", "<name>_ms", "<name>_rel_rms" or "<name>_error" ...}, {name: its runner})."""
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((1, generator.cfg.latent_size), np.float32))
    labels = torch.tensor([generator.cfg.num_pitches // 2])
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    runners, rel, errors = {}, {}, {}
    try:
        with torch.inference_mode():
            want = generator(z, labels).float()
            for name in ALTERNATIVES:
                if not usable(name, generator):
                    continue
                try:
                    run = make_runner(name, generator, threads)
                    rel[name] = float((run(z, labels) - want).norm() / want.norm().clamp_min(1e-12))
                    runners[name] = run
                except Exception as e:  # noqa: BLE001  (any engine failure: leave it out, say why)
                    errors[name] = f"{type(e).__name__}: {e}"
            times = _interleaved_min_ms([lambda: generator(z, labels)]
                                        + [lambda run=run: run(z, labels) for run in runners.values()], runs)
    finally:
        torch.set_num_threads(old_threads)
    result = {"backend": "torch", "torch_ms": round(times[0], 2)}
    result.update({f"{name}_error": why for name, why in errors.items()})
    best_ms = MARGIN * times[0]
    for name, ms in zip(runners, times[1:]):
        result[f"{name}_ms"], result[f"{name}_rel_rms"] = round(ms, 2), rel[name]
        if ms <= best_ms and rel[name] <= MAX_REL_RMS:
            result["backend"], best_ms = name, ms
    return result, runners


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: probe again and rewrite it
    return data if isinstance(data, dict) else {}


def cached_probe(generator: Generator, threads: int | None) -> dict | None:
    """This CPU's kept probe answer for this generator at `threads`, or None (not probed yet)."""
    entry = _read_cache(cache_dir() / PROBE_FILE).get(probe_key(generator, threads))
    return entry if isinstance(entry, dict) else None


def probe_and_cache(generator: Generator, threads: int | None) -> tuple[dict, dict]:
    """Probe now and keep the answer (replacing any kept one): (its cache entry, {name: runner}).
    `gansynth backends --probe` calls this to refresh an answer measured in a busy hour."""
    result, runners = probe(generator, threads)
    path = cache_dir() / PROBE_FILE
    cache = _read_cache(path)  # re-read: another process may have added its own answer
    entry = {**result, "cpu": cpu_identity().split(" | ")[0], "threads": threads,
             "model_params": sum(p.numel() for p in generator.parameters()),
             "probed_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    cache[probe_key(generator, threads)] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only home: probe again next time
    return entry, runners


def choose_backend(generator: Generator, threads: int | None) -> tuple[str, object | None]:
    """'auto' on a CPU: the cached probe answer for this CPU/versions/model/threads, probing
    (and caching) on a miss. Returns (backend, its runner when the probe just built it)."""
    if not any(usable(name, generator) for name in ALTERNATIVES):
        return "torch", None
    entry = cached_probe(generator, threads)
    if entry is not None and (entry.get("backend") == "torch" or entry.get("backend") in ALTERNATIVES
                              and usable(entry["backend"], generator)):
        return entry["backend"], None
    entry, runners = probe_and_cache(generator, threads)
    return entry["backend"], runners.get(entry["backend"])


def resolve_backend(backend: str, generator: Generator, device: torch.device, precision: str,
                    threads: int | None) -> tuple[str, object | None]:
    """'torch' | 'openvino' | 'ncnn' | 'auto' -> (the backend that will run, its runner: None
    for torch, else a callable like the generator: (z, labels, time_rows) -> [B, 2, T, F]).

    OpenVINO and ncnn run fp32 on the CPU; 'auto' elsewhere (a GPU, bf16) is torch, and asking
    for one of them there raises BackendUnavailable."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "torch":
        return "torch", None
    runs_here = device.type == "cpu" and precision == "fp32"
    if backend in ALTERNATIVES:
        if not runs_here:
            raise BackendUnavailable(f"the {backend} backend runs fp32 on the CPU, not {precision} on {device.type}")
        return backend, make_runner(backend, generator, threads)
    if not runs_here:
        return "torch", None
    name, runner = choose_backend(generator, threads)
    if name != "torch" and runner is None:
        runner = make_runner(name, generator, threads)
    return name, runner
