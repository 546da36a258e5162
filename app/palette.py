"""Instrument palette: random seeded instruments to preview, rename and put on pad corners.

Each entry is a `PaletteEntry` (name, seed, index, latent; `source` for an instrument
imported from a sound). Entries are dragged onto a pad corner (payload: the row number
as ASCII) or assigned by the context menu / the A-D buttons. Audio files dropped on the
palette are signalled (`filesDropped`) for sound import; the instrument comes back as
`add_entry`. Preview, import and preset file work run off the GUI thread (the window's).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QGridLayout, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QMenu, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from app import theme
from engine.gansynth.spectral import pitch_name
from app.pad import MIME_INSTRUMENT, dropped_files

ADJECTIVES = ("Amber", "Velvet", "Glass", "Dusty", "Bright", "Hollow", "Warm", "Silver", "Crystal",
              "Smoky", "Twilight", "Copper", "Soft", "Brassy", "Icy", "Golden", "Woody", "Misty")
NOUNS = ("Bell", "Reed", "Organ", "Pluck", "Pad", "Flute", "Keys", "Strings", "Horn", "Mallet",
         "Choir", "Lead", "Harp", "Drone", "Chime", "Brass", "Bass", "Voice")


# NSynth families (as in training voice names, e.g. 'FluidR3_GM/reed_acoustic_071 (Clarinet) v127')
# -> the nouns that fit them.
FAMILY_NOUNS = {"keyboard": ("Keys",), "mallet": ("Mallet", "Bell", "Chime"), "organ": ("Organ", "Drone"),
                "guitar": ("Pluck", "Harp"), "bass": ("Bass",), "string": ("Strings", "Harp"),
                "brass": ("Brass", "Horn"), "reed": ("Reed",), "flute": ("Flute",), "vocal": ("Choir", "Voice"),
                "synth_lead": ("Lead", "Pad")}


def voice_family(voice: str | None) -> str | None:
    """'FluidR3_GM/reed_acoustic_071 (Clarinet) v127' -> 'reed' (None when it names no family)."""
    if not voice:
        return None
    inst = voice.split("/")[-1].split(" ")[0]
    return next((f for f in sorted(FAMILY_NOUNS, key=len, reverse=True) if inst.startswith(f + "_")), None)


def instrument_name(seed: int, index: int, voice: str | None = None) -> str:
    """A stable, readable name for the index-th instrument of a seed; with the learned voice it was
    drawn from, the noun says that voice's family (a reed-like voice is some 'Reed')."""
    rng = np.random.default_rng([seed, index])
    nouns = FAMILY_NOUNS.get(voice_family(voice), NOUNS)
    return f"{ADJECTIVES[rng.integers(len(ADJECTIVES))]} {nouns[rng.integers(len(nouns))]}"


@dataclass
class PaletteEntry:
    name: str
    seed: int
    index: int
    latent: np.ndarray  # float32 [latent_size]
    source: str = ""    # the sound file(s) an imported instrument was fitted to
    voice: str = ""     # the learned training voice it was drawn from, when the model names them


def _swatch(latent: np.ndarray) -> QIcon:
    """A small colour chip derived from the latent (same latent, same colour)."""
    h = int(abs(float(latent[:8].sum())) * 97) % 360
    pix = QPixmap(14, 14)
    pix.fill(QColor.fromHsv(h, 150, 230))
    return QIcon(pix)


class InstrumentList(QListWidget):
    """A list whose rows drag out as `MIME_INSTRUMENT` (the row number)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragOnly)
        self.setEditTriggers(QAbstractItemView.DoubleClicked | QAbstractItemView.EditKeyPressed)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setContextMenuPolicy(Qt.CustomContextMenu)

    def mimeTypes(self):
        return [MIME_INSTRUMENT]

    def mimeData(self, items):
        data = QMimeData()
        if items:
            data.setData(MIME_INSTRUMENT, str(self.row(items[0])).encode("ascii"))
        return data


class PaletteWidget(QWidget):
    """Signals: `assign(corner, entry)`, `preview(entry, pitch)`, `savePreset()`, `loadPreset()`,
    `filesDropped(paths)` (audio files to import)."""

    assign = Signal(int, object)
    filesDropped = Signal(list)
    preview = Signal(object, int)
    savePreset = Signal()
    loadPreset = Signal()

    def __init__(self, latent_fn=None, parent=None):
        super().__init__(parent)
        self.latent_fn = latent_fn   # (n, seed) -> float32 [n, latent_size]; set by the window
        self.voice_fn = None         # latent -> its nearest learned voice's name, or None; set by the window
        self.entries: list[PaletteEntry] = []
        self.count = QSpinBox(minimum=1, maximum=64, value=8, toolTip="How many instruments")
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0, toolTip="Random seed")
        self.count.setMaximumWidth(56)
        self.seed.setMinimumWidth(60)
        self.generate_button = QPushButton("Generate")
        self.list = InstrumentList()
        self.pitch = QSpinBox(minimum=24, maximum=84, value=60, toolTip="Preview pitch (MIDI)")
        self.pitch_label = QLabel(pitch_name(60), objectName="value")
        self.preview_button = QPushButton("▶ Preview")
        self.corner_buttons = []
        for i, letter in enumerate(theme.CORNER_LETTERS):
            b = QPushButton(letter, toolTip=f"Put the selected instrument on corner {letter}")
            b.setStyleSheet(f"color: {theme.CORNER_COLORS[i]}; font-weight: bold; padding: 4px;")
            b.clicked.connect(lambda _=False, c=i: self._assign_selected(c))
            self.corner_buttons.append(b)
        self.save_button = QPushButton("Save preset…")
        self.load_button = QPushButton("Load preset…")
        self._layout()
        self.setAcceptDrops(True)   # files over the list land here (the list only drags out)
        self.generate_button.clicked.connect(self.generate)
        self.preview_button.clicked.connect(self._preview_selected)
        self.list.itemDoubleClicked.connect(lambda _item: None)  # double click edits the name
        self.list.itemChanged.connect(self._renamed)
        self.list.customContextMenuRequested.connect(self._menu)
        self.pitch.valueChanged.connect(lambda p: self.pitch_label.setText(pitch_name(p)))
        self.save_button.clicked.connect(self.savePreset)
        self.load_button.clicked.connect(self.loadPreset)

    def _layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(QLabel("N", objectName="dim"))
        top.addWidget(self.count)
        top.addWidget(QLabel("seed", objectName="dim"))
        top.addWidget(self.seed, 1)
        top.addWidget(self.generate_button)
        self.generate_button.setMinimumWidth(84)
        prev = QHBoxLayout()
        prev.addWidget(QLabel("pitch", objectName="dim"))
        prev.addWidget(self.pitch)
        prev.addWidget(self.pitch_label)
        prev.addStretch(1)
        prev.addWidget(self.preview_button)
        corners = QHBoxLayout()
        corners.addWidget(QLabel("to corner", objectName="dim"))
        for b in self.corner_buttons:
            corners.addWidget(b)
        files = QGridLayout()
        files.addWidget(self.load_button, 0, 0)
        files.addWidget(self.save_button, 0, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.list, 1)
        lay.addLayout(prev)
        lay.addLayout(corners)
        lay.addLayout(files)

    # -- audio files dropped here ---------------------------------------------------------------
    def dragEnterEvent(self, event):
        if dropped_files(event.mimeData()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event):
        if dropped_files(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event):
        paths = dropped_files(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.filesDropped.emit(paths)

    # -- entries --------------------------------------------------------------------------------
    def generate(self) -> None:
        """Replace the list with `count` instruments drawn from `seed` (imported instruments
        of the same latent size stay, first)."""
        if self.latent_fn is None:
            return
        n, seed = self.count.value(), self.seed.value()
        latents = np.asarray(self.latent_fn(n, seed), np.float32)
        entries, seen = [], {}
        entries += [e for e in self.entries if e.source and e.latent.shape == latents.shape[1:]]
        for i in range(n):
            voice = (self.voice_fn(latents[i]) if self.voice_fn else None) or ""
            name = instrument_name(seed, i, voice)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name} {seen[name]}"
            entries.append(PaletteEntry(name, seed, i, latents[i], voice=voice))
        self.set_entries(entries)

    def set_entries(self, entries) -> None:
        self.entries = list(entries)
        self.list.blockSignals(True)
        self.list.clear()
        for e in self.entries:
            item = QListWidgetItem(_swatch(e.latent), e.name)
            item.setFlags(item.flags() | Qt.ItemIsEditable | Qt.ItemIsDragEnabled)
            where = f"from {e.source}" if e.source else f"seed {e.seed}, #{e.index}"
            if e.voice:
                where += f"; near the learned voice {e.voice}"
            item.setToolTip(f"{where} — drag onto a pad corner; double-click to rename")
            self.list.addItem(item)
        self.list.blockSignals(False)
        if self.entries:
            self.list.setCurrentRow(0)

    def add_entry(self, entry: PaletteEntry) -> int:
        """Put an (imported) instrument at the top of the list and select it; its row."""
        self.set_entries([entry] + self.entries)
        return 0

    def entry_at(self, row: int) -> PaletteEntry | None:
        return self.entries[row] if 0 <= row < len(self.entries) else None

    def entry_from_payload(self, payload: bytes) -> PaletteEntry | None:
        try:
            return self.entry_at(int(payload.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            return None

    def selected(self) -> PaletteEntry | None:
        return self.entry_at(self.list.currentRow())

    def rename(self, row: int, name: str) -> None:
        item = self.list.item(row)
        if item is not None:
            item.setText(name)   # itemChanged updates the entry

    def _renamed(self, item: QListWidgetItem) -> None:
        entry = self.entry_at(self.list.row(item))
        if entry is not None:
            name = item.text().strip() or entry.name
            entry.name = name[:40]

    def _assign_selected(self, corner: int) -> None:
        entry = self.selected()
        if entry is not None:
            self.assign.emit(corner, entry)

    def _preview_selected(self) -> None:
        entry = self.selected()
        if entry is not None:
            self.preview.emit(entry, self.pitch.value())

    def _menu(self, pos) -> None:
        row = self.list.indexAt(pos).row()
        if row < 0:
            return
        self.list.setCurrentRow(row)
        menu = QMenu(self)
        menu.addAction("Preview", self._preview_selected)
        menu.addAction("Rename", lambda: self.list.editItem(self.list.item(row)))
        menu.addSeparator()
        for i, letter in enumerate(theme.CORNER_LETTERS):
            menu.addAction(f"Assign to corner {letter}", lambda c=i: self._assign_selected(c))
        menu.exec(self.list.viewport().mapToGlobal(pos))
