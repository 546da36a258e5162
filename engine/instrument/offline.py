"""Offline driver: the same Instrument driven by a clock without a device.

    driver = OfflineDriver(Instrument(synth, sample_rate=48000))
    audio = driver.render([(0.0, NoteOn(60, 100)), (1.0, NoteOff(60))], tail_s=1.0)
    driver.render_to_wav(events, "out.wav")

Events are (time in seconds, engine event) pairs; they take effect at the exact
sample (the driver splits `process` calls at event times).

Deterministic mode (default; the render worker must not be running): before the
events of each instant are handed over, the driver renders synchronously, in its
own thread, every note they need — the pitches of new notes and, when the timbre
changes, the pitches still held — so every note and every pad-move crossfade lands
at the same sample on every run. Non-deterministic mode leaves rendering to the
started worker, like live playing.

Real-time playing without a device (paced blocks, scope, recorder) is
`engine.devices.clock.OfflineClockOutput`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from engine.instrument import events as ev

_TIMBRE_EVENTS = (ev.PadMove,)


class OfflineDriver:
    def __init__(self, instrument, block_size: int = 256, deterministic: bool = True):
        self.inst = instrument
        self.block_size = int(block_size)
        self.deterministic = deterministic
        if deterministic and instrument.renderer._thread is not None:
            raise ValueError("deterministic offline rendering needs the render worker stopped")

    @property
    def sample_rate(self) -> int:
        return self.inst.sample_rate

    def render(self, events, duration_s: float | None = None, tail_s: float = 1.0) -> np.ndarray:
        """Play timestamped events; float32 [frames] mono at the instrument's rate.

        Length: `duration_s` if given, else the last event time plus `tail_s`."""
        timeline = sorted(((float(t), i, e) for i, (t, e) in enumerate(events)), key=lambda x: (x[0], x[1]))
        for t, _, e in timeline:
            if t < 0:
                raise ValueError(f"event time must be >= 0, got {t} for {e!r}")
        sr = self.sample_rate
        end_s = duration_s if duration_s is not None else (timeline[-1][0] if timeline else 0.0) + tail_s
        total = int(round(end_s * sr))
        out = np.zeros(total, np.float32)
        done = 0
        i = 0
        while done < total:
            # hand over every event due at this sample
            group = []
            while i < len(timeline) and int(round(timeline[i][0] * sr)) <= done:
                group.append(timeline[i][2])
                i += 1
            if group:
                self._post_group(group)
            next_event = int(round(timeline[i][0] * sr)) if i < len(timeline) else total
            stop = min(total, max(next_event, done + 1))
            while done < stop:
                n = min(self.block_size, stop - done)
                out[done:done + n] = self.inst.process(n)
                done += n
        return out

    def _post_group(self, group) -> None:
        inst = self.inst
        for e in group:
            inst.post(e)
        if not self.deterministic:
            return
        lo, hi = inst.synth.pitch_range
        need = set()
        timbre_changed = any(isinstance(e, _TIMBRE_EVENTS) or (isinstance(e, ev.ControlChange) and
                             e.control == ev.CC_MOD_WHEEL) or (isinstance(e, ev.SetParam) and
                             e.name in ("interpolation", "spherical", "pad_grid")) for e in group)
        if timbre_changed:
            need.update(min(max(int(p), lo), hi) for p in np.flatnonzero(inst.mixer.held_count))
        for e in group:
            if isinstance(e, ev.NoteOn) and e.velocity > 0:
                need.add(min(max(e.pitch, lo), hi))
        inst.renderer.render_now(sorted(need))

    def render_to_wav(self, events, path, duration_s: float | None = None, tail_s: float = 1.0,
                      subtype: str = "FLOAT") -> Path:
        audio = self.render(events, duration_s, tail_s)
        path = Path(path)
        soundfile.write(str(path), audio, self.sample_rate, subtype=subtype)
        return path
