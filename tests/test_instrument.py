"""The Instrument end to end: deterministic offline renders through the real mixer and
the real renderer with the tiny random-weight model (its notes are noise-like, so
pitch measurements use sine notes injected through the renderer's note preparation)."""
from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from engine import load_synth
from engine.devices.clock import OfflineClockOutput
from engine.instrument import events as ev
from engine.instrument.instrument import Instrument
from engine.instrument.noteloop import heard_samples
from engine.instrument.offline import OfflineDriver
from engine.instrument.presets import PresetError
from tests.conftest import make_tiny_model_dir, traced_allocation


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return load_synth(tiny_model_dir, device="cpu", threads=1)


def sine(f_hz, seconds=4.0, sr=16000, phase=0.0):
    t = np.arange(int(seconds * sr)) / sr
    return np.sin(2 * np.pi * f_hz * t + phase).astype(np.float32)


def rms(y, sr, t0, t1):
    seg = y[int(t0 * sr):int(t1 * sr)]
    return float(np.sqrt(np.mean(seg.astype(np.float64) ** 2)))


def peak_hz(x, sr) -> float:
    n = len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / (8 * n)


def test_offline_note_shape_and_determinism(synth):
    events = [(0.1, ev.SetParam("release_s", 0.2)), (0.1, ev.NoteOn(60, 110)), (0.6, ev.NoteOff(60)),
              (0.9, ev.NoteOn(64, 90)), (1.1, ev.PadMove(0.0, 1.0)), (1.5, ev.NoteOff(64))]
    runs = []
    for _ in range(2):
        inst = Instrument(synth, sample_rate=48000, cache_mb=64, max_voices=8)
        runs.append(OfflineDriver(inst).render(events, tail_s=0.8))
    a, b = runs
    np.testing.assert_array_equal(a, b)  # same events -> same samples
    sr = 48000
    assert len(a) == round(2.3 * sr)
    assert np.max(np.abs(a[:int(0.1 * sr)])) == 0.0  # nothing before the first note
    hold = rms(a, sr, 0.2, 0.5)
    assert hold > 0.01
    assert rms(a, sr, 0.1, 0.1 + 0.001) < 0.5 * hold  # 5 ms attack from silence
    assert rms(a, sr, 0.6 + 0.19, 0.6 + 0.21) < 10 ** (-50 / 20) * hold  # ~-60 dB at release_s
    assert rms(a, sr, 0.85, 0.9) < 10 ** (-80 / 20) * hold
    assert rms(a, sr, 0.95, 1.5) > 0.5 * hold
    assert np.max(np.abs(a[int(2.1 * sr):])) < 1e-3 * hold
    assert inst.stats()["voices"] == 0 and inst.stats()["fallback_notes"] == 0
    assert inst.stats()["cache_misses"] == 3 and inst.stats()["renders"] == 3  # 60, 64, 64 after the move


def test_pad_move_crossfades_continuously_at_the_same_position(synth):
    """A held note morphs: output = (1-x) * old timbre + x * new timbre, both at the
    playback position they would have had, x a linear 40 ms ramp."""
    sr = 16000
    on = [(0.0, ev.NoteOn(62, 127))]

    def run(events, pad=(0.5, 0.5)):
        inst = Instrument(synth, sample_rate=sr, cache_mb=32, max_voices=4)
        inst.set_pad(*pad)
        return OfflineDriver(inst).render(events, duration_s=1.5), inst

    old, _ = run(on)
    new, _ = run(on, pad=(1.0, 0.0))
    morph, inst = run(on + [(0.5, ev.PadMove(1.0, 0.0))])
    assert inst.mixer.r_slot[0] != 0 and not inst.mixer.v_xfading[0]
    i0 = int(0.5 * sr)
    np.testing.assert_array_equal(morph[:i0], old[:i0])
    # x: 40 ms to 1, as the mixer steps it: per 256-frame block from i0, linear inside a block,
    # the block that reaches 1 ramping to exactly 1 at its end
    k = np.arange(len(old)) - i0
    start = np.clip(k // 256 * 256 / (0.04 * sr), 0, 1)
    end = np.clip((k // 256 + 1) * 256 / (0.04 * sr), 0, 1)
    x = np.where(k < 0, 0.0, start + (end - start) * (k % 256) / 256)
    np.testing.assert_allclose(morph, (1 - x) * old + x * new, atol=0.02 * np.abs(old).max())
    np.testing.assert_allclose(morph[int(0.6 * sr):], new[int(0.6 * sr):], atol=1e-5)
    assert not np.allclose(old[int(0.6 * sr):], new[int(0.6 * sr):], atol=1e-2)  # the timbre did change


def test_stealing_through_the_instrument_is_click_free(synth):
    sr = 48000
    inst = Instrument(synth, sample_rate=sr, cache_mb=64, max_voices=8)
    inst.settings.polyphony = 3
    inst.settings.attack_s = 0.01
    inst.settings.release_s = 3.0
    pitches = list(range(36, 44))  # ~65-104 Hz sines: small natural steps
    for p in pitches:
        inst.renderer.inject(p, sine(440 * 2 ** ((p - 69) / 12)), 16000)
    events = [(0.02 + 0.05 * i, ev.NoteOn(p, 127)) for i, p in enumerate(pitches)]
    y = OfflineDriver(inst, deterministic=False).render(events, duration_s=0.6)  # no model renders
    natural = 3 * 0.5 * 2 * np.pi * 104 / sr
    assert np.max(np.abs(np.diff(y))) < 1.3 * natural
    assert inst.stats()["voices"] == 3


def test_sustain_pedal_through_the_instrument(synth):
    sr = 16000
    inst = Instrument(synth, sample_rate=sr, cache_mb=32, max_voices=4)
    events = [(0.0, ev.SetParam("release_s", 0.1)), (0.05, ev.NoteOn(57, 120)), (0.1, ev.ControlChange(64, 127)),
              (0.2, ev.NoteOff(57)), (0.9, ev.ControlChange(64, 0))]
    y = OfflineDriver(inst).render(events, duration_s=1.3)
    hold = rms(y, sr, 0.1, 0.2)
    assert rms(y, sr, 0.7, 0.9) > 0.3 * hold  # still sounding with the key up
    assert rms(y, sr, 1.1, 1.3) < 1e-3 * hold


def test_pitch_bend_measured_by_spectrum(synth):
    sr = 48000
    inst = Instrument(synth, sample_rate=sr, cache_mb=64, max_voices=4)
    inst.renderer.inject(69, sine(440.0), 16000)
    inst.settings.bend_range = 7.0
    events = [(0.0, ev.NoteOn(69, 127)), (0.3, ev.PitchBend(8191)), (1.3, ev.PitchBend(-4096))]
    y = OfflineDriver(inst, deterministic=False).render(events, duration_s=2.3)
    assert peak_hz(y[int(0.05 * sr):int(0.3 * sr)], sr) == pytest.approx(440.0, abs=1.0)
    assert peak_hz(y[int(0.35 * sr):int(1.3 * sr)], sr) == pytest.approx(440 * 2 ** (7 * 8191 / 8192 / 12), abs=0.5)
    assert peak_hz(y[int(1.35 * sr):int(2.3 * sr)], sr) == pytest.approx(440 * 2 ** (-3.5 / 12), abs=0.5)


def test_cache_eviction_under_a_small_budget_never_touches_playing_notes(synth):
    sr = 16000
    inst = Instrument(synth, sample_rate=sr, cache_mb=22, max_voices=4)
    cache, r = inst.cache, inst.renderer
    cap = cache.capacity
    assert cap == int(22 * 2**20 // cache.slot_bytes) == 90
    inst.settings.morph_held = False
    pitches = range(40, 71)
    n = len(pitches)

    def render_timbre(pad):
        inst.set_pad(*pad)
        for p in pitches:  # the audio thread takes each published note as it comes
            r.render_now([p])
            inst.process(16)

    render_timbre((0.0, 0.0))  # A
    inst.post(ev.NoteOn(60, 100))
    inst.process(64)
    held_slot = int(inst.mixer.r_slot[0])
    held_copy = cache.pool[held_slot].copy()
    render_timbre((1.0, 1.0))  # B
    render_timbre((0.0, 1.0))  # C: 93 notes through 90 slots
    assert r.renders == 3 * n and r.handoff.starved == 0
    assert cache.evictions == 3 * n - cap and len(cache) == cap and cache.bytes_used() <= 22 * 2**20
    np.testing.assert_array_equal(cache.pool[held_slot], held_copy)  # still playing: untouched
    assert int(inst.mixer.r_slot[0]) == held_slot
    assert (0, inst.timbre.with_pad(0.0, 0.0).key(), 60) in cache  # the held note's key survived too
    # back on A: the evicted (least recently used) notes are re-rendered, the rest are hits
    hits = cache.hits
    render_timbre((0.0, 0.0))
    evicted = 3 * n - cap
    assert cache.hits - hits == n - evicted and r.renders == 3 * n + evicted


def test_renderer_priority_and_coalescing(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    r = inst.renderer
    inst.post(ev.NoteOn(50, 100))
    inst.post(ev.NoteOff(50))
    inst.post(ev.NoteOn(70, 100))  # held, not rendered yet: plays nothing rather than noise
    inst.process(64)
    assert inst.stats()["silent_notes"] == 2
    for pad in ((0.1, 0.1), (0.9, 0.2), (0.3, 0.8)):  # three moves before the worker looks
        inst.set_pad(*pad)
    order = []
    for _ in range(4):
        assert r.step()
        order.append(r.done_pitches())
    assert order[0] == [70]  # held first
    assert order[1] == [50, 70]  # then recently played
    assert set(order[3]) - set(order[1]) == {69, 71}  # then outward from the last played pitch
    assert r.renders == 4  # the first two pad positions were never rendered
    assert {k[1] for k in inst.cache.keys()} == {inst.timbre.key()}


def test_failed_render_keeps_the_previous_note(synth, tmp_path, caplog):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.renderer.render_now([60])
    inst.process(16)
    before = int(inst.mixer.table[60])
    broken = load_synth(make_tiny_model_dir(tmp_path / "broken", seed=1), device="cpu", threads=1)
    with torch.no_grad():
        next(broken.generator.parameters()).fill_(float("nan"))
    inst.swap_model(broken)
    with caplog.at_level(logging.WARNING, logger="engine.instrument.renderer"):
        inst.renderer.render_now([60])
    inst.process(16)
    assert inst.stats()["render_failures"] == 1 and "pitch 60 failed" in caplog.text
    assert int(inst.mixer.table[60]) == before
    inst.post(ev.NoteOn(60, 100))
    assert np.abs(inst.process(2048)).max() > 0  # the old note still plays


def test_model_swap_rerenders_with_the_new_model(synth, tmp_path):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.renderer.render_now([60])
    inst.process(16)
    a = inst.note_audio(60)
    other = load_synth(make_tiny_model_dir(tmp_path / "other", seed=5), device="cpu", threads=1)
    inst.swap_model(other)
    inst.renderer.render_now([60])
    inst.process(16)
    b = inst.note_audio(60)
    assert inst.synth is other and not np.allclose(a, b)
    assert inst.stats()["cache_misses"] == 2


def test_worker_thread_renders_a_held_note(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.post(ev.NoteOn(72, 100))
    inst.process(64)
    assert inst.stats()["silent_notes"] == 1  # nothing rendered yet
    inst.start()
    try:
        assert inst.renderer.handoff.published.wait(30.0)  # the held pitch comes first
        inst.process(64)
        assert inst.mixer.table[72] != 0
        assert np.abs(inst.process(1024)).max() > 0  # the voice picked it up
    finally:
        inst.stop()


def test_clock_stream_runs_without_a_device(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.renderer.inject(60, sine(261.6), 16000)
    got, enough = [], threading.Event()

    def on_block(block):
        got.append(block.copy())
        if len(got) >= 20:
            enough.set()

    clock = OfflineClockOutput(inst, block_size=256, on_block=on_block)
    inst.post(ev.NoteOn(60, 100))
    clock.start()
    try:
        assert enough.wait(10.0)
    finally:
        clock.stop()
    assert np.abs(np.concatenate(got)).max() > 0.1 and clock.tap.frames >= 20 * 256


def test_process_allocates_no_arrays_with_the_real_renderer(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=16, max_block=2048)
    pitches = list(range(55, 67))
    inst.renderer.render_now(pitches)
    for p in pitches:
        inst.post(ev.NoteOn(p, 100))
    inst.post(ev.PitchBend(2000))
    inst.process(2048)
    inst.set_pad(0.9, 0.9)
    inst.renderer.render_now([60])  # a morph will start in the measured block
    for e in (ev.NoteOff(56), ev.NoteOn(70, 90), ev.ControlChange(64, 127), ev.NoteOff(57),
              ev.PitchBend(300), ev.ControlChange(7, 100), ev.NoteOn(58, 100), ev.SetParam("volume", 0.6)):
        inst.post(e)  # events handled inside the measured blocks too
    current, peak = traced_allocation(lambda: inst.process(2048), 4)
    m = inst.mixer
    row60 = next(r for r in range(m.rows) if m.v_active[r] and m.v_pitch[r] == 60)
    assert m.r_slot[row60] == m.table[60] and m.pedal and 70 in inst.stats()["held_pitches"]  # it all ran
    assert peak < 8192  # less than one float32 block: no array was allocated
    assert current < 1024


def test_settings_and_presets_validate(synth, tmp_path):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    with pytest.raises(ValueError, match="attack_s"):
        inst.settings.attack_s = 10.0
    with pytest.raises(ValueError, match="unknown setting"):
        inst.settings.atack_s = 1.0
    with pytest.raises(ValueError, match="velocity"):
        inst.post(ev.NoteOn(60, 200))
    inst.settings.release_s = 1.5
    inst.set_corner(2, np.ones(synth.latent_size), "Ones", "#010203")
    inst.set_pad(0.25, 0.75)
    path = tmp_path / "mine.json"
    inst.save_preset(path, name="Mine")
    other = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4, seed=9)
    other.load_preset(path)
    assert other.timbre.key() == inst.timbre.key() and other.timbre.names[2] == "Ones"
    assert other.settings.release_s == 1.5 and other.timbre.pad == (0.25, 0.75)
    other.process(16)
    assert other.mixer.release_s == 1.5
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(PresetError, match="bad.json"):
        other.load_preset(tmp_path / "bad.json")
    assert other.timbre.key() == inst.timbre.key()  # a bad preset changes nothing


def test_mod_wheel_drives_a_pad_axis(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.set_pad(0.2, 0.2)
    inst.post(ev.ControlChange(1, 127))
    assert inst.timbre.pad == (0.2, 1.0)
    inst.settings.mod_axis = "x"
    inst.post(ev.ControlChange(1, 0))
    assert inst.timbre.pad == (0.0, 1.0)


def test_events_from_many_threads_arrive_and_ended_threads_are_forgotten(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=16)
    inst.renderer.inject(60, sine(261.6), 16000)
    inst.process(16)

    def player(pitch):
        inst.post(ev.NoteOn(pitch, 100))

    threads = [threading.Thread(target=player, args=(48 + i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    inst.process(16)
    assert inst.stats()["voices"] == 8
    assert len(inst._queues) == 8
    inst.post(ev.NoteOff(48))  # this thread's queue; the eight ended ones are dropped
    assert len(inst._queues) == 1


def test_render_to_wav_writes_what_render_returns(synth, tmp_path):
    import soundfile

    events = [(0.0, ev.NoteOn(60, 100)), (0.3, ev.NoteOff(60))]
    a = OfflineDriver(Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)).render(events, tail_s=0.2)
    path = OfflineDriver(Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)).render_to_wav(
        events, tmp_path / "take.wav", tail_s=0.2)
    b, sr = soundfile.read(path, dtype="float32")
    assert sr == 16000
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="render worker stopped"):
        inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
        inst.start()
        try:
            OfflineDriver(inst)
        finally:
            inst.stop()


def test_a_note_above_the_range_makes_the_top_pitch_urgent(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.post(ev.NoteOn(100, 100))
    inst.process(16)
    assert inst.renderer.step() and inst.renderer.done_pitches() == [synth.pitch_range[1]]
    inst.process(16)
    assert inst.mixer.r_rate[0] == pytest.approx(2 ** ((100 - 84) / 12))  # now playing the render


def test_a_bug_in_the_mixer_gives_silence_not_a_dead_callback(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.post(ev.SetParam("volume", 0.7))
    inst.mixer._handlers[ev.SetParam] = None  # an unhandled event type: a programming error
    block = inst.process(128)
    assert block.shape == (128,) and not block.any()
    assert inst.stats()["audio_errors"] == 1 and "TypeError" in inst.stats()["last_audio_error"]


def test_renderer_renders_only_the_heard_span_and_its_notes_are_the_whole_notes(synth):
    """Issue 16: a held note loops before 72 % of the note, so the renderer generates only up
    to the loop's end (+ the resampler's margin); the cached note is the one a whole render
    would give."""
    inst = Instrument(synth, sample_rate=48000, cache_mb=64, max_voices=8)
    renderer = inst.renderer
    span = heard_samples(renderer.loop, renderer.sample_rate, synth)
    assert span < 0.8 * synth.num_samples and synth.span_frames(span) < synth.spectral.time_steps
    z = np.array(inst.timbre.latent[None])  # a copy: the timbre's latent is read-only
    heard, loop_len = renderer.prepare(synth.generate(z, [60], samples=span)[0], synth.sample_rate, 60)
    whole, whole_loop_len = renderer.prepare(synth.generate(z, [60])[0], synth.sample_rate, 60)
    assert loop_len == whole_loop_len
    err = np.sqrt(np.mean((heard - whole) ** 2) / np.mean(whole ** 2))
    assert err < 1e-4, err
