"""`gansynth gui` (and `python main.py`): open the instrument window.

Only wiring: parse arguments, build the QApplication and window, then `open_instrument`
(app/actions.py) loads the model in a worker and hands the window a started `Session`.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.gansynth.config import BACKEND_HELP, BACKENDS, PRECISION_HELP, PRECISIONS
from engine.util import resources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="model directory, Magenta checkpoint dir or .zip "
                             f"(default: {resources.default_model_path()})")
    parser.add_argument("--preset", type=Path, default=None, help="preset JSON to load at start")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
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
    from app.actions import open_instrument
    from app.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("GANSynth Instrument")
    app.setOrganizationName("gansynth")
    theme.apply_theme(app)
    window = MainWindow(make_settings(args.settings))
    window.precision = args.precision
    window.backend = args.backend
    window.show()
    model = args.model or resources.default_model_path()
    if not Path(model).exists():
        window.notify(f"{model}: no such model directory (use --model PATH or File ▸ Open model…)")
    else:
        open_instrument(window, model, args.preset, args.audio_out, args.midi_in, args.sample_rate)
    return app.exec()
