"""The render process: a real child Python loads the same model and renders the same notes."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from engine.gansynth.synth import load_synth
from engine.instrument import events as ev
from engine.instrument.instrument import Instrument
from engine.instrument.renderpool import RenderPool
from engine.instrument.synthproc import SynthProcess, SynthProcessError


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return load_synth(tiny_model_dir, device="cpu", threads=1)


def _ready(remote: SynthProcess, timeout: float = 60.0) -> SynthProcess:
    assert remote.ready.wait(timeout), remote.error
    return remote


def _prep(rate: int) -> dict:
    """What the render worker asks the child to prepare notes for: 4 s at `rate`, looped."""
    from engine.instrument.noteloop import loop_points

    frames = rate * 4
    return {"rate": rate, "frames": frames, "loop": list(loop_points(frames, rate)), "loop_s": 1.0}


def _same_notes(a, b):
    """Same model, device, threads and precision: equal up to float rounding (oneDNN may pick
    another kernel in another process state)."""
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_child_renders_the_parents_notes(synth):
    remote = _ready(SynthProcess(synth.source, synth.num_samples))
    try:
        z = synth.random_latents(3, seed=2)
        pitches = [30, 60, 84]
        got = remote.generate(z, pitches)
        assert got.dtype == np.float32 and got.shape == (3, synth.num_samples)
        _same_notes(got, synth.generate(z, pitches))
        with pytest.raises(ValueError, match="pitches must lie in 24..84"):  # the child's own check
            remote.generate(z[:1], [99])
        np.testing.assert_array_equal(remote.generate(z[1:2], [60]), got[1:2])  # still serving
        span = remote.generate(z, pitches, samples=30000)   # only what a held note can sound
        assert span.shape == (3, 30000)
        _same_notes(span, got[:, :30000])
    finally:
        remote.close()
    assert remote._proc.poll() is not None  # end of stdin ended it
    with pytest.raises(SynthProcessError):
        remote.generate(z[:1], [60])


def test_a_model_the_child_cannot_load_is_reported(synth, tmp_path):
    remote = SynthProcess(dict(synth.source, path=str(tmp_path / "gone")), synth.num_samples)
    deadline = time.monotonic() + 60
    while not remote.error and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "gone" in remote.error and "no such file" in remote.error
    assert not remote.ready.is_set()


def test_instrument_renders_in_the_child_and_survives_its_death(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    assert inst.stats()["render_process"] == "off"
    inst.start()
    try:
        remote = _ready(inst.renderer.render_pool)
        assert inst.stats()["render_process"] == "ready"
        assert inst.renderer.idle.wait(60)
        renders = inst.stats()["renders"]
        assert renders == 61
        # the notes match an in-process render of the same timbre
        here = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4, timbre=inst.timbre)
        here.renderer.render_now([60])
        inst.process(16), here.process(16)  # the mixers take up the published notes
        _same_notes(inst.note_audio(60), here.note_audio(60))

        os.kill(remote.pid, signal.SIGKILL)  # the (first) render process dies mid-performance
        remote.processes[0]._proc.wait(10)
        inst.set_pad(0.9, 0.1)
        inst.post(ev.NoteOn(62, 100))
        deadline = time.monotonic() + 60
        while inst.stats()["renders"] < renders + 61 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = inst.stats()
        assert stats["renders"] == renders + 61  # the new timbre rendered, in this process
        assert stats["render_process"].startswith("failed: render process exited")
    finally:
        inst.stop()
    assert all(p._proc.poll() is not None for p in remote.processes)


def test_the_worker_commits_the_first_ranges_slots_while_the_render_process_starts(synth):
    """The child takes seconds to import torch and load the model; the worker, with nothing to
    render meanwhile, commits the slots the first range will be stored in, so its stores are
    copies, not page faults (the ranges after it are warmed when the worker goes idle)."""
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    lo, hi = synth.pitch_range
    assert not inst.cache._written.any()
    inst.start()
    try:
        deadline = time.monotonic() + 30
        while inst.cache._written.sum() < hi - lo + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert inst.stats()["render_process"] == "starting"   # before the child could take a note
        assert inst.cache._written.sum() == hi - lo + 1 and inst.stats()["renders"] == 0
        assert inst.renderer.idle.wait(60) and inst.stats()["renders"] == hi - lo + 1
    finally:
        inst.stop()


def test_stop_ends_the_child_and_a_swapped_model_gets_its_own(synth, tiny_model_dir):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.start()
    try:
        first = _ready(inst.renderer.render_pool)
        inst.swap_model(load_synth(tiny_model_dir, device="cpu", threads=1))
        deadline = time.monotonic() + 60
        while inst.renderer.render_pool in (first, None) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = _ready(inst.renderer.render_pool)
        assert second.pid != first.pid and all(p._proc.poll() is not None for p in first.processes)
    finally:
        inst.stop()
    assert all(p._proc.poll() is not None for p in second.processes) and inst.renderer.render_pool is None


def test_the_child_renders_at_low_priority_from_its_start_and_so_does_the_worker(synth):
    """The child is niced (and on Linux SCHED_IDLE) before it imports torch (loading is seconds
    of CPU beside the audio callback); the parent's worker thread, which plans, stores and blends
    for the child in bursts of milliseconds, is niced too (at the default priority those bursts
    kept a plain jackd's thread off a core)."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.start()
    try:
        remote = inst.renderer.render_pool
        seen_loading = None
        while not remote.ready.is_set() and not remote.error:   # still importing / loading
            seen_loading = os.getpriority(os.PRIO_PROCESS, remote.pid)
            remote.ready.wait(0.01)
        _ready(remote)
        assert seen_loading == min(base + 10, 19)
        assert all(os.getpriority(os.PRIO_PROCESS, p.pid) == min(base + 10, 19) for p in remote.processes)
        if hasattr(os, "SCHED_IDLE"):   # Linux: the children run only on cores nothing else wants
            assert all(os.sched_getscheduler(p.pid) == os.SCHED_IDLE for p in remote.processes)
        assert inst.renderer.idle.wait(60)
        assert os.getpriority(os.PRIO_PROCESS, inst.renderer._thread.native_id) == min(base + 10, 19)
        assert inst.stats()["renders"] == 61          # the whole range, once
    finally:
        inst.stop()


def test_child_prepares_notes_as_the_parent_would(synth):
    """send_notes/receive_notes: resampled, normalised and looped in the child, equal to the parent's own
    preparation of the same notes (soxr would hold the parent's GIL for milliseconds a note)."""
    from engine.instrument.noteloop import prepare_note

    prep = _prep(48000)
    frames, rate, loop = prep["frames"], prep["rate"], tuple(prep["loop"])
    remote = _ready(SynthProcess(synth.source, synth.num_samples))
    try:
        z = synth.random_latents(2, seed=4)
        remote.send_notes(z, [40, 70], 50000, prep)
        notes, loop_lens, errors = remote.receive_notes()
    finally:
        remote.close()
    assert notes.shape == (2, frames) and errors == ["", ""]
    for note, loop_len, wave, pitch in zip(notes, loop_lens, synth.generate(z, [40, 70], 50000), [40, 70]):
        want, want_len = prepare_note(wave, synth.sample_rate, pitch, rate, frames, loop, 1.0)
        assert loop_len == want_len
        _same_notes(note, want)


def _drain(pool: RenderPool) -> dict:
    """{tag: Landing} of everything in flight."""
    out = {}
    while pool.in_flight:
        out.update((landing.tag, landing) for landing in pool.receive())
    return out


def test_a_pool_keeps_its_children_busy_and_outlives_a_helper(synth):
    """Three children render the queued pitches side by side, two requests queued each: the
    notes are the parent's own, under their tags; a helper that dies is dropped and its
    requests come back lost; a rejected request is answered as such and the children serve on."""
    prep = _prep(16000)
    pool = RenderPool(synth.source, synth.num_samples, size=3)
    try:
        for child in pool.processes:
            _ready(child)
        assert pool.ready_count == 3
        z = synth.random_latents(7, seed=6)
        pitches = [30, 45, 60, 72, 84, 50, 66]
        submitted = [i for i, p in enumerate(pitches) if pool.submit(z[i:i + 1], [p], None, prep, i)]
        assert submitted == [0, 1, 2, 3, 4, 5] and not pool.can_take()   # 3 children x DEPTH 2
        assert sorted(len(q) for q in pool._queued.values()) == [2, 2, 2]
        landed = _drain(pool)
        assert pool.submit(z[6:], [66], None, prep, 6) and pool.receive()[0].tag == 6
        want = [Instrument(synth, sample_rate=prep["rate"]).renderer.prepare(w, synth.sample_rate, p)[0]
                for w, p in zip(synth.generate(z, pitches), pitches)]
        assert sorted(landed) == submitted and all(not v.failure and v.errors == [""] for v in landed.values())
        _same_notes(np.concatenate([landed[i].notes for i in submitted]), np.stack(want[:6]))

        helper = pool.processes[1]
        os.kill(helper.pid, signal.SIGSTOP)   # it takes its requests, then dies without answering
        for i in range(6):
            assert pool.submit(z[i:i + 1], [pitches[i]], None, prep, i)
        held = [tag for tag, _ in pool._queued[helper]]
        os.kill(helper.pid, signal.SIGKILL)
        helper._proc.wait(10)
        landed = _drain(pool)
        assert helper not in pool.processes   # (and a new helper starting: the pool's size is 3)
        lost = sorted(t for t, v in landed.items() if v.lost)
        assert len(held) == 2 and lost == sorted(held) and sorted(landed) == list(range(6))
        for i in lost:
            assert pool.submit(z[i:i + 1], [pitches[i]], None, prep, i)
        again = {**{t: v for t, v in landed.items() if not v.lost}, **_drain(pool)}
        _same_notes(np.concatenate([again[i].notes for i in range(6)]), np.stack(want[:6]))

        assert pool.submit(z[:1], [99], None, prep, "bad") and pool.submit(z[2:3], [60], None, prep, "good")
        landed = _drain(pool)
        assert "pitches must lie" in landed["bad"].failure and not landed["good"].failure
        _same_notes(landed["good"].notes[0], want[2])
    finally:
        pool.close()
    assert all(p._proc.poll() is not None for p in pool.processes)


def test_a_newer_timbres_requests_supersede_the_older_ones_queued(synth):
    """A pad sweep: each request of a newer timbre generation finds room behind the note
    rendering (up to MAX_QUEUED), and when the child comes to the older ones it drops them
    (answered lost, nothing rendered); a request without a generation (a corner note, which
    every blend uses) is never dropped."""
    prep = _prep(16000)
    pool = RenderPool(synth.source, synth.num_samples, size=1)
    try:
        child = _ready(pool.processes[0])
        z = synth.random_latents(3, seed=8)
        assert pool.submit(z[:1], [40], None, prep, "corner")
        os.kill(child.pid, signal.SIGSTOP)   # everything after the corner note waits in its pipe
        assert pool.submit(z[1:2], [50], None, prep, "g1", gen=1)
        assert not pool.can_take() and not pool.can_take(1)   # DEPTH 2, for corner notes and timbre 1 alike
        gen = 1
        while pool.can_take(gen + 1):   # the pad moves on: each new timbre's note finds room
            gen += 1
            assert pool.submit(z[2:3], [60], None, prep, f"g{gen}", gen=gen)
        assert len(pool._queued[child]) == RenderPool.MAX_QUEUED and gen == RenderPool.MAX_QUEUED - 1
        os.kill(child.pid, signal.SIGCONT)
        landed = _drain(pool)
    finally:
        pool.close()
    rendered = sorted(t for t, v in landed.items() if not v.lost)
    assert rendered == sorted(["corner", f"g{gen}"]) and len(landed) == RenderPool.MAX_QUEUED
    assert all(landed[f"g{g}"].notes is None for g in range(1, gen))
    want = Instrument(synth, sample_rate=prep["rate"]).renderer.prepare(synth.generate(z[2:3], [60])[0],
                                                                          synth.sample_rate, 60)[0]
    _same_notes(landed[f"g{gen}"].notes[0], want)


def test_instrument_renders_a_pitch_per_render_process(synth):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4, render_processes=2)
    inst.start()
    try:
        for child in inst.renderer.render_pool.processes:
            _ready(child)
        assert inst.renderer.idle.wait(60)
        stats = inst.stats()
        assert stats["render_processes"] == 2 and stats["render_progress"] == 1.0 and stats["renders"] >= 61
        here = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4, timbre=inst.timbre)
        here.renderer.render_now([40, 41, 80])
        inst.process(16), here.process(16)
        for pitch in (40, 41, 80):
            _same_notes(inst.note_audio(pitch), here.note_audio(pitch))
    finally:
        inst.stop()


def test_a_pool_grows_and_shrinks_at_the_next_request(synth):
    prep = _prep(16000)
    pool = RenderPool(synth.source, synth.num_samples, size=1)
    z = synth.random_latents(2, seed=7)

    def render(tags):
        for t in tags:
            assert pool.submit(z[t:t + 1], [50 + 20 * t], None, prep, t)
        landed = _drain(pool)
        return np.concatenate([landed[t].notes for t in tags])

    try:
        _ready(pool.processes[0])
        first = render([0, 1])
        pool.size = 2                       # e.g. the audio thread turned out realtime
        render([0])
        assert len(pool.processes) == 2
        helper = _ready(pool.processes[1])
        assert pool.ready_count == 2
        assert pool.submit(z[:1], [50], None, prep, 0) and pool.submit(z[1:], [70], None, prep, 1)
        assert [len(pool._queued[p]) for p in pool.processes] == [1, 1]   # one each, side by side
        _same_notes(np.concatenate([v.notes for _, v in sorted(_drain(pool).items())]), first)
        pool.size = 1
        _same_notes(render([0, 1]), first)
        assert len(pool.processes) == 1 and helper._proc.poll() is not None
    finally:
        pool.close()


def test_the_audio_thread_decides_how_many_render_processes(synth):
    """Realtime callback thread: a render process per core; else one core is left to the
    audio; an explicit count stays."""
    from engine.instrument.renderpool import render_process_count

    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    assert inst.renderer.processes == render_process_count(False)
    inst.audio_thread_realtime(True)
    assert inst.renderer.processes == render_process_count(True) == min(4, len(os.sched_getaffinity(0)))
    inst.audio_thread_realtime(False)
    assert inst.renderer.processes == max(1, min(4, len(os.sched_getaffinity(0)) - 1))
    fixed = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4, render_processes=3)
    fixed.audio_thread_realtime(True)
    assert fixed.renderer.processes == 3


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_child_is_sched_idle_from_its_first_instruction():
    """The render process is spawned from a thread that takes SCHED_IDLE first, so the child's
    interpreter starts at that policy (before `_CHILD` lowers itself), and the caller keeps its own."""
    import sys

    from engine.instrument.synthproc import _spawn_idle

    before = os.sched_getscheduler(0)
    proc = _spawn_idle([sys.executable, "-c", "import os, sys; sys.stdout.write(str(os.sched_getscheduler(0)))"])
    out, _ = proc.communicate(timeout=30)
    assert int(out) == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == before
