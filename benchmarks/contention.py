"""GIL contention beside the audio callback, on a real, paced JACK dummy device (48 kHz, 256 frames).

    python -m benchmarks.contention [--model PATH | --config paper] [--device system|"JACK client"]
                                    [--seconds 10] [--baseline-switch-ms 0.5] [--realtime]

16 held voices (cached: nothing renders) while 0, 1 and 2 threads of this process run Python
non-stop (stand-ins for the window painting, a take's MIDI file being written), N s each, at
the GIL switch interval `AudioOutput.open` sets and, as the baseline in the same run, at
`--baseline-switch-ms` (0.5 ms: the interval before this was measured). The callback gives the
GIL up at every cffi call and numpy operation over 500 elements, and each take-back waits up
to one interval while another thread runs Python. Prints xruns, process() p99/max, late
callbacks and how fast the busy threads ran per case, then one JSON line. Target 0 xruns.
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


def bench_contention(synth, seconds: float, device: str, baseline_switch_s: float) -> dict:
    from engine.devices.audio import AudioOutput
    from engine.instrument.events import NoteOn
    from engine.instrument.instrument import Instrument

    inst = Instrument(synth, sample_rate=RATE, cache_mb=256)
    pitches = chord_pitches(synth)
    inst.renderer.render_now(pitches)
    probe = TimedProbe(inst, max_blocks=int((6 * seconds + 30) * RATE / PERIOD))
    out = AudioOutput(probe, device=device)
    if not out.open():
        raise RuntimeError(out.last_error)
    shipped = sys.getswitchinterval()      # what open() set (GIL_SWITCH_S, or less if it was less)
    inst.start()
    inst.renderer.idle.wait(30)
    for p in pitches:
        out.post(NoteOn(p, 90))
    time.sleep(1.0)
    budget_ms = 1000 * PERIOD / RATE
    res = {"device": device, "seconds": seconds, "voices": len(pitches), "switch_ms": 1e3 * shipped,
           "baseline_switch_ms": 1e3 * baseline_switch_s, "callback_realtime": out.callback_realtime,
           "callback_raised": out.callback_raised}
    try:
        for key, interval in (("shipped", shipped), ("baseline", baseline_switch_s)):
            sys.setswitchinterval(interval)
            for busy in (0, 1, 2):
                stop, count = threading.Event(), [0]
                threads = [threading.Thread(target=_run_python, args=(stop, count), daemon=True) for _ in range(busy)]
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
                res[f"{key}_{busy}"] = {
                    "xruns": out.xruns - x0, "blocks": int(b1 - b0),
                    "blocks_over_budget": int((busy_ms > budget_ms).sum()),
                    "process_ms_p99": float(np.percentile(busy_ms, 99)), "process_ms_max": float(busy_ms.max()),
                    "late_callbacks": int((gaps > 1.5 * budget_ms).sum()),
                    "busy_loops_per_s": loops / seconds}
    finally:
        sys.setswitchinterval(shipped)
        out.close()
        inst.stop()
    return res


def print_contention(c: dict) -> None:
    print(f"GIL contention on {c['device']!r}, {c['voices']} held voices, {c['seconds']:.0f} s a case "
          f"(callback {'realtime' if c['callback_realtime'] else 'not realtime'}"
          f"{', raised to SCHED_FIFO' if c['callback_raised'] else ''}):")
    for key in ("shipped", "baseline"):
        ms = c["switch_ms"] if key == "shipped" else c["baseline_switch_ms"]
        for busy in (0, 1, 2):
            r = c[f"{key}_{busy}"]
            print(f"    switch interval {ms:.3f} ms, {busy} busy Python thread(s): {r['xruns']} xruns, "
                  f"process() p99 {r['process_ms_p99']:.2f} ms max {r['process_ms_max']:.2f} ms "
                  f"({r['blocks_over_budget']} of {r['blocks']} blocks over {1000 * PERIOD / RATE:.2f} ms), "
                  f"{r['late_callbacks']} late callbacks, busy threads {r['busy_loops_per_s']:.0f} loops/s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--device", default="system", help='"system" (sounddevice) or "JACK client" (our own)')
    p.add_argument("--seconds", type=float, default=10.0, help="per case")
    p.add_argument("--baseline-switch-ms", type=float, default=0.5)
    p.add_argument("--realtime", action="store_true", help="jackd -R")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.jack import JackServer

    synth, model = build_synth(args)
    with JackServer(RATE, PERIOD, realtime=args.realtime):
        c = bench_contention(synth, args.seconds, args.device, args.baseline_switch_ms / 1000.0)
    print_contention(c)
    print(json.dumps({"benchmark": "contention", "model": model, "realtime": args.realtime, **c}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
