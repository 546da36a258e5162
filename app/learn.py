"""MIDI learn and OSC in the window: right-click a control -> "Learn MIDI" / "Forget".

The table and its matching live in `engine.devices.midimap.MidiMap` (the session's
`midi_map`, which the MIDI callback asks first); this module only offers the menus, shows
what was learned, keeps the mappings in the settings (and, if the user chose, in presets)
and carries out the `Action`s learned buttons and OSC ask for (record, corner
selections, preset loads), pulled on the window's meter timer.
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu

from engine.devices.midimap import (MappingError, bindings_from_list, bindings_to_list, load_mapping,
                                    mapping_from_json_data, mapping_to_json, save_mapping)
from engine.util import resources
from engine.util.fileio import JsonFileError, parse_json

LABELS = {"pad_x": "pad X", "pad_y": "pad Y", "attack_s": "attack", "decay_s": "decay",
          "sustain": "sustain", "release_s": "release", "volume": "volume",
          "velocity_curve": "velocity curve", "velocity_floor": "velocity floor",
          "polyphony": "polyphony", "bend_range": "bend range", "corner_a": "corner A instrument",
          "corner_b": "corner B instrument", "corner_c": "corner C instrument",
          "corner_d": "corner D instrument", "record": "record", "panic": "panic"}
SETTINGS_KEY = "midi/mappings"


class MidiLearn(QObject):
    """Context menus for learnable widgets, and the poll that applies what MIDI/OSC asked."""

    def __init__(self, window):
        super().__init__(window)
        self.w = window

    @property
    def mapping(self):
        return self.w.session.midi_map

    # -- menus ----------------------------------------------------------------------------------
    def attach(self, widget, *targets: str) -> None:
        widget.setContextMenuPolicy(Qt.CustomContextMenu)
        widget.customContextMenuRequested.connect(
            lambda pos, w=widget, t=targets: self.menu(t).popup(w.mapToGlobal(pos)))

    def menu(self, targets) -> QMenu:
        menu = QMenu(self.w)
        for target in targets:
            bound = self.mapping.binding_for(target)
            suffix = f" (now {bound.describe()})" if bound else ""
            menu.addAction(f"Learn MIDI: {LABELS[target]}{suffix}",
                           lambda t=target: self.learn(t))
            if bound is not None:
                menu.addAction(f"Forget MIDI: {LABELS[target]}", lambda t=target: self.forget(t))
        return menu

    def learn(self, target: str) -> None:
        self.mapping.learn(target)
        self.w.statusBar().showMessage(f"Learn MIDI: move a knob or press a key for {LABELS[target]}…",
                                       15000)

    def forget(self, target: str) -> None:
        self.mapping.forget(target)
        self.save()
        self.w.statusBar().showMessage(f"MIDI forgotten: {LABELS[target]}", 3000)

    # -- persistence ----------------------------------------------------------------------------
    def save(self) -> None:
        self.w.settings.setValue(SETTINGS_KEY, mapping_to_json(self.mapping.bindings))

    def restore(self) -> None:
        text = self.w.settings.value(SETTINGS_KEY, "")
        if not text:
            return
        try:
            self.mapping.set_bindings(mapping_from_json_data(parse_json(str(text), "settings"),
                                                             f"settings {SETTINGS_KEY}"))
        except (MappingError, JsonFileError) as exc:
            self.w.notify(f"MIDI mappings not restored: {exc}")

    @property
    def in_presets(self) -> bool:
        return str(self.w.settings.value("midi/in_presets", "false")).lower() == "true"

    def preset_map(self):
        """What a saved preset carries: the mappings when the user chose so, else None."""
        return bindings_to_list(self.mapping.bindings) if self.in_presets else None

    def apply_preset_map(self, preset, path: str) -> None:
        if preset is None or not preset.midi_map or not self.in_presets:
            return
        try:
            self.mapping.set_bindings(bindings_from_list(preset.midi_map, path))
            self.save()
        except MappingError as exc:
            self.w.notify(f"MIDI mappings of the preset not used: {exc}")

    def save_file(self, path: str = "") -> bool:
        path = path or QFileDialog.getSaveFileName(self.w, "Save MIDI mappings", "midi-map.json",
                                                   "MIDI mappings (*.json)")[0]
        if path:
            save_mapping(path, self.mapping.bindings)
            self.w.statusBar().showMessage(f"MIDI mappings saved to {path} (gansynth play --midi-map)", 4000)
        return bool(path)

    def load_file(self, path: str = "") -> bool:
        path = path or QFileDialog.getOpenFileName(self.w, "Load MIDI mappings", "",
                                                   "MIDI mappings (*.json)")[0]
        if not path:
            return False
        try:
            self.mapping.set_bindings(load_mapping(path))
        except MappingError as exc:
            self.w.notify(f"Could not load MIDI mappings: {exc}")
            return False
        self.save()
        return True

    def choose_osc_port(self) -> None:
        current = int(self.w.settings.value("osc/port", 0) or 0)
        port, ok = QInputDialog.getInt(self.w, "OSC control", "UDP port on 127.0.0.1 (0 = off):",
                                       current or 9000, 0, 65535)
        if ok:
            self.open_osc(port)

    def open_osc(self, port: int) -> bool:
        error = self.w.session.open_osc(port)
        if error:
            self.w.notify(error)
            return False
        self.w.settings.setValue("osc/port", port)
        if port:
            self.w.statusBar().showMessage(f"OSC: listening on 127.0.0.1:{self.w.session.osc.port}", 4000)
        return True

    # -- the meter timer ------------------------------------------------------------------------
    def poll(self) -> None:
        mapping = self.mapping
        if mapping.learned.is_set():
            mapping.learned.clear()
            b = mapping.last_learned
            self.save()
            self.w.statusBar().showMessage(f"MIDI learned: {LABELS[b.target]} ← {b.describe()}", 4000)
        if mapping.actions.ready.is_set():
            for action in mapping.actions.take():
                self.carry_out(action)

    def carry_out(self, action) -> None:
        w = self.w
        if action.name == "record":      # no file dialog under a player's hands: a dated take
            folder = Path(str(w.settings.value("record/dir", str(Path.home()))))
            w.actions_.toggle_recording(not w.session.recording,
                                        str(folder / time.strftime("take-%Y%m%d-%H%M%S.wav")))
        elif action.name.startswith("corner_") and w.palette.entries:
            entries = w.palette.entries
            entry = entries[int(round(float(action.value) * (len(entries) - 1)))]
            w.assign_corner("abcd".index(action.name[-1]), entry)
        elif action.name == "preset":
            which = action.value
            if not isinstance(which, str):
                shipped = sorted(resources.presets_dir().glob("*.json"))
                if not 0 <= which < len(shipped):
                    w.notify(f"OSC /preset/load: no bundled preset number {which}")
                    return
                which = str(shipped[which])
            w.actions_.load_preset(which)
