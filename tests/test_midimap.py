"""MIDI learn: the mapping table's matching (CC, 14-bit pairs, NRPN, notes), mapping files,
and a learned knob driving a real Instrument's pad through a real JACK MIDI port."""
from __future__ import annotations

import json

import mido
import pytest

from engine.devices.midi_input import MidiInput
from engine.devices.midimap import (TARGETS, Action, Binding, MappingError, MidiMap, bindings_from_list,
                                    knob_to_value, load_mapping, save_mapping)
from engine.instrument.events import ControlChange, NoteOn, PadMove, Panic, SetParam
from tests.test_midi_input import Collector

cc = lambda control, value, channel=0: mido.Message("control_change", control=control,  # noqa: E731
                                                     value=value, channel=channel)


class Posted(Collector):
    """Where the map posts (the instrument's side); optionally forwards to a real instrument."""

    def __init__(self, forward=None):
        super().__init__()
        self.forward = forward

    def post(self, event):
        if self.forward is not None:
            self.forward.post(event)
        super().post(event)


def test_learn_a_cc_then_it_moves_the_pad_and_is_not_played():
    out = Posted()
    mapping = MidiMap(pad=lambda: (0.25, 0.75))
    mapping.learn("pad_x")
    assert mapping.handle(cc(20, 5, channel=2), out.post) and mapping.learned.is_set()
    assert mapping.binding_for("pad_x") == Binding("pad_x", "cc", 20, 2) and out.events == []
    assert mapping.handle(cc(20, 127, channel=2), out.post)
    assert out.events == [PadMove(1.0, 0.75)]
    assert not mapping.handle(cc(20, 64, channel=3), out.post)        # another channel: not ours
    assert not mapping.handle(cc(7, 100), out.post)                   # unmapped: played as before
    mapping.forget("pad_x")
    assert not mapping.handle(cc(20, 1, channel=2), out.post) and len(out.events) == 1


def test_fourteen_bit_pairs_and_nrpn():
    out = Posted()
    mapping = MidiMap([Binding("pad_y", "cc", 16, None), Binding("sustain", "nrpn", 300, 0)],
                      pad=lambda: (0.5, 0.5))
    mapping.handle(cc(16, 64), out.post)                               # MSB alone: 7-bit value
    assert out.events[-1] == PadMove(0.5, 64 / 127)
    assert mapping.handle(cc(48, 0), out.post)                         # its LSB: 14-bit from now on
    assert out.events[-1] == PadMove(0.5, 64 * 128 / 16383)
    n = len(out.events)
    assert mapping.handle(cc(16, 127), out.post) and len(out.events) == n   # MSB waits for the LSB
    mapping.handle(cc(48, 127), out.post)
    assert out.events[-1] == PadMove(0.5, 1.0)
    # NRPN 300 = MSB 2, LSB 44; data entry MSB then LSB
    for control, value in ((99, 2), (98, 44), (6, 127)):
        mapping.handle(cc(control, value), out.post)
    assert out.events[-1] == SetParam("sustain", 1.0)
    mapping.handle(cc(38, 0), out.post)
    assert out.events[-1] == SetParam("sustain", pytest.approx(127 * 128 / 16383))
    mapping.handle(cc(101, 0), out.post)                               # an RPN takes data entry back
    assert not mapping.handle(cc(6, 2), out.post)


def test_learn_nrpn_and_notes_as_buttons():
    out = Posted()
    mapping = MidiMap()
    mapping.learn("velocity_curve")
    for control, value in ((99, 0), (98, 7), (6, 127)):
        mapping.handle(cc(control, value), out.post)
    assert mapping.binding_for("velocity_curve") == Binding("velocity_curve", "nrpn", 7, 0)
    mapping.learn("panic")
    assert mapping.handle(mido.Message("note_on", note=36, velocity=90, channel=9), out.post)
    mapping.learn("record")
    mapping.handle(cc(80, 127), out.post)
    mapping.handle(mido.Message("note_on", note=36, velocity=90, channel=9), out.post)
    assert mapping.handle(mido.Message("note_off", note=36, channel=9), out.post)   # swallowed too
    assert out.events == [Panic()]
    mapping.handle(cc(80, 0), out.post)
    mapping.handle(cc(80, 127), out.post)          # a button: each press (rising edge) toggles once
    mapping.handle(cc(80, 120), out.post)
    assert mapping.actions.take() == [Action("record", 1.0)]
    mapping.set_bindings([Binding("corner_b", "cc", 21)])
    mapping.handle(cc(21, 127, channel=5), out.post)
    assert mapping.actions.take() == [Action("corner_b", 1.0)]


def test_knobs_cover_each_setting_range():
    for name, role in TARGETS.items():
        if role == "param":
            lo, hi = knob_to_value(name, 0.0), knob_to_value(name, 1.0)
            assert SetParam(name, lo) and (lo, hi) == pytest.approx(__import__(
                "engine.instrument.params", fromlist=["PARAMS"]).PARAMS[name][1:])


def test_mapping_files_round_trip_and_bad_ones_name_the_file(tmp_path):
    bindings = (Binding("pad_x", "cc", 1, 0), Binding("panic", "note", 36, None),
                Binding("attack_s", "nrpn", 16383, 15))
    path = save_mapping(tmp_path / "map.json", bindings)
    assert load_mapping(path) == bindings
    data = json.loads(path.read_text())
    assert data["bindings"][0]["channel"] == 1                       # channels as devices show them
    for bad, says in (({"format": "x"}, "not a MIDI mapping"),
                      ({**data, "bindings": [{"target": "rm -rf", "kind": "cc", "number": 1}]},
                       r"bindings\[0\]: unknown control"),
                      ({**data, "bindings": [{"target": "pad_x", "kind": "cc", "number": 128}]}, "0..127"),
                      ({**data, "bindings": [{"target": "pad_x", "kind": "cc", "number": 1,
                                              "channel": 0}]}, "channel must be 1..16"),
                      ({**data, "bindings": {"a": 1}}, "must be a list")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(MappingError, match=says) as info:
            load_mapping(tmp_path / "bad.json")
        assert "bad.json" in str(info.value)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(MappingError, match="broken.json"):
        load_mapping(tmp_path / "broken.json")
    with pytest.raises(MappingError, match="preset.json"):
        bindings_from_list([{"target": "pad_x"}], "preset.json")


@pytest.mark.realtime
def test_a_knob_over_jack_learned_then_moves_the_instruments_pad(jack_server, tiny_model_dir):
    from engine.gansynth.synth import load_synth
    from engine.instrument.instrument import Instrument

    inst = Instrument(load_synth(tiny_model_dir), sample_rate=48000, cache_mb=16)
    inst.set_pad(0.5, 0.5)
    out = Posted(forward=inst)
    mapping = MidiMap(pad=lambda: inst.timbre.pad)
    backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
    knobs = backend.open_output("Test Knobs", virtual=True)
    midi = MidiInput(out, port_name="Test Knobs", api="UNIX_JACK", rescan_s=0, virtual=False,
                     mapping=mapping)
    try:
        assert midi.start() and midi.connected_name == "RtMidiOut Client:Test Knobs"
        mapping.learn("pad_x")
        for _ in range(50):          # JACK makes a new connection live at its next cycle
            knobs.send(cc(20, 10, channel=1))
            if mapping.learned.wait(0.1):
                break
        assert mapping.binding_for("pad_x") == Binding("pad_x", "cc", 20, 1)
        mapping.learn("pad_y")
        knobs.send(cc(21, 3, channel=1))
        assert mapping.learned.wait(5)
        knobs.send(cc(20, 127, channel=1))                  # 14-bit pair: MSB then LSB
        knobs.send(cc(52, 127, channel=1))
        knobs.send(cc(21, 0, channel=1))
        knobs.send(cc(7, 90, channel=1))                    # unmapped: volume, as before
        assert out.wait_for(4), (out.events, midi.status())
        assert out.events == [PadMove(127 / 127, 0.5), PadMove(1.0, 0.5), PadMove(1.0, 0.0),
                              ControlChange(7, 90)]
        assert inst.timbre.pad == (1.0, 0.0)
        knobs.send(mido.Message("note_on", note=60, velocity=99, channel=1))
        assert out.wait_for(5) and out.events[-1] == NoteOn(60, 99)
    finally:
        midi.close()
        knobs.close()
