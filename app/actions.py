"""Menu and button actions that involve files or long work: models, presets, recording,
MIDI rendering, SFZ export, previews. Long work runs as `Job`s with progress in the
status bar; errors name the file and never close the window.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.workers import Job
from engine.gansynth.spectral import pitch_name
from engine.util import resources

SHORTCUTS = """<table cellpadding=3>
<tr><td><b>Z S X D C V …</b></td><td>play (lower row, from C of the current octave)</td></tr>
<tr><td><b>Q 2 W 3 E R …</b></td><td>play (upper row, one octave up)</td></tr>
<tr><td><b>-</b> / <b>=</b>, PgDn / PgUp</td><td>octave down / up</td></tr>
<tr><td><b>Arrows</b> (pad focused)</td><td>move on the pad (Shift: fine)</td></tr>
<tr><td><b>Esc</b></td><td>panic: all notes and sound off</td></tr>
<tr><td><b>Ctrl+R</b></td><td>start / stop recording</td></tr>
<tr><td><b>Ctrl+G</b></td><td>rainbowgram of the current instrument</td></tr>
<tr><td><b>Ctrl+0</b></td><td>centre the pad</td></tr>
<tr><td><b>Ctrl+O / Ctrl+L / Ctrl+S</b></td><td>open model / load preset / save preset</td></tr>
<tr><td><b>Ctrl+M / Ctrl+E</b></td><td>render a MIDI file / export the instrument as SFZ</td></tr>
<tr><td><b>F5 / F6</b></td><td>rescan audio outputs / MIDI inputs</td></tr>
</table>"""


def _ask_open(parent, title: str, start: str, filters: str) -> str:
    path, _ = QFileDialog.getOpenFileName(parent, title, start, filters)
    return path


def _ask_save(parent, title: str, start: str, filters: str) -> str:
    path, _ = QFileDialog.getSaveFileName(parent, title, start, filters)
    return path


class FileActions:
    """Holds no state of its own beyond the window; one method per user action."""

    def __init__(self, window):
        from engine.gansynth.latentfit import FitSettings

        self.w = window
        self.fit_settings = FitSettings()   # sound import (tests make it cheaper)
        self._import_job = None
        self._trackers = []                 # the CREPE tracker, made by the first import

    @property
    def settings(self):
        return self.w.settings

    # -- long work with progress ----------------------------------------------------------------
    def run_job(self, label: str, fn, *args, on_done=None, progress: bool = True,
                cancellable: bool = False, **kwargs) -> Job:
        """Run `fn(*args, **kwargs)` in a worker with a progress bar (and a Cancel button)."""
        w = self.w
        if cancellable:
            kwargs["cancel"] = threading.Event()
        job = Job(fn, *args, progress=progress, **kwargs)
        w.progress.setValue(0)
        w.progress.show()
        if cancellable:
            w.cancel_button.show()
            w.cancel_button.clicked.connect(kwargs["cancel"].set)
        w.statusBar().showMessage(f"{label}…")

        def finished():
            w.progress.hide()
            if cancellable:
                w.cancel_button.clicked.disconnect(kwargs["cancel"].set)
                w.cancel_button.hide()

        def done(result):
            finished()
            summary = result.summary() if hasattr(result, "summary") else "done"
            w.statusBar().showMessage(f"{label}: {summary}", 10000)
            if on_done is not None:
                on_done(result)

        def failed(message):
            finished()
            if cancellable and kwargs["cancel"].is_set():
                w.statusBar().showMessage(f"{label}: cancelled", 5000)
            else:
                w.notify(f"{label} failed: {message}")

        return w.jobs.start(job, on_done=done, on_failed=failed, on_progress=w.progress.setValue)

    # -- model ----------------------------------------------------------------------------------
    def open_model(self, path: str = "", zip_file: bool = False) -> None:
        """Load a model directory (ours or Magenta's) or a Magenta .zip in a worker and
        swap it in while playing."""
        start = str(resources.default_model_path().parent)
        if not path and zip_file:
            path = _ask_open(self.w, "Open Magenta checkpoint", start, "Checkpoints (*.zip)")
        elif not path:
            path = QFileDialog.getExistingDirectory(self.w, "Open model directory", start)
        if not path:
            return
        if self.w.session is None:
            open_instrument(self.w, path)
            return
        from engine import load_synth

        def swap(synth):
            inst = self.w.session.instrument
            resized = synth.latent_size != inst.timbre.latent_size
            try:
                inst.swap_model(synth)
            except ValueError as exc:
                self.w.notify(f"Could not use {path}: {exc}")
                return
            if resized:     # palette latents belong to the old model
                self.w.palette.latent_fn = lambda n, seed: synth.random_latents(n, seed)
                self.w.palette.voice_fn = synth.voice_name
                self.w.palette.generate()
            self.w.model_changed(synth, Path(path).name)

        self.run_job(f"Loading model {Path(path).name}", load_synth, path, progress=False,
                     on_done=swap, threads=1, precision=self.w.precision, backend=self.w.backend)

    # -- presets --------------------------------------------------------------------------------
    def _preset_start(self) -> str:
        last = self.settings.value("preset/last", "")
        return str(Path(last).parent) if last else str(resources.presets_dir())

    def load_preset(self, path: str = "") -> bool:
        path = path or _ask_open(self.w, "Load preset", self._preset_start(), "Presets (*.json)")
        if not path:
            return False
        try:
            preset = self.w.session.instrument.load_preset(path)
        except Exception as exc:  # the engine names the file and field
            self.w.notify(f"Could not load preset: {exc}")
            return False
        self.w.learn.apply_preset_map(preset, path)
        self.settings.setValue("preset/last", path)
        self.w.sync_from_engine()
        self.w.request_rainbowgram()
        self.w.statusBar().showMessage(f"preset {Path(path).name} loaded", 4000)
        return True

    def save_preset(self, path: str = "") -> bool:
        path = path or _ask_save(self.w, "Save preset", self._preset_start(), "Presets (*.json)")
        if not path:
            return False
        if not path.endswith(".json"):
            path += ".json"
        try:
            self.w.session.instrument.save_preset(path, midi_map=self.w.learn.preset_map())
        except Exception as exc:
            self.w.notify(f"Could not save preset {path}: {exc}")
            return False
        self.settings.setValue("preset/last", path)
        self.w.statusBar().showMessage(f"preset saved to {path}", 4000)
        return True

    # -- recording ------------------------------------------------------------------------------
    def toggle_recording(self, on: bool, path: str = "") -> bool:
        session, w = self.w.session, self.w
        if not on:
            written = session.stop_recording() if session.recording else None
            if written:
                w.statusBar().showMessage(f"recorded {written}", 8000)
            w.record.set_recording(False)
            return written is not None
        if not path:
            start = self.settings.value("record/dir", str(Path.home()))
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = _ask_save(w, "Record to WAV", str(Path(start) / f"take-{stamp}.wav"), "WAV (*.wav)")
        if not path:
            w.record.set_recording(False)
            return False
        try:
            session.start_recording(path)
        except Exception as exc:
            w.record.set_recording(False)
            w.notify(f"Could not record to {path}: {exc}")
            return False
        self.settings.setValue("record/dir", str(Path(path).parent))
        w.record.set_recording(True)
        w.statusBar().showMessage(f"recording to {path}", 4000)
        return True

    # -- previews -------------------------------------------------------------------------------
    def preview(self, entry, pitch: int) -> None:
        """Render `entry` at `pitch` in a worker; show its rainbowgram and play it once."""
        inst = self.w.session.instrument
        synth = inst.synth

        audition = self.w.session.audition
        gain = 0.6 * float(inst.settings.volume) + 0.1

        def render():
            from engine.gansynth.rainbowgram import rainbowgram

            audio = synth.generate(np.array(entry.latent[None]), [pitch])[0]
            return (audition.prepare(audio, synth.sample_rate, gain),
                    rainbowgram(audio, synth.sample_rate, bins_per_octave=24))

        def show(result):
            clip, rgb = result
            audition.queue(clip)
            self.w.rainbow.show_rgb(rgb, f"preview · {entry.name} · {pitch_name(pitch)}")
            self.w._rainbow_key = None

        self.run_job(f"Preview {entry.name}", render, progress=False, on_done=show)

    # -- rendering and export (issue 9's engine functions) -----------------------------------------
    def render_midi(self, midi_path: str = "", wav_path: str = "", morph: bool = False):
        """Render a MIDI file with the current timbre (or morphing through corners A-D)."""
        midi_path = midi_path or _ask_open(self.w, "Render MIDI file", str(resources.midi_dir()),
                                           "MIDI files (*.mid *.midi)")
        if not midi_path:
            return None
        wav_path = wav_path or _ask_save(self.w, "Render to WAV", str(Path(midi_path).with_suffix(".wav")),
                                         "WAV (*.wav)")
        if not wav_path:
            return None
        from engine.songs import render

        inst = self.w.session.instrument
        return self.run_job(f"Rendering {Path(midi_path).name}", render.render_for_app,
                            inst.synth, inst.timbre, midi_path, wav_path, morph=morph,
                            cancellable=True)

    def export_instrument(self, out_dir: str = "", pitches=None):
        """Export the current timbre as an SFZ patch (WAVs + .sfz) into a folder."""
        out_dir = out_dir or QFileDialog.getExistingDirectory(self.w, "Export instrument as SFZ into")
        if not out_dir:
            return None
        from engine.songs import sfz

        inst = self.w.session.instrument
        return self.run_job("Exporting SFZ", sfz.export_for_app, inst.synth, inst.timbre, out_dir,
                            pitches=pitches, cancellable=True)

    # -- sound import (issue 17) ---------------------------------------------------------------
    def import_sounds(self, paths, corner: int | None = None):
        """Fit an instrument to dropped audio files (one note each, one instrument) in a worker,
        with progress and Cancel; it arrives in the palette named after the first file (and on
        `corner` when dropped there). Files that cannot be used are named with the reason."""
        paths = [str(p) for p in paths]
        if not paths or self.w.session is None:
            return None
        instruments = [p for p in paths if p.lower().endswith(".json")]   # saved instruments (presets)
        paths = [p for p in paths if p not in instruments]
        for path in instruments:
            self.add_saved_instruments(path, corner)
        if not paths:
            return None
        if self._import_job is not None and not self._import_job.finished_event.is_set():
            self.w.notify("A sound import is running: wait for it or cancel it", error=False)
            return None
        synth = self.w.session.instrument.synth
        settings, trackers = self.fit_settings, self._trackers

        def work(progress, cancel):
            from engine.gansynth.noteaudio import pitch_tracker
            from engine.gansynth.soundimport import import_sound

            if not trackers:   # CREPE's weights load once (~1 s), in the worker
                trackers.append(pitch_tracker())
            return import_sound(synth, paths, settings=settings, tracker=trackers[0], verify_pitch=False,
                                progress=lambda done, total: progress(done / max(total, 1)), cancel=cancel)

        def arrived(result):
            if result.problems:
                self.w.notify("Left out " + "; ".join(result.problems))
            if self.w.session.instrument.synth is not synth:
                self.w.notify(f"{result.name}: the model changed while it was fitted; import it again")
                return
            self.w.instrument_arrived(result.name, result.latent, ", ".join(Path(p).name for p in paths),
                                      corner)

        names = ", ".join(Path(p).name for p in paths[:3]) + (" …" if len(paths) > 3 else "")
        self._import_job = self.run_job(f"Importing {names}", work, cancellable=True, on_done=arrived)
        return self._import_job

    def add_saved_instruments(self, path: str, corner: int | None = None) -> int:
        """The distinct corner instruments of a preset file (e.g. one `import-sound` wrote) into
        the palette; the first also on `corner`. Returns how many were added."""
        from engine.instrument.presets import load_preset

        try:
            preset = load_preset(path, self.w.session.instrument.synth.latent_size)
        except Exception as exc:   # PresetError names the file and the field
            self.w.notify(f"Could not use {exc}")
            return 0
        seen, added = set(), 0
        for c in reversed(preset.timbre.corners):   # add_entry puts each first: keep A..D order
            if c.latent.tobytes() not in seen:
                seen.add(c.latent.tobytes())
                self.w.instrument_arrived(c.name, c.latent, Path(path).name)
                added += 1
        if corner is not None:
            self.w.assign_corner(corner, self.w.palette.entries[0])
        return added

    def show_shortcuts(self) -> None:
        box = QMessageBox(self.w)
        box.setWindowTitle("Keyboard shortcuts")
        box.setText(SHORTCUTS)
        box.setModal(False)
        box.show()


# -- the first model ----------------------------------------------------------------------------

def open_instrument(window, model_path, preset=None, audio_out=None, midi_in=None,
                    sample_rate: int | None = None, on_error=None):
    """Load the model in a worker; on success build the engine and `window.attach` it."""
    from app.session import Session
    from engine import load_synth
    from engine.devices.listing import DEFAULT_SAMPLE_RATE, device_sample_rate, is_jack_client
    from engine.instrument.instrument import Instrument

    settings = window.settings
    window.statusBar().showMessage(f"Loading model {model_path}…")
    window.progress.setRange(0, 0)   # busy indicator
    window.progress.show()

    def build(synth):
        window.progress.setRange(0, 1000)
        window.progress.hide()
        device = audio_out if audio_out is not None else settings.value("audio/device", None)
        try:
            rate = sample_rate or (device_sample_rate(device) if device != "" else DEFAULT_SAMPLE_RATE)
            session = Session(Instrument(synth, sample_rate=rate))
            session.audio_ahead = window.audio_ahead
            session.model_name = Path(model_path).name
            # MIDI first: on JACK, MIDI clients made after the audio stream started stall it
            session.open_midi(midi_in if midi_in is not None else settings.value("midi/port", None),
                              virtual=not is_jack_client(device))
            session.start(device)
        except Exception as exc:   # a broken model or engine: report, keep the window
            failed(f"{type(exc).__name__}: {exc}")
            return
        window.attach(session)
        if preset:                        # asked for: its settings win over the saved ones
            _restore_sound(window, settings)
            window.actions_.load_preset(str(preset))
        else:                             # the last preset, then the user's later tweaks
            last = settings.value("preset/last", "")
            if last and Path(last).exists():
                window.actions_.load_preset(last)
            elif not last:
                _first_preset(window, session)
            _restore_sound(window, settings)
        window.statusBar().showMessage(f"model {Path(model_path).name} ready", 4000)

    def failed(message):
        window.progress.hide()
        window.notify(f"Could not load the model: {message}")
        if on_error is not None:
            on_error(message)

    job = Job(load_synth, str(model_path), threads=1, precision=window.precision, backend=window.backend)
    return window.jobs.start(job, on_done=build, on_failed=failed)


def _first_preset(window, session) -> None:
    """First start: the first bundled preset, if it fits this model (else the random corners)."""
    shipped = sorted(resources.presets_dir().glob("*.json"))
    if not shipped:
        return
    try:
        session.instrument.load_preset(shipped[0])
    except Exception:   # made for another model (latent size): keep the random corners
        return
    window.sync_from_engine()
    window.request_rainbowgram()


def _restore_sound(window, settings) -> None:
    for name, slider in window.sound.sliders.items():
        value = settings.value(f"sound/{name}")
        if value is None:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        slider.set_value(value, emit=True)
