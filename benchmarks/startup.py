"""Start-up xruns: the instrument opened and started again and again on a paced JACK dummy.

    python -m benchmarks.startup [--model PATH | --config paper] [--starts 12] [--open-first]
                                 [--devices "system,JACK client"] [--hold 0] [--backend auto] [--precision auto]

Each start: a fresh Instrument (a chord rendered in this process first, as in benchmarks.live)
is started (its render process loads the model while the worker waits, then renders the first
range) and its output opened, in that order as the window and `gansynth play` do, or with
--open-first as benchmarks.live does; --hold s between the two. Counted until the first range
is rendered and 1 s more. Every xrun is timed from the first of the two and put in its phase
(until both are done, render process starting, first range, after), with jackd's log lines
of it: "client = X was not finished" (a client's thread was late: ours are GANSynth,
our JACK client, and PortAudio) or "JackTimedDriver::Process XRun" (jackd's own thread was
late). One JACK server and one interpreter serve every start. Target 0 (issue 16: "none at
start-up"). Prints a line a start, then one JSON line.
"""
from __future__ import annotations

import argparse
import threading
import time

from benchmarks.common import add_model_args, summary
from benchmarks.live import PERIOD, RATE, TimedProbe, _jack_xrun_lines, chord_pitches

PHASES = ("opening", "starting", "first_range", "after")
AFTER_S = 1.0


def one_start(synth, device: str, jack, hold: float, open_first: bool) -> dict:
    from engine.devices.audio import AudioOutput
    from engine.instrument.instrument import Instrument

    inst = Instrument(synth, sample_rate=RATE, cache_mb=256)
    inst.renderer.render_now(chord_pitches(synth))
    out = AudioOutput(TimedProbe(inst, max_blocks=1), device=device)
    events, stop = [], threading.Event()
    log_before = len(jack.log_text())
    t0 = time.monotonic()

    def watch():   # polls the output's xrun count and jackd's log
        seen_xruns, seen_log = 0, log_before
        while not stop.is_set():
            xruns, text = out.xruns, jack.log_text()
            now = time.monotonic() - t0
            if xruns != seen_xruns:
                events.append((now, "xrun", xruns - seen_xruns))
                seen_xruns = xruns
            events.extend((now, "jackd", line) for line in _jack_xrun_lines(text[seen_log:]))
            seen_log = len(text)
            time.sleep(0.005)

    def open_output():
        if not out.open():
            raise RuntimeError(out.last_error)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        first, second = (open_output, inst.start) if open_first else (inst.start, open_output)
        first()
        time.sleep(hold)
        second()
        marks = [time.monotonic() - t0]
        while inst.stats()["render_process"] == "starting":
            time.sleep(0.005)
        marks.append(time.monotonic() - t0)
        inst.renderer.idle.wait(60)
        marks.append(time.monotonic() - t0)
        time.sleep(AFTER_S)
    finally:
        stop.set()
        watcher.join()
        out.close()
        inst.stop()

    def phase(t: float) -> str:
        return PHASES[sum(t >= m for m in marks)]
    xruns = {p: 0 for p in PHASES}
    for t, kind, n in events:
        if kind == "xrun":
            xruns[phase(t)] += n
    lines = [(round(t, 3), phase(t), line) for t, kind, line in events if kind == "jackd"]
    return {"device": device, "xruns": xruns, "jackd_lines": lines,
            "process_ready_s": round(marks[1], 2), "range_done_s": round(marks[2], 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--starts", type=int, default=12, help="starts per device")
    p.add_argument("--devices", default="system,JACK client", help="outputs, comma-separated")
    p.add_argument("--hold", type=float, default=0.0, help="seconds between the instrument's start and the open")
    p.add_argument("--open-first", action="store_true", help="open the output, then start the instrument")
    args = p.parse_args(argv)

    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.live import build_synth
    from tests.jack import JackServer

    synth, model = build_synth(args)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    figures = {"model": model, "backend": synth.backend, "precision": synth.precision, "starts": args.starts, "hold_s": args.hold,
               "order": "open, start" if args.open_first else "start, open"}
    print(f"model: {model} ({synth.backend}, {synth.precision}); JACK dummy {RATE} Hz, {PERIOD}-frame periods; {args.starts} starts "
          f"a device, order {figures['order']}, hold {args.hold} s; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    with JackServer(RATE, PERIOD) as jack:
        results = []
        for i in range(args.starts):
            for device in devices:   # interleaved: a slow minute hits every device alike
                r = one_start(synth, device, jack, args.hold, args.open_first)
                results.append(r)
                print(f"{device!r} start {i + 1}: xruns {r['xruns']}; render process ready {r['process_ready_s']} s, "
                      f"first range done {r['range_done_s']} s; jackd: {r['jackd_lines'] or 'nothing'}", flush=True)
    for device in devices:
        mine = [r for r in results if r["device"] == device]
        lines = [line for r in mine for _, _, line in r["jackd_lines"]]
        by_phase = {ph: sum(r["xruns"][ph] for r in mine) for ph in PHASES}
        key = device.replace(" ", "_").lower()
        figures[key] = {"starts_with_xruns": sum(any(r["xruns"].values()) for r in mine),
                        "xruns_by_phase": by_phase,
                        "client_late_lines": sum("was not finished" in line for line in lines),
                        "jackd_late_lines": sum("JackTimedDriver" in line for line in lines),
                        "first_range_s_median": sorted(r["range_done_s"] - r["process_ready_s"]
                                                       for r in mine)[len(mine) // 2]}
        f = figures[key]
        print(f"{device!r}: {f['starts_with_xruns']} of {len(mine)} starts with xruns; by phase {by_phase}; jackd "
              f"lines: a client late {f['client_late_lines']}, jackd's own thread late {f['jackd_late_lines']}")
    summary("startup", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
