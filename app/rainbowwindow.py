"""The rainbowgram, large: its own resizable window with pitch and time axes, the last note
(or the current instrument) on top and the four corner instruments side by side below.

Opened from Play > Rainbowgram window (Ctrl+Shift+G) or by double-clicking the small
rainbowgram. Pictures are rendered in the window's `Jobs` (never on the GUI thread) by
`note_rainbowgram`; this module only lays them out.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGridLayout, QWidget

from app import theme
from app.views import RainbowgramView
from engine.gansynth.rainbowgram import rainbowgram


def note_rainbowgram(synth, latent: np.ndarray, pitch: int, audio=None, sample_rate=None) -> np.ndarray:
    """RGB rainbowgram of `audio` (e.g. the engine's cached note) or, without it, of a fresh
    render of `latent` at `pitch` (clamped to the model's range)."""
    if audio is None:
        lo, hi = synth.pitch_range
        audio = synth.generate(np.array(latent[None]), [min(hi, max(lo, pitch))])[0]
        sample_rate = synth.sample_rate
    return rainbowgram(audio, sample_rate, hop=rainbow_hop(sample_rate), bins_per_octave=24)  # 168 rows


def rainbow_hop(sample_rate: int) -> int:
    """Samples per rainbowgram column: the same frame rate at any output rate."""
    return 256 * max(1, round(sample_rate / 16000))


class RainbowgramWindow(QWidget):
    """Top-level window: `main` (the current sound) over `corners` (A B C D)."""

    def __init__(self, parent=None):
        super().__init__(parent, Qt.Window)
        self.setWindowTitle("Rainbowgram — GANSynth Instrument")
        self.main = RainbowgramView(axes=True)
        self.corners = [RainbowgramView(axes=True) for _ in range(4)]
        grid = QGridLayout(self)
        grid.setContentsMargins(6, 6, 6, 6)
        grid.setSpacing(6)
        grid.addWidget(self.main, 0, 0, 1, 4)
        for i, view in enumerate(self.corners):
            view.setMinimumHeight(150)
            view.title = f"{theme.CORNER_LETTERS[i]}"
            grid.addWidget(view, 1, i)
        grid.setRowStretch(0, 3)
        grid.setRowStretch(1, 2)
        self.resize(1100, 720)
        self._keys = [None] * 4

    def request_corners(self, window) -> None:
        """Render each corner instrument at the window's last pitch (in the window's jobs)."""
        from app.workers import Job
        from engine.gansynth.spectral import pitch_name

        session = window.session
        if session is None:
            return
        inst = session.instrument
        pitch = window.last_pitch
        for i, corner in enumerate(inst.timbre.corners):
            key = (corner.latent.tobytes(), pitch, id(inst.synth))
            if key == self._keys[i]:
                continue
            self._keys[i] = key
            title = f"{theme.CORNER_LETTERS[i]} · {corner.name} · {pitch_name(pitch)}"
            job = Job(note_rainbowgram, inst.synth, corner.latent, pitch, latest=f"rainbow_corner_{i}")
            window.jobs.start(job, on_done=lambda rgb, v=self.corners[i], t=title: v.show_rgb(
                rgb, t, frame_s=window.rainbow_frame_s(inst.synth.sample_rate)),
                on_failed=lambda msg: window.notify(f"rainbowgram failed: {msg}"))


def open_rainbow_window(window) -> RainbowgramWindow:
    """Show (making it once) `window`'s large rainbowgram, filled from the small one."""
    if window.rainbow_window is None:
        window.rainbow_window = RainbowgramWindow(window)
    big = window.rainbow_window
    big.show()
    big.raise_()
    small = window.rainbow
    if small.has_image():
        big.main.show_rgb(small.last_rgb, small.title, small.frame_s)
    big.request_corners(window)
    return big
