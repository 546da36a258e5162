"""Open the window, play a chord, move the pad and save a screenshot PNG.

    python -m app.screenshot --model resources/models/default -o docs/screenshot.png [--screen]

`--screen` grabs the X screen (needs a real display, e.g. Xvfb) instead of
rendering the widget (`QWidget.grab`, works offscreen too). Exit code 0 when the
PNG was written.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

CHORD = (48, 55, 60, 64, 67)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.screenshot")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--screen", action="store_true", help="grab the whole screen")
    parser.add_argument("--settle-ms", type=int, default=2500, help="play this long before grabbing")
    parser.add_argument("--render-wait-s", type=float, default=0.0,
                        help="first wait up to this long for the timbre to be rendered")
    parser.add_argument("--timeout-s", type=float, default=120.0)
    args = parser.parse_args(argv)

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app import theme
    from app.actions import open_instrument
    from app.main import make_settings
    from app.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme.apply_theme(app)
    settings_dir = tempfile.mkdtemp(prefix="gansynth-shot-")
    window = MainWindow(make_settings(Path(settings_dir) / "settings.ini"))
    window.resize(1280, 800)
    window.show()
    status = {"code": 1}

    waited = {"ms": 0}

    def wait_rendered():
        """Poll (GUI timer) until the timbre is rendered, at most `--render-wait-s`."""
        progress = window.session.instrument.stats()["render_progress"]
        if progress >= 0.99 or waited["ms"] >= args.render_wait_s * 1000:
            play()
        else:
            waited["ms"] += 200
            QTimer.singleShot(200, wait_rendered)

    def play():
        window.last_pitch = CHORD[2]
        window.request_rainbowgram()
        for pitch in CHORD:
            window.keyboard.keys.press(pitch, 96)
        QTimer.singleShot(args.settle_ms, grab)

    def grab():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.screen:
            pixmap = window.screen().grabWindow(0)
        else:
            pixmap = window.grab()
        status["code"] = 0 if pixmap.save(str(args.out)) else 1
        window.keyboard.keys.release_all()
        window.close()
        app.quit()

    def failed(message):
        print(f"screenshot: {message}", file=sys.stderr)
        app.quit()

    def start():
        window.pad.set_position(0.3, 0.62, emit=True)
        wait_rendered()

    window.ready.connect(start)
    open_instrument(window, args.model, on_error=failed)
    QTimer.singleShot(int(args.timeout_s * 1000), app.quit)
    app.exec()
    return status["code"]


if __name__ == "__main__":
    sys.exit(main())
