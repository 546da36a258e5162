"""On-screen piano and computer-keyboard play.

`PianoKeys` draws MIDI pitches `LOWEST..HIGHEST` starting at a scrollable octave;
a click plays a note with velocity from the vertical position (top soft, bottom
loud) and a drag glides across keys. Keys light up for notes the engine reports
as sounding (MIDI included) and for keys held here. `ComputerKeyboard` turns two
rows of letter keys into notes, with `-` / `=` (or PageDown / PageUp) shifting the
octave.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPen
from PySide6.QtWidgets import (QAbstractSpinBox, QComboBox, QHBoxLayout, QLabel, QLineEdit,
                               QPlainTextEdit, QScrollBar, QSizePolicy, QSlider, QTextEdit,
                               QToolButton, QVBoxLayout, QWidget)

from app import theme
from engine.gansynth.spectral import pitch_name

LOWEST, HIGHEST = 12, 119        # C0 .. B8: the model's 24..84 and beyond (pitch-shifted)
BLACK = {1, 3, 6, 8, 10}          # pitch classes of black keys

# Two rows, as in trackers: Z-row from the base octave, Q-row one octave up.
LOWER_ROW = "Z S X D C V G B H N J M , L . ; /".split()
UPPER_ROW = "Q 2 W 3 E R 5 T 6 Y 7 U I 9 O 0 P".split()



def is_black(pitch: int) -> bool:
    return pitch % 12 in BLACK


def velocity_from_y(y: float, height: float) -> int:
    """Top of the key is soft (velocity 20), the front edge loud (127)."""
    frac = min(1.0, max(0.0, y / max(1.0, height)))
    return int(round(20 + 107 * frac))


class PianoKeys(QWidget):
    noteOn = Signal(int, int)     # pitch, velocity 1..127
    noteOff = Signal(int)
    scrolled = Signal()

    WHITE_MIN_PX = 26

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(70)
        self.setAttribute(Qt.WA_OpaquePaintEvent)   # paints every pixel: no parent repaint
        self.setMaximumHeight(100)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
        self.setFocusPolicy(Qt.NoFocus)
        self.setToolTip("Click to play: nearer the front edge is louder. Computer keys: Z S X D C… "
                        "and Q 2 W 3 E…, -/= shift octaves.\nOrange: held here; teal: sounding "
                        "(MIDI too). Grey keys lie outside the model's range (pitch-shifted).")
        self.first_octave = 2          # leftmost visible C is LOWEST + 12 * first_octave
        self.model_range = (24, 84)
        self._mouse_pitch: int | None = None
        self._held: set[int] = set()       # pressed here (mouse or computer keys)
        self._sounding: frozenset[int] = frozenset()

    # -- layout ---------------------------------------------------------------------------------
    @property
    def first_pitch(self) -> int:
        return LOWEST + 12 * self.first_octave

    @property
    def octaves_visible(self) -> int:
        """As many whole octaves as fit with white keys at least WHITE_MIN_PX wide."""
        return max(2, min(6, self.width() // (7 * self.WHITE_MIN_PX)))

    @property
    def max_first_octave(self) -> int:
        return max(0, (HIGHEST + 1 - LOWEST) // 12 - self.octaves_visible)

    def set_first_octave(self, octave: int) -> None:
        self.first_octave = min(self.max_first_octave, max(0, int(octave)))
        self.update()

    def visible_pitches(self) -> range:
        return range(self.first_pitch, min(HIGHEST, self.first_pitch + 12 * self.octaves_visible) + 1)

    def resizeEvent(self, event):
        self.set_first_octave(self.first_octave)
        super().resizeEvent(event)
        self.scrolled.emit()

    def sizeHint(self) -> QSize:
        return QSize(900, 110)

    def _rects(self) -> dict[int, QRectF]:
        """Key rectangles of the visible pitches, cached per (size, first octave)."""
        key = (self.width(), self.height(), self.first_octave)
        if getattr(self, "_rect_key", None) != key:
            visible = self.visible_pitches()
            whites = sum(1 for p in visible if not is_black(p))
            ww = self.width() / max(1, whites)
            bw = ww * 0.62
            rects, white_index = {}, 0
            for pitch in visible:
                if is_black(pitch):
                    rects[pitch] = QRectF(white_index * ww - bw / 2, 0, bw, self.height() * 0.62)
                else:
                    rects[pitch] = QRectF(white_index * ww, 0, ww, self.height() - 1)
                    white_index += 1
            self._rect_cache, self._rect_key = rects, key
        return self._rect_cache

    def key_rect(self, pitch: int) -> QRectF:
        return QRectF(self._rects().get(pitch, QRectF()))

    def pitch_at(self, point: QPointF) -> int | None:
        rects = self._rects()
        for black in (True, False):     # black keys sit on top
            for pitch, rect in rects.items():
                if is_black(pitch) == black and rect.contains(point):
                    return pitch
        return None

    # -- lighting -------------------------------------------------------------------------------
    def set_sounding(self, pitches) -> None:
        pitches = frozenset(pitches)
        if pitches != self._sounding:
            self._sounding = pitches
            self.update()

    def press(self, pitch: int, velocity: int) -> None:
        """Play a note as if its key were pressed here (also used by computer keys)."""
        if pitch in self._held or not LOWEST <= pitch <= HIGHEST:
            return
        self._held.add(pitch)
        self.noteOn.emit(pitch, velocity)
        self.update()

    def release(self, pitch: int) -> None:
        if pitch in self._held:
            self._held.discard(pitch)
            self.noteOff.emit(pitch)
            self.update()

    def release_all(self) -> None:
        for pitch in sorted(self._held):
            self.release(pitch)

    # -- mouse ----------------------------------------------------------------------------------
    def _velocity(self, pitch: int, y: float) -> int:
        return velocity_from_y(y, self.key_rect(pitch).height())

    def mousePressEvent(self, event):
        pitch = self.pitch_at(event.position())
        if event.button() == Qt.LeftButton and pitch is not None:
            self._mouse_pitch = pitch
            self.press(pitch, self._velocity(pitch, event.position().y()))

    def mouseMoveEvent(self, event):
        if self._mouse_pitch is None:
            return
        pitch = self.pitch_at(event.position())
        if pitch is not None and pitch != self._mouse_pitch:
            self.release(self._mouse_pitch)
            self._mouse_pitch = pitch
            self.press(pitch, self._velocity(pitch, event.position().y()))

    def mouseReleaseEvent(self, event):
        if self._mouse_pitch is not None:
            self.release(self._mouse_pitch)
            self._mouse_pitch = None

    def wheelEvent(self, event):
        delta = event.angleDelta()
        step = delta.x() or delta.y()
        if step:
            self.set_first_octave(self.first_octave + (1 if step < 0 else -1))
            self.scrolled.emit()

    # -- painting -------------------------------------------------------------------------------
    def paintEvent(self, event):
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), QColor(theme.BG))
        lit_colour = QColor(theme.ACCENT)
        held_colour = QColor("#ffc15e")
        lo, hi = self.model_range
        rects = self._rects()
        for black in (False, True):
            for pitch, rect in rects.items():
                if is_black(pitch) != black:
                    continue
                in_range = lo <= pitch <= hi
                if pitch in self._held:
                    fill = held_colour
                elif pitch in self._sounding:
                    fill = lit_colour
                elif black:
                    fill = QColor("#22252c") if in_range else QColor("#2d2f35")
                else:
                    fill = QColor("#eef0f4") if in_range else QColor("#b9bcc4")
                if black or pitch in self._held or pitch in self._sounding:
                    grad = QLinearGradient(rect.topLeft(), rect.bottomLeft())
                    grad.setColorAt(0, fill.darker(115))
                    grad.setColorAt(1, fill)
                    p.setBrush(grad)
                else:
                    p.setBrush(fill)
                p.setPen(QPen(QColor("#0d0e11"), 1))
                p.drawRoundedRect(rect.adjusted(0.5, -3, -0.5, 0), 3, 3)
                if pitch % 12 == 0:
                    p.setPen(QColor("#6b7280"))
                    p.drawText(rect.adjusted(0, 0, 0, -4), Qt.AlignHCenter | Qt.AlignBottom,
                               pitch_name(pitch))
        p.end()


class Wheel(QSlider):
    """A vertical performance wheel; `spring=True` returns to the centre when let go
    (pitch bend). Emits `moved(value)`."""

    moved = Signal(int)

    def __init__(self, lo: int, hi: int, spring: bool, tip: str, parent=None):
        super().__init__(Qt.Vertical, parent, minimum=lo, maximum=hi, toolTip=tip)
        self.spring = spring
        self.setFocusPolicy(Qt.NoFocus)
        self.setFixedWidth(22)
        self.setValue((lo + hi + 1) // 2 if spring else lo)
        self.valueChanged.connect(self.moved)
        self.sliderReleased.connect(self._released)

    def _released(self) -> None:
        if self.spring:
            self.setValue((self.minimum() + self.maximum() + 1) // 2)


class KeyboardPanel(QWidget):
    """`PianoKeys` plus pitch-bend and mod wheels, octave buttons and a scroll bar."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.keys = PianoKeys(self)
        self.bend = Wheel(-8192, 8191, True, "Pitch bend (springs back)")
        self.mod = Wheel(0, 127, False, "Mod wheel (CC1): moves the pad along its mod axis")
        self.down = QToolButton(text="◀")
        self.up = QToolButton(text="▶")
        self.down.setToolTip("Octave down (- or PageDown)")
        self.up.setToolTip("Octave up (= or PageUp)")
        self.label = QLabel(objectName="value")
        self.label.setMinimumWidth(90)
        self.scroll = QScrollBar(Qt.Horizontal)
        self.scroll.setPageStep(1)
        for w in (self.down, self.up, self.scroll):
            w.setFocusPolicy(Qt.NoFocus)
        row = QHBoxLayout()
        row.addWidget(self.down)
        row.addWidget(self.up)
        row.addWidget(self.label)
        row.addWidget(self.scroll, 1)
        keys_row = QHBoxLayout()
        keys_row.setSpacing(6)
        keys_row.addWidget(self.bend)
        keys_row.addWidget(self.mod)
        keys_row.addWidget(self.keys, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addLayout(row)
        lay.addLayout(keys_row, 1)
        self.down.clicked.connect(lambda: self.shift(-1))
        self.up.clicked.connect(lambda: self.shift(1))
        self.scroll.valueChanged.connect(self._scrolled)
        self.keys.scrolled.connect(self.sync)
        self.sync()

    def shift(self, octaves: int) -> None:
        self.keys.set_first_octave(self.keys.first_octave + octaves)
        self.sync()

    def _scrolled(self, value: int) -> None:
        self.keys.set_first_octave(value)
        self.sync()

    def sync(self) -> None:
        self.scroll.blockSignals(True)
        self.scroll.setRange(0, self.keys.max_first_octave)
        self.scroll.setValue(self.keys.first_octave)
        self.scroll.blockSignals(False)
        visible = self.keys.visible_pitches()
        self.label.setText(f"{pitch_name(visible[0])}–{pitch_name(visible[-1])}")



class ComputerKeyboard(QObject):
    """Application-wide event filter: letter rows play `panel.keys`, -/= shift octaves.

    Keys typed into text fields and spin boxes are left alone.
    """

    octaveChanged = Signal(int)

    def __init__(self, panel: KeyboardPanel, window: QWidget, velocity: int = 100):
        super().__init__(window)
        self.panel = panel
        self.window = window
        self.velocity = velocity
        self.base_octave = 4            # Z plays C4 (MIDI 60)
        self._down: dict[int, int] = {}  # Qt key -> pitch it started
        self._map = {}
        for i, name in enumerate(LOWER_ROW):
            self._map[_qt_key(name)] = i
        for i, name in enumerate(UPPER_ROW):
            self._map[_qt_key(name)] = 12 + i

    def pitch_for(self, key: int) -> int | None:
        offset = self._map.get(key)
        return None if offset is None else 12 * (self.base_octave + 1) + offset

    def shift_octave(self, delta: int) -> None:
        self.base_octave = min(8, max(0, self.base_octave + delta))
        self.octaveChanged.emit(self.base_octave)

    def _ours(self, obj) -> bool:
        if not isinstance(obj, QWidget) or obj.window() is not self.window:
            return False
        editors = (QLineEdit, QAbstractSpinBox, QTextEdit, QPlainTextEdit)
        if isinstance(obj, editors) or (isinstance(obj, QComboBox) and obj.isEditable()):
            return False
        return True

    def release_all(self) -> None:
        """Release every note started by a computer key (e.g. the window lost focus, so
        their key releases would go to another program)."""
        for pitch in self._down.values():
            self.panel.keys.release(pitch)
        self._down.clear()

    def eventFilter(self, obj, event):
        kind = event.type()
        if kind == QEvent.WindowDeactivate and obj is self.window:
            self.release_all()
            return False
        if kind not in (QEvent.KeyPress, QEvent.KeyRelease) or not self._ours(obj):
            return False
        if event.modifiers() & (Qt.ControlModifier | Qt.AltModifier | Qt.MetaModifier):
            return False
        key = event.key()
        if kind == QEvent.KeyPress and key in (Qt.Key_Minus, Qt.Key_PageDown, Qt.Key_Equal, Qt.Key_PageUp):
            if not event.isAutoRepeat():
                self.shift_octave(-1 if key in (Qt.Key_Minus, Qt.Key_PageDown) else 1)
            return True
        if key not in self._map:
            return False
        if event.isAutoRepeat():
            return True
        if kind == QEvent.KeyPress:
            pitch = self.pitch_for(key)
            self._down[key] = pitch
            self.panel.keys.press(pitch, self.velocity)
        elif key in self._down:
            self.panel.keys.release(self._down.pop(key))
        return True


def _qt_key(name: str) -> int:
    special = {",": Qt.Key_Comma, ".": Qt.Key_Period, ";": Qt.Key_Semicolon, "/": Qt.Key_Slash}
    if name in special:
        return special[name]
    return getattr(Qt, f"Key_{name}")
