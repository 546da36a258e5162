"""The machine's own xrun floor, measured beside the instrument's benchmarks (benchmarks.live):
a bare stream on the same JACK server whose callback only writes zeros (`device_floor_xruns`,
with or without processes rendering at the render processes' priority), and what the host does
to any realtime thread meanwhile (`HostLatency`: rt-tests' cyclictest). An xrun count means
little without these two beside it: on a VM the host can hold a virtual CPU for tens of ms.
"""
from __future__ import annotations

import os
import time

import numpy as np

RATE = 48000   # the JACK dummy's rate and period in every live benchmark
PERIOD = 256
PERIOD_MS = 1000 * PERIOD / RATE


def device_floor_xruns(seconds: float, load: tuple[dict, int] | None = None) -> tuple[int, dict | None]:
    """(xruns, the host meanwhile: `HostLatency.result`) of a bare sounddevice stream on the same
    server whose callback only writes zeros: the device's and machine's floor with no instrument.
    `load` = (Synth.source, n): meanwhile n processes render notes of that model non-stop at the
    render processes' priority (nice + SCHED_IDLE): the floor under the instrument's render load."""
    import multiprocessing as mp

    import sounddevice as sd

    from engine.devices.listing import find_output_device

    count = np.zeros(1, np.int64)

    def callback(outdata, frames, time_info, status):
        outdata.fill(0)
        if status.output_underflow:
            count[0] += 1

    ctx = mp.get_context("spawn")
    stop, busy = ctx.Event(), ctx.Barrier((load[1] if load else 0) + 1)
    workers = [ctx.Process(target=_render_nonstop, args=(load[0], stop, busy), daemon=True)
               for _ in range(load[1] if load else 0)]
    for w in workers:
        w.start()
    try:
        busy.wait(120)                      # every worker has its model and rendered a note
        dev = find_output_device("system")
        with sd.OutputStream(device=dev.index, samplerate=RATE, blocksize=PERIOD, channels=2, latency="low",
                             callback=callback):
            host = HostLatency(seconds)
            time.sleep(seconds)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
    return int(count[0]), host.result()


def _render_nonstop(source: dict, stop, busy) -> None:
    """A `device_floor_xruns` load process: what a render process does, minus the pipes."""
    from engine.instrument.synthproc import RENDER_NICENESS

    os.nice(RENDER_NICENESS)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):   # not Linux, or not permitted: niced only, as a render process
        pass
    from engine.gansynth.synth import load_synth

    synth = load_synth(source["path"], device=source["device"], threads=source["threads"],
                       precision=source["precision"], backend=source["backend"])
    lo, hi = synth.pitch_range
    z = synth.random_latents(1, seed=0)
    pitch = lo
    synth.generate(z, [pitch])
    busy.wait()
    while not stop.is_set():
        pitch = lo + (pitch - lo + 7) % (hi - lo + 1)
        synth.generate(z, [pitch])


class HostLatency:
    """What the machine itself does to a realtime thread over a span: rt-tests' `cyclictest`
    (a SCHED_FIFO 80 thread per CPU waking every 1 ms, `--laptop`: no CPU-latency request)
    run beside the benchmark. Its late wake-ups are the floor no audio code can beat (on a VM,
    the host descheduling the virtual CPU). Beside it, the guest kernel's steal time (/proc/stat):
    the share of the virtual CPUs' time the host gave to others (0 where it is not accounted).
    `result()`: None where cyclictest is missing (Debian: `apt install rt-tests`) or failed, else
    {"max_ms", "wakeups", "late_wakeups": those later than `late_ms`, "late_ms", "steal_pct"}."""

    def __init__(self, seconds: float, late_ms: float = PERIOD_MS):
        import shutil
        import subprocess

        self.late_ms = late_ms
        self.steal_mark = steal_mark()
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
        return {"max_ms": max(maxima) / 1000, "wakeups": counts, "late_wakeups": over, "late_ms": self.late_ms,
                "steal_pct": round(steal_pct(self.steal_mark), 2)}

    @staticmethod
    def describe(result: dict | None) -> str:
        """"N of M late, max X ms, S % stolen": cyclictest's wake-ups later than `late_ms`, the
        latest, and the host's steal time."""
        if result is None:
            return "not measured (no cyclictest: rt-tests)"
        return (f"{result['late_wakeups']} of {result['wakeups']} late, max {result['max_ms']:.2f} ms, "
                f"{result['steal_pct']:.1f} % stolen")


def steal_mark() -> tuple[float, float]:
    """(all CPUs' steal time so far in seconds, monotonic now): where `steal_pct` counts from.
    Steal time is Linux's /proc/stat; elsewhere it reads 0."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        stolen = int(fields[8]) / os.sysconf("SC_CLK_TCK") if fields[0] == "cpu" and len(fields) > 8 else 0.0
    except (OSError, ValueError):
        stolen = 0.0
    return stolen, time.monotonic()


def steal_pct(mark: tuple[float, float]) -> float:
    """The share of all CPUs' time the host took since `mark` (`steal_mark`), in %."""
    (stolen0, t0), (stolen, t) = mark, steal_mark()
    return 100 * (stolen - stolen0) / (max(t - t0, 1e-9) * (os.cpu_count() or 1))
