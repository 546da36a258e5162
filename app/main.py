"""`gansynth gui` (and `python main.py`): open the instrument window.

Only wiring: parse arguments, build the QApplication and window, load the model
in a worker, then hand the window a started `Session`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.gansynth.config import PRECISION_HELP, PRECISIONS
from engine.util import resources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="model directory, Magenta checkpoint dir or .zip "
                             f"(default: {resources.default_model_path()})")
    parser.add_argument("--preset", type=Path, default=None, help="preset JSON to load at start")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--audio-out", default=None,
                        help='audio output device name or part of it ("" = none: the offline clock; '
                             'default: the last used, else the system default)')
    parser.add_argument("--midi-in", default=None, help="MIDI input port name (default: last used)")
    parser.add_argument("--sample-rate", type=int, default=None,
                        help="output sample rate in Hz (default: the device's, 48000 without one)")
    parser.add_argument("--settings", type=Path, default=None,
                        help="settings file (INI) instead of the user's QSettings")


def make_settings(path: Path | None):
    from PySide6.QtCore import QSettings

    if path is not None:
        return QSettings(str(path), QSettings.IniFormat)
    return QSettings("gansynth", "instrument")


def open_instrument(window, model_path, preset=None, audio_out=None, midi_in=None,
                    sample_rate: int | None = None, on_error=None):
    """Load the model in a worker; on success build the engine and `window.attach` it."""
    from app.session import Session
    from app.workers import Job
    from engine import load_synth
    from engine.devices.audio import DEFAULT_SAMPLE_RATE, device_sample_rate
    from engine.instrument.instrument import Instrument

    settings = window.settings
    window.statusBar().showMessage(f"Loading model {model_path}…")
    window.progress.setRange(0, 0)   # busy indicator
    window.progress.show()

    def build(synth):
        window.progress.setRange(0, 1000)
        window.progress.hide()
        device = audio_out if audio_out is not None else settings.value("audio/device", None)
        try:
            rate = sample_rate or (device_sample_rate(device) if device != "" else DEFAULT_SAMPLE_RATE)
            session = Session(Instrument(synth, sample_rate=rate))
            session.model_name = Path(model_path).name
            # MIDI first: on JACK, MIDI clients made after the audio stream started stall it
            session.open_midi(midi_in if midi_in is not None else settings.value("midi/port", None))
            session.start(device)
        except Exception as exc:   # a broken model or engine: report, keep the window
            failed(f"{type(exc).__name__}: {exc}")
            return
        window.attach(session)
        if preset:                        # asked for: its settings win over the saved ones
            _restore_sound(window, settings)
            window.actions_.load_preset(str(preset))
        else:                             # the last preset, then the user's later tweaks
            last = settings.value("preset/last", "")
            if last and Path(last).exists():
                window.actions_.load_preset(last)
            elif not last:
                _first_preset(window, session)
            _restore_sound(window, settings)
        window.statusBar().showMessage(f"model {Path(model_path).name} ready", 4000)

    def failed(message):
        window.progress.hide()
        window.notify(f"Could not load the model: {message}")
        if on_error is not None:
            on_error(message)

    job = Job(load_synth, str(model_path), threads=1, precision=window.precision)
    return window.jobs.start(job, on_done=build, on_failed=failed)


def _first_preset(window, session) -> None:
    """First start: the first bundled preset, if it fits this model (else the random corners)."""
    shipped = sorted(resources.presets_dir().glob("*.json"))
    if not shipped:
        return
    try:
        session.instrument.load_preset(shipped[0])
    except Exception:   # made for another model (latent size): keep the random corners
        return
    window.sync_from_engine()
    window.request_rainbowgram()


def _restore_sound(window, settings) -> None:
    for name, slider in window.sound.sliders.items():
        value = settings.value(f"sound/{name}")
        if value is None:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        slider.set_value(value, emit=True)


def _no_display() -> str:
    """A message when Qt would find no display to open the window on (Linux), else ''."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return ""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return ""
    return ("gansynth gui: no display (DISPLAY and WAYLAND_DISPLAY are unset). Run it on a desktop, "
            "or headless with `xvfb-run`, or try `gansynth play` for the instrument without a window.")


def run(args) -> int:
    problem = _no_display()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    from app import theme
    from app.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("GANSynth Instrument")
    app.setOrganizationName("gansynth")
    theme.apply_theme(app)
    window = MainWindow(make_settings(args.settings))
    window.precision = args.precision
    window.show()
    model = args.model or resources.default_model_path()
    if not Path(model).exists():
        window.notify(f"{model}: no such model directory (use --model PATH or File ▸ Open model…)")
    else:
        open_instrument(window, model, args.preset, args.audio_out, args.midi_in, args.sample_rate)
    return app.exec()
