"""The instrument window: layout, timers and wiring of widgets to the engine session.

The window is built at once; the model loads in a worker and `attach(session)`
connects everything when it is ready (`ready` signal). Timers pull meters (30 fps)
and stats (4 Hz); nothing is pushed from the audio thread.
"""
from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QApplication, QGroupBox, QLabel, QMainWindow,
                               QProgressBar, QSplitter, QToolButton, QVBoxLayout, QWidget)

from app import theme
from app.actions import FileActions
from app.controls import DevicePanel, RecordPanel, SoundControls
from app.keyboard import ComputerKeyboard, KeyboardPanel
from app.learn import MidiLearn
from app.pad import TimbrePad
from app.palette import PaletteWidget
from app.rainbowwindow import note_rainbowgram, open_rainbow_window, rainbow_hop
from app.views import RainbowgramView, ScopePanel, StatusLine
from app.workers import Job, Jobs
from engine.devices.audio import AHEAD_PERIODS
from engine.gansynth.spectral import pitch_name
from engine.instrument.events import CC_MOD_WHEEL, ControlChange, Panic, PadMove, PitchBend, SetParam

METER_FPS = 30
SCOPE_POINTS = 1024


def group(title: str, *widgets, stretch=None) -> QGroupBox:
    box = QGroupBox(title.upper())
    lay = QVBoxLayout(box)
    lay.setContentsMargins(6, 8, 6, 4)
    for i, w in enumerate(widgets):
        lay.addWidget(w, (stretch or [0] * len(widgets))[i])
    return box


class MainWindow(QMainWindow):
    ready = Signal()

    def __init__(self, settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("GANSynth Instrument")
        self.settings = settings or QSettings("gansynth", "instrument")
        self.session = None
        self.precision, self.backend = "auto", "auto"  # how models load (gansynth gui --precision, --backend)
        self.audio_ahead = {"0": 0, "1": 1, "2": 2}.get(str(self.settings.value("audio/ahead")), AHEAD_PERIODS)
        self.jobs = Jobs(max_threads=2, parent=self)
        self.last_pitch = 60
        self._rainbow_key = None
        self._shown_problems = ("", "")
        self._notice_until = 0.0
        self._engine_errors = (0, 0)
        self._build()
        self.actions_ = FileActions(self)
        self.learn = MidiLearn(self)
        self._menus()
        self.computer_keys = ComputerKeyboard(self.keyboard, self)
        QApplication.instance().installEventFilter(self.computer_keys)
        self.computer_keys.octaveChanged.connect(self._octave_changed)
        self.fast_timer = QTimer(self, interval=int(1000 / METER_FPS), timerType=Qt.PreciseTimer)
        self.fast_timer.timeout.connect(self._pull_meters)
        self.slow_timer = QTimer(self, interval=250)
        self.slow_timer.timeout.connect(self._pull_stats)
        self.rainbow_timer = QTimer(self, singleShot=True, interval=250)
        self.rainbow_timer.timeout.connect(self.request_rainbowgram)
        self._set_enabled(False)
        self._restore_layout()

    # -- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self.banner = QLabel(objectName="banner", wordWrap=True)
        self.banner.hide()
        self.pad = TimbrePad()
        self.palette = PaletteWidget()
        self.sound = SoundControls()
        self.devices = DevicePanel()
        self.record = RecordPanel()
        self.scope = ScopePanel()
        self.rainbow = RainbowgramView()
        self.rainbow.setToolTip("Double-click: the large rainbowgram window (Ctrl+Shift+G)")
        self.rainbow.doubleClicked.connect(lambda: self.open_rainbow_window())
        self.rainbow_window = None
        self.keyboard = KeyboardPanel()
        self.progress = QProgressBar(minimum=0, maximum=1000, maximumWidth=180, textVisible=False)
        self.progress.hide()
        self.cancel_button = QToolButton(text="Cancel")
        self.cancel_button.hide()
        # permanent: temporary status messages would hide normal status-bar widgets
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_button)
        self.status = StatusLine(self.statusBar())
        self._layout()

    def _layout(self) -> None:
        # left: palette over the rainbowgram; centre: the pad; right: controls over the scope
        left = QSplitter(Qt.Vertical)
        left.addWidget(group("Instruments", self.palette))
        left.addWidget(group("Rainbowgram", self.rainbow))
        left.setStretchFactor(0, 3)
        left.setStretchFactor(1, 2)
        left.setMinimumWidth(260)
        right = QWidget()
        rlay = QVBoxLayout(right)
        rlay.setContentsMargins(0, 0, 0, 0)
        rlay.addWidget(group("Sound", self.sound))
        rlay.addWidget(group("Devices", self.devices))
        rlay.addWidget(group("Record", self.record))
        rlay.addWidget(group("Output", self.scope), 1)
        right.setMinimumWidth(290)
        self.top_split = QSplitter(Qt.Horizontal)
        for w in (left, group("Timbre pad", self.pad), right):
            self.top_split.addWidget(w)
        self.top_split.setStretchFactor(1, 1)
        self.top_split.setSizes([300, 640, 330])
        self.centre_split = left
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.setContentsMargins(8, 6, 8, 4)
        lay.addWidget(self.banner)
        lay.addWidget(self.top_split, 1)
        lay.addWidget(group("Keyboard", self.keyboard))
        self.setCentralWidget(body)
        self.resize(1280, 800)

    def _menus(self) -> None:
        bar = self.menuBar()
        a = self.actions_
        file_menu = bar.addMenu("&File")
        self.act_open_model = self._action(file_menu, "Open model…", a.open_model, QKeySequence.Open)
        self._action(file_menu, "Open Magenta checkpoint (.zip)…", lambda: a.open_model(zip_file=True), None)
        file_menu.addSeparator()
        self._action(file_menu, "Load preset…", a.load_preset, "Ctrl+L")
        self._action(file_menu, "Save preset…", a.save_preset, QKeySequence.Save)
        file_menu.addSeparator()
        self._action(file_menu, "Render MIDI file…", a.render_midi, "Ctrl+M")
        self._action(file_menu, "Render MIDI file, morphing A→B→C→D…",
                     lambda: a.render_midi(morph=True), "Ctrl+Shift+M")
        self._action(file_menu, "Export instrument…", a.export_instrument, "Ctrl+E")
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence.Quit)
        play = bar.addMenu("&Play")
        self.act_record = self._action(play, "Record…", self.record.record.toggle, "Ctrl+R")
        self._action(play, "Panic", self.panic, "Escape")
        self._action(play, "Octave down", lambda: self.computer_keys.shift_octave(-1), None)
        self._action(play, "Octave up", lambda: self.computer_keys.shift_octave(1), None)
        self._action(play, "Rainbowgram of the current instrument", self.request_rainbowgram, "Ctrl+G")
        self._action(play, "Rainbowgram window (large, with the corners)", self.open_rainbow_window,
                     "Ctrl+Shift+G")
        self._action(play, "Centre the pad", lambda: self.pad.set_position(0.5, 0.5, emit=True), "Ctrl+0")
        dev = bar.addMenu("&Devices")
        self._action(dev, "Rescan audio outputs", self.rescan_audio, "F5")
        self._action(dev, "Rescan MIDI inputs", self.rescan_midi, "F6")
        ahead, group = dev.addMenu("Render audio ahead"), QActionGroup(self)
        for n, text in ((0, "Off: lowest latency"), (1, "1 period"), (2, "2 periods")):
            group.addAction(self._action(ahead, text, lambda n=n: self.choose_ahead(n), None, n == self.audio_ahead))
        dev.addSeparator()
        self.act_map_in_presets = self._action(dev, "Include MIDI mappings in presets", self._map_in_presets, None,
                                               self.learn.in_presets)
        self._action(dev, "Save MIDI mappings…", self.learn.save_file, None)
        self._action(dev, "Load MIDI mappings…", self.learn.load_file, None)
        self._action(dev, "OSC control…", self.learn.choose_osc_port, None)
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Keyboard shortcuts", self.show_shortcuts, QKeySequence.HelpContents)

    def _action(self, menu, text, slot, shortcut, checked: bool | None = None) -> QAction:
        act = QAction(text, self)
        if checked is not None:
            act.setCheckable(True)
            act.setChecked(checked)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
            act.setShortcutContext(Qt.WindowShortcut)
        act.triggered.connect(lambda _=False: slot())
        menu.addAction(act)
        return act

    def _map_in_presets(self) -> None:
        self.settings.setValue("midi/in_presets", self.act_map_in_presets.isChecked())

    def _set_enabled(self, on: bool) -> None:
        for w in (self.pad, self.palette, self.sound, self.record, self.keyboard):
            w.setEnabled(on)

    # -- attaching the engine -------------------------------------------------------------------
    def attach(self, session) -> None:
        """Connect a started `Session`: widgets now drive its instrument."""
        self.session = session
        inst = session.instrument
        self.palette.latent_fn = lambda n, seed: inst.synth.random_latents(n, seed)
        self.palette.voice_fn = lambda z: inst.synth.voice_name(z)
        self.model_changed(inst.synth, getattr(session, "model_name", ""))
        self.pad.moved.connect(self.on_pad)
        self.pad.cornerDropped.connect(self.on_corner_drop)
        self.pad.filesDropped.connect(lambda corner, paths: self.actions_.import_sounds(paths, corner))
        self.palette.filesDropped.connect(self.actions_.import_sounds)
        self.palette.assign.connect(self.assign_corner)
        self.palette.preview.connect(self.actions_.preview)
        self.palette.savePreset.connect(self.actions_.save_preset)
        self.palette.loadPreset.connect(self.actions_.load_preset)
        self.sound.paramChanged.connect(self.on_param)
        self.keyboard.keys.noteOn.connect(self.on_note_on)
        self.keyboard.keys.noteOff.connect(session.note_off)
        self.keyboard.bend.moved.connect(lambda v: session.post(PitchBend(int(v))))
        self.keyboard.mod.moved.connect(lambda v: session.post(ControlChange(CC_MOD_WHEEL, int(v))))
        self.record.recordToggled.connect(self.actions_.toggle_recording)
        self.record.panic.connect(self.panic)
        self.devices.audioChosen.connect(self.choose_audio)
        self.devices.midiChosen.connect(self.choose_midi)
        self.devices.rescanAudio.connect(self.rescan_audio)
        self.devices.rescanMidi.connect(self.rescan_midi)
        self._learnable(session)
        if self.palette.count.value() and not self.palette.entries:
            self.palette.generate()
        self._name_default_corners()
        self.sync_from_engine()
        self.rescan_audio()
        self.devices.set_midi_ports(session.midi_ports(), session.midi_port_name)
        self.update_banner()
        self._set_enabled(True)
        self.fast_timer.start()
        self.slow_timer.start()
        self.request_rainbowgram()
        self.ready.emit()

    def _learnable(self, session) -> None:
        """Right-click -> Learn MIDI on every control; learned mappings and OSC come back."""
        from engine.devices.midimap import CONTINUOUS_PARAMS, CORNERS

        self.learn.attach(self.pad, "pad_x", "pad_y", *CORNERS)
        for name in CONTINUOUS_PARAMS:
            self.learn.attach(self.sound.sliders[name], name)
        self.learn.attach(self.record.record, "record")
        self.learn.attach(self.record.panic_button, "panic")
        self.learn.restore()
        port = int(self.settings.value("osc/port", 0) or 0)
        if port:
            self.learn.open_osc(port)

    def model_changed(self, synth, name: str) -> None:
        """Show a (new) model: its pitch range on the keyboard and palette, its name."""
        lo, hi = synth.pitch_range
        self.keyboard.keys.model_range = (lo, hi)
        self.keyboard.keys.update()
        self.palette.pitch.setRange(lo, hi)
        self.setWindowTitle(f"GANSynth Instrument — {name}" if name else "GANSynth Instrument")
        if self.session is not None:
            self.sync_from_engine()
            self._rainbow_key = None
            self.rainbow_timer.start(300)

    def _name_default_corners(self) -> None:
        """The engine starts with corners `random_latents(4, seed)`: the palette's first four
        entries of the same seed are those latents, so give the corners their names."""
        timbre = self.session.instrument.timbre
        for i, corner in enumerate(timbre.corners):
            entry = self.palette.entry_at(i)
            if entry is not None and corner.name.startswith("Random") \
                    and np.array_equal(entry.latent, corner.latent):
                self.session.instrument.set_corner(i, corner.latent, entry.name)

    def sync_from_engine(self) -> None:
        """Show the instrument's timbre and settings (after a preset load, a model swap...)."""
        timbre = self.session.instrument.timbre
        self.pad.set_names(timbre.names)
        self.pad.set_colours([c.colour for c in timbre.corners])
        self.pad.set_mode(timbre.mode)
        self.pad.set_position(*timbre.pad)
        self.sound.set_values(self.session.instrument.settings.as_dict())

    # -- widget -> engine -----------------------------------------------------------------------
    def on_pad(self, x: float, y: float) -> None:
        self.session.post(PadMove(x, y))
        self.rainbow_timer.start(600)

    def on_param(self, name: str, value) -> None:
        self.session.post(SetParam(name, value))
        self.settings.setValue(f"sound/{name}", value)

    def on_note_on(self, pitch: int, velocity: int) -> None:
        self.session.note_on(pitch, velocity)
        self.last_pitch = pitch
        self.rainbow_timer.start(250)

    def assign_corner(self, corner: int, entry) -> None:
        self.session.instrument.set_corner(corner, entry.latent, entry.name)
        self.sync_from_engine()
        self.statusBar().showMessage(f"{entry.name} → corner {theme.CORNER_LETTERS[corner]}", 3000)
        self.rainbow_timer.start(300)

    def on_corner_drop(self, corner: int, payload: bytes) -> None:
        entry = self.palette.entry_from_payload(payload)
        if entry is not None:
            self.assign_corner(corner, entry)

    def instrument_arrived(self, name: str, latent, source: str, corner: int | None = None) -> None:
        """An imported instrument: first in the palette, and on `corner` when it was dropped there."""
        from app.palette import PaletteEntry

        entry = PaletteEntry(name, -1, 0, np.asarray(latent, np.float32), source=source)
        self.palette.add_entry(entry)
        if corner is not None:
            self.assign_corner(corner, entry)

    def panic(self) -> None:
        self.keyboard.keys.release_all()
        self.keyboard.bend.setValue(0)
        if self.session is not None:
            self.session.post(Panic())
        self.statusBar().showMessage("Panic: all notes and sound off", 2000)

    def _octave_changed(self, octave: int) -> None:
        self.keyboard.keys.set_first_octave(octave + 1 - 2)   # keep Z's C in view
        self.keyboard.sync()
        self.statusBar().showMessage(f"Computer keys: Z = {pitch_name(12 * (octave + 1))}", 2000)

    # -- devices --------------------------------------------------------------------------------
    def rescan_audio(self) -> None:
        if self.session is None:
            return
        self.session.rescan_audio()
        current = self.session.output_name
        self.devices.set_audio_devices(self.session.audio_devices(), current)

    def rescan_midi(self) -> None:
        if self.session is None:
            return
        self.session.rescan_midi()
        self.devices.set_midi_ports(self.session.midi_ports(), self.session.midi_port_name)
        self.update_banner()

    def choose_audio(self, name: str) -> None:
        if not self.session.open_audio(name) and name:
            self.notify(self.session.audio_error)
        self.settings.setValue("audio/device", name)
        self.rescan_audio()
        self.update_banner()

    def choose_ahead(self, periods: int) -> None:
        self.audio_ahead = periods
        self.settings.setValue("audio/ahead", periods)
        if self.session is not None:
            self.session.set_audio_ahead(periods)

    def choose_midi(self, name: str) -> None:
        self.session.open_midi(name)
        self.settings.setValue("midi/port", name)
        self.rescan_midi()

    def _problems(self) -> tuple[str, str]:
        """(short banner text, full details) of what is missing: audio device, MIDI backend."""
        short, full = [], []
        audio, midi = self.session.audio_error, self.session.midi_error
        if audio:
            short.append("No audio device — the offline clock runs the instrument "
                         "(scope, meters and recording work)" if not self.session.has_device
                         else "Audio output problem")
            full.append(audio)
        if midi:
            short.append("No MIDI input — play with the mouse or the computer keys"
                         if "backend" in midi else "MIDI: " + midi.split(";")[0])
            full.append(midi)
        return "   •   ".join(short), "\n".join(full)

    def update_banner(self) -> None:
        """The banner lists what is missing (audio device, MIDI backend) until it is fixed."""
        self._shown_problems = self._problems()
        text, details = self._shown_problems
        self.banner.setText(f"⚠  {text}" if text else "")
        self.banner.setToolTip(details)
        self.banner.setVisible(bool(text))

    # -- timers ---------------------------------------------------------------------------------
    def _pull_meters(self) -> None:
        self.scope.scope.show_samples(self.session.scope(SCOPE_POINTS))
        peak, rms = self.session.levels()
        self.scope.meter.set_level(peak, rms)
        self.keyboard.keys.set_sounding(self.session.sounding_notes())
        if not self.pad.dragging:
            self.pad.set_position(*self.session.instrument.timbre.pad)   # the mod wheel moves it too
        self.learn.poll()
        if self.session.recording:
            self.record.show_take(self.session.recording_seconds(), peak)

    def _pull_stats(self) -> None:
        values = self.session.meters()
        self.status.update(values)
        self.pad.set_progress(values.get("render_progress", 1.0))
        error = self.session.poll_errors() or self._new_engine_error(values)
        if error:
            self.notify(error)
        if not self.session.recording and self.record.record.isChecked():
            self.record.set_recording(False)       # the take stopped by itself
        problems = self._problems()
        if problems != self._shown_problems and not self._notice_until > time.monotonic():
            self.update_banner()

    def _new_engine_error(self, values: dict) -> str:
        """A message when the mixer or the renderer reported a new failure since last time."""
        counts = (values.get("audio_errors", 0), values.get("render_failures", 0))
        seen, self._engine_errors = self._engine_errors, counts
        if counts[0] > seen[0]:
            return f"audio engine error (silence played): {values.get('last_audio_error')}"
        if counts[1] > seen[1]:
            return f"{counts[1] - seen[1]} note render(s) failed; the previous notes keep playing"
        return ""

    def notify(self, message: str, error: bool = True) -> None:
        """Show a problem in the status bar and, for 8 s, in the banner."""
        self.statusBar().showMessage(message, 8000)
        if error:
            self.banner.setText(message)
            self.banner.show()
            self._notice_until = time.monotonic() + 8.0
            QTimer.singleShot(8000, self._notice_over)

    def _notice_over(self) -> None:
        if self._notice_until <= time.monotonic() and self.session is not None:
            self.update_banner()

    # -- rainbowgram ----------------------------------------------------------------------------
    def request_rainbowgram(self, latent=None, pitch=None, title=None) -> None:
        """Render (in a worker) the rainbowgram of the current instrument at the last pitch."""
        if self.session is None:
            return
        inst = self.session.instrument
        timbre = inst.timbre
        latent = timbre.latent if latent is None else latent
        pitch = self.last_pitch if pitch is None else pitch
        key = (latent.tobytes(), pitch, id(inst.synth))
        if key == self._rainbow_key:
            return
        self._rainbow_key = key
        title = title or f"{pitch_name(pitch)} · " + " / ".join(
            f"{n} {w:.0%}" for n, w in zip(timbre.names, timbre.weights()) if w > 0.005)
        audio = None
        if latent is timbre.latent and hasattr(inst, "note_audio"):
            audio = inst.note_audio(pitch)     # the render the mixer plays, if there is one
        job = Job(note_rainbowgram, inst.synth, latent, pitch, audio, inst.sample_rate,
                  latest="rainbow")
        frame_s = self.rainbow_frame_s(inst.sample_rate if audio is not None else inst.synth.sample_rate)
        self.jobs.start(job, on_done=lambda rgb, t=title: self._show_rainbow(rgb, t, frame_s),
                        on_failed=lambda msg: self.notify(f"rainbowgram failed: {msg}"))

    @staticmethod
    def rainbow_frame_s(sample_rate: int) -> float:
        return rainbow_hop(sample_rate) / float(sample_rate)

    def _show_rainbow(self, rgb, title: str, frame_s: float) -> None:
        self.rainbow.show_rgb(rgb, title, frame_s)
        big = self.rainbow_window
        if big is not None and big.isVisible():
            big.main.show_rgb(rgb, title, frame_s)
            big.request_corners(self)

    def open_rainbow_window(self):
        """The rainbowgram large, with axes and the four corners side by side."""
        return open_rainbow_window(self)

    # -- help and persistence -------------------------------------------------------------------
    def show_shortcuts(self) -> None:
        self.actions_.show_shortcuts()

    def _restore_layout(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        for key, split in (("window/split_top", self.top_split), ("window/split_centre", self.centre_split)):
            value = self.settings.value(key)
            if value is not None:
                split.restoreState(value)

    def save_layout(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/split_top", self.top_split.saveState())
        self.settings.setValue("window/split_centre", self.centre_split.saveState())
        self.settings.sync()

    def closeEvent(self, event) -> None:
        self.save_layout()
        self.fast_timer.stop()
        self.slow_timer.stop()
        QApplication.instance().removeEventFilter(self.computer_keys)
        if self.session is not None and self.session.recording:
            self.actions_.toggle_recording(False)
        self.jobs.shutdown(10000)
        if self.session is not None:
            self.session.close()
        super().closeEvent(event)

