"""GIL contention beside the audio output, on a real, paced JACK dummy device (48 kHz, 256 frames).

    python -m benchmarks.contention [--model PATH | --config paper] [--device system|"JACK client"]
                                    [--seconds 10] [--baseline-ahead 0] [--realtime]

16 held voices (cached: nothing renders), N s a case, beside threads of this process that
want the GIL: none; 2 running Python non-stop (the window's and the recorder's Python); 1
holding it in C calls of ~2.5 ms with 1 ms gaps (the window's paint calls into Qt hold it
that long, measured). Cases run for the output as shipped (rendered `AudioOutput`'s periods
ahead of a C callback) and, as the baseline in the same run, with `--baseline-ahead` periods
(0: a Python callback, which needs the GIL at its start and after every cffi call and numpy
operation over 500 elements). Prints xruns, process() p99/max, late calls and how fast the
busy threads ran per case, then one JSON line. Target 0 xruns.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import add_model_args
from benchmarks.live import PERIOD, RATE, TimedProbe, build_synth, chord_pitches


def _run_python(stop, count) -> None:
    """Python bytecode non-stop, as a thread of the window or the recorder may run."""
    d: dict = {}
    while not stop.is_set():
        count[0] += 1
        for i in range(200):
            d[i % 17] = d.get(i % 17, 0) + i
        d.clear()


def _hold_in_c(stop, count, items: list) -> None:
    """The GIL held in one C call at a time (sorting: no bytecode runs, so no switch interval
    applies), as the window's calls into Qt hold it, with short gaps between."""
    while not stop.is_set():
        count[0] += 1
        sorted(items)
        time.sleep(0.001)


def _c_items(hold_s: float = 0.0025) -> list:
    """A list whose sort holds the GIL about `hold_s` on this machine."""
    rng = np.random.default_rng(0)
    n = 10_000
    while True:
        items = rng.random(n).tolist()
        t0 = time.perf_counter()
        sorted(items)
        took = time.perf_counter() - t0
        if took >= hold_s or n > 10_000_000:
            return items
        n = int(n * min(4.0, 1.1 * hold_s / max(took, 1e-6)))


HOLDERS = {"none": (0, None), "python_x2": (2, _run_python), "c_calls": (1, _hold_in_c)}


def bench_contention(synth, seconds: float, device: str, baseline_ahead: int) -> dict:
    from engine.devices.audio import AudioOutput
    from engine.instrument.events import NoteOn
    from engine.instrument.instrument import Instrument

    inst = Instrument(synth, sample_rate=RATE, cache_mb=256)
    pitches = chord_pitches(synth)
    inst.renderer.render_now(pitches)
    paths = (("shipped", None), ("baseline", baseline_ahead))
    probe = TimedProbe(inst, max_blocks=int((len(paths) * 3 * (seconds + 2) + 30) * RATE / PERIOD))
    items = _c_items()
    budget_ms = 1000 * PERIOD / RATE
    res = {"device": device, "seconds": seconds, "voices": len(pitches), "holders": list(HOLDERS)}
    inst.start()
    inst.renderer.idle.wait(30)
    try:
        for key, ahead in paths:
            out = AudioOutput(probe, device=device, ahead=ahead)
            if not out.open():
                raise RuntimeError(out.last_error)
            try:
                for p in pitches:
                    out.post(NoteOn(p, 90))
                time.sleep(1.0)
                res[key] = {"ahead": out.ahead, "latency_ms": out.latency_ms, "switch_ms": 1e3 * sys.getswitchinterval(),
                            "callback_realtime": out.callback_realtime, "callback_raised": out.callback_raised}
                for holder, (n, target) in HOLDERS.items():
                    stop, count = threading.Event(), [0]
                    args = (stop, count, items) if target is _hold_in_c else (stop, count)
                    threads = [threading.Thread(target=target, args=args, daemon=True) for _ in range(n)]
                    for t in threads:
                        t.start()
                    b0, x0 = probe.blocks, out.xruns
                    time.sleep(seconds)
                    b1, loops = probe.blocks, count[0]
                    stop.set()
                    for t in threads:
                        t.join()
                    busy_ms = 1000 * probe.busy_s[b0:b1]
                    gaps = 1000 * np.diff(probe.t_start[b0:b1])
                    res[key][holder] = {
                        "xruns": out.xruns - x0, "blocks": int(b1 - b0),
                        "blocks_over_budget": int((busy_ms > budget_ms).sum()),
                        "process_ms_p99": float(np.percentile(busy_ms, 99)), "process_ms_max": float(busy_ms.max()),
                        "late_calls": int((gaps > 1.5 * budget_ms).sum()), "holder_loops_per_s": loops / seconds}
            finally:
                out.close()
    finally:
        inst.stop()
    return res


def print_contention(c: dict) -> None:
    print(f"GIL contention on {c['device']!r}, {c['voices']} held voices, {c['seconds']:.0f} s a case:")
    for key in ("shipped", "baseline"):
        o = c[key]
        print(f"  {key}: {o['ahead']} periods ahead ({o['latency_ms']:.1f} ms output latency), switch interval "
              f"{o['switch_ms']:.3f} ms, callback {'realtime' if o['callback_realtime'] else 'not realtime'}"
              f"{', raised to SCHED_FIFO' if o['callback_raised'] else ''}")
        for holder in c["holders"]:
            r = o[holder]
            print(f"    GIL wanted by {holder}: {r['xruns']} xruns, process() p99 {r['process_ms_p99']:.2f} ms max "
                  f"{r['process_ms_max']:.2f} ms ({r['blocks_over_budget']} of {r['blocks']} blocks over "
                  f"{1000 * PERIOD / RATE:.2f} ms), {r['late_calls']} late calls, holders {r['holder_loops_per_s']:.0f} loops/s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--device", default="system", help='"system" (sounddevice) or "JACK client" (our own)')
    p.add_argument("--seconds", type=float, default=10.0, help="per case")
    p.add_argument("--baseline-ahead", type=int, default=0, help="sounddevice: periods ahead for the baseline")
    p.add_argument("--realtime", action="store_true", help="jackd -R")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.jack import JackServer

    synth, model = build_synth(args)
    with JackServer(RATE, PERIOD, realtime=args.realtime):
        c = bench_contention(synth, args.seconds, args.device, args.baseline_ahead)
    print_contention(c)
    print(json.dumps({"benchmark": "contention", "model": model, "realtime": args.realtime, **c}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
