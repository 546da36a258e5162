"""The window as a control surface: MIDI learn menus and persistence, OSC, the large rainbowgram."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import socket  # noqa: E402

import mido  # noqa: E402
import pytest  # noqa: E402
from pythonosc.udp_client import SimpleUDPClient  # noqa: E402

from tests.test_gui import READY_MS, model_dir, open_window  # noqa: E402,F401

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, qapp, tmp_path, model_dir):  # noqa: F811
    win = open_window(qtbot, qapp, tmp_path / "settings.ini", model_dir)
    yield win
    win.close()


def cc(control, value, channel=0):
    return mido.Message("control_change", control=control, value=value, channel=channel)


def test_learn_from_the_context_menu_persists_and_travels_in_presets(qtbot, qapp, window, tmp_path,
                                                                     model_dir):  # noqa: F811
    session, learn = window.session, window.learn
    feed = lambda msg: session.midi_map.handle(msg, session.post)   # noqa: E731 (the MIDI callback's work)
    menu = learn.menu(("pad_x", "pad_y", "corner_b"))
    texts = [a.text() for a in menu.actions()]
    assert texts == ["Learn MIDI: pad X", "Learn MIDI: pad Y", "Learn MIDI: corner B instrument"]
    menu.actions()[0].trigger()
    assert "pad X" in window.statusBar().currentMessage()
    assert feed(cc(20, 0, channel=3))
    qtbot.waitUntil(lambda: "MIDI learned: pad X ← CC 20 (ch 4)" in window.statusBar().currentMessage(),
                    timeout=5000)
    feed(cc(20, 127, channel=3))
    assert session.instrument.timbre.pad[0] == 1.0
    qtbot.waitUntil(lambda: window.pad.position()[0] == pytest.approx(1.0), timeout=5000)
    learn.menu(("corner_b",)).actions()[0].trigger()
    feed(mido.Message("note_on", note=40, velocity=1))                       # learned, not played
    learn.menu(("release_s",)).actions()[0].trigger()
    feed(cc(74, 0))
    feed(cc(74, 127))
    assert session.instrument.settings.release_s == pytest.approx(10.0)
    entry = window.palette.entries[-1]
    feed(mido.Message("note_on", note=40, velocity=127))                     # corner B: last entry
    qtbot.waitUntil(lambda: session.instrument.timbre.names[1] == entry.name, timeout=5000)
    forget = learn.menu(("release_s",)).actions()
    assert [a.text() for a in forget][1] == "Forget MIDI: release"
    forget[1].trigger()
    assert session.midi_map.binding_for("release_s") is None
    # in presets only when the user chooses
    window.act_map_in_presets.trigger()
    assert window.actions_.save_preset(str(tmp_path / "with-map.json"))
    assert "midi_map" in (tmp_path / "with-map.json").read_text()
    session.midi_map.set_bindings([])
    assert window.actions_.load_preset(str(tmp_path / "with-map.json"))
    assert session.midi_map.binding_for("pad_x") is not None
    window.close()
    again = open_window(qtbot, qapp, tmp_path / "settings.ini", model_dir)    # settings bring them back
    try:
        assert again.session.midi_map.binding_for("pad_x").number == 20
        assert again.session.midi_map.binding_for("corner_b").kind == "note"
    finally:
        again.close()


def test_osc_drives_the_window_and_is_off_by_default(qtbot, window):
    assert window.session.osc is None
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    assert window.learn.open_osc(port) and window.session.osc.host == "127.0.0.1"
    client = SimpleUDPClient("127.0.0.1", port)
    client.send_message("/pad", [0.25, 0.75])
    client.send_message("/preset/load", 0)
    client.send_message("/bogus", [])
    assert window.session.osc.wait_counted(3)
    qtbot.waitUntil(lambda: window.pad.position() == pytest.approx((0.25, 0.75)) or
                    "loaded" in window.statusBar().currentMessage(), timeout=5000)
    assert window.session.osc.ignored == 1
    qtbot.waitUntil(lambda: "loaded" in window.statusBar().currentMessage(), timeout=5000)
    assert window.settings.value("osc/port") in (port, str(port))


def test_large_rainbowgram_with_axes_and_corners(qtbot, window, tmp_path):
    window.last_pitch = 60
    window.request_rainbowgram()
    qtbot.waitUntil(window.rainbow.has_image, timeout=READY_MS)
    big = window.open_rainbow_window()
    assert big.isVisible() and big.main.has_image() and big.main.axes
    qtbot.waitUntil(lambda: all(v.has_image() for v in big.corners), timeout=READY_MS)
    names = window.session.instrument.timbre.names
    assert all(name in view.title for name, view in zip(names, big.corners))
    assert big.main.frame_s == pytest.approx(256 / 16000)
    big.resize(1100, 720)
    assert big.grab().save(str(tmp_path / "rainbowgram-window.png"))   # docs/ has one to look at


def test_a_learned_record_button_records_without_a_dialog(qtbot, window, tmp_path):
    session = window.session
    window.settings.setValue("record/dir", str(tmp_path))
    window.learn.learn("record")
    session.midi_map.handle(mido.Message("note_on", note=50, velocity=100, channel=9), session.post)
    qtbot.waitUntil(lambda: "MIDI learned: record" in window.statusBar().currentMessage(), timeout=5000)
    session.midi_map.handle(mido.Message("note_on", note=50, velocity=100, channel=9), session.post)
    qtbot.waitUntil(lambda: session.recording, timeout=5000)
    assert window.record.record.isChecked()
    session.midi_map.handle(mido.Message("note_on", note=50, velocity=100, channel=9), session.post)
    qtbot.waitUntil(lambda: not session.recording, timeout=5000)
    assert list(tmp_path.glob("take-*.wav")) and not window.record.record.isChecked()
