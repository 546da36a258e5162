"""Refill order and the instant answer to a pad move: the pure ordering and blend functions,
then the real renderer and mixer (tiny random-weight model; the corner notes are sines
injected through the renderer's own note preparation, so what is heard is known)."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from engine import load_synth
from engine.instrument import events as ev
from engine.instrument.instrument import Instrument
from engine.instrument.noteloop import loop_points
from engine.instrument.refill import (HELD, OTHER, RECENT, RECENT_PITCHES, Claims, blend_into, blend_weights,
                                      job_order, refill_ranks)

SR = 16000


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return load_synth(tiny_model_dir, device="cpu", threads=1)


def tables(held=(), played=()):
    """held_count and last_on as the mixer keeps them; `played` oldest first, then `held`."""
    held_count, last_on = np.zeros(128, np.int32), np.zeros(128, np.int64)
    for order, p in enumerate(list(played) + list(held), start=1):
        last_on[p] = order
    for p in held:
        held_count[p] += 1
    return held_count, last_on


def order(ranks):
    return sorted(ranks, key=ranks.get)


# ---------------------------------------------------------------- pure ordering

def test_held_then_recent_then_neighbours_nearest_first():
    held_count, last_on = tables(held=(60, 64), played=(40, 50))   # 64 pressed last
    ranks = refill_ranks((30, 80), held_count, last_on)
    got = order(ranks)
    assert got[:4] == [64, 60, 50, 40]                              # held latest first, then recent latest first
    assert [ranks[p][0] for p in got[:4]] == [HELD, HELD, RECENT, RECENT]
    # neighbours at distance 1: of 64, of 60, of 50, of 40 (urgency order), lower pitch first
    assert got[4:12] == [63, 65, 59, 61, 49, 51, 39, 41]
    assert got[12:16] == [62, 66, 58, 48]                           # distance 2 (62 is 2 from both held)
    assert sorted(got) == list(range(30, 81)) and all(ranks[p][0] == OTHER for p in got[4:])


def test_only_the_latest_played_pitches_count_as_recent():
    played = list(range(40, 40 + RECENT_PITCHES + 3))
    ranks = refill_ranks((30, 80), *tables(played=played))
    recent = [p for p in order(ranks) if ranks[p][0] == RECENT]
    assert recent == played[::-1][:RECENT_PITCHES]


def test_nothing_played_starts_in_the_middle_and_outside_notes_count_for_the_edges():
    got = order(refill_ranks((24, 84), *tables()))
    assert got[:3] == [54, 53, 55]
    ranks = refill_ranks((24, 84), *tables(held=(100,), played=(10,)))
    assert order(ranks)[:2] == [84, 24] and ranks[84][0] == HELD and ranks[24][0] == RECENT


def test_jobs_interleave_the_corner_notes_after_each_group():
    ranks = refill_ranks((50, 56), *tables(held=(53,), played=(50,)))
    anchors = [(p, c) for p in range(50, 57) for c in range(4)]
    jobs = job_order(ranks, list(range(50, 57)), anchors)
    assert jobs[:6] == [(53, -1), (53, 0), (53, 1), (53, 2), (53, 3), (50, -1)]
    assert jobs[6:10] == [(50, 0), (50, 1), (50, 2), (50, 3)]
    assert [p for p, c in jobs[10:15]] == [52, 54, 51, 55, 56] and {c for _, c in jobs[10:15]} == {-1}
    assert all(c >= 0 for _, c in jobs[15:]) and len(jobs) == 7 * 5


# ---------------------------------------------------------------- blend

def test_blend_weights_renormalise_over_the_corners_at_hand():
    w = np.array([0.5, 0.3, 0.2, 0.0])
    np.testing.assert_allclose(blend_weights(w, [True] * 4), w)
    np.testing.assert_allclose(blend_weights(w, [True, False, True, False]), [0.5 / 0.7, 0, 0.2 / 0.7, 0])
    assert blend_weights(w, [False, False, True, True]) is None    # under half the weight: not this timbre


def test_blend_is_the_weighted_sum_normalised_and_allocates_nothing_of_note_size():
    rng = np.random.default_rng(0)
    pool = np.zeros((6, 1000), np.float32)
    pool[1:5, :900] = rng.standard_normal((4, 900)).astype(np.float32)
    scratch = np.zeros(1000, np.float32)
    blend_into(pool, 5, [1, 2, 4], [0.5, 0.25, 0.25], 800, scratch)
    want = 0.5 * pool[1] + 0.25 * pool[2] + 0.25 * pool[4]
    want /= np.abs(want[:800]).max()
    np.testing.assert_allclose(pool[5], want, rtol=1e-5, atol=1e-6)
    assert np.abs(pool[5, :800]).max() == pytest.approx(1.0)


# ---------------------------------------------------------------- through the renderer and mixer

def harmonic_note(f_hz, partials, seconds=4.0):
    """A test 'instrument': given partial amplitudes and phases at the model's 16 kHz."""
    t = np.arange(int(seconds * SR)) / SR
    return sum(a * np.sin(2 * np.pi * f_hz * (k + 1) * t + ph) for k, (a, ph) in enumerate(partials)).astype(np.float32)


CORNER_PARTIALS = [[(1.0, 0.0)], [(0.6, 0.4), (0.4, 1.0)], [(0.5, 1.2), (0.0, 0), (0.5, 2.0)],
                   [(0.4, 2.5), (0.3, 0.1), (0.0, 0), (0.3, 0.7)]]


def big_instrument(synth):
    """Room for the corners' notes: the renderer keeps them and answers pad moves with blends."""
    inst = Instrument(synth, sample_rate=SR, cache_mb=160, max_voices=4)
    assert inst.renderer.anchors and inst.stats()["approximate"]
    return inst


def store_corner_notes(inst, pitch):
    """The four corner instruments' notes of `pitch` as the renderer stores its anchors."""
    r, f_hz = inst.renderer, 440.0 * 2 ** ((pitch - 69) / 12)
    gen = r._model_gen
    r._take_mail()
    for ck, partials in zip(inst.timbre.corner_keys(), CORNER_PARTIALS):
        note, loop_len = r.prepare(harmonic_note(f_hz, partials), SR, pitch)
        r._store((gen, ck, pitch), note, loop_len)
    return [inst.cache.peek((gen, ck, pitch)) for ck in inst.timbre.corner_keys()]


def test_a_small_cache_plays_without_blends(synth):
    inst = Instrument(synth, sample_rate=SR, cache_mb=32, max_voices=4)
    assert not inst.renderer.anchors and not inst.stats()["approximate"]


def test_renderer_renders_held_then_its_corner_notes_then_recent(synth):
    inst = big_instrument(synth)
    r = inst.renderer
    inst.post(ev.NoteOn(50, 100))
    inst.post(ev.NoteOff(50))
    inst.post(ev.NoteOn(70, 100))
    inst.process(64)
    corners = inst.timbre.corner_keys()
    cached = []
    for _ in range(7):
        assert r.step()
        cached.append({(k[1], k[2]) for k in inst.cache.keys()})
    assert cached[0] == {(inst.timbre.key(), 70)}
    assert [cached[i] - cached[i - 1] for i in range(1, 5)] == [{(ck, 70)} for ck in corners]
    assert cached[5] - cached[4] == {(inst.timbre.key(), 50)}
    assert cached[6] - cached[5] == {(corners[0], 50)}


def smooth_model(synth, z, pitches, samples=None):
    """Stands in for the model: a smooth harmonic note whose phases and mix follow the latent,
    so every note heard is known to be free of steps (the tiny model's notes are noise-like)."""
    return np.stack([harmonic_note(440.0 * 2 ** ((p - 69) / 12), [(1.0, float(zi[0])), (abs(float(zi[1])), 0.3)])
                     for zi, p in zip(z, pitches)])


def test_pad_move_publishes_the_blend_at_once_then_the_exact_note_click_free(synth, monkeypatch):
    inst = big_instrument(synth)
    r, m = inst.renderer, inst.mixer
    monkeypatch.setattr(r, "_generate", smooth_model)
    pitch = 60
    slots = store_corner_notes(inst, pitch)
    r.render_now([pitch])                                  # the exact note of the starting timbre
    inst.post(ev.NoteOn(pitch, 127))
    out = [inst.process(256).copy() for _ in range(20)]
    renders = r.renders
    inst.set_pad(0.2, 0.7)
    weights = inst.timbre.weights()
    r._take_mail()
    r._answer()                                            # what the worker does first on a new timbre
    assert r.renders == renders and r.approximations == 1  # no model call
    blend_slot = int(m.ready[-1][1])
    key = inst.cache._slot_key[blend_slot]
    assert key[0] == "blend" and key[2] == inst.timbre.key() and key[3] == pitch
    want = sum(w * inst.cache.pool[s] for w, s in zip(weights, slots))
    want /= np.abs(want[:m.loop_end]).max()
    np.testing.assert_allclose(inst.cache.pool[blend_slot], want, atol=1e-5)
    assert m.slot_loop_len[blend_slot] == m.slot_loop_len[slots[0]]
    out += [inst.process(256).copy()]
    assert m.r_slot[0] == blend_slot and m.v_xfading[0]    # the next block already crossfades to it
    out += [inst.process(256).copy() for _ in range(5)]
    assert r.step() and r.renders == renders + 1           # the exact render lands ...
    exact_slot = int(m.ready[-1][1])
    assert inst.cache._slot_key[exact_slot] == (r._model_gen, inst.timbre.key(), pitch)
    out += [inst.process(256).copy() for _ in range(10)]
    assert m.r_slot[0] == exact_slot and not m.v_xfading[0]  # ... and replaced the blend
    y = np.concatenate(out)
    # click-free: no sample-to-sample step beyond the notes' own (at the voice's gain), plus
    # what a linear crossfade of 20 ms or longer between two notes of peak 1 can add
    start = int(np.flatnonzero(m.table)[0])
    played = [inst.cache.pool[s, :m.loop_end] for s in {blend_slot, exact_slot, start}]
    own = max(float(np.abs(np.diff(n)).max()) for n in played)
    gain = m.gain * m.v_vel[0]
    assert float(np.abs(np.diff(y[2000:])).max()) <= gain * (own + 2.0 / (0.02 * SR)) * 1.05


def test_a_render_for_a_timbre_left_meanwhile_is_cached_not_played(synth, monkeypatch):
    inst = big_instrument(synth)
    r, m = inst.renderer, inst.mixer
    store_corner_notes(inst, 60)
    r.render_now([60])
    inst.post(ev.NoteOn(60, 100))
    inst.process(64)
    inst.set_pad(0.9, 0.9)
    r._take_mail()
    left = inst.timbre.key()
    real = r._render_here

    def pad_moves_mid_render(keys, pitches, latent):
        inst.set_pad(0.1, 0.2)                         # arrives while the render runs ...
        assert r._take_mail(timbre_only=True)
        r._answer()                                    # ... and is answered by a blend
        return real(keys, pitches, latent)

    monkeypatch.setattr(r, "_render_here", pad_moves_mid_render)
    r._jobs([60], -1)
    monkeypatch.undo()
    assert (r._model_gen, left, 60) in inst.cache       # kept for a return to that spot
    inst.process(64)
    assert inst.cache._slot_key[int(m.table[60])][:3] == ("blend", r._model_gen, inst.timbre.key())


def test_the_worker_answers_a_pad_move_while_waiting_for_a_render(synth):
    """`_wait_answering` is where the worker waits for the render process; a pad move made
    meanwhile is answered (the blend published) before the render's answer arrives."""
    inst = big_instrument(synth)
    r = inst.renderer
    store_corner_notes(inst, 60)
    r.render_now([60])
    inst.post(ev.NoteOn(60, 100))
    inst.process(64)
    r._wake_pipe.open()
    answer_r, answer_w = os.pipe()                     # stands for the render process's stdout
    waiter = threading.Thread(target=r._wait_answering, args=([answer_r],))
    try:
        r.handoff.published.clear()
        waiter.start()
        inst.set_pad(0.6, 0.3)
        assert r.handoff.published.wait(10)                    # answered while the "render" is in flight
        assert waiter.is_alive() and r.approximations == 1
        os.write(answer_w, b"x")                       # the render's answer arrives
        waiter.join(10)
        assert not waiter.is_alive()
    finally:
        os.write(answer_w, b"x")
        waiter.join(10)
        for fd in (answer_r, answer_w):
            os.close(fd)
        r.stop()


def test_blend_of_looped_notes_loops_seamlessly(synth):
    """Notes of one pitch share their loop, so the blend wraps as smoothly as they do."""
    inst = big_instrument(synth)
    slots = store_corner_notes(inst, 57)
    blend_into(inst.cache.pool, 1, slots, [0.25] * 4, inst.mixer.loop_end, inst.renderer.handoff._scratch)
    loop_start, loop_end, _ = loop_points(inst.note_frames, SR)
    length = int(inst.mixer.slot_loop_len[slots[0]])
    note = inst.cache.pool[1]
    wrapped = np.concatenate([note[loop_end - 200:loop_end], note[loop_end - length:loop_end - length + 200]])
    own = max(float(np.abs(np.diff(inst.cache.pool[s, :loop_end])).max()) for s in slots)
    assert float(np.abs(np.diff(wrapped)).max()) <= own


def test_claims_count_a_pitch_when_it_lands_not_when_it_is_sent():
    """The worker's account: a pitch queued on a render process is off the to-do list but not
    rendered; one whose process died goes back on the list; the range completes once."""
    c = Claims()
    c.begin((0, b"a"), 3)
    c.done.update([60, 61, 62])
    c.send([(0, b"a", 60), (0, b"a", 61), (0, b"corner", 60)])   # 62 was a cache hit
    assert c.rendered == (62,) and c.progress == pytest.approx(1 / 3)
    c.land((0, b"a", 60))
    c.drop((0, b"a", 61))                                  # its helper died
    assert c.done == {60, 62} and c.rendered == (60, 62) and c.seq_done == 0
    c.done.add(61)
    c.send([(0, b"a", 61)])
    c.begin((0, b"b"), 3)                                  # the pad moved: a new timbre
    c.land((0, b"a", 61))                                  # the old timbre's note lands
    assert c.rendered == () and c.seq_done == 0 and c.pending == {(0, b"corner", 60)}
    c.done.update([60, 61, 62])
    c.update()
    assert c.seq_done == c.seq == 2 and c.progress == 1.0
    first = c.range_seconds
    c.land((0, b"corner", 60))                             # a corner note after the range
    assert c.range_seconds == first
