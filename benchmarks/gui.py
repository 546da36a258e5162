"""GUI thread CPU while playing: `python -m benchmarks.gui [--model DIR] [--seconds 10]`.

Opens the instrument window (offscreen unless DISPLAY/QT_QPA_PLATFORM say otherwise) on the
offline clock and measures, with `time.thread_time()` on the GUI thread, three phases of
the same length in one run:

  idle      timers stopped, nothing playing (baseline: the event loop alone)
  timers    meters/scope (30 fps) and stats (4 Hz) timers running, nothing playing
  playing   timers running while a player presses chords and arpeggios, moves the pad
            every 100 ms, and rainbowgrams are re-requested (in workers)

Prints per-phase GUI-thread CPU (% of one core), the meter timer's achieved rate, and a
final JSON line. With `--audio-out system` (sounddevice) or `--audio-out "JACK client"` the
window plays on a paced JACK dummy this benchmark starts (48 kHz, 256 frames; `--realtime`:
jackd -R) instead of the offline clock, and each phase also counts xruns: the window's own
Python (painting, the pad, the keyboard) beside the audio producer (`--audio-ahead N`: the
periods it renders ahead of the device's C callback; 0, the device's Python callback,
measures what the GIL costs it). For a real X server:
`Xvfb :95 &` then `DISPLAY=:95 QT_QPA_PLATFORM=xcb python -m benchmarks.gui`.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import summary

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

CHORDS = ((48, 55, 60, 64), (45, 52, 57, 60), (41, 48, 53, 57), (43, 50, 55, 59))


def tiny_model(path: Path) -> Path:
    import torch

    from engine.gansynth.config import PRESETS, SpectralConfig
    from engine.gansynth.model import Generator
    from engine.gansynth.modelfile import save_model_dir

    torch.manual_seed(0)
    return Path(save_model_dir(path, Generator(PRESETS["tiny"]), SpectralConfig(),
                               provenance={"note": "random weights for the GUI benchmark"}))


class Player:
    """Plays chords (held 0.5 s) with an arpeggio on top, and circles the pad."""

    def __init__(self, window):
        self.w = window
        self.step = 0
        self.held: list[int] = []

    def tick(self) -> None:           # every 125 ms
        keys = self.w.keyboard.keys
        chord = CHORDS[(self.step // 8) % len(CHORDS)]
        if self.step % 4 == 0:
            for p in self.held:
                keys.release(p)
            self.held = list(chord[:3])
            for p in self.held:
                keys.press(p, 90)
        top = chord[self.step % 4] + 12
        keys.press(top, 100)
        keys.release(top)
        self.step += 1

    def pad(self) -> None:            # every 100 ms
        import math

        t = self.step / 16
        self.w.pad.set_position(0.5 + 0.35 * math.cos(t), 0.5 + 0.35 * math.sin(t), emit=True)

    def stop(self) -> None:
        self.w.keyboard.keys.release_all()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gui")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--audio-out", default="", help='"" (the offline clock), "system" or "JACK client" on a '
                                                        'JACK dummy started here')
    parser.add_argument("--realtime", action="store_true", help="with --audio-out: jackd -R")
    parser.add_argument("--audio-ahead", type=int, default=None, metavar="N",
                        help="with --audio-out: periods rendered ahead (Devices > Render audio ahead; default 1)")
    args = parser.parse_args(argv)
    if not args.audio_out:
        return _bench(args)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.jack import JackServer

    with JackServer(48000, 256, realtime=args.realtime):
        return _bench(args)


def _bench(args) -> int:
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app import theme
    from app.actions import open_instrument
    from app.main import make_settings
    from app.window import MainWindow
    from engine.gansynth.modelfile import is_model_dir
    from engine.util import resources

    tmp = Path(tempfile.mkdtemp(prefix="gansynth-gui-bench-"))
    model = args.model or resources.default_model_path()
    if not (model.is_dir() and is_model_dir(model)):
        print(f"{model} is not a model directory: using a tiny random model")
        model = tiny_model(tmp / "tiny")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme.apply_theme(app)
    settings = make_settings(tmp / "settings.ini")
    if args.audio_ahead is not None:
        settings.setValue("audio/ahead", args.audio_ahead)
    window = MainWindow(settings)
    window.resize(1280, 800)
    window.show()
    loop = QEventLoop()
    window.ready.connect(loop.quit)
    open_instrument(window, model, audio_out=args.audio_out, midi_in="", on_error=lambda m: loop.quit())
    QTimer.singleShot(180_000, loop.quit)
    loop.exec()
    if window.session is None:
        print("the model did not load", file=sys.stderr)
        return 1
    ticks = {"n": 0}

    def count() -> None:
        ticks["n"] += 1

    window.fast_timer.timeout.connect(count)
    player = Player(window)
    play_timer, pad_timer = QTimer(), QTimer()
    play_timer.setInterval(125)
    pad_timer.setInterval(100)
    play_timer.timeout.connect(player.tick)
    pad_timer.timeout.connect(player.pad)

    def phase(name: str, timers: bool, playing: bool) -> dict:
        for t in (window.fast_timer, window.slow_timer):
            t.start() if timers else t.stop()
        for t in (play_timer, pad_timer):
            t.start() if playing else t.stop()
        ticks["n"] = 0
        wall0, cpu0, proc0 = time.perf_counter(), time.thread_time(), time.process_time()
        xruns0 = window.session.meters().get("xruns", 0)
        QTimer.singleShot(int(args.seconds * 1000), loop.quit)
        loop.exec()
        wall = time.perf_counter() - wall0
        gui = 100.0 * (time.thread_time() - cpu0) / wall
        proc = 100.0 * (time.process_time() - proc0) / wall
        fps = ticks["n"] / wall
        xruns = window.session.meters().get("xruns", 0) - xruns0
        player.stop()
        print(f"{name:8s} GUI thread {gui:5.1f} % of a core   whole process {proc:6.1f} %   "
              f"meter timer {fps:4.1f} /s   xruns {xruns}")
        return {"gui_cpu_pct": round(gui, 2), "process_cpu_pct": round(proc, 1), "meter_fps": round(fps, 1),
                "xruns": xruns}

    print(f"model {model}; {args.seconds:.0f} s per phase; QT_QPA_PLATFORM={os.environ.get('QT_QPA_PLATFORM')}; "
          f"audio: {window.session.output_name or 'the offline clock'}"
          f"{' (jackd -R)' if args.realtime and args.audio_out else ''}, rendered {window.audio_ahead} period(s) ahead")
    results = {"idle": phase("idle", False, False), "timers": phase("timers", True, False),
               "playing": phase("playing", True, True)}
    stats = window.session.meters()
    print(f"while playing: xruns {stats.get('xruns')}, renders {stats.get('renders')}, "
          f"voices now {stats.get('voices')}")
    window.close()
    summary("gui", {"model": str(model), "seconds": args.seconds, "audio_out": args.audio_out or "offline clock",
                    "realtime": bool(args.realtime and args.audio_out), "audio_ahead": window.audio_ahead,
                    **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items()},
                    "playing_minus_idle_gui_cpu_pct": round(results["playing"]["gui_cpu_pct"]
                                                            - results["idle"]["gui_cpu_pct"], 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
