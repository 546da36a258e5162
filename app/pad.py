"""XY timbre pad: four named, coloured corners and a draggable puck.

Pad coordinates are the engine's (`engine.instrument.timbre`): x right, y up, both 0..1;
corner i sits at `CORNER_POSITIONS[i]`: A (0, 0) bottom-left, B (1, 0)
bottom-right, C (0, 1) top-left, D (1, 1) top-right. The pad shows
each corner's weight and, as a ring around the puck, how much of the current
timbre has been re-rendered (0..1, pulled from `Instrument.stats()`).
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPen, QPixmap, QRadialGradient
from PySide6.QtWidgets import QSizePolicy, QWidget

from app import theme
from engine.instrument.timbre import CORNER_POSITIONS, corner_weights

MIME_INSTRUMENT = "application/x-gansynth-instrument"
CORNER_XY = tuple((float(x), float(y)) for x, y in CORNER_POSITIONS)


def dropped_files(mime) -> list[str]:
    """Local file paths a drag carries (from a file manager); [] for anything else."""
    if not mime.hasUrls():
        return []
    return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


class TimbrePad(QWidget):
    """Emits `moved(x, y)` while dragged, `cornerDropped(corner, payload)` when a palette
    instrument is dropped and `filesDropped(corner, paths)` when files are (sound import)."""

    moved = Signal(float, float)
    cornerDropped = Signal(int, bytes)
    filesDropped = Signal(int, list)

    MARGIN = 34  # pixels around the square for the corner labels

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumSize(260, 260)
        self.setAttribute(Qt.WA_OpaquePaintEvent)   # paints every pixel: no parent repaint
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setAttribute(Qt.WA_AcceptTouchEvents, True)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.ClickFocus)
        self.setToolTip("Drag to morph between the four corner instruments.\n"
                        "Drop an instrument from the palette on a corner to assign it,\n"
                        "or an audio file (a recorded note) to make an instrument of it there.")
        self._pos = (0.5, 0.5)
        self._names = ["—"] * 4
        self._colours = [QColor(c) for c in theme.CORNER_COLORS]
        self._progress = 1.0
        self._drop_corner = -1
        self.dragging = False
        self._bg: QPixmap | None = None
        self.mode = "nsynth"
        self.weights_fn = corner_weights  # (x, y) -> float [4]

    # -- public state ---------------------------------------------------------------------------
    def position(self) -> tuple[float, float]:
        return self._pos

    def set_position(self, x: float, y: float, emit: bool = False) -> None:
        x, y = min(1.0, max(0.0, float(x))), min(1.0, max(0.0, float(y)))
        if (x, y) != self._pos:
            self._pos = (x, y)
            self.update()
        if emit:
            self.moved.emit(x, y)

    def set_names(self, names) -> None:
        self._names = [str(n) for n in list(names)[:4]] + ["—"] * (4 - len(list(names)[:4]))
        self.update()

    def set_mode(self, mode: str) -> None:
        """The engine's interpolation mode ("nsynth" or "bilinear") for weights and the map."""
        if mode != self.mode:
            self.mode = mode
            self.weights_fn = lambda x, y: corner_weights(x, y, mode)
            self._bg = None
            self.update()

    def set_colours(self, colours) -> None:
        self._colours = [QColor(c) for c in list(colours)[:4]]
        self._bg = None
        self.update()

    def names(self) -> list[str]:
        return list(self._names)

    def set_progress(self, fraction: float) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        if abs(fraction - self._progress) > 1e-3:
            self._progress = fraction
            self.update()

    def weights(self) -> np.ndarray:
        return np.asarray(self.weights_fn(*self._pos), dtype=float)

    def sizeHint(self) -> QSize:
        return QSize(380, 380)

    # -- geometry -------------------------------------------------------------------------------
    def _square(self) -> QRectF:
        side = min(self.width(), self.height()) - 2 * self.MARGIN
        side = max(side, 40)
        left = (self.width() - side) / 2
        top = (self.height() - side) / 2
        return QRectF(left, top, side, side)

    def _to_pad(self, point: QPointF) -> tuple[float, float]:
        sq = self._square()
        return ((point.x() - sq.left()) / sq.width(), (sq.bottom() - point.y()) / sq.height())

    def _to_widget(self, x: float, y: float) -> QPointF:
        sq = self._square()
        return QPointF(sq.left() + x * sq.width(), sq.bottom() - y * sq.height())

    # -- input ----------------------------------------------------------------------------------
    def mousePressEvent(self, event):
        if event.button() == Qt.LeftButton:
            self.dragging = True
            self.set_position(*self._to_pad(event.position()), emit=True)

    def mouseMoveEvent(self, event):
        if self.dragging:
            self.set_position(*self._to_pad(event.position()), emit=True)

    def mouseReleaseEvent(self, event):
        self.dragging = False

    def keyPressEvent(self, event):
        step = 0.05 if not event.modifiers() & Qt.ShiftModifier else 0.01
        dx = {Qt.Key_Left: -step, Qt.Key_Right: step}.get(event.key(), 0.0)
        dy = {Qt.Key_Up: step, Qt.Key_Down: -step}.get(event.key(), 0.0)
        if dx or dy:
            self.set_position(self._pos[0] + dx, self._pos[1] + dy, emit=True)
        else:
            super().keyPressEvent(event)

    def event(self, event):
        if event.type() in (QEvent.TouchBegin, QEvent.TouchUpdate):
            points = event.points()
            if points:
                self.set_position(*self._to_pad(points[0].position()), emit=True)
            event.accept()
            return True
        if event.type() == QEvent.TouchEnd:
            event.accept()
            return True
        return super().event(event)

    # -- drag and drop from the palette --------------------------------------------------------------
    def _corner_at(self, point: QPointF) -> int:
        x, y = self._to_pad(point)
        return int(np.argmin([np.hypot(x - cx, y - cy) for cx, cy in CORNER_XY]))

    @staticmethod
    def _wanted(mime) -> bool:
        return mime.hasFormat(MIME_INSTRUMENT) or bool(dropped_files(mime))

    def dragEnterEvent(self, event):
        if self._wanted(event.mimeData()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event):
        if self._wanted(event.mimeData()):
            self._drop_corner = self._corner_at(event.position())
            self.update()
            event.acceptProposedAction()

    def dragLeaveEvent(self, event):
        self._drop_corner = -1
        self.update()

    def dropEvent(self, event):
        corner = self._corner_at(event.position())
        self._drop_corner = -1
        self.update()
        mime = event.mimeData()
        event.acceptProposedAction()
        if mime.hasFormat(MIME_INSTRUMENT):
            self.cornerDropped.emit(corner, bytes(mime.data(MIME_INSTRUMENT)))
        elif dropped_files(mime):
            self.filesDropped.emit(corner, dropped_files(mime))

    # -- painting -------------------------------------------------------------------------------
    def resizeEvent(self, event):
        self._bg = None
        super().resizeEvent(event)

    def _static_layer(self) -> QPixmap:
        """Panel, the blended-colour map of the timbre space, grid and border; cached per size."""
        if self._bg is not None and self._bg.size() == self.size():
            return self._bg
        pixmap = QPixmap(self.size())
        pixmap.fill(QColor(theme.PANEL))
        sq = self._square()
        p = QPainter(pixmap)
        p.setRenderHint(QPainter.Antialiasing)
        p.drawImage(sq, self._colour_map())
        self._paint_grid(p, sq)
        p.end()
        self._bg = pixmap
        return pixmap

    def _colour_map(self, n: int = 48) -> QImage:
        """Corner colours blended by the pad weights, darkened: RGBA [n, n]."""
        cols = np.array([[c.red(), c.green(), c.blue()] for c in self._colours], float)
        img = np.zeros((n, n, 3))
        for j in range(n):
            for i in range(n):
                img[j, i] = self.weights_fn(i / (n - 1), 1 - j / (n - 1)) @ cols
        base = np.array([29, 32, 39], float)
        img = (0.28 * img + 0.72 * base).clip(0, 255).astype(np.uint8)
        rgba = np.ascontiguousarray(np.dstack([img, np.full((n, n, 1), 255, np.uint8)]))
        return QImage(rgba.data, n, n, 4 * n, QImage.Format_RGBA8888).copy()

    def paintEvent(self, event):
        p = QPainter(self)
        p.drawPixmap(0, 0, self._static_layer())
        p.setRenderHint(QPainter.Antialiasing)
        sq = self._square()
        weights = self.weights()
        for i in range(4):
            self._paint_corner(p, sq, i, weights[i])
        self._paint_puck(p, weights)
        p.end()

    def _paint_grid(self, p: QPainter, sq: QRectF) -> None:
        p.setPen(QPen(QColor(255, 255, 255, 18), 1))
        for k in range(1, 8):
            x = sq.left() + k * sq.width() / 8
            y = sq.top() + k * sq.height() / 8
            p.drawLine(QPointF(x, sq.top()), QPointF(x, sq.bottom()))
            p.drawLine(QPointF(sq.left(), y), QPointF(sq.right(), y))
        p.setPen(QPen(QColor(theme.BORDER), 1.5))
        p.setBrush(Qt.NoBrush)
        p.drawRoundedRect(sq, 6, 6)

    def _paint_corner(self, p: QPainter, sq: QRectF, i: int, weight: float) -> None:
        colour = self._colours[i]
        cx, cy = CORNER_XY[i]
        centre = self._to_widget(cx, cy)
        radius = 9 + 9 * weight
        if self._drop_corner == i:
            p.setPen(QPen(QColor(theme.TEXT), 2, Qt.DashLine))
            p.setBrush(Qt.NoBrush)
            p.drawEllipse(centre, radius + 10, radius + 10)
        glow = QColor(colour)
        glow.setAlpha(int(60 + 150 * weight))
        p.setPen(Qt.NoPen)
        p.setBrush(glow)
        p.drawEllipse(centre, radius, radius)
        p.setBrush(colour)
        p.drawEllipse(centre, 6, 6)
        self._paint_label(p, sq, i, weight)

    def _paint_label(self, p: QPainter, sq: QRectF, i: int, weight: float) -> None:
        """"A  Name  42%" and a weight bar outside the square, by the corner."""
        colour = self._colours[i]
        cx, cy = CORNER_XY[i]
        font = QFont(self.font())
        font.setBold(True)
        p.setFont(font)
        p.setPen(colour)
        letter, pct = theme.CORNER_LETTERS[i], f"{100 * weight:.0f}%"
        top = sq.top() - self.MARGIN + 2 if cy == 1 else sq.bottom() + 4
        outer = min(sq.left() - 8, 60)                 # labels may overhang the square
        w = sq.width() / 2 + outer - 8
        left = sq.left() - outer if cx == 0 else sq.center().x() + 8
        rect = QRectF(left, top, w, self.MARGIN - 6)
        metrics = p.fontMetrics()
        name = metrics.elidedText(self._names[i], Qt.ElideRight,
                                  int(w - metrics.horizontalAdvance(f"{letter}  100%") - 24))
        text = f"{letter}  {name}" if cx == 0 else f"{name}  {letter}"
        p.drawText(rect, (Qt.AlignLeft if cx == 0 else Qt.AlignRight) | Qt.AlignVCenter, text)
        gap = metrics.horizontalAdvance(text) + 10
        p.setPen(QColor(theme.TEXT_DIM))
        pct_rect = rect.adjusted(gap, 0, 0, 0) if cx == 0 else rect.adjusted(0, 0, -gap, 0)
        p.drawText(pct_rect, (Qt.AlignLeft if cx == 0 else Qt.AlignRight) | Qt.AlignVCenter, pct)
        # weight bar along the label
        bar = QRectF(left, top + self.MARGIN - 8, (w - 10) * weight, 3)
        if cx == 1:
            bar.moveRight(left + w)
        p.fillRect(bar, colour)

    def _paint_puck(self, p: QPainter, weights: np.ndarray) -> None:
        centre = self._to_widget(*self._pos)
        mix = [sum(weights[i] * getattr(self._colours[i], ch)() for i in range(4))
               for ch in ("red", "green", "blue")]
        colour = QColor(*[int(min(255, max(0, c))) for c in mix])
        halo = QRadialGradient(centre, 34)
        glow = QColor(colour)
        glow.setAlpha(120)
        halo.setColorAt(0, glow)
        halo.setColorAt(1, QColor(0, 0, 0, 0))
        p.setPen(Qt.NoPen)
        p.setBrush(QBrush(halo))
        p.drawEllipse(centre, 34, 34)
        # re-render progress ring
        ring = QRectF(centre.x() - 20, centre.y() - 20, 40, 40)
        p.setBrush(Qt.NoBrush)
        p.setPen(QPen(QColor(255, 255, 255, 40), 4))
        p.drawEllipse(ring)
        ring_pen = QPen(QColor(theme.ACCENT), 4)
        ring_pen.setCapStyle(Qt.RoundCap)
        p.setPen(ring_pen)
        p.drawArc(ring, 90 * 16, -int(360 * 16 * self._progress))
        p.setPen(QPen(QColor(theme.TEXT), 2))
        p.setBrush(colour)
        p.drawEllipse(centre, 11, 11)
