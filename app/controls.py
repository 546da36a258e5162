"""Control panels: envelope and performance settings, devices, recording, panic.

Panels only emit signals; the window turns them into engine calls:
`SoundControls.paramChanged(name, value)` uses the engine's parameter names
(`engine.instrument.params.PARAMS`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLabel, QProgressBar,
                               QPushButton, QSlider, QToolButton, QVBoxLayout, QWidget)

STEPS = 1000


@dataclass(frozen=True)
class ParamSpec:
    """A slider: `name` (engine parameter), range lo..hi, `curve` > 1 gives finer control low."""

    name: str
    label: str
    lo: float
    hi: float
    default: float
    unit: str = ""
    curve: float = 1.0
    integer: bool = False

    def to_value(self, step: int) -> float:
        value = self.lo + (self.hi - self.lo) * (step / STEPS) ** self.curve
        return float(round(value)) if self.integer else value

    def to_step(self, value: float) -> int:
        frac = (min(self.hi, max(self.lo, float(value))) - self.lo) / (self.hi - self.lo)
        return int(round(STEPS * frac ** (1.0 / self.curve)))

    def format(self, value: float) -> str:
        if self.integer:
            return f"{int(value)}{self.unit}"
        if self.unit == " s":
            return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
        if self.unit == " gain":
            return f"{20 * math.log10(value):+.1f} dB" if value > 1e-3 else "-inf dB"
        return f"{value:.2f}{self.unit}"


ENVELOPE = (
    ParamSpec("attack_s", "Attack", 0.001, 4.0, 0.005, " s", curve=3.0),
    ParamSpec("decay_s", "Decay", 0.001, 4.0, 0.3, " s", curve=3.0),
    ParamSpec("sustain", "Sustain", 0.0, 1.0, 1.0),
    ParamSpec("release_s", "Release", 0.001, 10.0, 0.3, " s", curve=3.0),
)
PERFORMANCE = (
    ParamSpec("volume", "Volume", 0.0, 1.0, 0.5, " gain", curve=2.0),
    ParamSpec("velocity_curve", "Vel. curve", 0.25, 4.0, 1.0, "", curve=2.0),
    ParamSpec("polyphony", "Polyphony", 1, 64, 64, "", integer=True),
    ParamSpec("bend_range", "Bend range", 0, 24, 2, " st", integer=True),
    ParamSpec("velocity_floor", "Vel. floor", 0.0, 1.0, 0.0),
)


class ParamSlider(QWidget):
    """Label, horizontal slider and value read-out for one `ParamSpec`."""

    changed = Signal(str, float)

    def __init__(self, spec: ParamSpec, parent=None):
        super().__init__(parent)
        self.spec = spec
        self.slider = QSlider(Qt.Horizontal, minimum=0, maximum=STEPS)
        self.slider.setFocusPolicy(Qt.NoFocus)
        self.value_label = QLabel(objectName="value")
        self.value_label.setMinimumWidth(62)
        self.value_label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        name = QLabel(spec.label, objectName="dim")
        name.setMinimumWidth(70)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(name)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.value_label)
        self.slider.valueChanged.connect(self._moved)
        self.set_value(spec.default)

    def value(self) -> float:
        return self.spec.to_value(self.slider.value())

    def set_value(self, value: float, emit: bool = False) -> None:
        self.slider.blockSignals(not emit)
        self.slider.setValue(self.spec.to_step(value))
        self.slider.blockSignals(False)
        self.value_label.setText(self.spec.format(self.value()))

    def _moved(self, step: int) -> None:
        value = self.spec.to_value(step)
        self.value_label.setText(self.spec.format(value))
        self.changed.emit(self.spec.name, value)


class SoundControls(QWidget):
    """ADSR, master volume, velocity curve, polyphony and pitch-bend range."""

    paramChanged = Signal(str, object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.sliders: dict[str, ParamSlider] = {}
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        for spec in ENVELOPE + PERFORMANCE:
            s = ParamSlider(spec)
            s.changed.connect(self._changed)
            self.sliders[spec.name] = s
            lay.addWidget(s)

    def _changed(self, name: str, value: float) -> None:
        spec = self.sliders[name].spec
        self.paramChanged.emit(name, int(value) if spec.integer else value)

    def set_values(self, values: dict) -> None:
        """Show engine values without echoing them back."""
        for name, value in values.items():
            if name in self.sliders and isinstance(value, (int, float)):
                self.sliders[name].set_value(value)

    def values(self) -> dict:
        return {name: s.value() for name, s in self.sliders.items()}


class DevicePanel(QWidget):
    """Audio output and MIDI input choosers, each with a rescan button."""

    audioChosen = Signal(str)
    midiChosen = Signal(str)
    rescanAudio = Signal()
    rescanMidi = Signal()

    NONE_AUDIO = "(none: offline clock)"
    NONE_MIDI = "(none)"

    def __init__(self, parent=None):
        super().__init__(parent)
        self.audio = QComboBox()
        self.midi = QComboBox()
        for combo in (self.audio, self.midi):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(14)
        self.audio_rescan = QToolButton(text="⟳", toolTip="Rescan audio devices")
        self.midi_rescan = QToolButton(text="⟳", toolTip="Rescan MIDI inputs")
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(QLabel("Audio out", objectName="dim"), 0, 0)
        grid.addWidget(self.audio, 0, 1)
        grid.addWidget(self.audio_rescan, 0, 2)
        grid.addWidget(QLabel("MIDI in", objectName="dim"), 1, 0)
        grid.addWidget(self.midi, 1, 1)
        grid.addWidget(self.midi_rescan, 1, 2)
        grid.setColumnStretch(1, 1)
        self.audio.activated.connect(lambda _i: self.audioChosen.emit(self._current(self.audio)))
        self.midi.activated.connect(lambda _i: self.midiChosen.emit(self._current(self.midi)))
        self.audio_rescan.clicked.connect(self.rescanAudio)
        self.midi_rescan.clicked.connect(self.rescanMidi)
        self.set_audio_devices([], "")
        self.set_midi_ports([], "")

    @staticmethod
    def _current(combo: QComboBox) -> str:
        return combo.currentData() or ""

    @staticmethod
    def _fill(combo: QComboBox, none_text: str, names, current: str) -> None:
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(none_text, "")
        for name in names:
            combo.addItem(name, name)
        index = combo.findData(current) if current else 0
        combo.setCurrentIndex(max(0, index))
        combo.blockSignals(False)

    def set_audio_devices(self, names, current: str) -> None:
        self._fill(self.audio, self.NONE_AUDIO, names, current)

    def set_midi_ports(self, names, current: str) -> None:
        self._fill(self.midi, self.NONE_MIDI, names, current)


class RecordPanel(QWidget):
    """Record toggle, elapsed time and input level of the take; the panic button."""

    recordToggled = Signal(bool)
    panic = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.record = QPushButton("● Record", checkable=True, toolTip="Record the output to WAV (Ctrl+R)")
        self.elapsed = QLabel("00:00.0", objectName="value")
        self.level = QProgressBar(minimum=0, maximum=1000, textVisible=False)
        self.level.setFixedHeight(8)
        self.panic_button = QPushButton("PANIC", objectName="panic",
                                        toolTip="All notes off and all sound off (Esc)")
        for b in (self.record, self.panic_button):
            b.setFocusPolicy(Qt.NoFocus)
        lay = QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.record, 0, 0)
        lay.addWidget(self.elapsed, 0, 1)
        lay.addWidget(self.panic_button, 0, 2)
        lay.addWidget(self.level, 1, 0, 1, 3)
        self.record.toggled.connect(self._toggled)
        self.panic_button.clicked.connect(self.panic)

    def _toggled(self, on: bool) -> None:
        self.record.setText("■ Stop" if on else "● Record")
        self.recordToggled.emit(on)

    def set_recording(self, on: bool) -> None:
        """Show the state without emitting (e.g. when a take failed)."""
        self.record.blockSignals(True)
        self.record.setChecked(on)
        self.record.setText("■ Stop" if on else "● Record")
        self.record.blockSignals(False)

    def show_take(self, seconds: float, peak: float) -> None:
        minutes, secs = divmod(max(0.0, seconds), 60.0)
        self.elapsed.setText(f"{int(minutes):02d}:{secs:04.1f}")
        db = 20 * math.log10(peak) if peak > 1e-6 else -120.0
        self.level.setValue(int(1000 * min(1.0, max(0.0, (db + 60) / 60))))
