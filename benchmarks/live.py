"""Live I/O benchmark on a real, paced JACK dummy device (48 kHz, 256-frame periods).

    python -m benchmarks.live [--model PATH | --config paper] [--seconds 60] [--take-minutes 10]
                              [--parts latency,xruns,take] [--backend auto] [--precision auto]

1. MIDI note-on -> first sample of that note in the recorded output, on a cache hit.
   A JACK MIDI port (rtmidi UNIX_JACK) plays our MidiInput; the audio callback's start
   times are logged (monotonic clock) per block, so a sample's time is its block's callback
   time plus its offset in the block, plus the device's latency and what the output renders ahead.
   The device's latency is JACK's playback latency of the physical output (both paths feed
   it; PortAudio reports 5.33 ms for its stream, JACK 10.67 ms for the port: two periods in
   JACK2's default asynchronous mode).
   Target: at most one block beyond the device's own latency. Measured for both live paths:
   sounddevice's JACK stream with rtmidi's JACK MIDI client, and our own JACK client
   (engine/devices/jackclient.py: audio outs and the MIDI in on one client).
2. Xruns over N s (default 60) of 16-voice playing while the render worker re-renders
   continuously (the pad moves every 250 ms), against three baselines of the same length in
   this run: a bare sounddevice stream whose callback writes zeros (the device's floor), the
   same beside as many processes rendering notes non-stop at the render processes' priority
   (the machine's floor under that load, without our process's work), and the instrument
   started but idle (after its render process is up; the xruns of that
   start-up are counted apart). Target 0. The take is recorded and compared with the samples the
   callback produced (bit-identical). Beside every one of the four phases, the host's own
   floor (benchmarks.floor.HostLatency): rt-tests' cyclictest's realtime wake-ups later than
   a period, and the virtual CPUs' steal time; xruns of a minute the host stalled are its.
3. A 10-minute take (same 16-voice playing with pad moves) produced by the offline clock
   FASTER than real time (stepped in this thread, writer on its own thread): the WAV read
   back must be bit-identical (sha256 and length) to the samples `process` produced.
The callback beside threads running Python (GIL contention): `python -m benchmarks.contention`.

Without --model: random weights of the `paper` configuration (the full GANSynth size), loaded as
the window loads (--backend, --precision auto). Prints figures, then one JSON line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.common import add_model_args
from benchmarks.floor import PERIOD, RATE, HostLatency, device_floor_xruns


class TimedProbe:
    """Around the real Instrument: logs each block's start frame, callback time and process time,
    keeps a copy of the samples (or a running sha256) — benchmark instrumentation only."""

    def __init__(self, instrument, max_blocks: int, copy_frames: int = 0):
        self.instrument = instrument
        self.sample_rate = instrument.sample_rate
        self.t_start = np.zeros(max_blocks)
        self.frame0 = np.zeros(max_blocks, np.int64)
        self.busy_s = np.zeros(max_blocks)
        self.blocks = 0
        self.frames = 0
        self.copy = np.zeros(copy_frames, np.float32) if copy_frames else None
        for a in (self.t_start, self.frame0, self.busy_s, self.copy):
            if a is not None:
                a.fill(0)  # writing touches every page now: a first touch in the callback is a page fault
        self.sha = None
        self.arrivals = []  # monotonic time of each NoteOn handed to the engine

    def post(self, event):
        if type(event).__name__ == "NoteOn":
            self.arrivals.append(time.monotonic())
        self.instrument.post(event)

    def audio_thread_realtime(self, realtime: bool) -> None:
        self.instrument.audio_thread_realtime(realtime)

    def process(self, frames):
        t0 = time.monotonic()
        block = self.instrument.process(frames)
        i = self.blocks
        if i < self.t_start.shape[0]:
            self.t_start[i] = t0
            self.frame0[i] = self.frames
            self.busy_s[i] = time.monotonic() - t0
            self.blocks = i + 1
        if self.copy is not None and self.frames + frames <= self.copy.shape[0]:
            self.copy[self.frames:self.frames + frames] = block
        if self.sha is not None:
            self.sha.update(block.tobytes())
        self.frames += frames
        return block


def build_synth(args):
    from engine.gansynth.synth import load_synth

    if args.model:
        return load_synth(args.model, threads=1, backend=args.backend, precision=args.precision), args.model
    import torch

    from engine.gansynth.config import PRESETS, SpectralConfig
    from engine.gansynth.model import Generator
    from engine.gansynth.modelfile import save_model_dir

    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp(prefix="bench-live-")) / args.config
    save_model_dir(path, Generator(PRESETS[args.config]), SpectralConfig(),
                   provenance={"note": "random weights for benchmarks"})
    return load_synth(path, threads=1, backend=args.backend, precision=args.precision), f"random {args.config}"


def chord_pitches(synth, n=16):
    lo, hi = synth.pitch_range
    return [int(p) for p in np.linspace(lo + 6, hi - 6, n).round()]


# ---------------------------------------------------------------------------- 1. latency

def bench_latency(synth, tmp: Path, trials: int, device: str, jack=None, ahead: int | None = None) -> dict:
    """`device` "system": sounddevice's JACK stream + rtmidi's JACK MIDI client; "JACK client":
    our own client, MIDI into its port."""
    import mido

    from engine.devices.audio import AudioOutput
    from engine.devices.jackclient import JACK_CLIENT_DEVICE, playback_latency_ms
    from engine.devices.midi_input import MidiInput
    from engine.devices.recorder import Recorder
    from engine.instrument.events import NoteOff, NoteOn, SetParam
    from engine.instrument.instrument import Instrument

    inst = Instrument(synth, sample_rate=RATE, cache_mb=64)
    pitch = 60
    inst.renderer.render_now([pitch])                       # cache hit
    inst.post(SetParam("release_s", 0.005))
    probe = TimedProbe(inst, max_blocks=RATE * 60 // PERIOD)
    out = AudioOutput(probe, device=device, ahead=ahead)
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
    keys = backend.open_output("Bench Keys", virtual=True)
    midi = None
    if device != JACK_CLIENT_DEVICE:
        # MIDI before audio, as the window does. JACK delivers a note-on sent from outside its
        # process cycle at the next period, to our MIDI client, which runs beside (not before)
        # the audio client: "arrived" times it from there.
        midi = MidiInput(out, port_name="Bench Keys", api="UNIX_JACK", virtual=False, rescan_s=0)
        midi.start()
    if not out.open():
        raise RuntimeError(out.last_error)
    if midi is None:
        source = [p for p in jack.ports() if "Bench Keys" in p][0]
        jack.connect(source, "GANSynth:midi_in")
    rec = Recorder(out)
    rec.start(tmp / "latency.wav")
    time.sleep(0.3)
    rng = np.random.default_rng(2)
    sends = {"midi": [], "post": []}
    for i in range(2 * trials):
        time.sleep(0.1 + 0.0137 * rng.random())             # random phase against the period
        how = "midi" if i % 2 == 0 else "post"
        sends[how].append(time.monotonic())
        if how == "midi":
            keys.send(mido.Message("note_on", note=pitch, velocity=100))
            time.sleep(0.08)
            keys.send(mido.Message("note_off", note=pitch))
        else:
            out.post(NoteOn(pitch, 100))
            time.sleep(0.08)
            out.post(NoteOff(pitch))
    time.sleep(0.2)
    rec.stop()
    reported_ms, ahead_ms = out.latency_ms, out.ahead_ms   # ahead: sounddevice's periods rendered ahead
    device_ms = (playback_latency_ms() or reported_ms - ahead_ms) + ahead_ms   # JACK's own figure, the same for both
    losses = out.device_losses
    loss_error = out.last_error
    if midi is not None:
        midi.close()
    keys.close()
    out.close()
    audio, _ = sf.read(tmp / "latency.wav", dtype="float32")
    block_ms = 1000 * PERIOD / RATE
    result = {"device": device, "device_latency_ms": device_ms, "reported_latency_ms": reported_ms,
              "block_ms": block_ms, "ahead_ms": ahead_ms,
              "target_ms": device_ms + block_ms,
              "device_losses": losses, "last_error": loss_error}
    # the MIDI note-ons as they reached the engine (after JACK delivered them to our port)
    sends["midi_arrival"] = [t for t in probe.arrivals if any(0 <= t - s < 0.05 for s in sends["midi"])]
    for how, times in sends.items():
        engine_ms = _onset_delays(audio, rec.start_frame, probe, times)
        total = [e + device_ms for e in engine_ms]
        result[how] = {"trials": len(engine_ms), "to_callback_median_ms": statistics.median(engine_ms),
                       "to_callback_max_ms": max(engine_ms),
                       "to_dac_median_ms": statistics.median(total), "to_dac_max_ms": max(total),
                       "within_target": int(sum(e <= block_ms for e in engine_ms))}
    return result


def _onset_delays(audio, start: int, probe, sends) -> list[float]:
    """For each send time: ms until the callback produced the note's first sample."""
    blocks = probe.blocks
    frame0, t_start = probe.frame0[:blocks], probe.t_start[:blocks]
    delays = []
    for t_send in sends:
        # the note cannot be in a block whose callback started before the send
        first_block = min(int(np.searchsorted(t_start, t_send)), blocks - 1)
        search_from = max(int(frame0[first_block]) - start, 0)
        nz = np.flatnonzero(audio[search_from:])
        if nz.size == 0:
            continue
        onset = search_from + int(nz[0]) + start              # output frame of the first sample
        b = int(np.searchsorted(frame0, onset, side="right")) - 1
        delays.append(1000 * (t_start[b] + (onset - frame0[b]) / RATE - t_send))
    return delays


# ---------------------------------------------------------------------------- playing pattern

def play_pattern(post, synth, step: int, rng) -> None:
    """Step `step` (every 250 ms): 16 held notes, one retriggered per step; the pad moves."""
    from engine.instrument.events import NoteOff, NoteOn, PadMove

    pitches = chord_pitches(synth)
    if step == 0:
        for p in pitches:
            post(NoteOn(p, 90))
    else:
        p = pitches[step % len(pitches)]
        post(NoteOff(p))
        post(NoteOn(p, int(rng.integers(40, 127))))
    post(PadMove(float(rng.random()), float(rng.random())))


# ---------------------------------------------------------------------------- 2. xruns

def _jack_xrun_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "xrun" in line.lower() or "not finished" in line]


def bench_xruns(synth, tmp: Path, seconds: float, jack_log=lambda: "", device: str = "system",
                processes: int | None = None, ahead: int | None = None) -> dict:
    from engine.devices.audio import AudioOutput
    from engine.devices.recorder import Recorder
    from engine.instrument.instrument import Instrument

    xruns_floor, host_floor = device_floor_xruns(seconds)
    inst = Instrument(synth, sample_rate=RATE, cache_mb=256, render_processes=processes)
    inst.renderer.render_now(chord_pitches(synth))
    total_blocks = int((seconds * 2 + 40) * RATE / PERIOD)
    probe = TimedProbe(inst, max_blocks=total_blocks, copy_frames=total_blocks * PERIOD)   # idle + take
    log_open = len(jack_log())
    out = AudioOutput(probe, device=device, ahead=ahead)
    if not out.open():
        raise RuntimeError(out.last_error)
    t_open = time.monotonic()
    inst.start()                          # render worker (and its render process, which loads the model)
    while inst.stats()["render_process"] == "starting" and time.monotonic() - t_open < 30:
        time.sleep(0.05)
    inst.renderer.idle.wait(30)           # the first timbre's range is rendered
    startup_s, xruns_startup, log0, late0 = time.monotonic() - t_open, out.xruns, len(jack_log()), out.late_blocks
    host_idle = HostLatency(seconds)
    time.sleep(seconds)                   # idle instrument, started, nothing to render: baseline
    xruns_idle, late1, host_idle = out.xruns - xruns_startup, out.late_blocks, host_idle.result()
    log1 = len(jack_log())
    rec = Recorder(out)
    rec.start(tmp / "xruns.wav")
    rng = np.random.default_rng(0)
    b0 = probe.blocks
    t0, host = time.monotonic(), HostLatency(seconds)
    step, renders0 = 0, inst.stats()["renders"]
    while time.monotonic() - t0 < seconds:
        play_pattern(out.post, synth, step, rng)
        step += 1
        time.sleep(max(0.0, t0 + step * 0.25 - time.monotonic()))
    stats, host = inst.stats(), host.result()
    rec.stop()
    xruns_load, late2 = out.xruns - xruns_idle - xruns_startup, out.late_blocks
    log = jack_log()
    jack_start, jack_idle, jack_load = (_jack_xrun_lines(log[a:b])   # start-up, idle, playing
                                        for a, b in ((log_open, log0), (log0, log1), (log1, None)))
    meters, realtime, raised = out.meters(), out.callback_realtime, out.callback_raised
    out.close()
    inst.stop()
    xruns_floor_loaded, host_floor_loaded = device_floor_xruns(seconds, (synth.source, stats["render_processes"]))
    busy_ms = 1000 * probe.busy_s[b0:probe.blocks]
    starts = probe.t_start[b0:probe.blocks]
    gaps = np.diff(starts) * 1000
    late = np.flatnonzero(gaps > 2.5 * 1000 * PERIOD / RATE)   # a callback started > 2.5 periods after the last
    late_at_s = [round(float(starts[i + 1] - t0), 2) for i in late]
    played, _ = sf.read(tmp / "xruns.wav", dtype="float32")
    s = rec.start_frame
    identical = bool(played.shape[0] > 0 and s + played.shape[0] <= probe.copy.shape[0]
                     and np.array_equal(played, probe.copy[s:s + played.shape[0]]))
    budget_ms = 1000 * PERIOD / RATE
    return {"device": device, "ahead": out.ahead, "latency_ms": meters["latency_ms"], "seconds": seconds, "baseline_idle_s": seconds, "xruns_idle": xruns_idle,
            "xruns_bare_stream": xruns_floor, "xruns_bare_stream_render_load": xruns_floor_loaded,
            "startup_s": startup_s, "xruns_startup": xruns_startup, "render_process": stats["render_process"], "render_processes": stats["render_processes"],
            "callback_realtime": realtime, "callback_raised": raised, "blocks": int(busy_ms.shape[0]), "blocks_over_budget": int((busy_ms > budget_ms).sum()),
            "device_seconds_per_wall_second": played.shape[0] / RATE / seconds,
            "xruns_playing": xruns_load, "late_blocks_startup_idle_playing": [late0, late1 - late0, late2 - late1],
            "voices": stats["voices"], "renders": stats["renders"] - renders0,
            "pad_moves": step, "process_ms_p50": float(np.percentile(busy_ms, 50)),
            "process_ms_p99": float(np.percentile(busy_ms, 99)), "process_ms_max": float(busy_ms.max()),
            "block_ms": 1000 * PERIOD / RATE, "cpu_load_last": meters["cpu_load"],
            "host_latency_playing": host, "host_latency_idle": host_idle, "host_latency_bare_stream": host_floor,
            "host_latency_bare_stream_render_load": host_floor_loaded,
            "late_callbacks_at_s": late_at_s, "max_callback_gap_ms": float(gaps.max()) if gaps.size else 0.0,
            "jackd_xrun_lines_startup": len(jack_start), "jackd_xrun_lines_idle": len(jack_idle),
            "jackd_xrun_lines_playing": len(jack_load), "jackd_xrun_samples_startup": jack_start[:3],
            "jackd_xrun_samples": (jack_idle + jack_load)[:6], "recorded_s": played.shape[0] / RATE,
            "recording_bit_identical": identical, "recorder_overruns": rec.overruns,
            "device_losses": meters["device_losses"], "last_error": meters["last_error"]}


# ---------------------------------------------------------------------------- 3. long take

def bench_take(synth, tmp: Path, minutes: float) -> dict:
    from engine.devices.clock import OfflineClockOutput
    from engine.devices.recorder import Recorder
    from engine.instrument.instrument import Instrument

    inst = Instrument(synth, sample_rate=RATE, cache_mb=256)
    inst.renderer.render_now(chord_pitches(synth))
    inst.start()
    probe = TimedProbe(inst, max_blocks=1)
    probe.sha = hashlib.sha256()
    clock = OfflineClockOutput(probe, block_size=PERIOD, realtime=False)
    rec = Recorder(clock)
    path = tmp / "take.wav"
    rec.start(path)
    rng = np.random.default_rng(1)
    total = int(minutes * 60 * RATE)
    blocks_per_step = int(0.25 * RATE / PERIOD)
    t0 = time.monotonic()
    step = 0
    while clock.tap.frames < total:
        play_pattern(clock.post, synth, step, rng)
        step += 1
        clock.run_blocks(min(blocks_per_step, (total - clock.tap.frames + PERIOD - 1) // PERIOD))
    produce_s = time.monotonic() - t0
    rec.stop()
    inst.stop()
    wall_s = time.monotonic() - t0
    sha = hashlib.sha256()
    frames = 0
    with sf.SoundFile(path) as f:
        for chunk in f.blocks(blocksize=1 << 16, dtype="float32"):
            sha.update(chunk.tobytes())
            frames += chunk.shape[0]
    return {"minutes": minutes, "frames_played": probe.frames, "frames_in_wav": frames,
            "bit_identical": frames == probe.frames and sha.hexdigest() == probe.sha.hexdigest(),
            "overruns": rec.overruns, "wall_s": wall_s, "produce_s": produce_s,
            "speed_x_realtime": minutes * 60 / wall_s, "file_mb": path.stat().st_size / 2**20}


def print_latency(lat: dict) -> None:
    path = "our JACK client" if lat["device"] != "system" else "sounddevice + rtmidi"
    for how, label in (("midi", "JACK MIDI note-on sent"), ("midi_arrival", "JACK MIDI note-on arrived"),
                       ("post", "output.post(NoteOn)")):
        r = lat[how]
        print(f"[1] {path}: {label} -> first sample at the DAC (cache hit, {r['trials']} notes): median "
              f"{r['to_dac_median_ms']:.2f} ms, max {r['to_dac_max_ms']:.2f} ms = device latency "
              f"{lat['device_latency_ms']:.2f} ms (rendered ahead {lat['ahead_ms']:.2f}) + to the callback median {r['to_callback_median_ms']:.2f}"
              f" / max {r['to_callback_max_ms']:.2f} ms; target <= {lat['target_ms']:.2f} ms "
              f"(device + one {lat['block_ms']:.2f} ms block): {r['within_target']}/{r['trials']} met")


def host_phases(xr: dict) -> str:
    """The host's stalls in each phase of `bench_xruns`, beside its xrun counts."""
    phases = (("playing", "playing"), ("idle", "idle"), ("bare stream", "bare_stream"),
              ("bare stream beside the load", "bare_stream_render_load"))
    return ", ".join(f"{name} {HostLatency.describe(xr['host_latency_' + key])}" for name, key in phases)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(p)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--take-minutes", type=float, default=10.0)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--parts", default="latency,xruns,take", help="which of latency,xruns,take to run")
    p.add_argument("--realtime", action="store_true",
                   help="jackd -R: server and client process threads SCHED_FIFO (needs the permission); what is "
                        "left is what our own process does to the callback (GIL, priorities), not the "
                        "machine's other load")
    p.add_argument("--xruns-device", default="system",
                   help='output for the xrun part: "system" (sounddevice) or "JACK client" (our own)')
    p.add_argument("--render-processes", type=int, default=None,
                   help="render processes for the xrun part (default: the instrument's, a core each but one, 1 to 4)")
    p.add_argument("--ahead", type=int, default=None, help="periods rendered ahead of "
                   "a C callback (0: a Python callback; default: AudioOutput's)")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts or parts - {"latency", "xruns", "take"}:
        p.error("--parts takes a comma-separated subset of latency,xruns,take")

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.jack import JackServer

    synth, model = build_synth(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    print(f"model: {model} ({synth.backend}, {synth.precision}); JACK dummy {RATE} Hz, {PERIOD}-frame periods"
          f"{' (realtime: jackd -R)' if args.realtime else ''}; files in {tmp}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    summary = {"benchmark": "live", "model": model, "backend": synth.backend, "precision": synth.precision,
               "realtime": args.realtime}
    with JackServer(RATE, PERIOD, realtime=args.realtime) as jack:
        if "latency" in parts:
            from engine.devices.jackclient import JACK_CLIENT_DEVICE

            for device, key in (("system", "latency"), (JACK_CLIENT_DEVICE, "latency_jack_client")):
                summary[key] = lat = bench_latency(synth, tmp, args.trials, device, jack, args.ahead)
                print_latency(lat)

        if "xruns" in parts:
            summary["xruns"] = xr = bench_xruns(synth, tmp, args.seconds, jack.log_text, args.xruns_device,
                                                    args.render_processes, args.ahead)
            print(f"[2] xruns on {xr['device']!r} ({xr['ahead']} periods ahead, {xr['latency_ms']:.1f} ms): {xr['xruns_playing']} in {xr['seconds']:.0f} s of 16 voices "
                  f"(our render late for {xr['late_blocks_startup_idle_playing'][2]}, the device flagged the rest) "
                  f"with the pad moving ({xr['pad_moves']} moves, {xr['renders']} notes re-rendered, "
                  f"{xr['render_processes']} render process(es) {xr['render_process']}, audio callback thread "
                  f"{'realtime' if xr['callback_realtime'] else 'not realtime'}"
                  f"{', raised to SCHED_FIFO' if xr['callback_raised'] else ''}) vs {xr['xruns_idle']} in {xr['baseline_idle_s']:.0f} s idle "
                  f"and {xr['xruns_bare_stream']} for a bare stream writing zeros, no instrument, "
                  f"{xr['xruns_bare_stream_render_load']} for it beside {xr['render_processes']} processes "
                  f"rendering non-stop at the render processes' priority (target 0); the host meanwhile (wake-ups "
                  f"of cyclictest's realtime threads later than a period): {host_phases(xr)}; "
                  f"{xr['xruns_startup']} while the worker started ({xr['startup_s']:.1f} s, jackd lines {xr['jackd_xrun_lines_startup']}); "
                  f"process() p50 {xr['process_ms_p50']:.3f} ms, "
                  f"p99 {xr['process_ms_p99']:.3f} ms, max {xr['process_ms_max']:.2f} ms per "
                  f"{xr['block_ms']:.2f} ms block ({xr['blocks_over_budget']} of {xr['blocks']} blocks over it); "
                  f"the device ran {xr['device_seconds_per_wall_second']:.2f} s per wall second; recording bit-identical: "
                  f"{xr['recording_bit_identical']} ({xr['recorded_s']:.1f} s, {xr['recorder_overruns']} overruns); device losses {xr['device_losses']} {xr['last_error']}")
    if "take" in parts:
        summary["take"] = take = bench_take(synth, tmp, args.take_minutes)
        print(f"[3] {take['minutes']:.0f}-minute take on the offline clock, {take['speed_x_realtime']:.1f}x real "
              f"time ({take['wall_s']:.0f} s): WAV bit-identical to the produced samples: {take['bit_identical']} "
              f"({take['frames_in_wav']} / {take['frames_played']} frames, {take['overruns']} overruns, "
              f"{take['file_mb']:.0f} MB)")
    for f in tmp.glob("*.wav"):
        f.unlink()
    summary["loadavg_1min"] = os.getloadavg()[0]
    print(json.dumps(summary, default=lambda o: o.item() if hasattr(o, "item") else str(o)), flush=True)
    sys.stderr.flush()
    os._exit(0)   # a stream PortAudio could not close must not hold the process at exit


if __name__ == "__main__":
    sys.exit(main())
