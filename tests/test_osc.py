"""OSC control over a real UDP socket on 127.0.0.1: every address, bad packets, floods."""
from __future__ import annotations

import socket
import threading

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from engine.devices.midimap import Action
from engine.devices.osc import ADDRESSES, OscServer, address_help
from engine.instrument.events import NoteOff, NoteOn, PadMove, Panic, SetParam
from engine.instrument.params import PARAMS


class Posted:
    def __init__(self, forward=None):
        self.events = []
        self.forward = forward

    def post(self, event):
        if self.forward is not None:
            self.forward.post(event)     # the real instrument validates too
        self.events.append(event)


@pytest.fixture(scope="module")
def instrument(tiny_model_dir):
    from engine.gansynth.synth import load_synth
    from engine.instrument.instrument import Instrument

    return Instrument(load_synth(tiny_model_dir), sample_rate=48000, cache_mb=16)


@pytest.fixture
def server(instrument):
    out = Posted(forward=instrument)
    srv = OscServer(out, port=0, pad=lambda: instrument.timbre.pad).start()   # port 0: a free one
    srv.out = out
    yield srv
    srv.close()


def example_value(name):
    spec = PARAMS[name]
    if len(spec) == 2:
        return spec[1][-1]
    return spec[2]


def test_every_address_over_udp(server, instrument):
    assert server.host == "127.0.0.1" and server.port > 0
    client = SimpleUDPClient("127.0.0.1", server.port)
    instrument.set_pad(0.5, 0.5)
    sent = [("/note/on", [60, 90]), ("/note/on", [61]), ("/note/on", [62.0, 0]), ("/on", [64, 20]),
            ("/note/off", [60]), ("/off", [64]), ("/pad", [0.25, 0.75]), ("/pad/x", 0.5),
            ("/pad/y", 1.0), ("/volume", 0.25), ("/panic", []), ("/preset/load", 1),
            ("/preset/load", "/tmp/mine.json")]
    sent += [(f"/param/{name}", example_value(name)) for name in PARAMS]
    for address, args in sent:
        client.send_message(address, args)
    assert server.wait_counted(len(sent)), server.stats()
    assert server.ignored == 0, server.stats()
    assert server.out.events[:10] == [
        NoteOn(60, 90), NoteOn(61, 100), NoteOff(62), NoteOn(64, 20), NoteOff(60), NoteOff(64),
        PadMove(0.25, 0.75), PadMove(0.5, 0.75), PadMove(0.5, 1.0), SetParam("volume", 0.25)]
    assert server.out.events[10] == Panic()
    params = {e.name: e.value for e in server.out.events[11:]}
    assert params == {name: example_value(name) for name in PARAMS}
    assert server.actions.take() == [Action("preset", 1), Action("preset", "/tmp/mine.json")]
    assert instrument.settings.bend_range == 24.0 and instrument.timbre.pad == (0.5, 1.0)
    listed = {a for a, _, _ in ADDRESSES}
    assert {a for a, _ in sent} == listed and all(a in address_help() for a in listed)


def test_bad_messages_are_ignored_counted_and_said(server):
    client = SimpleUDPClient("127.0.0.1", server.port)
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bad = [("/nope", [1]), ("/note/on", ["sixty"]), ("/note/on", [128]), ("/note/on", [60.5]),
           ("/note/on", []), ("/pad", [0.5]), ("/pad", [1.5, 0.2]), ("/pad/x", [True]),
           ("/param/attack_s", [99.0]), ("/param/mod_axis", ["z"]), ("/param/__class__", [1]),
           ("/param/spherical", [0.5]), ("/preset/load", [b"blob"]), ("/panic", [1]),
           ("/note/on", [60, 100, 3])]
    for address, args in bad:
        client.send_message(address, args)
    packets = [b"garbage", b"", b"/note/on\x00\x00\x00\x00,i\x00\x00", b"#bundle\x00" + b"\xff" * 20]
    for packet in packets:
        raw.sendto(packet, ("127.0.0.1", server.port))
    client.send_message("/note/on", [72, 64])           # still listening after all that
    assert server.wait_counted(len(bad) + len(packets) + 1), server.stats()
    stats = server.stats()
    assert stats["handled"] == 1 and server.out.events == [NoteOn(72, 64)]
    assert stats["ignored"] == len(bad) + len(packets)
    assert stats["reasons"] == {"unknown address": 2, "bad arguments": len(bad) - 2,
                                "not OSC": len(packets)}
    assert "127.0.0.1" in stats["last_ignored"]
    raw.close()


def test_a_flood_is_dropped_and_counted_then_play_goes_on(instrument):
    now = [0.0]
    out = Posted()
    srv = OscServer(out, port=0, pad=lambda: (0.5, 0.5), max_per_s=20, clock=lambda: now[0]).start()
    try:
        client = SimpleUDPClient("127.0.0.1", srv.port)
        for i in range(60):                       # 60 at one instant: the first 20 pass
            client.send_message("/note/on", [i, 1])
        assert srv.wait_counted(60), srv.stats()
        assert srv.handled == 20 and srv.flood_dropped == 40
        now[0] += 1.0                             # a second later the budget is back
        client.send_message("/pad", [0.125, 0.375])
        assert srv.wait_counted(61) and out.events[-1] == PadMove(0.125, 0.375)
    finally:
        srv.close()


def test_a_taken_port_is_a_clear_error(server):
    with pytest.raises(OSError, match=f"127.0.0.1:{server.port}"):
        OscServer(Posted(), port=server.port).start()
    with pytest.raises(ValueError, match="0..65535"):
        OscServer(Posted(), port=70000)


def test_play_prints_the_osc_help_and_refuses_a_bad_mapping_file(tmp_path, capsys):
    import argparse

    from engine.commands import play

    parser = argparse.ArgumentParser()
    play.add_arguments(parser)
    assert play.run(parser.parse_args(["--osc-port", "9000", "--osc-help"])) == 0
    assert "/pad/x" in capsys.readouterr().out
    (tmp_path / "map.json").write_text('{"format": "gansynth-midi-map", "version": 2}')
    assert play.run(parser.parse_args(["--midi-map", str(tmp_path / "map.json")])) == 1
    assert "map.json" in capsys.readouterr().err


def test_the_bundle_form_works_too(server):
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder

    bundle = OscBundleBuilder(IMMEDIATELY)
    for pitch in (48, 52):
        msg = OscMessageBuilder("/note/on")
        msg.add_arg(pitch)
        bundle.add_content(msg.build())
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.sendto(bundle.build().dgram, ("127.0.0.1", server.port))
    raw.close()
    assert server.wait_counted(2) and server.out.events == [NoteOn(48, 100), NoteOn(52, 100)]
