"""Polyphonic voice mixer: events in, one mono block out. Runs on the audio thread only.

Voices, their readers and stages are `Voices` (engine/instrument/voices.py), the base class;
this module is the block kernel over their arrays.

All voice state lives in numpy arrays. A block is a fixed number of vectorised
operations over the used voice rows (envelopes, weights, positions), and the mix itself is
one call into a small C kernel (mixkernel.c, built at install): per reader, positions =
pos + rate * k wrapped into the loop, linear interpolation between two neighbours of the
flattened pool, weighted by a linear ramp inside the block (envelope and crossfade:
w0 + (w1 - w0) * k / n) and summed. `process` allocates no arrays, takes no lock, logs
nothing and never calls torch or BLAS.

Notes loop: every note ends its played part at `loop_end` (shared; before the release
that NSynth-style notes start at 3 s of 4); the renderer
bakes a crossfade so a read position wrapping from loop_end back by the slot's
loop length (`slot_loop_len`, a whole number of pitch periods) is seamless; voices
held (or releasing) past the rendered length keep looping that last stretch.

Envelope (per voice, block rate, linear inside a block): attack linear to 1 in
attack_s; decay exponential to the sustain level; release exponential, -60 dB at
release_s; a stolen or All-Sound-Off voice fades linearly to 0 in `fade_s` (~5 ms).
The sustain level and the master gain are slewed, so knob moves never click.
"""
from __future__ import annotations

import math

import numpy as np

from engine.instrument.voices import (ATTACK, DECAY, FADE, RELEASE, SILENCE_LEVEL, SILENT_SLOT, SUSTAIN,
                                      Voices)
from engine.util.compiled import compiled_module


def mix_kernel():
    """(ffi, lib) of the compiled block kernel; ImportError saying how to get it back when it is missing."""
    return compiled_module("engine.instrument._mixkernel", "the compiled mixer kernel")


class Mixer(Voices):
    """Voices mixed into one mono block (`process`); takes the arguments of `Voices`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        R, B = self.rows, self.max_block
        # scratch, preallocated
        self._K32 = np.arange(B, dtype=np.float32)
        self._tmp = np.zeros(B, np.float32)
        self._ramp = np.zeros(B, np.float32)
        self._acc = np.zeros(B, np.float32)
        self._acc2 = np.zeros(B, np.float32)
        self._w0 = np.zeros(2 * R, np.float32)
        self._dw = np.zeros(2 * R, np.float32)
        self._t64 = np.zeros(2 * R, np.float64)
        self._t64b = np.zeros(2 * R, np.float64)
        self._m = np.zeros(R, bool)
        self._m2 = np.zeros(2 * R, bool)
        self._out = np.zeros(1 << 16, np.float32)
        # commit the pages of every scratch and voice array now (np.zeros maps them lazily, and
        # a first touch inside the callback, as voices are added, is a page fault there); the
        # shared note pool is not ours to touch (the renderer writes it)
        for a in vars(self).values():
            if isinstance(a, np.ndarray) and a.base is None and a is not self.pool and not a.any():
                a.fill(0)
        # the block kernel (mixkernel.c) and its arguments for each reader set (a: rows from 0,
        # b: from R), made once: pointers into the arrays it reads and writes
        ffi, lib = mix_kernel()
        self._mix = lib.gs_mix_readers
        p = {name: ffi.from_buffer({np.float32: "float[]", np.float64: "double[]"}[a.dtype.type], a)
             for name, a in (("flat", self.flat), ("eff", self.r_eff), ("pos", self.r_pos), ("base", self.r_base),
                             ("loop", self.r_loop), ("w0", self._w0), ("dw", self._dw), ("acc", self._acc),
                             ("acc2", self._acc2), ("tmp", self._tmp))}
        self._mix_args = {r0: (p["flat"], self.flat.size, p["eff"] + r0, p["pos"] + r0, p["base"] + r0,
                               p["loop"] + r0, float(self.loop_end), p["w0"] + r0, p["dw"] + r0) for r0 in (0, R)}
        self._mix_out = {"acc": p["acc"], "acc2": p["acc2"]}
        self._mix_scratch = p["tmp"]

    # ------------------------------------------------------------------ audio
    def process(self, frames: int) -> np.ndarray:
        """Mix the next `frames` samples: float32 [frames], a view valid until the next call."""
        out = self._out[:frames]
        start = 0
        while start < frames:
            n = min(self.max_block, frames - start)
            self._block(out[start:start + n], n)
            start += n
        return out

    def _block(self, dst: np.ndarray, n: int) -> None:
        sr = self.sample_rate
        dt = n / sr
        # master gain ramp (slewed)
        g0 = self.gain
        target = self.volume * self.cc_volume * self.cc_expression
        step = dt / self.gain_slew_s
        g1 = min(max(target, g0 - step), g0 + step)
        self.gain = g1
        # sustain level slew (50 ms full scale)
        s_step = dt / 0.05
        self.sustain = min(max(self.sustain_target, self.sustain - s_step), self.sustain + s_step)
        # With no voice the kernel still runs, over the idle row 0 (the silent slot, weight 0:
        # zeros out), so that its code and memory stay warm: after idling, the first chord's
        # block cost 6 ms where a playing one costs 0.2 (pages untouched for a second cost up
        # to ~100 us each on the next touch, measured on a VM), 2.6 ms with this; the rest was
        # numpy and BLAS code the idle row never ran, gone since the mix is mixkernel.c.
        h = max(self.high_water, 1)
        R = self.rows
        np.copyto(self.v_env0, self.v_env)
        np.copyto(self.v_xf0, self.v_xf)
        self._advance_envelopes(n, dt)
        if self.n_xfading:
            np.add(self.v_xf[:h], n / (self.morph_s * sr), out=self.v_xf[:h])
            np.minimum(self.v_xf[:h], 1.0, out=self.v_xf[:h])
        # weights at block start (w0) and end (w1) for readers a and b
        w0, dw, t, tb = self._w0, self._dw, self._t64, self._t64b
        np.multiply(self.v_env0[:h], self.v_vel[:h], out=t[:h])
        np.multiply(t[:h], self.v_xf0[:h], out=tb[:h])
        np.copyto(w0[:h], tb[:h], casting="same_kind")
        if self.n_xfading:
            np.subtract(t[:h], tb[:h], out=tb[:h])
            np.copyto(w0[R:R + h], tb[:h], casting="same_kind")
        np.multiply(self.v_env[:h], self.v_vel[:h], out=t[:h])
        np.multiply(t[:h], self.v_xf[:h], out=tb[:h])
        np.copyto(dw[:h], tb[:h], casting="same_kind")
        np.subtract(dw[:h], w0[:h], out=dw[:h])
        if self.n_xfading:
            np.subtract(t[:h], tb[:h], out=tb[:h])
            np.copyto(dw[R:R + h], tb[:h], casting="same_kind")
            np.subtract(dw[R:R + h], w0[R:R + h], out=dw[R:R + h])
        # effective rates with bend
        bend = 2.0 ** (self.bend_st / 12.0)
        np.multiply(self.r_rate, bend, out=self.r_eff)
        np.minimum(self.r_eff, self.max_rate, out=self.r_eff)
        acc = self._acc[:n]
        self._mix_readers(0, h, n, "acc")
        if self.n_xfading:
            self._mix_readers(R, h, n, "acc2")
            acc += self._acc2[:n]
        # master gain ramp
        ramp = self._ramp[:n]
        np.multiply(self._K32[:n], (g1 - g0) / n, out=ramp)
        ramp += g0
        np.multiply(acc, ramp, out=dst)
        self._advance_positions(n)
        self._finish_voices(h)

    def _mix_readers(self, r0: int, h: int, n: int, out: str) -> None:
        """`out` ("acc" or "acc2")[:n] = the sum over readers r0..r0+h of their weight-ramped,
        linearly interpolated pool reads (mixkernel.c; one call, no interpreter inside)."""
        self._mix(*self._mix_args[r0], h, n, self._mix_out[out], self._mix_scratch)

    def _advance_positions(self, n: int) -> None:
        pos, m = self.r_pos, self._m2
        np.multiply(self.r_eff, n, out=self._t64)
        pos += self._t64
        np.greater_equal(pos, self.loop_end, out=m)
        np.subtract(pos, self.r_loop, out=pos, where=m)

    def _advance_envelopes(self, n: int, dt: float) -> None:
        env, stage, m = self.v_env, self.v_stage, self._m
        # attack: linear to 1
        np.equal(stage, ATTACK, out=m)
        np.add(env, dt / self.attack_s, out=env, where=m)
        np.minimum(env, 1.0, out=env)
        # decay: exponential toward sustain (time constant decay_s / 5)
        np.equal(stage, DECAY, out=m)
        k = math.exp(-5.0 * dt / self.decay_s)
        np.subtract(env, self.sustain, out=env, where=m)
        np.multiply(env, k, out=env, where=m)
        np.add(env, self.sustain, out=env, where=m)
        # sustain: follow the (slewed) sustain level
        np.equal(stage, SUSTAIN, out=m)
        np.copyto(env, self.sustain, where=m)
        # release: exponential, -60 dB at release_s
        np.equal(stage, RELEASE, out=m)
        np.multiply(env, math.exp(-6.9078 * dt / self.release_s), out=env, where=m)
        # fade: linear to 0
        np.equal(stage, FADE, out=m)
        np.multiply(self.v_fade_step, -float(n), out=self._t64[:self.rows])
        np.add(env, self._t64[:self.rows], out=env, where=m)
        np.maximum(env, 0.0, out=env)
        # stage transitions: attack done -> decay; decay settled -> sustain
        m2, t = self._m2[:self.rows], self._t64[:self.rows]
        np.equal(stage, ATTACK, out=m)
        np.greater_equal(env, 1.0, out=m2)
        m &= m2
        np.copyto(stage, DECAY, where=m)
        np.equal(stage, DECAY, out=m)
        np.subtract(env, self.sustain, out=t)
        np.absolute(t, out=t)
        np.less(t, 1e-3, out=m2)
        m &= m2
        np.copyto(stage, SUSTAIN, where=m)

    def _finish_voices(self, h: int) -> None:
        """Free voices that went silent; finish crossfades (and chain the next one)."""
        env, stage, m, m2 = self.v_env[:h], self.v_stage[:h], self._m[:h], self._m2[:h]
        np.equal(stage, RELEASE, out=m)
        np.less(env, SILENCE_LEVEL, out=m2)
        m &= m2
        any_done = m.any()
        np.equal(stage, FADE, out=m)
        np.less_equal(env, 0.0, out=m2)
        m &= m2
        any_done = any_done or m.any()
        if not (any_done or self.n_xfading):
            return
        for row in range(h):
            if not self.v_active[row]:
                continue
            s = stage[row]
            if (s == RELEASE and env[row] < SILENCE_LEVEL) or (s == FADE and env[row] <= 0.0):
                self._free(row)
                continue
            if self.v_xfading[row] and self.v_xf[row] >= 1.0:
                self.v_xfading[row] = False
                self.n_xfading -= 1
                self._set_reader(self.rows + row, SILENT_SLOT, 0.0, 0.0)
                self._maybe_morph(row)
