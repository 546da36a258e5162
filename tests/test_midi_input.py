"""MIDI input: message translation, an in-memory port (unit), real rtmidi JACK ports (integration)."""
from __future__ import annotations

import subprocess
import threading

import mido
import pytest
from mido.ports import BaseInput

from engine.devices.midi_input import (VIRTUAL_PORT_NAME, MidiInput, MidiUnavailable, match_port,
                                       message_to_event, open_backend)
from engine.instrument.events import ControlChange, NoteOff, NoteOn, PitchBend


class Collector:
    """The events a MidiInput posts (the instrument's side of the interface)."""

    def __init__(self):
        self.events = []
        self._cond = threading.Condition()

    def post(self, event):
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.events) >= n, timeout)


# ---------------------------------------------------------------------------- translation

def test_messages_become_engine_events():
    m = mido.Message
    assert message_to_event(m("note_on", note=60, velocity=90)) == NoteOn(60, 90)
    assert message_to_event(m("note_on", note=60, velocity=0)) == NoteOff(60)   # running-status off
    assert message_to_event(m("note_off", note=61, velocity=40)) == NoteOff(61)
    assert message_to_event(m("control_change", control=64, value=127)) == ControlChange(64, 127)
    assert message_to_event(m("pitchwheel", pitch=-8192)) == PitchBend(-8192)
    assert message_to_event(m("aftertouch", value=3)) is None
    assert message_to_event(m("sysex", data=[1, 2])) is None
    assert message_to_event(m("clock")) is None
    assert message_to_event(m("note_on", channel=3, note=60), channel=3) == NoteOn(60, 64)
    assert message_to_event(m("note_on", channel=2, note=60), channel=3) is None


def test_port_names_match_by_name_across_replugs():
    names = ["Midi Through:Midi Through Port-0 14:0", "Keystation 49:Keystation 49 MIDI 1 24:0"]
    assert match_port("Keystation 49:Keystation 49 MIDI 1 20:0", names) == names[1]  # new numbers
    assert match_port("keystation", names) == names[1]
    assert match_port("Midi", names) is None                                        # ambiguous
    assert match_port("Launchpad", names) is None


# ---------------------------------------------------------------------------- in-memory ports

class MemoryPort(BaseInput):
    """An in-memory mido input port whose messages go to its callback."""

    def __init__(self, name, callback, backend):
        self.callback = callback
        self.backend = backend
        super().__init__(name)

    def feed(self, msg):
        self.callback(msg)

    def _close(self):
        self.backend.opened.pop(self.name, None)


class MemoryBackend:
    """A mido-backend-shaped set of in-memory ports: `plug`/`unplug` devices by name."""

    name = "memory/MEMORY"

    def __init__(self, names=()):
        self.names = list(names)
        self.opened: dict[str, MemoryPort] = {}
        self.opens = 0

    def get_input_names(self):
        return list(self.names)

    def open_input(self, name, callback=None, client_name=None, virtual=False):
        if client_name is None and name not in self.names:
            raise OSError(f"unknown port {name!r}")
        port = MemoryPort(name, callback, self)
        self.opened[name] = port
        self.opens += 1
        return port

    def unplug(self, name):
        self.names.remove(name)

    def plug(self, name):
        self.names.append(name)


def test_in_memory_port_events_reach_the_target_and_filter_by_channel():
    backend = MemoryBackend(["Keys 20:0"])
    target = Collector()
    midi = MidiInput(target, port_name="Keys", backend=backend, rescan_s=0)
    assert midi.start() and midi.connected_name == "Keys 20:0"
    assert VIRTUAL_PORT_NAME in backend.opened                    # the virtual port is open too
    assert midi.start() and backend.opens == 2                    # starting again opens nothing new
    keys = backend.opened["Keys 20:0"]
    keys.feed(mido.Message("note_on", note=60, velocity=100))
    keys.feed(mido.Message("note_on", note=60, velocity=0))
    backend.opened[VIRTUAL_PORT_NAME].feed(mido.Message("control_change", control=1, value=5))
    assert target.events == [NoteOn(60, 100), NoteOff(60), ControlChange(1, 5)]
    midi.set_channel(9)
    keys.feed(mido.Message("note_on", channel=0, note=62))
    keys.feed(mido.Message("note_on", channel=9, note=36, velocity=120))
    assert target.events[3:] == [NoteOn(36, 120)] and midi.messages == 5
    midi.close()
    assert backend.opened == {}


def test_unplugged_port_reconnects_by_name_on_rescan():
    backend = MemoryBackend(["Keys 20:0"])
    target = Collector()
    midi = MidiInput(target, port_name="Keys 20:0", backend=backend, virtual=False, rescan_s=0)
    midi.start()
    backend.unplug("Keys 20:0")
    midi.rescan()
    assert midi.connected_name is None and "'Keys 20:0' disconnected" in midi.last_error
    midi.rescan()                                                  # still gone: still waiting
    assert midi.connected_name is None
    backend.plug("Keys 24:0")                                      # back, with new ALSA numbers
    midi.rescan()
    assert midi.connected_name == "Keys 24:0" and midi.last_error == ""
    backend.opened["Keys 24:0"].feed(mido.Message("note_on", note=64, velocity=1))
    assert target.events == [NoteOn(64, 1)]
    midi.close()


def test_missing_port_is_reported_and_opened_when_it_appears():
    backend = MemoryBackend(["Other"])
    midi = MidiInput(Collector(), backend=backend, virtual=False, rescan_s=0)
    midi.start()
    assert midi.open("Keys") is False
    assert "'Keys' not found (ports: 'Other')" in midi.last_error
    backend.plug("Keys")
    midi.rescan()
    assert midi.connected_name == "Keys"
    assert midi.open(None) and midi.connected_name is None and midi.port_name is None
    midi.close()


def test_bad_channel_is_rejected():
    with pytest.raises(ValueError, match="0..15"):
        MidiInput(Collector(), channel=16)


# ---------------------------------------------------------------------------- no backend

def test_no_midi_backend_is_reported_and_nothing_breaks(monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "gansynth-no-such-server")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(MidiUnavailable, match="UNIX_JACK"):
        open_backend("UNIX_JACK")
    midi = MidiInput(Collector(), port_name="Keys", api="UNIX_JACK")
    assert midi.start() is False and not midi.available
    assert "no MIDI backend available" in midi.last_error and "on-screen keyboard" in midi.last_error
    assert midi.list_ports() == [] and midi.open("Keys") is False
    midi.rescan()
    midi.close()


# ---------------------------------------------------------------------------- real JACK MIDI

@pytest.fixture
def jack_midi(jack_server):
    return mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)


@pytest.mark.realtime
def test_keyboard_over_jack_plays_unplugs_and_reconnects(jack_midi):
    target = Collector()
    keyboard = jack_midi.open_output("Test Keys", virtual=True)
    midi = MidiInput(target, port_name="Test Keys", api="UNIX_JACK", rescan_s=0.05, virtual=False)
    try:
        assert midi.start() and midi.api == "UNIX_JACK"
        assert midi.connected_name == "RtMidiOut Client:Test Keys"
        keyboard.send(mido.Message("note_on", note=60, velocity=100))
        keyboard.send(mido.Message("note_on", note=60, velocity=0))
        keyboard.send(mido.Message("pitchwheel", pitch=2000))
        assert target.wait_for(3)
        assert target.events == [NoteOn(60, 100), NoteOff(60), PitchBend(2000)], (target.events, midi.status())

        keyboard.close()                                        # unplugged
        assert midi.wait_connected(False, timeout=10)
        assert "disconnected" in midi.last_error
        assert midi._scanner is None     # ports listed through a JACK client never activated, not rtmidi's
        keyboard = jack_midi.open_output("Test Keys", virtual=True)   # plugged back in
        assert midi.wait_connected(True, timeout=10)
        for _ in range(50):          # JACK makes a new connection live at its next cycle
            keyboard.send(mido.Message("control_change", control=64, value=127))
            if target.wait_for(4, timeout=0.1):
                break
        assert target.events[3] == ControlChange(64, 127)
    finally:
        midi.close()
        keyboard.close()


@pytest.mark.realtime
def test_on_jack_a_chosen_port_is_wired_into_the_virtual_port_not_opened_by_rtmidi(jack_server, jack_midi):
    """rtmidi activates a new JACK client holding the GIL, which stalls a running audio callback:
    beside our virtual port a chosen port is a JACK connection into it instead."""
    target = Collector()
    keyboard = jack_midi.open_output("Test Keys", virtual=True)
    midi = MidiInput(target, port_name="Test Keys", api="UNIX_JACK", rescan_s=0.05)
    ours = f"GANSynth:{VIRTUAL_PORT_NAME}"
    try:
        assert midi.start() and midi.connected_name == "RtMidiOut Client:Test Keys"
        assert midi._port is None and midi._patched == ("RtMidiOut Client:Test Keys", ours)
        links = subprocess.run(["jack_lsp", "-s", jack_server.name, "-c"], capture_output=True, text=True).stdout
        assert f"RtMidiOut Client:Test Keys\n   {ours}" in links
        keyboard.send(mido.Message("note_on", note=64, velocity=90))
        assert target.wait_for(1) and target.events == [NoteOn(64, 90)]

        keyboard.close()                                        # unplugged, then back
        assert midi.wait_connected(False, timeout=10)
        keyboard = jack_midi.open_output("Test Keys", virtual=True)
        assert midi.wait_connected(True, timeout=10) and midi._port is None
        for _ in range(50):          # JACK makes a new connection live at its next cycle
            keyboard.send(mido.Message("note_off", note=64))
            if target.wait_for(2, timeout=0.1):
                break
        assert target.events[1] == NoteOff(64)
        midi.open(None)                                         # "none": the wire is taken down
        links = subprocess.run(["jack_lsp", "-s", jack_server.name, "-c"], capture_output=True, text=True).stdout
        assert f"RtMidiOut Client:Test Keys\n   {ours}" not in links
    finally:
        midi.close()
        keyboard.close()


@pytest.mark.realtime
def test_other_programs_play_through_the_virtual_port(jack_server, jack_midi):
    target = Collector()
    midi = MidiInput(target, api="UNIX_JACK", rescan_s=0, channel=1)
    daw = jack_midi.open_output("Test DAW", virtual=True)
    try:
        assert midi.start()
        ours = f"GANSynth:{VIRTUAL_PORT_NAME}"
        assert ours in jack_server.ports()
        assert "RtMidiOut Client:Test DAW" in midi.list_ports()
        assert all(VIRTUAL_PORT_NAME not in name for name in midi.list_ports())
        jack_server.connect("RtMidiOut Client:Test DAW", ours)     # as a patchbay would
        daw.send(mido.Message("note_on", channel=0, note=50))       # other channel: ignored
        daw.send(mido.Message("note_on", channel=1, note=72, velocity=90))
        assert target.wait_for(1) and target.events == [NoteOn(72, 90)]
    finally:
        midi.close()
        daw.close()
