"""The instrument window, offscreen (pytest-qt) plus one screenshot under a real Xvfb.

The window runs on the offline clock output (no audio device needed): the keyboard,
the pad and the recorder go through the real Instrument, mixer and renderer.
"""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import select  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import mido  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
from PySide6.QtCore import QEvent, QPoint, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from engine.gansynth.modelfile import is_model_dir  # noqa: E402
from engine.util import resources  # noqa: E402

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parent.parent
READY_MS = 120_000


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    """The bundled default model when it is there, else the tiny fixture model."""
    default = resources.default_model_path()
    return default if default.is_dir() and is_model_dir(default) else Path(tiny_model_dir)


def open_window(qtbot, qapp, settings_path, model_dir, audio_out=""):
    from app import theme
    from app.actions import open_instrument
    from app.main import make_settings
    from app.window import MainWindow

    theme.apply_theme(qapp)
    win = MainWindow(make_settings(settings_path))
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.ready, timeout=READY_MS):
        open_instrument(win, model_dir, audio_out=audio_out, midi_in="")   # "": offline clock
    return win


@pytest.fixture
def window(qtbot, qapp, tmp_path, model_dir):
    win = open_window(qtbot, qapp, tmp_path / "settings.ini", model_dir)
    yield win
    win.close()


def stats(win) -> dict:
    return win.session.instrument.stats()


def wait_rendered(qtbot, win, pitch: int) -> None:
    """Until the renderer has `pitch` for the current timbre (the mixer then plays it)."""
    qtbot.waitUntil(lambda: pitch in stats(win)["rendered_pitches"], timeout=READY_MS)


def test_window_opens_with_model(window, model_dir):
    inst = window.session.instrument
    assert inst.synth.pitch_range[0] <= 24 and inst.synth.pitch_range[1] >= 84
    assert window.pad.names() == list(inst.timbre.names)
    assert window.pad.isEnabled() and window.keyboard.isEnabled()
    assert len(window.palette.entries) == window.palette.count.value()
    # no device chosen: the banner says we play on the offline clock
    assert window.banner.isVisibleTo(window) and "offline clock" in window.banner.text()
    assert window.windowTitle().startswith("GANSynth")
    # engine failures counted in stats() become messages once each
    assert "boom" in window._new_engine_error({"audio_errors": 1, "last_audio_error": "boom"})
    assert window._new_engine_error({"audio_errors": 1, "render_failures": 0}) == ""
    assert "1 note render" in window._new_engine_error({"audio_errors": 1, "render_failures": 1})
    # the live instrument renders in its own process once that is up; the status line says so
    assert inst.renderer.use_process and inst.synth.precision in ("fp32", "bf16")
    window._pull_stats()
    assert "render processes: " in window.status.labels["render"].toolTip()
    # the xruns field tells the instrument's own late blocks from those the audio system flagged
    window.status.update({"xruns": 3, "late_blocks": 1})
    assert "Of these, the instrument rendered 1 late" in window.status.labels["xruns"].toolTip()
    window.status.update({"xruns": 0, "late_blocks": 0})
    assert "Of these" not in window.status.labels["xruns"].toolTip()


def test_corrupt_model_is_reported_and_the_window_stays(qtbot, qapp, tmp_path):
    from app import theme
    from app.actions import open_instrument
    from app.main import make_settings
    from app.window import MainWindow

    bad = tmp_path / "broken_model"
    bad.mkdir()
    (bad / "config.json").write_text("{ not json")
    (bad / "generator.safetensors").write_bytes(b"garbage")
    theme.apply_theme(qapp)
    win = MainWindow(make_settings(tmp_path / "settings.ini"))
    qtbot.addWidget(win)
    win.show()
    errors = []
    open_instrument(win, bad, audio_out="", midi_in="", on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=30000)
    assert "broken_model" in errors[0]
    assert win.banner.isVisibleTo(win) and "broken_model" in win.banner.text()
    assert win.session is None and not win.pad.isEnabled() and win.isVisible()
    win.close()


def test_painting_keeps_none_alive(window):
    """PySide6 6.12.0 on Python 3.11 dropped a reference to None on every void Qt call, so
    the window aborted ("deallocating None") after some seconds of painting."""
    before = sys.getrefcount(None)
    for _ in range(30):
        window.keyboard.keys.repaint()
        window.pad.repaint()
    assert sys.getrefcount(None) > before - 500      # thousands of void calls were made


def test_pad_drag_changes_timbre(qtbot, window):
    inst = window.session.instrument
    before = inst.timbre.latent.copy()
    pad = window.pad
    sq = pad._square()
    start = QPoint(int(sq.center().x()), int(sq.center().y()))
    end = QPoint(int(sq.left() + 0.1 * sq.width()), int(sq.top() + 0.1 * sq.height()))  # near C
    qtbot.mousePress(pad, Qt.LeftButton, pos=start)
    qtbot.mouseMove(pad, pos=QPoint((start.x() + end.x()) // 2, (start.y() + end.y()) // 2))
    qtbot.mouseMove(pad, pos=end)
    qtbot.mouseRelease(pad, Qt.LeftButton, pos=end)
    x, y = inst.timbre.pad
    assert x == pytest.approx(0.1, abs=0.02) and y == pytest.approx(0.9, abs=0.02)
    weights = inst.timbre.weights()
    assert int(np.argmax(weights)) == 2               # top-left corner dominates
    assert not np.allclose(inst.timbre.latent, before)
    assert pad.weights()[2] == pytest.approx(max(pad.weights()))


def test_drop_an_instrument_on_a_corner(window):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    palette, pad = window.palette, window.pad
    item = palette.list.item(5)
    mime = palette.list.mimeData([item])               # what dragging the row carries
    sq = pad._square()
    near_b = QPointF(sq.right() - 10, sq.bottom() - 10)   # corner B: bottom-right
    enter = QDragEnterEvent(near_b.toPoint(), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(pad, enter)
    assert enter.isAccepted()
    drop = QDropEvent(near_b, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(pad, drop)
    timbre = window.session.instrument.timbre
    assert timbre.names[1] == palette.entries[5].name
    np.testing.assert_array_equal(timbre.corners[1].latent, palette.entries[5].latent)


def test_touch_drag_on_pad(qtbot, window):
    from PySide6.QtTest import QTest

    device = QTest.createTouchDevice()
    pad = window.pad
    sq = pad._square()
    first = QPoint(int(sq.left() + 0.8 * sq.width()), int(sq.top() + 0.2 * sq.height()))
    second = QPoint(int(sq.left() + 0.9 * sq.width()), int(sq.top() + 0.6 * sq.height()))
    first, second = pad.mapTo(window, first), pad.mapTo(window, second)   # window coordinates
    QTest.touchEvent(window, device).press(0, first).commit()
    QTest.touchEvent(window, device).move(0, second).commit()
    QTest.touchEvent(window, device).release(0, second).commit()
    x, y = window.session.instrument.timbre.pad
    assert x == pytest.approx(0.9, abs=0.02) and y == pytest.approx(0.4, abs=0.02)


def test_mod_wheel_moves_the_pad(qtbot, window):
    inst = window.session.instrument
    assert inst.settings.mod_axis == "y" and window.keyboard.bend.value() == 0
    window.keyboard.mod.setValue(127)                  # CC1 -> the pad's y axis
    assert inst.timbre.pad[1] == pytest.approx(1.0)
    qtbot.waitUntil(lambda: window.pad.position()[1] == pytest.approx(1.0), timeout=2000)
    window.keyboard.bend.setValue(4000)
    window.keyboard.bend.sliderReleased.emit()         # the spring brings it back
    assert window.keyboard.bend.value() == 0


def test_computer_key_reaches_mixer(qtbot, window):
    held = lambda: stats(window)["held_pitches"]  # noqa: E731
    assert 60 not in held()
    qtbot.keyPress(window.keyboard.keys, Qt.Key_Z)       # Z = C4 = MIDI 60
    qtbot.waitUntil(lambda: 60 in held(), timeout=5000)
    qtbot.keyRelease(window.keyboard.keys, Qt.Key_Z)
    qtbot.waitUntil(lambda: 60 not in held(), timeout=5000)
    # octave shift then the upper row: '=' up one octave, Q = C6 = 84
    qtbot.keyClick(window.keyboard.keys, Qt.Key_Equal)
    qtbot.keyPress(window.keyboard.keys, Qt.Key_Q)
    qtbot.waitUntil(lambda: 84 in held(), timeout=5000)
    # the window loses focus with the key still down: its release would go elsewhere
    QApplication.sendEvent(window, QEvent(QEvent.WindowDeactivate))
    qtbot.waitUntil(lambda: 84 not in held(), timeout=5000)


def test_midi_notes_light_the_keys(qtbot, window):
    from engine.devices.midi_input import message_to_event

    keys = window.keyboard.keys
    post = window.session.post              # what the MIDI callback calls (via MidiInput.target)
    post(message_to_event(mido.Message("note_on", note=64, velocity=80)))
    qtbot.waitUntil(lambda: 64 in keys._sounding, timeout=5000)   # pulled by the meter timer
    assert 64 not in keys._held
    post(message_to_event(mido.Message("note_on", note=64, velocity=0)))   # = note off
    qtbot.waitUntil(lambda: 64 not in keys._sounding, timeout=5000)


def test_palette_preview_plays_and_shows_rainbowgram(qtbot, window):
    session = window.session
    assert stats(window)["voices"] == 0 and np.abs(session.scope(4096)).max() == 0.0
    window.palette.list.setCurrentRow(2)
    window.palette.pitch.setValue(67)
    window.palette.preview_button.click()
    qtbot.waitUntil(lambda: "preview" in window.rainbow.title, timeout=READY_MS)
    assert window.palette.entries[2].name in window.rainbow.title and window.rainbow.has_image()
    qtbot.waitUntil(lambda: np.abs(session.scope(4096)).max() > 0.01, timeout=5000)  # heard
    assert stats(window)["voices"] == 0         # played by the audition, not as a note


def test_rainbowgram_view_draws_low_notes_at_the_bottom(qapp):
    from app.views import RainbowgramView
    from app.window import note_rainbowgram

    rate = 16000
    t = np.arange(2 * rate) / rate
    rows = []
    for f_hz in (110.0, 1760.0):
        view = RainbowgramView()
        view.show_rgb(note_rainbowgram(None, None, 0, np.sin(2 * np.pi * f_hz * t), rate), "tone")
        image = view._image.convertToFormat(view._image.Format.Format_RGB888)
        pixels = np.frombuffer(image.constBits(), np.uint8, image.sizeInBytes())
        pixels = pixels.reshape(image.height(), -1)[:, : 3 * image.width()]
        rows.append(int(np.argmax(pixels.astype(int).sum(axis=1))) / image.height())
    assert rows[0] > 0.6 and rows[1] < 0.4        # image row 0 is the top of the view


def test_mouse_on_keyboard_plays_with_velocity(qtbot, window):
    keys = window.keyboard.keys
    seen = []
    keys.noteOn.connect(lambda p, v: seen.append((p, v)))
    pitch = keys.visible_pitches()[0] + 2            # a white key (D)
    rect = keys.key_rect(pitch)
    soft = QPoint(int(rect.center().x()), int(rect.top() + 0.1 * rect.height()))
    loud = QPoint(int(rect.center().x()), int(rect.top() + 0.95 * rect.height()))
    for pos in (soft, loud):
        qtbot.mousePress(keys, Qt.LeftButton, pos=pos)
        qtbot.waitUntil(lambda: pitch in stats(window)["held_pitches"], timeout=5000)
        qtbot.mouseRelease(keys, Qt.LeftButton, pos=pos)
        qtbot.waitUntil(lambda: pitch not in stats(window)["held_pitches"], timeout=5000)
    assert [p for p, _ in seen] == [pitch, pitch]
    assert seen[0][1] < seen[1][1]


def test_record_writes_wav_with_notes(qtbot, window, tmp_path):
    wait_rendered(qtbot, window, 60)
    session = window.session
    path = tmp_path / "take.wav"
    assert window.actions_.toggle_recording(True, str(path))
    qtbot.waitUntil(lambda: session.recording_seconds() > 0.3, timeout=10000)
    silent_until = session.recording_seconds()
    qtbot.keyPress(window.keyboard.keys, Qt.Key_Z)
    qtbot.waitUntil(lambda: session.recording_seconds() > silent_until + 1.0, timeout=10000)
    qtbot.waitUntil(lambda: window.record.level.value() > 0, timeout=5000)   # the take's meter
    qtbot.keyRelease(window.keyboard.keys, Qt.Key_Z)
    qtbot.waitUntil(lambda: session.recording_seconds() > silent_until + 1.6, timeout=10000)
    assert window.record.record.isChecked()
    qtbot.waitUntil(lambda: window.record.elapsed.text().startswith("00:01")
                    or window.record.elapsed.text().startswith("00:02"), timeout=5000)
    assert window.actions_.toggle_recording(False)
    assert not window.record.record.isChecked()
    assert not session.recording
    audio, sample_rate = sf.read(path, dtype="float32")
    assert sample_rate == session.instrument.sample_rate
    assert len(audio) >= int(1.5 * sample_rate)
    assert np.isfinite(audio).all()
    quiet = audio[: int(0.25 * sample_rate)]
    note = audio[int((silent_until + 0.1) * sample_rate): int((silent_until + 0.9) * sample_rate)]
    rms = lambda x: float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))  # noqa: E731
    assert rms(quiet) < 1e-4
    assert rms(note) > 1e-3
    # the performance beside the take: the key press as a MIDI note
    midi = mido.MidiFile(path.with_suffix(".mid"))
    notes = [m.note for m in midi if m.type == "note_on" and m.velocity > 0]
    assert notes == [60]


def test_presets_and_settings_persist(qtbot, qapp, window, tmp_path, model_dir):
    inst = window.session.instrument
    window.sound.sliders["release_s"].set_value(2.0, emit=True)
    assert inst.settings.release_s == pytest.approx(2.0, rel=0.02)
    window.pad.set_position(0.2, 0.3, emit=True)
    entry = window.palette.entries[3]
    window.palette.rename(3, "My Horn")
    window.assign_corner(1, entry)
    assert inst.timbre.names[1] == "My Horn" and window.pad.names()[1] == "My Horn"
    preset = tmp_path / "mine.json"
    assert window.actions_.save_preset(str(preset))
    window.pad.set_position(0.9, 0.9, emit=True)
    assert window.actions_.load_preset(str(preset))
    assert inst.timbre.pad == pytest.approx((0.2, 0.3))
    assert window.pad.position() == pytest.approx((0.2, 0.3))
    assert not window.actions_.load_preset(str(tmp_path / "missing.json"))   # reported, no crash
    assert "missing.json" in window.banner.text()
    window.resize(window.width(), 760)       # the offscreen screen is 800 x 800
    window.top_split.setSizes([400, 300, 400])
    split_state = window.top_split.saveState()
    window.close()
    assert window.settings.value("window/split_top") == split_state
    # a new window with the same settings: last preset, sound settings and size come back
    again = open_window(qtbot, qapp, tmp_path / "settings.ini", model_dir)
    try:
        assert again.session.instrument.timbre.names[1] == "My Horn"
        assert again.session.instrument.settings.release_s == pytest.approx(2.0, rel=0.02)
        assert again.height() == 760
    finally:
        again.close()


def test_open_another_model_while_playing(qtbot, window, tmp_path):
    from tests.conftest import make_tiny_model_dir

    inst = window.session.instrument
    old_synth = inst.synth
    other = make_tiny_model_dir(tmp_path / "other_model", seed=5)
    qtbot.keyPress(window.keyboard.keys, Qt.Key_Z)                  # a note held across the swap
    window.actions_.open_model(str(other))
    qtbot.waitUntil(lambda: "other_model" in window.windowTitle(), timeout=READY_MS)
    qtbot.waitUntil(lambda: inst.synth is not old_synth, timeout=10000)   # worker swapped it in
    assert inst.synth.meta["provenance"]["seed"] == 5
    assert 60 in stats(window)["held_pitches"]
    qtbot.keyRelease(window.keyboard.keys, Qt.Key_Z)
    window.actions_.open_model(str(tmp_path / "no_such_model"))    # reported, the window goes on
    qtbot.waitUntil(lambda: "no_such_model" in window.banner.text(), timeout=10000)
    assert inst.synth.meta["provenance"]["seed"] == 5


@pytest.mark.realtime
def test_plays_on_the_jack_dummy_device(qtbot, qapp, tmp_path, model_dir, jack_server):
    win = open_window(qtbot, qapp, tmp_path / "settings.ini", model_dir, audio_out=None)  # default
    try:
        session = win.session
        assert session.has_device and session.output_name == "system"
        assert "No audio device" not in win.banner.text()
        listed = [win.devices.audio.itemData(i) for i in range(win.devices.audio.count())]
        assert listed == ["", "system", "JACK client"]        # none, PortAudio's, our own JACK client
        for device in ("system", "JACK client"):
            if device != session.output_name:
                win.choose_audio(device)
            assert session.has_device and session.output_name == device
            start = session.tap.frames
            qtbot.keyPress(win.keyboard.keys, Qt.Key_Z)
            qtbot.waitUntil(lambda: 60 in stats(win)["held_pitches"], timeout=5000)
            rate = session.instrument.sample_rate
            qtbot.waitUntil(lambda: session.tap.frames > start + rate, timeout=10000)   # a second played
            assert session.output.meters()["mode"] == "device"     # the stream kept running
            # the session's jackd is not realtime: the status line says so, and what to do
            xruns = win.status.labels["xruns"]
            qtbot.waitUntil(lambda: "ordinary priority" in xruns.toolTip(), timeout=5000)
            assert xruns.text().endswith("!") and "jackd -R" in xruns.toolTip()
            qtbot.keyRelease(win.keyboard.keys, Qt.Key_Z)
        # Devices > Render audio ahead: the sound card's output reopens rendering that far ahead
        win.choose_audio("system")
        menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&Devices")
        ahead = next(a.menu() for a in menu.actions() if a.text() == "Render audio ahead")
        choices = {a.text(): a for a in ahead.actions()}
        assert [a.isChecked() for a in choices.values()] == [False, True, False]   # 1 period by default
        period_ms = 1000 * jack_server.period / session.instrument.sample_rate
        latency = {}
        for text, periods in (("2 periods", 2), ("Off: lowest latency", 0), ("1 period", 1)):
            choices[text].trigger()
            assert choices[text].isChecked() and session.output.ahead == periods
            assert session.has_device and win.settings.value("audio/ahead") in (periods, str(periods))
            start = session.tap.frames
            qtbot.waitUntil(lambda: session.tap.frames > start + jack_server.period * 20, timeout=10000)
            latency[periods] = session.output.latency_ms
        assert latency[2] - latency[1] == pytest.approx(period_ms) == latency[1] - latency[0]
    finally:
        win.close()


def test_the_window_renders_on_the_engine_auto_picks(window):
    """The window loads its model with --backend auto and --precision auto (its defaults, as
    `play`): on a CPU with native bf16 that is torch in bf16 (the other engines run fp32), else
    the engine the per-CPU probe chose; the render processes load the same."""
    import json

    from engine.gansynth.backend import PROBE_FILE, probe_key
    from engine.gansynth.synth import native_bf16

    synth = window.session.instrument.synth
    assert window.backend == "auto" and synth.source["backend"] == synth.backend
    assert window.precision == "auto" and synth.source["precision"] == synth.precision
    if native_bf16(synth.device):
        assert (synth.precision, synth.backend) == ("bf16", "torch")
        return
    assert synth.precision == "fp32"
    probes = json.loads((Path(os.environ["GANSYNTH_CACHE_DIR"]) / PROBE_FILE).read_text())
    assert synth.backend == probes[probe_key(synth.generator, 1)]["backend"]


def test_record_to_a_bad_path_is_reported(window, tmp_path):
    bad = tmp_path / "no_such_dir" / "take.wav"
    assert not window.actions_.toggle_recording(True, str(bad))
    assert not window.session.recording and not window.record.record.isChecked()
    assert "no_such_dir" in window.banner.text()


def test_render_midi_and_export_sfz_in_background(qtbot, window, tmp_path):
    song = tmp_path / "song.mid"
    midi = mido.MidiFile()
    track = mido.MidiTrack()
    midi.tracks.append(track)
    for pitch in (60, 64, 67):
        track.append(mido.Message("note_on", note=pitch, velocity=90, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=240))
    midi.save(song)
    wav = tmp_path / "song.wav"
    job = window.actions_.render_midi(str(song), str(wav))
    assert window.progress.isVisible()            # the window shows progress, not a freeze
    qtbot.waitUntil(job.finished_event.is_set, timeout=READY_MS)
    audio, rate = sf.read(wav, dtype="float32")
    assert len(audio) > rate // 2 and np.abs(audio).max() > 0.01
    job = window.actions_.export_instrument(str(tmp_path / "patch"), pitches=[48, 60])
    qtbot.waitUntil(job.finished_event.is_set, timeout=READY_MS)
    sfz_files = list((tmp_path / "patch").rglob("*.sfz"))
    assert len(sfz_files) == 1 and "sample=" in sfz_files[0].read_text()
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=5000)


def test_cancel_a_render(qtbot, window, tmp_path):
    song = resources.midi_dir() / "bach_prelude_c_bwv846.mid"     # long enough to cancel
    wav = tmp_path / "cancelled.wav"
    job = window.actions_.render_midi(str(song), str(wav))
    assert window.cancel_button.isVisible()
    window.cancel_button.click()
    qtbot.waitUntil(job.finished_event.is_set, timeout=READY_MS)
    qtbot.waitUntil(lambda: not window.cancel_button.isVisible(), timeout=5000)
    assert "cancelled" in window.statusBar().currentMessage()
    assert not wav.exists()                      # nothing half-written looks finished


# -- a real X server ----------------------------------------------------------------------------
@pytest.fixture
def xvfb():
    """Start Xvfb (display :99, or the next free one); yields DISPLAY; stops it by pid.

    `-displayfd` makes Xvfb write its display number once it accepts clients, so the
    fixture waits on that pipe instead of polling.
    """
    xvfb_bin = shutil.which("Xvfb")
    assert xvfb_bin, "Xvfb missing: `make system-packages` installs the xvfb package"
    number = next(n for n in range(99, 160) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([xvfb_bin, f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp",
                             "-displayfd", str(write_fd)], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_fd)
    ready, _, _ = select.select([read_fd], [], [], 30.0)
    announced = os.read(read_fd, 64).decode().strip() if ready else ""
    assert announced == str(number), f"Xvfb did not start: {proc.poll()} {announced!r}"
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)
    os.close(read_fd)   # open until now: Xvfb writes the fd again on server resets


def test_screenshot_under_xvfb(xvfb, tmp_path, model_dir):
    from PySide6.QtGui import QImage

    out = tmp_path / "shot.png"
    env = dict(os.environ, DISPLAY=xvfb, QT_QPA_PLATFORM="xcb")
    result = subprocess.run([sys.executable, "-m", "app.screenshot", "--model", str(model_dir),
                             "-o", str(out), "--screen", "--settle-ms", "1500"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    image = QImage(str(out))
    assert not image.isNull() and image.width() >= 1000 and image.height() >= 600
    ptr = image.convertToFormat(QImage.Format_RGB888)
    pixels = np.frombuffer(ptr.constBits(), np.uint8, ptr.sizeInBytes()).reshape(ptr.height(), -1)
    pixels = pixels[:, : 3 * ptr.width()].reshape(ptr.height(), ptr.width(), 3).astype(np.float32)
    assert pixels.std() > 20.0                                  # not a blank screen
    assert len(np.unique(pixels[::8, ::8].reshape(-1, 3), axis=0)) > 50   # many colours


def _drop_files(widget, point, paths):
    from PySide6.QtCore import QMimeData, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(point.toPoint(), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(widget, QDropEvent(point, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))


def test_drop_a_sound_on_a_corner_makes_a_playable_instrument(qtbot, window, tmp_path):
    from PySide6.QtCore import QPointF

    from engine.gansynth.latentfit import FitSettings
    from tests.test_import_sound import tone, write

    window.actions_.fit_settings = FitSettings(steps=2, starts=1, start_steps=0, prior_draws=0)
    wav = write(tmp_path / "glass_a3.wav", tone(220.0))
    junk = tmp_path / "readme.txt"
    junk.write_text("not a sound")
    sq = window.pad._square()
    _drop_files(window.pad, QPointF(sq.left() + 10, sq.top() + 10), [wav, junk])   # corner C: top-left
    job = window.actions_._import_job
    assert job is not None and window.progress.isVisible() and window.cancel_button.isVisible()
    window.on_note_on(60, 100)                      # the instrument keeps playing meanwhile
    qtbot.waitUntil(job.finished_event.is_set, timeout=READY_MS)
    qtbot.waitUntil(lambda: not window.progress.isVisible(), timeout=5000)   # delivered to the window
    window.session.note_off(60)
    timbre = window.session.instrument.timbre
    assert timbre.names[2] == "glass a3" and window.pad.names()[2] == "glass a3"
    entry = window.palette.entries[0]
    assert entry.source == "glass_a3.wav, readme.txt" and entry.name == "glass a3"
    np.testing.assert_array_equal(timbre.corners[2].latent, entry.latent)
    assert f"{junk}: not an audio file" in window.banner.text()
    window.pad.set_position(0.0, 1.0, emit=True)     # morph onto it: it renders and plays
    wait_rendered(qtbot, window, 60)
    # saved as an instrument file, it comes back into the palette by a drop too
    from engine.instrument.presets import instrument_preset, save_preset

    saved = save_preset(tmp_path / "glass.json", instrument_preset(entry.latent, "Glass"))
    _drop_files(window.palette, QPointF(20, 20), [saved])
    assert window.palette.entries[0].name == "Glass" and window.palette.entries[0].source == "glass.json"
    np.testing.assert_array_equal(window.palette.entries[0].latent, entry.latent)


def test_drop_sounds_on_the_palette_then_cancel_or_fail(qtbot, window, tmp_path):
    from PySide6.QtCore import QPointF

    from tests.test_import_sound import tone, write

    wav = write(tmp_path / "slow.wav", tone(220.0))
    before = len(window.palette.entries)
    centre = QPointF(window.palette.width() / 2, window.palette.height() / 2)
    _drop_files(window.palette, centre, [wav])
    job = window.actions_._import_job
    window.cancel_button.click()
    qtbot.waitUntil(job.finished_event.is_set, timeout=READY_MS)
    qtbot.waitUntil(lambda: "cancelled" in window.statusBar().currentMessage(), timeout=5000)
    assert len(window.palette.entries) == before
    silent = write(tmp_path / "silent.wav", np.zeros(16000, np.float32))
    _drop_files(window.palette, centre, [silent])
    qtbot.waitUntil(window.actions_._import_job.finished_event.is_set, timeout=READY_MS)
    qtbot.waitUntil(lambda: f"{silent}: silent" in window.banner.text(), timeout=5000)
    assert len(window.palette.entries) == before and window.session.instrument.stats()["audio_errors"] == 0
