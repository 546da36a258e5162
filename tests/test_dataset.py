"""make-dataset (real FluidSynth on TimGM6mb) and the NSynth-format reader, filters and split."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from engine.commands.cli import main
from engine.training.nsynth import (NSYNTH_KEYS, DatasetError, filter_notes, instrument_ids,
                                    load_wave, make_record, read_datasets, read_examples, split_by_instrument,
                                    write_examples)
from engine.training.soundfont import gm_family, instrument_name, parse_int_list
from tests.conftest import TINY_NSYNTH_PITCHES, TINY_NSYNTH_PROGRAMS, timgm6mb_path

NAME_RE = re.compile(r"^(?P<family>[a-z_]+)_(?P<source>acoustic|electronic|synthetic)_(?P<program>\d{3})"
                     r"-(?P<pitch>\d{3})-(?P<velocity>\d{3})$")


def test_make_dataset_writes_nsynth_json_and_wavs(tiny_nsynth_dir):
    examples = json.loads((tiny_nsynth_dir / "examples.json").read_text())
    assert len(examples) == len(TINY_NSYNTH_PROGRAMS) * len(TINY_NSYNTH_PITCHES) - 1
    for key, rec in examples.items():
        assert set(rec) == set(NSYNTH_KEYS)
        m = NAME_RE.match(key)
        assert m and rec["note_str"] == key
        assert int(m["pitch"]) == rec["pitch"] and int(m["velocity"]) == rec["velocity"] == 100
        assert (m["family"], m["source"]) == gm_family(int(m["program"]))
        assert rec["instrument_str"] == instrument_name(int(m["program"]))
        assert rec["instrument_family_str"] == m["family"] and rec["sample_rate"] == 16000
        assert len(rec["qualities"]) == 10
        info = sf.info(tiny_nsynth_dir / "audio" / f"{key}.wav")
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 64000)
    assert examples["keyboard_acoustic_000-060-100"]["instrument_family_str"] == "keyboard"
    assert examples["mallet_acoustic_011-060-100"]["instrument_family_str"] == "mallet"
    assert examples["string_acoustic_040-060-100"]["instrument_family_str"] == "string"
    # The oboe has no sample at MIDI 24 in TimGM6mb: skipped and counted, no WAV.
    assert "reed_acoustic_068-024-100" not in examples
    assert not (tiny_nsynth_dir / "audio" / "reed_acoustic_068-024-100.wav").exists()


def test_renders_are_held_then_released_without_leaking_tails(tiny_nsynth_dir):
    for note in read_examples(tiny_nsynth_dir):
        wave = load_wave(note.path)
        assert abs(wave[0]) < 1e-4, f"{note.note_str} starts with the previous note's tail"
        assert np.abs(wave).max() > 1e-3
    # A sustained organ-like voice: violin sounds through the held part and stops after release.
    violin = load_wave(tiny_nsynth_dir / "audio" / "string_acoustic_040-060-100.wav")
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    assert rms(violin[40000:47000]) > 30 * rms(violin[60000:]) + 1e-6


def test_parallel_jobs_render_the_same_dataset(tiny_nsynth_dir, tmp_path):
    from engine.training.soundfont import render_dataset

    summary = render_dataset(timgm6mb_path(), tmp_path, list(TINY_NSYNTH_PROGRAMS), list(TINY_NSYNTH_PITCHES),
                             [100], progress=False, jobs=3)
    assert summary.written == len(read_examples(tiny_nsynth_dir))
    # examples.json is the same records, ids included, as one process writes.
    assert (json.loads((tmp_path / "examples.json").read_text())
            == json.loads((tiny_nsynth_dir / "examples.json").read_text()))
    for note in read_examples(tiny_nsynth_dir):  # a program renders the same whatever came before it
        assert np.array_equal(load_wave(note.path), load_wave(tmp_path / "audio" / note.path.name)), note.note_str


def test_make_dataset_cli_counts_silent_and_clipped(tmp_path, capsys):
    out = tmp_path / "d"
    sf2 = str(timgm6mb_path())
    assert main(["make-dataset", "--soundfont", sf2, "--programs", "68", "--pitches", "24,60",
                 "--velocities", "100", "-o", str(out), "--no-progress"]) == 0
    assert "wrote 1 notes; skipped 1 silent, 0 clipped" in capsys.readouterr().out
    info = json.loads((out / "render.json").read_text())
    assert info["skipped_silent"] == ["reed_acoustic_068-024-100"] and info["preset_names"]["68"]
    # Refuses to replace a dataset unless forced; a huge gain clips every note.
    assert main(["make-dataset", "--soundfont", sf2, "--programs", "0", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["make-dataset", "--soundfont", sf2, "--programs", "0", "--pitches", "60",
                 "--velocities", "127", "--gain", "10", "-o", str(out), "--force", "--no-progress"]) == 1
    assert "skipped 0 silent, 1 clipped" in capsys.readouterr().out
    assert json.loads((out / "examples.json").read_text()) == {}


def test_make_dataset_bad_input_names_the_problem(tmp_path, capsys):
    missing = tmp_path / "nope.sf2"
    assert main(["make-dataset", "--soundfont", str(missing), "-o", str(tmp_path / "o")]) == 1
    assert str(missing) in capsys.readouterr().err
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"not a soundfont")
    assert main(["make-dataset", "--soundfont", str(junk), "-o", str(tmp_path / "o")]) == 1
    assert str(junk) in capsys.readouterr().err
    assert main(["make-dataset", "--soundfont", str(junk), "--programs", "0,200", "-o", "x"]) == 2
    assert "program" in capsys.readouterr().err


def test_parse_int_list_and_gm_families():
    assert parse_int_list("0,1,24-26", 0, 127, "program") == [0, 1, 24, 25, 26]
    with pytest.raises(ValueError):
        parse_int_list("5-3", 0, 127, "program")
    with pytest.raises(ValueError):
        parse_int_list("a", 0, 127, "program")
    expected = {0: "keyboard", 8: "mallet", 16: "organ", 24: "guitar", 32: "bass", 40: "string",
                48: "string", 52: "vocal", 56: "brass", 64: "reed", 72: "flute", 80: "synth_lead"}
    assert {p: gm_family(p)[0] for p in expected} == expected
    assert gm_family(81)[1] == "synthetic" and gm_family(73)[1] == "acoustic"


# ----------------------------------------------------------------------------- reader

def _fake_dataset(path):
    """examples.json only (no WAVs): 6 instruments over sources, families, pitches, velocities."""
    specs = [("keyboard", "acoustic", 0), ("string", "acoustic", 40), ("brass", "acoustic", 56),
             ("reed", "acoustic", 65), ("flute", "acoustic", 73), ("synth_lead", "synthetic", 81)]
    records = []
    for family, source, program in specs:
        for pitch in (21, 24, 60, 84, 90):
            for velocity in (50, 127):
                records.append(make_record(len(records), f"{family}_{source}_{program:03d}", program,
                                           pitch, velocity, family, source))
    write_examples(path, records)
    return path


def test_reader_filters(tmp_path):
    notes = read_examples(_fake_dataset(tmp_path))
    assert len(notes) == 60 and notes == sorted(notes, key=lambda n: n.note_str)
    gansynth = filter_notes(notes)  # acoustic, 24..84
    assert len(gansynth) == 5 * 3 * 2
    assert {n.source for n in gansynth} == {"acoustic"} and {n.pitch for n in gansynth} == {24, 60, 84}
    assert len(filter_notes(notes, sources=None, pitch_range=None)) == 60
    only = filter_notes(notes, families=("string", "brass"), velocities=(127,))
    assert {(n.family, n.velocity) for n in only} == {("string", 127), ("brass", 127)} and len(only) == 6
    assert {n.instrument_str for n in filter_notes(notes, instruments={"flute_acoustic_073"})} == {
        "flute_acoustic_073"}
    ids, names = instrument_ids(gansynth)
    assert sorted(set(ids.tolist())) == list(range(5)) and len(names) == 5
    assert all(names[i] == n.instrument_str for i, n in zip(ids, gansynth))


def test_several_datasets_read_as_one_with_their_instruments_apart(tmp_path):
    (tmp_path / "fluid").mkdir(), (tmp_path / "timgm").mkdir()
    a, b = _fake_dataset(tmp_path / "fluid"), _fake_dataset(tmp_path / "timgm")   # the same programs
    notes = read_datasets([a, b])
    assert len(notes) == 120 and notes == sorted(notes, key=lambda n: n.note_str)
    assert len({n.instrument_str for n in notes}) == 12 and len({n.note_str for n in notes}) == 120
    assert {n.instrument_str for n in notes if n.path.parent.parent == b} == {
        f"timgm/{i}" for i in {n.instrument_str for n in read_examples(b)}}
    assert read_datasets([a]) == read_datasets(a) == read_examples(a)   # one: untouched names
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="same folder name"):
        read_datasets([a, tmp_path / "x" / ".." / "fluid"])


def test_instrument_split_is_disjoint_and_deterministic(tmp_path):
    notes = filter_notes(read_examples(_fake_dataset(tmp_path)))
    train, valid = split_by_instrument(notes, valid_fraction=0.4, seed=3)
    tr, va = {n.instrument_str for n in train}, {n.instrument_str for n in valid}
    assert not tr & va and len(va) == 2 and len(train) + len(valid) == len(notes)
    assert split_by_instrument(notes, 0.4, seed=3) == (train, valid)
    splits = {frozenset(n.instrument_str for n in split_by_instrument(notes, 0.2, seed=s)[1])
              for s in range(10)}
    assert len(splits) > 1  # the seed matters
    assert split_by_instrument(notes, 0.0)[1] == []
    assert len({n.instrument_str for n in split_by_instrument(notes, 0.01)[1]}) == 1


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="examples.json"):
        read_examples(tmp_path)
    (tmp_path / "examples.json").write_text("{not json")
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "examples.json"))):
        read_examples(tmp_path)
    (tmp_path / "examples.json").write_text(json.dumps({"x-060-100": {"pitch": 60}}))
    with pytest.raises(DatasetError, match="x-060-100"):
        read_examples(tmp_path)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(100, np.float32), 44100)
    with pytest.raises(DatasetError, match="44100"):
        load_wave(wav)
    wav.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="a.wav"):
        load_wave(wav)
    short = tmp_path / "short.wav"
    sf.write(short, np.ones(1000, np.float32) * 0.5, 16000)
    w = load_wave(short)
    assert w.shape == (64000,) and w[999] == pytest.approx(0.5, abs=1e-4) and w[1000] == 0
