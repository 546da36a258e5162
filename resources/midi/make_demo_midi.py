"""Write the demo MIDI files in this directory from notes entered by hand.

    python resources/midi/make_demo_midi.py            # rewrites both files next to this script

- `bach_prelude_c_bwv846.mid`: the opening ten bars of J. S. Bach's Prelude in
  C major, BWV 846 (Well-Tempered Clavier I; the composition is public domain).
  Type 1: a conductor track (tempo, with a ritardando in the last bar), the two
  held lower voices, and the sixteenth-note upper voice.
- `arpeggio.mid`: an eight-bar A minor - F - C - G arpeggio riff over a bass
  line. Type 0 (a single track).

The notes below are ours; nothing is converted from another file.
"""
from __future__ import annotations

from pathlib import Path

import mido

TICKS_PER_BEAT = 480
SIXTEENTH = TICKS_PER_BEAT // 4
HERE = Path(__file__).resolve().parent

NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def midi_pitch(name: str) -> int:
    """'C4' -> 60, 'F#4' -> 66, 'Bb3' -> 58 (scientific pitch notation, C4 = middle C)."""
    letter, rest = name[0], name[1:]
    shift = 0
    while rest and rest[0] in "#b":
        shift += 1 if rest[0] == "#" else -1
        rest = rest[1:]
    return 12 * (int(rest) + 1) + NAMES[letter] + shift


# BWV 846, bars 1-10. Each bar is one five-note chord played as the figure
# a b c d e c d e, twice: `a` (lowest) is held for a half note, `b` for a
# dotted eighth tied to a quarter, c d e are sixteenths.
BACH_BARS = [
    ("C",       ["C4", "E4", "G4", "C5", "E5"]),
    ("Dm7/C",   ["C4", "D4", "A4", "D5", "F5"]),
    ("G7/B",    ["B3", "D4", "G4", "D5", "F5"]),
    ("C",       ["C4", "E4", "G4", "C5", "E5"]),
    ("Am/C",    ["C4", "E4", "A4", "E5", "A5"]),
    ("D7/C",    ["C4", "D4", "F#4", "A4", "D5"]),
    ("G/B",     ["B3", "D4", "G4", "D5", "G5"]),
    ("Cmaj7/B", ["B3", "C4", "E4", "G4", "C5"]),
    ("Am7",     ["A3", "C4", "E4", "G4", "C5"]),
    ("D7/A",    ["D3", "A3", "D4", "F#4", "C5"]),
]
BACH_TEMPO_BPM = 66


def _events_to_track(events, name: str) -> mido.MidiTrack:
    """events: [(tick, order, message)] in absolute ticks -> a track with delta times."""
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def _note(events, start, length, pitch, velocity, channel=0):
    # note-offs sort before note-ons at the same tick (order 0 vs 1).
    events.append((start, 1, mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)))
    events.append((start + length, 0, mido.Message("note_off", note=pitch, velocity=0, channel=channel)))


def bach_prelude() -> mido.MidiFile:
    lower, upper = [], []
    bar_ticks = 16 * SIXTEENTH
    for bar, (_, names) in enumerate(BACH_BARS):
        a, b, c, d, e = (midi_pitch(n) for n in names)
        for half in range(2):
            t0 = bar * bar_ticks + half * 8 * SIXTEENTH
            accent = 8 if half == 0 else 0
            _note(lower, t0, 8 * SIXTEENTH, a, 72 + accent)
            _note(lower, t0 + SIXTEENTH, 7 * SIXTEENTH, b, 64 + accent)
            for i, pitch in enumerate((c, d, e, c, d, e)):
                _note(upper, t0 + (2 + i) * SIXTEENTH, SIXTEENTH, pitch, 60 + (6 if i % 3 == 0 else 0))
    last_bar = (len(BACH_BARS) - 1) * bar_ticks
    conductor = [
        (0, 0, mido.MetaMessage("time_signature", numerator=4, denominator=4)),
        (0, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(BACH_TEMPO_BPM))),
        # Ritardando over the last bar: slower each beat.
        *[(last_bar + beat * TICKS_PER_BEAT, 0,
           mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(BACH_TEMPO_BPM - 6 * (beat + 1))))
          for beat in range(4)],
    ]
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(_events_to_track(conductor, "Prelude in C major, BWV 846 (J. S. Bach)"))
    midi.tracks.append(_events_to_track(lower, "lower voices"))
    midi.tracks.append(_events_to_track(upper, "upper voice"))
    return midi


# Arpeggio riff: (chord tones low to high, bass note), one bar each; the four bars play twice.
RIFF_CHORDS = [
    (["A3", "C4", "E4", "A4"], "A2"),
    (["F3", "A3", "C4", "F4"], "F2"),
    (["C4", "E4", "G4", "C5"], "C3"),
    (["G3", "B3", "D4", "G4"], "G2"),
]
RIFF_TEMPO_BPM = 112


def arpeggio_riff() -> mido.MidiFile:
    events = []
    bar_ticks = 16 * SIXTEENTH
    up_down = [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 3, 2, 1, 2, 3]
    for rep in range(2):
        for i, (names, bass) in enumerate(RIFF_CHORDS):
            t0 = (rep * len(RIFF_CHORDS) + i) * bar_ticks
            tones = [midi_pitch(n) for n in names]
            _note(events, t0, bar_ticks - SIXTEENTH, midi_pitch(bass), 84, channel=1)
            for step, idx in enumerate(up_down):
                velocity = 90 if step % 4 == 0 else 68
                _note(events, t0 + step * SIXTEENTH, SIXTEENTH * 3 // 4, tones[idx], velocity)
    events.append((0, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(RIFF_TEMPO_BPM))))
    midi = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(_events_to_track(events, "arpeggio riff"))
    return midi


def main(out_dir: Path = HERE) -> list[Path]:
    paths = []
    for name, midi in (("bach_prelude_c_bwv846.mid", bach_prelude()), ("arpeggio.mid", arpeggio_riff())):
        path = Path(out_dir) / name
        midi.save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in main():
        print(p)
