"""engine.songs.midifile: real MIDI files written with mido, read back through the module."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import mido
import numpy as np
import pytest

from engine.songs.midifile import MidiFileError, read_midi

ROOT = Path(__file__).resolve().parent.parent
MIDI_DIR = ROOT / "resources" / "midi"


def write_midi(path, tracks, ticks_per_beat=480, type_=1):
    """tracks: lists of (delta_ticks, message) -> a saved MIDI file."""
    midi = mido.MidiFile(type=type_, ticks_per_beat=ticks_per_beat)
    for events in tracks:
        track = mido.MidiTrack()
        for delta, msg in events:
            track.append(msg.copy(time=delta))
        midi.tracks.append(track)
    midi.save(path)
    return path


def on(note, velocity=100, channel=0):
    return mido.Message("note_on", note=note, velocity=velocity, channel=channel)


def off(note, channel=0):
    return mido.Message("note_off", note=note, channel=channel)


def tempo(bpm):
    return mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm))


def test_tempo_changes_in_another_track_apply_to_all_tracks(tmp_path):
    # Tempo 120 (0.5 s/beat) for 2 beats, then 60 (1 s/beat), set in the LAST track.
    notes = [(0, on(60, 90)), (480, off(60)), (960, on(62, 40)), (480, off(62))]
    conductor = [(0, tempo(120)), (960, tempo(60))]
    path = write_midi(tmp_path / "t.mid", [[], notes, conductor])
    got = read_midi(path)
    np.testing.assert_allclose(got.start_s, [0.0, 2.0])      # beat 3 = 1.0 s + 1 beat at 60 bpm
    np.testing.assert_allclose(got.end_s, [0.5, 3.0])
    assert got.pitch.tolist() == [60, 62]
    assert got.velocity.tolist() == [90, 40]
    assert got.num_tracks == 3


def test_tempo_scale_plays_faster(tmp_path):
    path = write_midi(tmp_path / "t.mid", [[(0, on(60)), (960, off(60))]])
    assert read_midi(path, tempo_scale=2.0).end_s[0] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        read_midi(path, tempo_scale=0)


def test_overlapping_identical_notes_pair_first_in_first_out(tmp_path):
    events = [(0, on(64, 100)), (480, on(64, 50)), (480, off(64)), (480, off(64))]
    got = read_midi(write_midi(tmp_path / "o.mid", [events]))
    np.testing.assert_allclose(got.start_s, [0.0, 0.5])
    np.testing.assert_allclose(got.end_s, [1.0, 1.5])
    assert got.velocity.tolist() == [100, 50]


def test_note_on_velocity_zero_is_note_off_and_channels_pair_separately(tmp_path):
    events = [(0, on(60, 80, channel=0)), (0, on(60, 70, channel=1)),
              (480, on(60, 0, channel=1)), (480, off(60, channel=0))]
    got = read_midi(write_midi(tmp_path / "c.mid", [events]))
    assert sorted(zip(got.velocity.tolist(), got.end_s.tolist())) == [(70, 0.5), (80, 1.0)]


def test_zero_length_unterminated_and_orphan_notes_are_counted(tmp_path):
    events = [(0, on(60)), (0, off(60)),          # zero length
              (0, off(70)),                       # note-off without a note-on
              (480, on(62)), (480, on(67)), (480, off(67))]   # 62 never ends
    got = read_midi(write_midi(tmp_path / "z.mid", [events]))
    assert len(got) == 3
    assert got.zero_length == 1
    assert got.unterminated == 1
    assert got.orphan_note_offs == 1
    held = got.pitch.tolist().index(62)
    assert got.end_s[held] == pytest.approx(1.5)  # ends at its track's end
    text = got.summary()
    assert "1 zero-length note(s)" in text and "without a note-off" in text and "ignored 1" in text


def test_out_of_range_notes_are_dropped_and_reported(tmp_path):
    events = [(0, on(12)), (10, off(12)), (0, on(60)), (10, off(60)), (0, on(100)), (10, off(100))]
    got = read_midi(write_midi(tmp_path / "r.mid", [events]), pitch_range=(24, 84))
    assert got.pitch.tolist() == [60]
    assert got.dropped_out_of_range == 2
    assert "dropped 2 note(s) outside the model's pitch range 24..84" in got.summary()


def test_no_notes_in_range_is_a_clear_error(tmp_path):
    path = write_midi(tmp_path / "low.mid", [[(0, on(10)), (10, off(10)), (0, on(90)), (10, off(90))]])
    with pytest.raises(MidiFileError, match=r"low\.mid: no notes in the model's pitch range 24\.\.84 "
                                            r"\(2 notes, pitches 10\.\.90\)"):
        read_midi(path, pitch_range=(24, 84))


def test_file_without_notes_is_a_clear_error(tmp_path):
    path = write_midi(tmp_path / "empty.mid", [[(0, tempo(100))]])
    with pytest.raises(MidiFileError, match=r"empty\.mid: the file contains no notes"):
        read_midi(path)


def test_corrupt_file_names_the_file(tmp_path):
    good = write_midi(tmp_path / "good.mid", [[(0, on(60)), (480, off(60))] * 20]).read_bytes()
    bad = tmp_path / "truncated.mid"
    bad.write_bytes(good[:len(good) // 2])
    with pytest.raises(MidiFileError, match=r"truncated\.mid: corrupt MIDI file"):
        read_midi(bad)
    garbage = tmp_path / "garbage.mid"
    garbage.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x00\x04\xff\xff\xff\xff")
    with pytest.raises(MidiFileError, match=r"garbage\.mid: corrupt MIDI file"):
        read_midi(garbage)


def test_non_midi_and_missing_files(tmp_path):
    text = tmp_path / "notes.mid"
    text.write_text("C4 E4 G4\n")
    with pytest.raises(MidiFileError, match=r"notes\.mid: not a MIDI file"):
        read_midi(text)
    with pytest.raises(MidiFileError, match=r"nothing\.mid: no such file"):
        read_midi(tmp_path / "nothing.mid")
    with pytest.raises(MidiFileError, match="is a directory"):
        read_midi(tmp_path)


def test_smpte_division(tmp_path):
    # 25 frames/s x 40 ticks/frame = 1000 ticks per second, whatever the tempo says.
    # Header bytes 0xE7 0x28: high byte -25 in two's complement, low byte 40; read as a signed short.
    division = ((256 - 25) << 8 | 40) - 0x10000
    path = write_midi(tmp_path / "smpte.mid", [[(0, tempo(60)), (500, on(60)), (250, off(60))]],
                      ticks_per_beat=division)
    got = read_midi(path)
    assert got.start_s[0] == pytest.approx(0.5)
    assert got.end_s[0] == pytest.approx(0.75)


def test_type2_tracks_play_one_after_another(tmp_path):
    first = [(0, tempo(60)), (0, on(60)), (480, off(60))]    # 1 s at 60 bpm
    second = [(0, on(62)), (480, off(62))]                   # default 120 bpm: 0.5 s
    got = read_midi(write_midi(tmp_path / "t2.mid", [first, second], type_=2))
    np.testing.assert_allclose(got.start_s, [0.0, 1.0])
    np.testing.assert_allclose(got.end_s, [1.0, 1.5])


def _demo_module():
    spec = importlib.util.spec_from_file_location("make_demo_midi", MIDI_DIR / "make_demo_midi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_files_are_what_the_script_writes(tmp_path):
    demo = _demo_module()
    for path in demo.main(tmp_path):
        assert path.read_bytes() == (MIDI_DIR / path.name).read_bytes(), path.name


def test_bach_prelude_bars_are_the_entered_chords():
    demo = _demo_module()
    assert demo.midi_pitch("C4") == 60 and demo.midi_pitch("F#4") == 66 and demo.midi_pitch("B3") == 59
    notes = read_midi(MIDI_DIR / "bach_prelude_c_bwv846.mid", pitch_range=(24, 84))
    assert len(notes) == 16 * len(demo.BACH_BARS)
    # Bar 1 in order of onset: C4 E4 G4 C5 E5 G4 C5 E5, twice.
    assert notes.pitch[:16].tolist() == [60, 64, 67, 72, 76, 67, 72, 76] * 2
    bar_s = 4 * 60.0 / demo.BACH_TEMPO_BPM
    bars = np.floor(notes.start_s / bar_s + 1e-6).astype(int)
    expected = {1: "C4 E4 G4 C5 E5", 2: "C4 D4 A4 D5 F5", 3: "B3 D4 G4 D5 F5", 4: "C4 E4 G4 C5 E5",
                5: "C4 E4 A4 E5 A5", 6: "C4 D4 F#4 A4 D5", 7: "B3 D4 G4 D5 G5", 8: "B3 C4 E4 G4 C5"}
    for bar, names in expected.items():
        pitches = sorted(set(notes.pitch[bars == bar - 1].tolist()))
        assert pitches == [demo.midi_pitch(n) for n in names.split()], f"bar {bar}"


def test_arpeggio_demo_is_a_single_track_riff():
    notes = read_midi(MIDI_DIR / "arpeggio.mid", pitch_range=(24, 84))
    assert notes.num_tracks == 1
    assert len(notes) == 8 * 17          # 8 bars of 16 sixteenths + a bass note
    assert notes.dropped_out_of_range == 0 and notes.zero_length == 0
    assert set(notes.velocity.tolist()) == {68, 84, 90}


def _raw_midi(path, track_body: bytes):
    """A type-0 file written byte by byte (mido refuses to write what this test needs)."""
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") \
        + (480).to_bytes(2, "big")
    track = track_body + b"\x00\xff\x2f\x00"  # end of track
    path.write_bytes(header + b"MTrk" + len(track).to_bytes(4, "big") + track)
    return path


def test_a_five_byte_delta_time_is_corruption_not_a_pause(tmp_path):
    """Found by a corpus of malformed files: mido reads the 5-byte number, and a renderer
    then tried to allocate terabytes."""
    body = b"\x00\x90\x3c\x64" + b"\x8f\xff\xff\xff\x7f" + b"\x80\x3c\x00"
    path = _raw_midi(tmp_path / "vlq.mid", body)
    with pytest.raises(MidiFileError, match=r"vlq\.mid: corrupt MIDI file \(track 1, event 1: a delta "
                                            r"time of 4,294,967,295 ticks"):
        read_midi(path)
    ok = _raw_midi(tmp_path / "ok.mid", b"\x00\x90\x3c\x64" + b"\xff\xff\xff\x7f" + b"\x80\x3c\x00")
    assert read_midi(ok).end_s[0] > 0  # the 4-byte maximum is a (very long) legal pause
