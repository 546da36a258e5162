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
from engine.instrument.synthproc import SynthProcess, SynthProcessError


@pytest.fixture(scope="module")
def synth(tiny_model_dir):
    return load_synth(tiny_model_dir, device="cpu", threads=1)


def _ready(remote: SynthProcess, timeout: float = 60.0) -> SynthProcess:
    assert remote.ready.wait(timeout), remote.error
    return remote


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
        remote = _ready(inst.renderer._remote)
        assert inst.stats()["render_process"] == "ready"
        assert inst.renderer.idle.wait(60)
        renders = inst.stats()["renders"]
        assert renders == 61
        # the notes match an in-process render of the same timbre
        here = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4, timbre=inst.timbre)
        here.renderer.render_now([60])
        inst.process(16), here.process(16)  # the mixers take up the published notes
        _same_notes(inst.note_audio(60), here.note_audio(60))

        os.kill(remote.pid, signal.SIGKILL)  # the render process dies mid-performance
        remote._proc.wait(10)
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
    assert remote._proc.poll() is not None


def test_stop_ends_the_child_and_a_swapped_model_gets_its_own(synth, tiny_model_dir):
    inst = Instrument(synth, sample_rate=16000, cache_mb=32, max_voices=4)
    inst.start()
    try:
        first = _ready(inst.renderer._remote)
        inst.swap_model(load_synth(tiny_model_dir, device="cpu", threads=1))
        deadline = time.monotonic() + 60
        while inst.renderer._remote in (first, None) and time.monotonic() < deadline:
            time.sleep(0.05)
        second = _ready(inst.renderer._remote)
        assert second.pid != first.pid and first._proc.poll() is not None
    finally:
        inst.stop()
    assert second._proc.poll() is not None and inst.renderer._remote is None
