"""`gansynth backends`: which engine `--backend auto` runs a model with on this CPU, and why.

    gansynth backends [--model PATH] [--threads 1,2]     # the kept answers, measured when
    gansynth backends --probe                            # measure again (and keep the new answer)

The answer is measured once per CPU, versions, model architecture and thread count, and kept
(`engine.gansynth.backend`). One measured while the machine was busy can favour the wrong
engine for good: `--probe` measures again. The instrument renders with 1 thread a render
process, so that is the count it asks about (the default here).
"""
from __future__ import annotations

import sys

from engine.gansynth.config import ALTERNATIVES
from engine.gansynth.modelfile import ModelFileError


def _threads(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(f"--threads wants counts like 1 or 1,2, not {text!r}")
    return counts


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="model directory, Magenta checkpoint dir or .zip "
                                                  "(default: the bundled model)")
    p.add_argument("--threads", default="1", help="thread counts, comma-separated (default 1: what each "
                                                  "of the instrument's render processes uses)")
    p.add_argument("--probe", action="store_true", help="measure again now and keep the new answers")


def describe(entry: dict) -> str:
    """One kept probe answer in a line: the choice, when, and each engine's time."""
    parts = [f"torch {entry['torch_ms']:.1f} ms"] if "torch_ms" in entry else []
    for name in ALTERNATIVES:
        if f"{name}_ms" in entry:
            parts.append(f"{name} {entry[f'{name}_ms']:.1f} ms (relative RMS {entry[f'{name}_rel_rms']:.1e})")
        elif f"{name}_error" in entry:
            parts.append(f"{name} failed: {entry[f'{name}_error']}")
    when = entry.get("probed_at", "at an unrecorded time")
    return f"{entry.get('backend', '?')}, measured {when}: {'; '.join(parts) or 'no times kept'}"


def run(args) -> int:
    import torch

    from engine.gansynth import backend
    from engine.gansynth.synth import load_synth
    from engine.util.resources import default_model_path

    try:
        counts = _threads(args.threads)
        synth = load_synth(args.model or default_model_path(), device="cpu", backend="torch")
    except (ModelFileError, ValueError) as e:
        print(f"gansynth backends: {e}", file=sys.stderr)
        return 1
    generator = synth.generator
    engines = backend.installed()
    print(f"CPU: {backend.cpu_identity().split(' | ')[0]}; torch {torch.__version__}; alternatives installed: "
          f"{', '.join(engines) or 'none (pip install ncnn openvino)'}")
    if not any(backend.usable(name, generator) for name in ALTERNATIVES):
        print("auto runs torch: no alternative engine installed here runs this model")
        return 0
    print(f"cache: {backend.cache_dir() / backend.PROBE_FILE}")
    for threads in counts:
        if args.probe:
            entry, _ = backend.probe_and_cache(generator, threads)
        else:
            entry = backend.cached_probe(generator, threads)
        if entry is None:
            print(f"{threads} thread(s): not measured yet (the first load with --backend auto measures it; "
                  f"or run with --probe)")
        else:
            print(f"{threads} thread(s): {describe(entry)}")
    return 0
