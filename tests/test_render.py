"""engine.songs.render with the real tiny model: latents, note shaping, dedup, bounded memory, CLI."""
from __future__ import annotations

import threading
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from engine.commands.cli import main as cli_main
from engine.gansynth.rainbowgram import read_png_rgb
from engine.gansynth.synth import load_synth
from engine.instrument.timbre import slerp_rows
from engine.songs.midifile import MidiFileError, read_midi
from engine.songs.render import (RenderCancelled, RenderError, RenderSettings, instrument_schedule,
                                 latents_for_keys, note_latent_keys, render_for_app, render_midi_file,
                                 render_notes)

ROOT = Path(__file__).resolve().parent.parent
ARPEGGIO = ROOT / "resources" / "midi" / "arpeggio.mid"


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return load_synth(tiny_model_dir)


def write_notes(path, notes, ticks_per_beat=480):
    """notes: [(start_beat, length_beats, pitch, velocity)] at 120 bpm (0.5 s per beat)."""
    events = []
    for start, length, pitch, velocity in notes:
        on_tick, off_tick = round(start * ticks_per_beat), round((start + length) * ticks_per_beat)
        events.append((on_tick, 1, mido.Message("note_on", note=pitch, velocity=velocity)))
        # Note-offs go before note-ons at the same tick, except a zero-length note's own.
        events.append((off_tick, 2 if off_tick == on_tick else 0, mido.Message("note_off", note=pitch)))
    track, now = mido.MidiTrack(), 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(msg.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    midi.save(path)
    return path


# ---- latents ---------------------------------------------------------------------------------

def reference_slerp(p0, p1, f):
    """Magenta generate_util's slerp, written out for one pair."""
    omega = np.arccos(np.clip(np.dot(p0 / np.linalg.norm(p0), p1 / np.linalg.norm(p1)), -1, 1))
    so = np.sin(omega)
    if so == 0:
        return (1.0 - f) * p0 + f * p1
    return np.sin((1.0 - f) * omega) / so * p0 + np.sin(f * omega) / so * p1


def test_slerp_matches_the_original_formula():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 16)), 3.0 * rng.standard_normal((5, 16))
    f = np.array([0.0, 0.25, 0.5, 0.9, 1.0])
    got = slerp_rows(a, b, f)
    for i in range(5):
        np.testing.assert_allclose(got[i], reference_slerp(a[i], b[i], f[i]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(slerp_rows(a[:1], a[:1], [0.3])[0], a[0], rtol=1e-6)   # parallel: lerp
    e0, e1 = np.eye(2)
    assert np.linalg.norm(slerp_rows([e0], [e1], [0.5])[0]) == pytest.approx(1.0)


def test_note_latent_keys_follow_the_anchors():
    ids, times = np.array([0, 1, 0]), np.array([0.0, 10.0, 20.0])
    starts = np.array([-1.0, 0.0, 5.0, 10.0, 15.0, 25.0, 6.0])
    keys = note_latent_keys(starts, ids, times)
    expected = [(0, 0, 0), (0, 0, 0), (0, 1, 0.5), (1, 1, 0), (1, 0, 0.5), (0, 0, 0), (0, 1, 0.6)]
    np.testing.assert_allclose(keys, expected)
    np.testing.assert_allclose(note_latent_keys(starts, ids, times, morph_steps=4)[-1], (0, 1, 0.5))
    palette = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    z = latents_for_keys(palette, keys)
    np.testing.assert_allclose(z[2], reference_slerp(palette[0], palette[1], 0.5), rtol=1e-5)
    np.testing.assert_allclose(z[3], palette[1])


def test_instrument_schedule():
    ids, t = instrument_schedule(3, 60.0, secs_per_instrument=15.0)
    assert ids.tolist() == [0, 1, 2, 0] and t.tolist() == [0.0, 20.0, 40.0, 60.0]
    ids, t = instrument_schedule(2, 10.0, instruments=[1, 0, 1], times=[0, 0.3, 1])
    assert ids.tolist() == [1, 0, 1] and np.allclose(t, [0, 3, 10])
    ids, t = instrument_schedule(3, 10.0)
    assert ids.tolist() == [0, 1, 2] and np.allclose(t, [0, 5, 10])
    with pytest.raises(RenderError, match=r"0\.\.1"):
        instrument_schedule(2, 10.0, instruments=[0, 2])
    with pytest.raises(RenderError, match="2 instruments but 3 times"):
        instrument_schedule(2, 10.0, instruments=[0, 1], times=[0, 0.5, 1])
    with pytest.raises(RenderError, match="ascending"):
        instrument_schedule(2, 10.0, instruments=[0, 1], times=[0.5, 0.2])


# ---- note shaping and mixing -----------------------------------------------------------------

def expected_mix(synth, notes, z, settings):
    """The mix written out note by note from the synth's raw renders (independent of render.py)."""
    sr = synth.sample_rate
    audio = synth.generate(np.repeat(z[None], len(notes), 0), notes.pitch.astype(int))
    release, attack = int(round(settings.release_s * sr)), int(round(settings.attack_s * sr))
    parts = []
    for i in range(len(notes)):
        sustain = min(int((notes.end_s[i] - notes.start_s[i]) * sr), int(settings.max_note_s * sr))
        env = np.ones(sustain + release)
        env[:attack] = np.arange(attack) / attack
        env[sustain:] *= np.linspace(1.0, 0.0, release)
        seg = audio[i, :sustain + release] * env
        seg = seg / np.abs(seg).max() * notes.velocity[i] / 127.0
        parts.append((int(round(notes.start_s[i] * sr)), seg))
    mix = np.zeros(max(s + len(p) for s, p in parts))
    for s, p in parts:
        mix[s:s + len(p)] += p
    return mix / np.abs(mix).max() * settings.peak


def test_notes_are_enveloped_peak_normalised_and_velocity_scaled(synth, tmp_path):
    path = write_notes(tmp_path / "three.mid", [(0, 1, 60, 127), (2, 0.5, 60, 64), (3, 0, 67, 100),
                                                (3.5, 9, 48, 90)])     # zero-length; longer than max
    notes = read_midi(path, synth.pitch_range)
    assert notes.zero_length == 1
    z = synth.random_latents(1, seed=5)
    settings = RenderSettings(sample_rate=16000, max_note_s=2.0)
    mix, stats = render_notes(synth, notes, z, np.array([0]), np.array([0.0]), settings)
    want = expected_mix(synth, notes, z[0], settings)
    assert mix.shape == want.shape
    np.testing.assert_allclose(mix, want, atol=2e-6)
    assert stats["distinct_renders"] == 3       # pitch 60 twice, same latent: one render
    # The loudest sample of each note's span scales with its velocity.
    first = np.abs(mix[:8000]).max()
    second = np.abs(mix[16000:16000 + 3200]).max()
    assert second / first == pytest.approx(64 / 127, rel=0.02)


def test_dedup_and_batching_do_not_change_the_mix(synth, tmp_path):
    path = write_notes(tmp_path / "morph.mid", [(i * 0.5, 0.5, 48 + (i % 2), 100) for i in range(6)])
    notes = read_midi(path, synth.pitch_range)
    palette = synth.random_latents(2, seed=2)
    ids, times = instrument_schedule(2, notes.duration_s)
    fast = RenderSettings(sample_rate=16000, morph_steps=2, batch_size=4)
    mix, stats = render_notes(synth, notes, palette, ids, times, fast)
    slow = RenderSettings(sample_rate=16000, morph_steps=2, batch_size=1, dedup=False)
    mix_slow, stats_slow = render_notes(synth, notes, palette, ids, times, slow)
    np.testing.assert_allclose(mix, mix_slow, atol=1e-6)
    assert stats_slow["renders"] == 6
    assert stats["distinct_renders"] == stats["renders"] < 6


def test_evicted_renders_are_made_again_and_the_mix_is_unchanged(synth, tmp_path):
    pitches = [40, 41, 42, 43]
    path = write_notes(tmp_path / "far.mid", [(i * 0.25, 0.25, p, 90) for i, p in enumerate(pitches * 2)])
    notes = read_midi(path, synth.pitch_range)
    z = synth.random_latents(1, seed=9)
    args = (synth, notes, z, np.array([0]), np.array([0.0]))
    roomy, roomy_stats = render_notes(*args, RenderSettings(max_cached_renders=64))
    tight, tight_stats = render_notes(*args, RenderSettings(batch_size=2, max_cached_renders=2))
    np.testing.assert_allclose(tight, roomy, atol=1e-6)
    assert roomy_stats["renders"] == 4 and roomy_stats["max_renders_held"] == 4
    assert tight_stats["max_renders_held"] <= 2
    assert tight_stats["renders"] == 8     # evicted renders came back


def _write_big_midi(path, count, pitches):
    """`count` short notes (1 tick on, 1 tick apart) cycling through `pitches`, raw SMF bytes."""
    body = bytearray()
    for i in range(count):
        p = pitches[i % len(pitches)]
        body += bytes([1, 0x90, p, 64 + 20 * (i % 3), 1, 0x80, p, 0])
    body += b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + \
        (480).to_bytes(2, "big")
    path.write_bytes(header + b"MTrk" + len(body).to_bytes(4, "big") + bytes(body))
    return path


def test_100000_notes_render_in_bounded_memory(synth, tmp_path):
    path = _write_big_midi(tmp_path / "big.mid", 100_000, [48, 55, 60, 64, 67])
    seen = []
    settings = RenderSettings(sample_rate=16000, release_s=0.02, max_cached_renders=8, batch_size=2)
    report = render_midi_file(path, tmp_path / "big.wav", synth, synth.random_latents(1, seed=0),
                              settings=settings, progress=lambda d, t: seen.append((d, t)))
    assert report.notes == 100_000
    assert report.distinct_renders == 5 and report.renders == 5
    assert report.max_renders_held <= 5
    info = sf.info(tmp_path / "big.wav")
    assert info.samplerate == 16000 and info.duration == pytest.approx(report.duration_s, abs=1e-3)
    assert report.duration_s == pytest.approx(200_000 / 960 + 0.02, abs=0.01)   # 2 ticks per note
    assert seen[-1] == (100_000, 100_000) and len(seen) > 50
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# ---- files, CLI, app entry -----------------------------------------------------------------

def test_cli_render_writes_wav_and_rainbowgram(tiny_model_dir, tmp_path, capsys):
    riff = write_notes(tmp_path / "riff.mid", [(i * 0.25, 0.25, (45, 52, 57)[i % 3], 90) for i in range(24)])
    wav, png = tmp_path / "arp.wav", tmp_path / "arp.png"
    rc = cli_main(["render", str(riff), "-o", str(wav), "--model", str(tiny_model_dir),
                   "--random", "1", "--seed", "3", "--sample-rate", "22050", "--plot", str(png)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "24 notes, 3 distinct" in out.out and "riff.mid: 24 notes" in out.err
    info = sf.info(wav)
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_24")
    audio, _ = sf.read(wav)
    # Peak 0.9 at the model's rate; the resample to 22.05 kHz may overshoot between samples
    # (this random tiny model is broadband noise), never past the clip.
    assert 0.8 < np.abs(audio).max() <= 1.0 and np.all(np.isfinite(audio))
    rgb = read_png_rgb(png)
    assert rgb.shape[0] == 4 * 56 and rgb.max() > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arp.png", "arp.wav", "riff.mid"]


def test_cli_render_bad_inputs_get_clear_messages(tiny_model_dir, tmp_path, capsys):
    model = ["--model", str(tiny_model_dir)]
    corrupt = tmp_path / "corrupt.mid"
    corrupt.write_bytes(ARPEGGIO.read_bytes()[:200])
    not_midi = tmp_path / "readme.mid"
    not_midi.write_text("hello")
    high = write_notes(tmp_path / "high.mid", [(0, 1, 100, 90)])
    cases = [([str(corrupt)], "corrupt.mid: corrupt MIDI file"),
             ([str(not_midi)], "readme.mid: not a MIDI file"),
             ([str(high)], "high.mid: no notes in the model's pitch range 24..84"),
             ([str(tmp_path / "missing.mid")], "missing.mid: no such file"),
             ([str(ARPEGGIO), "--random", "2", "--instruments", "0,5"], "instrument indices must lie in 0..1"),
             ([str(ARPEGGIO), "--preset", str(not_midi)], "readme.mid: not valid JSON")]
    for args, message in cases:
        rc = cli_main(["render", *args, "-o", str(tmp_path / "out.wav"), *model])
        err = capsys.readouterr().err
        assert rc == 1 and message in err, (args, err)
    rc = cli_main(["render", str(ARPEGGIO), "-o", str(tmp_path / "no" / "such" / "dir.wav"), *model,
                   "--instruments", "0"])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
    assert cli_main(["render", str(ARPEGGIO), "-o", "x.wav", "--times", "0,1", *model]) == 2
    assert not list(tmp_path.glob("*.wav")) and not list(tmp_path.glob(".*"))


def test_cancel_writes_nothing(synth, tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RenderCancelled):
        render_midi_file(ARPEGGIO, tmp_path / "x.wav", synth, synth.random_latents(1), cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_app_entry_and_preset_cli_render_the_pad_timbre(synth, tiny_model_dir, tmp_path):
    from engine.instrument.presets import Preset, save_preset
    from engine.instrument.timbre import TimbreState

    timbre = TimbreState.random(synth, seed=4, pad=(0.25, 0.75))
    midi = write_notes(tmp_path / "two.mid", [(0, 1, 60, 100), (1, 1, 64, 100), (2, 1, 60, 100)])
    fractions = []
    report = render_for_app(synth, timbre, midi, tmp_path / "app.wav", progress=fractions.append)
    assert report.distinct_renders == 2 and report.anchors == [(4, 0.0)]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    # The same timbre through a preset file and the CLI (default: the pad, instrument 4), on the
    # synth's engine (another backend's float rounding is its own test's business).
    preset = save_preset(tmp_path / "p.json", Preset(timbre, name="test"))
    rc = cli_main(["render", str(midi), "-o", str(tmp_path / "cli.wav"), "--model", str(tiny_model_dir),
                   "--preset", str(preset), "--backend", "torch"])
    assert rc == 0
    a, _ = sf.read(tmp_path / "app.wav")
    b, _ = sf.read(tmp_path / "cli.wav")
    np.testing.assert_allclose(a, b, atol=1e-4)   # preset latents are stored with 7 decimals


def test_midi_errors_pass_through_the_api(synth, tmp_path):
    with pytest.raises(MidiFileError, match="nothing.mid"):
        render_midi_file(tmp_path / "nothing.mid", tmp_path / "x.wav", synth, synth.random_latents(1))
    with pytest.raises(RenderError, match=r"instrument latents must be \[n, 16\]"):
        render_midi_file(ARPEGGIO, tmp_path / "x.wav", synth, np.zeros((2, 3)))


def test_absurdly_long_songs_are_refused_with_their_length(tiny_model_dir, tmp_path, capsys):
    """Legal 4-byte deltas put the last note 155 hours away: refused with the length found,
    and still refused with --max-minutes raised, because memory cannot hold it."""
    far = 559_238  # beats: 268,434,240 ticks, just inside a 4-byte delta
    path = write_notes(tmp_path / "far.mid", [(0, 1, 60, 100), (far + 1, 1, 62, 100), (2 * far + 2, 1, 64, 100)])
    out = tmp_path / "out.wav"
    model = ["--model", str(tiny_model_dir)]
    assert cli_main(["render", str(path), "-o", str(out), *model]) == 1
    err = capsys.readouterr().err
    assert "far.mid: the song is 155:20:" in err and "longer than 60 minutes are refused" in err
    assert "--max-minutes 9321" in err and "Traceback" not in err
    assert cli_main(["render", str(path), "-o", str(out), *model, "--max-minutes", "10000"]) == 1
    err = capsys.readouterr().err
    assert "far.mid: the song is 155:20:" in err and "of memory and" in err and "Traceback" not in err
    assert not out.exists()


def test_max_minutes_renders_a_long_song_anyway(tiny_model_dir, tmp_path, capsys):
    path = write_notes(tmp_path / "two.mid", [(0, 1, 60, 100), (240, 1, 62, 100)])  # ends at 2:00.5
    out = tmp_path / "out.wav"
    model = ["--model", str(tiny_model_dir), "--sample-rate", "16000"]
    assert cli_main(["render", str(path), "-o", str(out), *model, "--max-minutes", "1.5"]) == 1
    assert "two.mid: the song is 0:02:01 (h:mm:ss) long" in capsys.readouterr().err
    assert cli_main(["render", str(path), "-o", str(out), *model, "--max-minutes", "3"]) == 0
    assert sf.info(str(out)).duration > 120
