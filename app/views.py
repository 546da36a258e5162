"""Display widgets the window feeds on its timers: scope, level meter, rainbowgram, status bar.

Nothing here pulls data itself; `window.py` reads the engine's meters on a QTimer
and calls `show_*` / `set_*` with plain numbers and numpy arrays.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QStatusBar, QVBoxLayout, QWidget

from app import theme

METER_FLOOR_DB = -60.0


def to_db(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 1e-6 else -120.0


class ScopeView(pg.PlotWidget):
    """Output waveform: the newest `points` samples, with an auto-ranging y axis.

    The range follows the signal's peak (fast up, slow down, never below ±0.05) so quiet
    notes are visible; the label in the corner gives the current full scale.
    """

    RANGES = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)
    MIN_RANGE = RANGES[0]
    HOLD_FRAMES = 30        # a smaller range must fit this many frames in a row to be used

    def __init__(self, points: int = 1024, parent=None):
        super().__init__(parent=parent)
        self.setMinimumHeight(56)
        self.setMenuEnabled(False)
        self.setMouseEnabled(False, False)
        self.hideButtons()
        self.setXRange(0, points, padding=0)
        self.getPlotItem().hideAxis("bottom")
        self.getPlotItem().hideAxis("left")
        self.showGrid(x=False, y=True, alpha=0.15)
        self._x = np.arange(points, dtype=np.float32)
        self._y = np.zeros(points, np.float32)
        self.curve = self.plot(self._x, self._y, pen=pg.mkPen(theme.ACCENT, width=1),
                               antialias=False)
        self.curve.setSkipFiniteCheck(True)
        self.range_label = pg.TextItem("", color=theme.TEXT_DIM, anchor=(0, 0))
        self.addItem(self.range_label)
        self.y_range = 1.0
        self._smaller_frames = 0
        self._set_range(self.MIN_RANGE)

    def _set_range(self, y_range: float) -> None:
        self.y_range = y_range
        self.setYRange(-y_range, y_range, padding=0.05)
        self.range_label.setPos(0, y_range)
        self.range_label.setText(f"±{y_range:.2g}")

    def show_samples(self, samples: np.ndarray) -> None:
        """samples: float32 [n] newest last; shorter input is right-aligned."""
        total = len(self._y)
        n = min(len(samples), total)
        self._y[:total - n] = 0.0
        self._y[total - n:] = samples[len(samples) - n:]
        self.curve.setData(self._x, self._y)
        peak = float(np.abs(self._y).max())
        target = next((r for r in self.RANGES if r >= peak), self.RANGES[-1])
        if target > self.y_range:
            self._set_range(target)
        elif target < self.y_range:
            self._smaller_frames += 1
            if self._smaller_frames >= self.HOLD_FRAMES:
                self._smaller_frames = 0
                self._set_range(target)
        else:
            self._smaller_frames = 0


class LevelMeter(QWidget):
    """Vertical peak/RMS meter in dBFS with a decaying peak-hold line."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumWidth(22)
        self.setAttribute(Qt.WA_OpaquePaintEvent)   # paints every pixel: no parent repaint
        self.setSizePolicy(QSizePolicy.Fixed, QSizePolicy.Expanding)
        self.peak_db = METER_FLOOR_DB
        self.rms_db = METER_FLOOR_DB
        self.hold_db = METER_FLOOR_DB
        self.clipped = False

    def sizeHint(self) -> QSize:
        return QSize(22, 120)

    def set_level(self, peak: float, rms: float) -> None:
        """peak, rms: linear amplitudes of the newest block(s)."""
        self.peak_db = max(to_db(peak), self.peak_db - 1.5)    # smooth fall
        self.rms_db = to_db(rms)
        self.hold_db = max(self.peak_db, self.hold_db - 0.4)
        self.clipped = self.clipped or peak >= 1.0
        self.update()

    def reset_clip(self) -> None:
        self.clipped = False
        self.update()

    def mousePressEvent(self, event):
        self.reset_clip()

    @staticmethod
    def _frac(db: float) -> float:
        return min(1.0, max(0.0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB))

    def paintEvent(self, event):
        p = QPainter(self)
        r = QRectF(self.rect()).adjusted(3, 8, -3, -2)
        p.fillRect(self.rect(), QColor(theme.PANEL))
        p.fillRect(r, QColor(theme.BG))
        grad = QLinearGradient(r.bottomLeft(), r.topLeft())
        grad.setColorAt(0.0, QColor("#2fb8a8"))
        grad.setColorAt(0.7, QColor(theme.ACCENT))
        grad.setColorAt(0.88, QColor(theme.WARN))
        grad.setColorAt(1.0, QColor(theme.DANGER))
        peak_h = r.height() * self._frac(self.peak_db)
        rms_h = r.height() * self._frac(self.rms_db)
        p.setOpacity(0.45)
        p.fillRect(QRectF(r.left(), r.bottom() - peak_h, r.width(), peak_h), grad)
        p.setOpacity(1.0)
        p.fillRect(QRectF(r.left(), r.bottom() - rms_h, r.width(), rms_h), grad)
        y = r.bottom() - r.height() * self._frac(self.hold_db)
        p.setPen(QPen(QColor(theme.TEXT), 1))
        p.drawLine(int(r.left()), int(y), int(r.right()), int(y))
        p.setPen(QPen(QColor(255, 255, 255, 30), 1))
        for db in (-6, -12, -24, -48):
            y = r.bottom() - r.height() * self._frac(db)
            p.drawLine(int(r.left()), int(y), int(r.right()), int(y))
        p.fillRect(QRectF(r.left(), 1, r.width(), 5),
                   QColor(theme.DANGER) if self.clipped else QColor(theme.BORDER))
        p.end()


class RainbowgramView(QWidget):
    """Shows an RGB rainbowgram (`engine.gansynth.rainbowgram`: uint8 [bins, frames, 3], row 0 = the
    lowest CQT bin, 7 octaves from C1) with low notes at the bottom.

    `axes=True` draws a pitch axis (every C, with E and G ticks) and a time axis in seconds
    (`frame_s` per column) around the picture; without, octave marks sit on the picture.
    Double-click: `doubleClicked` (the window opens the large view)."""

    doubleClicked = Signal()
    OCTAVES, LOWEST_OCTAVE = 7, 1
    LEFT, BOTTOM = 38, 20          # axis margins (pixels) when axes are drawn

    def __init__(self, parent=None, axes: bool = False):
        super().__init__(parent)
        self.axes = axes
        self.setMinimumHeight(80)
        self.setAttribute(Qt.WA_OpaquePaintEvent)   # paints every pixel: no parent repaint
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self._image: QImage | None = None
        self.last_rgb: np.ndarray | None = None     # as given to show_rgb
        self.frame_s = 0.016
        self.title = "Rainbowgram: play a note"

    def sizeHint(self) -> QSize:
        return QSize(320, 160)

    def mouseDoubleClickEvent(self, event):
        self.doubleClicked.emit()

    def _paint_octaves(self, p: QPainter) -> None:
        """Faint octave lines with C labels on the picture."""
        p.setPen(QPen(QColor(255, 255, 255, 120), 1))
        self._small_font(p)
        h = self.height()
        for k in range(1, self.OCTAVES):
            y = int(h - k * h / self.OCTAVES)
            p.drawLine(0, y, 14, y)
            p.drawText(18, y + 4, f"C{self.LOWEST_OCTAVE + k}")

    @staticmethod
    def _small_font(p: QPainter) -> None:
        font = p.font()
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
        p.setFont(font)

    def _plot_rect(self) -> QRectF:
        if not self.axes:
            return QRectF(self.rect())
        return QRectF(self.LEFT, 0, max(1, self.width() - self.LEFT - 4), max(1, self.height() - self.BOTTOM))

    def _paint_axes(self, p: QPainter, r: QRectF) -> None:
        """Note names up the left (C of each octave, E and G as ticks), seconds along the bottom."""
        self._small_font(p)
        dim = QColor(theme.TEXT_DIM)
        per_octave = r.height() / self.OCTAVES
        for k in range(self.OCTAVES + 1):
            for step, name in ((0, "C"), (4, "E"), (7, "G")):
                if k == self.OCTAVES and step:
                    continue
                y = r.bottom() - (k + step / 12) * per_octave
                p.setPen(QPen(QColor(255, 255, 255, 70 if step else 150), 1))
                p.drawLine(int(r.left() - (6 if step == 0 else 3)), int(y), int(r.left()), int(y))
                if step == 0:
                    if 0 < k < self.OCTAVES:
                        p.drawLine(int(r.left()), int(y), int(r.right()), int(y))
                    p.setPen(dim)
                    p.drawText(QRectF(0, max(0.0, y - 8), self.LEFT - 8, 16), Qt.AlignRight | Qt.AlignVCenter,
                               f"{name}{self.LOWEST_OCTAVE + k}")
        if self._image is None:
            return
        seconds = self._image.width() * self.frame_s
        step = next((s for s in (0.1, 0.25, 0.5, 1.0, 2.0, 5.0) if r.width() * s / max(seconds, 1e-6) >= 50), 10.0)
        t = 0.0
        while t <= seconds + 1e-9:
            x = r.left() + r.width() * t / seconds
            p.setPen(QPen(QColor(255, 255, 255, 150), 1))
            p.drawLine(int(x), int(r.bottom()), int(x), int(r.bottom() + 4))
            p.setPen(dim)
            p.drawText(QRectF(min(x - 30, self.width() - 60), r.bottom() + 3, 60, self.BOTTOM - 3),
                       Qt.AlignRight | Qt.AlignTop if x + 30 > self.width() else Qt.AlignHCenter | Qt.AlignTop,
                       f"{t:g} s")
            t += step

    def show_rgb(self, rgb: np.ndarray, title: str = "", frame_s: float | None = None) -> None:
        self.last_rgb = rgb
        rgb = np.ascontiguousarray(np.flipud(np.asarray(rgb, np.uint8)[..., :3]))  # low at the bottom
        h, w = rgb.shape[:2]
        self._image = QImage(rgb.data, w, h, 3 * w, QImage.Format_RGB888).copy()
        self.title = title
        if frame_s is not None:
            self.frame_s = frame_s
        self.update()

    def clear(self, title: str = "") -> None:
        self._image = None
        self.title = title or self.title
        self.update()

    def has_image(self) -> bool:
        return self._image is not None

    def paintEvent(self, event):
        p = QPainter(self)
        p.setRenderHint(QPainter.SmoothPixmapTransform)
        p.fillRect(self.rect(), QColor("#07080a"))
        r = self._plot_rect()
        if self._image is not None:
            p.drawImage(r, self._image)
        p.save()
        if self.axes:
            self._paint_axes(p, r)
        elif self._image is not None:
            self._paint_octaves(p)
        p.restore()
        metrics = p.fontMetrics()
        title = metrics.elidedText(self.title, Qt.ElideRight, int(r.width()) - 24)
        box = QRectF(r.left() + 4, 4, metrics.horizontalAdvance(title) + 12, metrics.height() + 4)
        p.fillRect(box, QColor(0, 0, 0, 160))
        p.setPen(QColor(theme.TEXT))
        p.drawText(box, Qt.AlignCenter, title)
        p.end()


class ScopePanel(QWidget):
    """Scope beside the level meter."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.scope = ScopeView()
        self.meter = LevelMeter()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addWidget(self.scope, 1)
        lay.addWidget(self.meter)


class StatusLine:
    """Permanent status-bar fields: latency, xruns, CPU load, cache fill, voices."""

    FIELDS = ("latency", "xruns", "cpu", "cache", "voices", "render")

    def __init__(self, bar: QStatusBar):
        self.labels: dict[str, QLabel] = {}
        for name in self.FIELDS:
            label = QLabel("")
            self.labels[name] = label
            bar.addPermanentWidget(label)
        self.update({})

    def update(self, values: dict) -> None:
        latency = values.get("latency_ms")
        self.labels["latency"].setText(f"latency {latency:5.1f} ms" if latency is not None else "latency  —")
        realtime = values.get("callback_realtime")   # None: not known yet, or no device
        self.labels["xruns"].setText(f"xruns {values.get('xruns', 0)}" + (" !" if realtime is False else ""))
        tip = self._realtime_tip(realtime, values.get("callback_raised", False))
        if values.get("xruns", 0) and "late_blocks" in values:
            tip += (f" Of these, the instrument rendered {values['late_blocks']} late; the audio system "
                    f"flagged the others (another program, or its own thread, was late).")
        self.labels["xruns"].setToolTip(tip)
        cpu = values.get("cpu_load")
        self.labels["cpu"].setText(f"cpu {100 * cpu:4.1f}%" if cpu is not None else "cpu  —")
        fill = values.get("cache_fill")
        self.labels["cache"].setText(f"cache {100 * fill:4.1f}%" if fill is not None else "cache  —")
        self.labels["voices"].setText(f"voices {values.get('voices', 0)}")
        progress = values.get("render_progress")
        self.labels["render"].setText(f"timbre {100 * progress:3.0f}%" if progress is not None else "")
        self.labels["render"].setToolTip(f"render processes: {values.get('render_process', 'off')}, "
                                         f"{values.get('render_processes', 0)} rendering; "
                                         f"last note {values.get('last_render_ms', 0.0):.0f} ms")

    @staticmethod
    def _realtime_tip(realtime: bool | None, raised: bool) -> str:
        if realtime is None:
            return "audio underruns (xruns) of the output device"
        if realtime:
            return "audio underruns (xruns); the audio system runs our audio thread realtime"
        return ("audio underruns (xruns). The audio system gives our audio thread ordinary priority "
                "(a JACK server started without -R, or no realtime rights), so a busy machine can make "
                "it late. " + ("We raised our audio threads to realtime; the server's own thread stays "
                               "ordinary. " if raised else "We may not raise them (no realtime rights). ")
                + "Start JACK realtime (jackd -R, JACK2's default) with realtime rights for this user "
                  "(the audio group, rtprio), or render more audio ahead (Devices menu).")

    def text(self) -> str:
        return "  ".join(label.text() for label in self.labels.values())


def vbox(*widgets, margins=0, spacing=6) -> QVBoxLayout:
    lay = QVBoxLayout()
    lay.setContentsMargins(margins, margins, margins, margins)
    lay.setSpacing(spacing)
    for w in widgets:
        lay.addWidget(w)
    return lay
