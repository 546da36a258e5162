"""Voice mixer on synthetic notes (sines injected through the renderer's real note
preparation): envelope shapes, stealing, pedal, bend, loops, morphs, controllers."""
from __future__ import annotations


import numpy as np
import pytest

from engine.instrument import events as ev
from engine.instrument.mixer import Mixer
from engine.instrument.notecache import NoteCache
from engine.instrument.noteloop import loop_points
from engine.instrument.renderer import Renderer
from tests.conftest import traced_allocation

SR = 48000
NOTE_S = 2.0


def hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12.0)


def sine(f_hz: float, amp: float = 1.0, phase: float = 0.0, seconds: float = NOTE_S) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f_hz * t + phase)).astype(np.float32)


class Rig:
    """A real Mixer over a real NoteCache, fed through Renderer.inject (no model)."""

    def __init__(self, pitches=(69,), max_voices=8, **params):
        frames = int(NOTE_S * SR)
        self.cache = NoteCache(frames, budget_bytes=0, min_slots=64)
        loop_start, loop_end, _ = loop_points(frames, SR)
        self.mixer = Mixer(self.cache.pool, SR, (loop_start, loop_end), (24, 84),
                           max_voices=max_voices, spare_voices=4)
        self.renderer = Renderer(None, self.cache, self.mixer, SR, frames)
        for p in pitches:
            self.inject(p, sine(hz(p)))
        self.mixer.take_ready()
        for name, value in {"volume": 0.5, **params}.items():
            self.mixer.set_param(name, value)
        self.mixer.gain = self.mixer.volume  # start settled (the ramp has its own test)

    def inject(self, pitch, wave):
        """Note normalised to peak 1 by the renderer's preparation."""
        return self.renderer.inject(pitch, wave, SR)

    def run(self, schedule, seconds, block=256) -> np.ndarray:
        """schedule: [(time_s, event or callable)], applied at exact samples."""
        todo = sorted(((int(round(t * SR)), i, e) for i, (t, e) in enumerate(schedule)))
        total = int(round(seconds * SR))
        out = np.zeros(total, np.float32)
        done = j = 0
        while done < total:
            while j < len(todo) and todo[j][0] <= done:
                e = todo[j][2]
                e() if callable(e) else self.mixer.handle(e)
                j += 1
            self.mixer.take_ready()
            stop = todo[j][0] if j < len(todo) else total
            n = min(block, max(1, stop - done), total - done)
            out[done:done + n] = self.mixer.process(n)
            done += n
        return out


def level(y, t0, t1):
    """Peak |y| between t0 and t1 seconds."""
    return float(np.max(np.abs(y[int(t0 * SR):int(t1 * SR)])))


def peak_hz(x) -> float:
    n = len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / (8 * n)


def max_jump(y) -> float:
    return float(np.max(np.abs(np.diff(y))))


def test_note_on_off_envelope_shape():
    rig = Rig(attack_s=0.05, release_s=0.2)
    y = rig.run([(0.1, ev.NoteOn(69, 127)), (0.6, ev.NoteOff(69))], 1.2)
    assert level(y, 0.0, 0.1) == 0.0
    assert level(y, 0.1, 0.1 + 0.001) < 0.02  # starts from silence
    assert level(y, 0.124, 0.126) == pytest.approx(0.25, abs=0.02)  # half way up the 50 ms attack
    assert level(y, 0.2, 0.6) == pytest.approx(0.5, abs=0.01)  # velocity 127, volume 0.5
    assert level(y, 0.695, 0.705) == pytest.approx(0.5 * 10 ** (-1.5), rel=0.15)  # -30 dB at half the release
    assert level(y, 0.8, 0.81) < 0.5 * 10 ** (-3 + 0.1)  # -60 dB at release_s
    assert level(y, 1.0, 1.2) == 0.0 and rig.mixer.active_voices() == 0  # voice freed
    assert rig.mixer.held_count[69] == 0


def test_decay_to_sustain_level():
    rig = Rig(attack_s=0.01, decay_s=0.2, sustain=0.4)
    y = rig.run([(0.0, ev.NoteOn(69, 127))], 0.6)
    assert level(y, 0.009, 0.012) == pytest.approx(0.5, abs=0.02)
    assert level(y, 0.4, 0.6) == pytest.approx(0.2, abs=0.01)


def test_velocity_curve_and_floor():
    rig = Rig(velocity_curve=2.0)
    y = rig.run([(0.0, ev.NoteOn(69, 64)), (0.3, ev.NoteOff(69)), (0.6, ev.NoteOn(69, 127))], 0.9)
    assert level(y, 0.1, 0.3) / level(y, 0.7, 0.9) == pytest.approx((64 / 127) ** 2, rel=0.02)
    rig.mixer.set_param("velocity_floor", 0.5)
    assert rig.mixer.velocity_gain(1) == pytest.approx(0.5 + 0.5 * (1 / 127) ** 2)


def test_stealing_is_click_free_and_respects_polyphony():
    pitches = range(40, 48)  # ~80-120 Hz: the signal's own sample-to-sample steps are small
    rig = Rig(pitches, max_voices=8, polyphony=4, attack_s=0.01, release_s=2.0)
    sched = [(0.05 + 0.07 * i, ev.NoteOn(p, 127)) for i, p in enumerate(pitches)]
    y = rig.run(sched, 0.8)
    natural = 4 * 0.5 * 2 * np.pi * hz(47) / SR  # 4 voices at full slope
    assert max_jump(y) < 1.3 * natural
    assert sum(rig.mixer.v_active) <= 4
    # cutting a voice dead instead of fading it would click: the same measure catches it
    hard = Rig(pitches, max_voices=8, polyphony=8, attack_s=0.01, release_s=2.0)
    at_peak = [0.05 + 0.07 * i + 1.25 / hz(p) for i, p in enumerate(pitches)]  # attack over, sine at +1
    cut = [(at_peak[i], lambda r=i: hard.mixer._free(r)) for i in range(4)]
    assert max_jump(hard.run(sched + cut, 0.8)) > 2 * natural


def test_released_voices_are_stolen_first():
    rig = Rig((60, 62, 64), max_voices=4, polyphony=2, release_s=5.0)
    rig.run([(0.0, ev.NoteOn(60, 100)), (0.01, ev.NoteOn(62, 100)), (0.02, ev.NoteOff(62)),
             (0.03, ev.NoteOn(64, 100))], 0.1)
    sounding = {rig.mixer.v_pitch[r] for r in range(rig.mixer.rows) if rig.mixer.v_active[r]}
    assert sounding == {60, 64}  # the released 62 went, the older held 60 stayed


def test_sustain_pedal_holds_and_releases():
    rig = Rig(release_s=0.1)
    y = rig.run([(0.0, ev.NoteOn(69, 127)), (0.1, ev.ControlChange(64, 127)), (0.2, ev.NoteOff(69)),
                 (0.6, ev.ControlChange(64, 0))], 1.0)
    assert level(y, 0.5, 0.6) == pytest.approx(0.5, abs=0.01)  # key up, pedal down: still sounding
    assert level(y, 0.8, 1.0) < 1e-3 and rig.mixer.active_voices() == 0
    # a key still down when the pedal lifts keeps sounding
    rig = Rig(release_s=0.1)
    y = rig.run([(0.0, ev.ControlChange(64, 127)), (0.0, ev.NoteOn(69, 127)), (0.3, ev.ControlChange(64, 0))], 0.6)
    assert level(y, 0.5, 0.6) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("bend, bend_range, semitones", [(8191, 2.0, 2.0 * 8191 / 8192), (-8192, 2.0, -2.0),
                                                          (-4096, 12.0, -6.0)])
def test_pitch_bend_by_resampling_measured_by_spectrum(bend, bend_range, semitones):
    rig = Rig(bend_range=bend_range)
    y = rig.run([(0.0, ev.NoteOn(69, 127)), (0.1, ev.PitchBend(bend))], 1.2)
    assert peak_hz(y[int(0.2 * SR):int(1.2 * SR)]) == pytest.approx(hz(69 + semitones), abs=0.3)
    assert max_jump(y) < 1.1 * 0.5 * 2 * np.pi * hz(69 + max(semitones, 0)) / SR  # no click at the bend


def test_unrendered_pitch_plays_a_resampled_neighbour():
    rig = Rig((69,))
    y = rig.run([(0.0, ev.NoteOn(72, 127))], 1.0)
    assert peak_hz(y[int(0.1 * SR):]) == pytest.approx(hz(72), abs=0.3)
    assert rig.mixer.fallback_notes == 1 and rig.mixer.silent_notes == 0


def test_the_exact_render_replaces_the_neighbour_when_it_arrives():
    rig = Rig((69,))
    y = rig.run([(0.0, ev.NoteOn(72, 127)), (0.3, lambda: rig.inject(72, sine(hz(72), phase=1.0)))], 1.0)
    assert peak_hz(y[int(0.5 * SR):]) == pytest.approx(hz(72), abs=0.3)
    assert rig.mixer.v_exact[0] and rig.mixer.r_rate[0] == 1.0
    assert max_jump(y) < 1.1 * 0.5 * 2 * np.pi * hz(72) / SR


def test_notes_held_past_their_length_loop_smoothly():
    rig = Rig((45,))
    y = rig.run([(0.0, ev.NoteOn(45, 127))], 3 * NOTE_S)
    assert level(y, 0.05, 3 * NOTE_S) == pytest.approx(0.5, abs=0.01)
    for t in np.arange(0.1, 3 * NOTE_S - 0.1, 0.1):  # the level never dips through the loop seams
        assert level(y, t, t + 0.05) > 0.45
    assert max_jump(y) < 1.05 * 0.5 * 2 * np.pi * hz(45) / SR


def test_morph_to_an_identical_note_changes_nothing():
    """The held voice crossfades at the same playback position: an identical render is inaudible."""
    plain = Rig((60,)).run([(0.0, ev.NoteOn(60, 127))], 1.0)
    rig = Rig((60,))
    y = rig.run([(0.0, ev.NoteOn(60, 127)), (0.33, lambda: rig.inject(60, sine(hz(60))))], 1.0)
    assert rig.mixer.slot_refs.sum() > 0 and rig.mixer.r_slot[0] != 1  # it did switch slots
    np.testing.assert_allclose(y, plain, atol=2e-5)


def test_morph_crossfades_continuously_to_the_new_timbre():
    rig = Rig((60,), morph_held=True)
    new = sine(hz(60), phase=2.0) * 0.5 + sine(3 * hz(60), phase=0.3) * 0.5  # another "timbre"
    y = rig.run([(0.0, ev.NoteOn(60, 127)), (0.3, lambda: rig.inject(60, new))], 1.0)
    slope = 0.5 * 2 * np.pi * 3 * hz(60) / SR
    assert max_jump(y) < 1.2 * slope
    after = y[int(0.5 * SR):int(0.9 * SR)]
    spec = np.abs(np.fft.rfft(after))
    f = np.fft.rfftfreq(len(after), 1 / SR)
    third = spec[np.argmin(np.abs(f - 3 * hz(60)))]
    assert third > 0.5 * spec[np.argmin(np.abs(f - hz(60)))]  # the new note's harmonic is there
    off = Rig((60,), morph_held=False)
    y_off = off.run([(0.0, ev.NoteOn(60, 127)), (0.3, lambda: off.inject(60, new))], 1.0)
    np.testing.assert_allclose(y_off, Rig((60,)).run([(0.0, ev.NoteOn(60, 127))], 1.0), atol=2e-5)


def test_all_sound_off_all_notes_off_and_panic():
    rig = Rig(release_s=1.0)
    y = rig.run([(0.0, ev.NoteOn(69, 127)), (0.2, ev.ControlChange(120, 0))], 0.4)
    assert level(y, 0.2 + 0.006, 0.4) == 0.0 and rig.mixer.active_voices() == 0
    assert max_jump(y) < 1.1 * 0.5 * 2 * np.pi * hz(69) / SR
    rig = Rig(release_s=1.0)
    y = rig.run([(0.0, ev.NoteOn(69, 127)), (0.2, ev.ControlChange(123, 0))], 0.8)
    assert 0.01 < level(y, 0.5, 0.55) < 0.2  # releasing, not cut
    rig = Rig(release_s=5.0)
    y = rig.run([(0.0, ev.ControlChange(64, 127)), (0.0, ev.NoteOn(69, 127)), (0.05, ev.NoteOff(69)),
                 (0.1, ev.PitchBend(4000)), (0.2, ev.Panic())], 0.4)
    assert level(y, 0.21, 0.4) == 0.0 and not rig.mixer.pedal and rig.mixer.bend_st == 0.0


def test_channel_volume_and_master_volume_ramp():
    rig = Rig()
    y = rig.run([(0.0, ev.NoteOn(69, 127)), (0.2, ev.ControlChange(7, 64)), (0.4, ev.ControlChange(11, 64)),
                 (0.6, lambda: rig.mixer.set_param("volume", 1.0))], 0.8)
    assert level(y, 0.3, 0.4) == pytest.approx(0.5 * (64 / 127) ** 2, rel=0.01)
    assert level(y, 0.5, 0.6) == pytest.approx(0.5 * (64 / 127) ** 4, rel=0.01)
    assert level(y, 0.7, 0.8) == pytest.approx((64 / 127) ** 4, rel=0.01)
    assert max_jump(y) < 1.1 * 0.5 * 2 * np.pi * hz(69) / SR  # gain steps are ramps


def test_process_allocates_no_arrays():
    """tracemalloc around blocks with 12 voices, a bend and a crossfade running: the peak
    of traced memory stays below one block of float32 (2048 frames = 8 KB)."""
    frames = int(NOTE_S * SR)
    cache = NoteCache(frames, budget_bytes=0, min_slots=64)
    loop_start, loop_end, _ = loop_points(frames, SR)
    mixer = Mixer(cache.pool, SR, (loop_start, loop_end), (24, 84), max_voices=16, max_block=2048,
                  morph_s=1.0)  # the crossfade runs through every measured block
    renderer = Renderer(None, cache, mixer, SR, frames)
    for p in range(60, 72):
        renderer.inject(p, sine(hz(p)), SR)
    mixer.take_ready()
    for p in range(60, 72):
        mixer.handle(ev.NoteOn(p, 100))
    mixer.handle(ev.PitchBend(1000))
    renderer.inject(64, sine(hz(64), phase=1.0), SR)  # a morph in flight
    mixer.take_ready()
    mixer.process(2048)
    assert mixer.n_xfading == 1
    current, peak = traced_allocation(lambda: mixer.process(2048), 5)
    assert peak < 8192
    assert current < 1024


def test_an_idle_mixer_runs_its_kernel_over_a_silent_row_and_plays_exact_zeros():
    """With no voice the kernel still runs (over row 0, kept warm for the next chord): what it
    plays is exact zeros, allocates nothing, and leaves every row idle."""
    rig = Rig(pitches=(60, 69))
    rig.run([(0.0, ev.NoteOn(60, 100)), (0.01, ev.PitchBend(3000)), (0.2, ev.NoteOff(60))], 1.5)
    m = rig.mixer
    assert m.high_water == 0 and m.active_voices() == 0
    refs, readers = m.slot_refs.copy(), m.r_slot.copy()
    seen = []
    orig = m._mix_readers
    m._mix_readers = lambda r0, h, n, out: (seen.append(h), orig(r0, h, n, out))
    y = np.concatenate([m.process(256) for _ in range(50)])
    assert seen == [1] * 50                              # the kernel ran, over one row
    assert np.array_equal(y, np.zeros_like(y)) and not np.signbit(y).any()
    assert m.high_water == 0 and m.active_voices() == 0
    assert np.array_equal(m.slot_refs, refs) and np.array_equal(m.r_slot, readers) and not readers.any()
    del m._mix_readers
    current, peak = traced_allocation(lambda: m.process(2048), 5)   # as test_process_allocates_no_arrays
    assert peak < 8192 and current < 1024

def test_block_kernel_equals_a_direct_sum_of_interpolated_reads():
    """mixkernel.c against the definition, summed in float64 sample by sample: readers at
    rate 1 on whole samples, fractional rates and positions, readers crossing loop_end inside
    the block (read one loop length back from the first sample at or past it), reads clipped
    at both ends of the pool, weights ramping from w0 to w0 + dw."""
    from engine.instrument.mixer import mix_kernel

    ffi, lib = mix_kernel()
    rng = np.random.default_rng(1)
    flat = rng.standard_normal(5000).astype(np.float32)
    n, loop_end = 200, 1000.0
    eff = np.array([1.0, 1.0, 0.75, 1.9, 2.5, 1.0, 0.5, 1.3])
    pos = np.array([10.0, 950.0, 3.25, 700.4, 560.0, 880.5, 0.0, 820.0])
    base = np.array([0.0, 1200.0, 2400.0, 0.0, 3600.0, 2000.0, -3.0, 4100.0])   # last two: clipped reads
    loop = np.array([400.0, 400.0, 300.0, 500.0, 350.0, 400.0, 400.0, 410.0])
    w0 = rng.uniform(0, 1, 8).astype(np.float32)
    dw = rng.uniform(-0.5, 0.5, 8).astype(np.float32)
    want = np.zeros(n)
    wrapped = 0
    for i in range(8):
        for k in range(n):
            p = pos[i] + eff[i] * k
            if pos[i] + eff[i] * n >= loop_end and p >= loop_end:
                p -= loop[i]
                wrapped += 1
            x = base[i] + p
            j = int(np.floor(x))
            a, b = flat[min(max(j, 0), 4999)], flat[min(max(j + 1, 0), 4999)]
            want[k] += (w0[i] + dw[i] * k / n) * (a + (b - a) * (x - j))
    assert wrapped > 0
    out, acc = np.zeros(n, np.float32), np.zeros(n, np.float32)
    f, d = ffi.from_buffer, lambda a: ffi.from_buffer("double[]", a)
    lib.gs_mix_readers(f("float[]", flat), flat.size, d(eff), d(pos), d(base), d(loop), loop_end,
                       f("float[]", w0), f("float[]", dw), 8, n, f("float[]", out), f("float[]", acc))
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-5)


def test_pitches_outside_the_model_range_resample_the_edge_note_and_follow_morphs():
    for pitch in (96, 12):
        rig = Rig((84, 24))
        y = rig.run([(0.0, ev.NoteOn(pitch, 127))], 1.0)
        assert peak_hz(y[int(0.1 * SR):]) == pytest.approx(hz(pitch), abs=0.5)
        assert rig.mixer.fallback_notes == 0 and rig.mixer.v_exact[0]
    before = int(rig.mixer.r_slot[0])
    rig.run([(0.0, lambda: rig.inject(24, sine(hz(24), phase=1.0)))], 0.2)
    assert int(rig.mixer.r_slot[0]) != before and rig.mixer.r_rate[0] == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_playing_keeps_the_books_straight(seed):
    """Any mix of notes, pedal, bends, steals and arriving renders: afterwards no voice is
    left, every per-pitch counter is back to zero and only the pitch table holds slots."""
    rng = np.random.default_rng(seed)
    rig = Rig((48, 60, 72), max_voices=6, polyphony=4, release_s=0.05)
    sched = []
    for i in range(300):
        t = i * 0.004
        kind = rng.integers(0, 10)
        pitch = int(rng.integers(20, 100))
        if kind < 4:
            sched.append((t, ev.NoteOn(pitch, int(rng.integers(1, 128)))))
        elif kind < 7:
            sched.append((t, ev.NoteOff(pitch)))
        elif kind == 7:
            sched.append((t, ev.ControlChange(64, int(rng.choice([0, 127])))))
        elif kind == 8:
            sched.append((t, ev.PitchBend(int(rng.integers(-8192, 8192)))))
        else:
            p = int(rng.choice([40, 48, 60, 72, 84]))
            sched.append((t, lambda p=p: rig.inject(p, sine(hz(p), phase=float(rng.random()) * 6))))
    sched.append((1.25, ev.Panic()))
    y = rig.run(sched, 1.4)
    m = rig.mixer
    assert np.all(np.isfinite(y)) and np.abs(y[int(1.27 * SR):]).max() == 0.0
    assert m.active_voices() == 0 and m.high_water == 0 and m.n_xfading == 0
    assert sum(m.sounding) == 0 and m.n_inexact == 0 and not m.held_count.any()
    in_table = np.zeros_like(m.slot_refs)
    for slot in m.table[m.table > 0]:
        in_table[slot] += 1
    np.testing.assert_array_equal(m.slot_refs, in_table)
