"""Polyphonic voice mixer: events in, one mono block out. Runs on the audio thread only.

Notes are float32 rows of one shared pool (`NoteCache.pool`, [slots, stride]) at the
output rate; slot 0 is silence. A voice has two readers over the pool, `a` (the
current source) and `b` (the source it is crossfading away from), each with a slot,
a fractional read position and a base rate (1.0 for a note rendered at the voice's
own pitch; 2**(semitones/12) when a neighbour pitch stands in). Pitch bend scales
every rate, so bending is resampling with a fractional read position (linear
interpolation).

All voice state lives in numpy arrays, and a block is a fixed number of vectorised
operations over the used voice rows: positions = pos + rate * k, wrap into the loop,
gather two neighbours from the flattened pool with precomputed indices, interpolate,
then mix by two matrix-vector products (envelope and crossfade weights are linear
ramps inside a block: w0 @ S + ((w1 - w0) @ S) * k / n). `process` allocates no
arrays, takes no lock, logs nothing and never calls torch.

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

import collections
import math

import numpy as np

from engine.instrument import events as ev

IDLE, ATTACK, DECAY, SUSTAIN, RELEASE, FADE = range(6)
SILENT_SLOT = 0
SILENCE_LEVEL = 1e-4  # -80 dB: a releasing voice below this is freed


class Mixer:
    """Voices over a shared note pool.

    pool: float32 [slots, stride] (slot 0 all zeros), written by the renderer.
    loop: (loop_start, loop_end) in frames of a note at `sample_rate`: the default
        loop; the renderer sets `slot_loop_len[slot]` per note before publishing it.
    model_pitches: (lowest, highest) MIDI pitches the renderer can produce.
    """

    def __init__(self, pool: np.ndarray, sample_rate: int, loop: tuple[int, int],
                 model_pitches: tuple[int, int], max_voices: int = 64, spare_voices: int = 16,
                 max_block: int = 256, fade_s: float = 0.005, morph_s: float = 0.08):
        self.pool = pool
        self.flat = pool.reshape(-1)
        self.stride = pool.shape[1]
        self.sample_rate = int(sample_rate)
        self.loop_start, self.loop_end = int(loop[0]), int(loop[1])
        self.loop_len = float(self.loop_end - self.loop_start)  # default
        self.slot_loop_len = np.full(pool.shape[0], self.loop_len)  # written by the renderer
        self.model_pitches = model_pitches
        self.max_voices = int(max_voices)
        self.rows = self.max_voices + int(spare_voices)  # spares hold voices fading out
        self.max_block = int(max_block)
        self.fade_s = fade_s
        self.morph_s = morph_s
        R, B = self.rows, self.max_block
        # a reader must not cross a loop twice in one block: cap the effective rate
        self.max_rate = 0.9 * self.loop_len / self.max_block
        if self.max_rate < 4.0:
            raise ValueError(f"loop of {self.loop_len:.0f} frames too short for blocks of {self.max_block}")

        # readers: [0:R] = a (current source), [R:2R] = b (source being faded out)
        self.r_slot = np.zeros(2 * R, np.int64)
        self.r_base = np.zeros(2 * R, np.float64)  # slot * stride (exact in float64)
        self.r_pos = np.zeros(2 * R, np.float64)
        self.r_rate = np.zeros(2 * R, np.float64)
        self.r_eff = np.zeros(2 * R, np.float64)  # rate * bend
        self.r_loop = np.full(2 * R, self.loop_len)  # loop length of the reader's slot
        # voices
        self.v_stage = np.zeros(R, np.int8)
        self.v_env = np.zeros(R, np.float64)
        self.v_env0 = np.zeros(R, np.float64)
        self.v_vel = np.zeros(R, np.float64)
        self.v_xf = np.ones(R, np.float64)  # weight of reader a
        self.v_xf0 = np.ones(R, np.float64)
        self.v_fade_step = np.zeros(R, np.float64)  # env units per block-sample in FADE
        self.v_pitch = [0] * R
        self.v_src_pitch = [0] * R  # the model pitch its render comes from (clamped at note-on)
        self.v_order = [0] * R  # note-on counter (age)
        self.v_release_order = [0] * R
        self.v_keydown = [False] * R
        self.v_sustained = [False] * R
        self.v_exact = [False] * R  # reader a plays this voice's own pitch
        self.v_xfading = [False] * R
        self.v_active = [False] * R
        self.high_water = 0  # rows >= high_water are idle
        self.sounding = [0] * 128  # active voices per source pitch (clamped into the model range)
        self.n_inexact = 0  # active voices playing a stand-in (another pitch or silence)
        self.n_xfading = 0
        # per-pitch tables; `held_count` and `last_on` are read by the render worker
        self.table = np.zeros(128, np.int64)  # newest published slot per pitch, 0 = none
        self.held_count = np.zeros(128, np.int32)
        self.last_on = np.zeros(128, np.int64)
        self.slot_refs = np.zeros(pool.shape[0], np.int32)  # read by the render worker
        self.consumed_seq = 0  # last publication taken from `ready`
        self.ready: collections.deque = collections.deque()  # (pitch, slot, seq) from the renderer
        # scratch, preallocated (flat so that [:h*n] reshapes stay contiguous)
        self._OFF = np.zeros(R * B, np.float64)
        self._FL = np.zeros(R * B, np.float64)
        self._FR64 = np.zeros(R * B, np.float64)
        self._A = np.zeros((R, 2), np.float64)  # per reader: (rate, absolute start index)
        self._Bk = np.ones((2, B), np.float64)  # rows: (k, 1)
        self._Bk[0] = np.arange(B)
        self._FR = np.zeros(R * B, np.float32)
        self._IDX = np.zeros(R * B, np.int64)
        self._X0 = np.zeros(R * B, np.float32)
        self._X1 = np.zeros(R * B, np.float32)
        self._M = np.zeros(R * B, bool)
        self._K = np.arange(B, dtype=np.float64)
        self._K32 = np.arange(B, dtype=np.float32)
        self._Ki = np.arange(B, dtype=np.int64)
        self._ipf = np.zeros(R, np.float64)
        self._mr = np.zeros(R, bool)
        self._tmp = np.zeros(B, np.float32)
        self.r_loop_i = np.full(2 * R, int(self.loop_len), np.int64)
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
        # parameters (validated by the Instrument) and controller state
        self.attack_s, self.decay_s, self.release_s = 0.005, 0.3, 0.3
        self.sustain_target = self.sustain = 1.0
        self.volume = 0.5
        self.velocity_curve, self.velocity_floor = 1.0, 0.0
        self.polyphony = self.max_voices
        self.bend_range = 2.0
        self.morph_held = True
        self.cc_volume = self.cc_expression = 1.0
        self.pedal = False
        self.bend_st = 0.0
        self.gain = 0.0  # current master gain (ramped toward volume * cc gains)
        self.gain_slew_s = 0.02
        self.order = 0
        self.fallback_notes = 0  # note-ons that had to borrow another timbre/pitch
        self.silent_notes = 0  # note-ons with nothing rendered anywhere yet
        self._handlers = {ev.NoteOn: self._note_on_event, ev.NoteOff: self._note_off_event,
                          ev.ControlChange: self._cc_event, ev.PitchBend: self._bend_event,
                          ev.Panic: self._panic_event, ev.SetParam: self._param_event,
                          ev.PadMove: self._ignore}

    # ------------------------------------------------------------------ events
    def handle(self, event) -> None:
        self._handlers[type(event)](event)

    def _ignore(self, event) -> None:
        pass

    def _note_on_event(self, e) -> None:
        self.note_on(e.pitch, e.velocity)

    def _note_off_event(self, e) -> None:
        self.note_off(e.pitch)

    def _bend_event(self, e) -> None:
        self.bend_st = e.value / 8192.0 * self.bend_range

    def _panic_event(self, e) -> None:
        self.panic()

    def _param_event(self, e) -> None:
        self.set_param(e.name, e.value)

    def _cc_event(self, e) -> None:
        c, v = e.control, e.value
        if c == ev.CC_SUSTAIN:
            self.set_pedal(v >= 64)
        elif c == ev.CC_VOLUME:
            self.cc_volume = (v / 127.0) ** 2
        elif c == ev.CC_EXPRESSION:
            self.cc_expression = (v / 127.0) ** 2
        elif c == ev.CC_ALL_SOUND_OFF:
            self.all_sound_off()
        elif c == ev.CC_ALL_NOTES_OFF:
            self.all_notes_off()
        elif c == ev.CC_RESET_CONTROLLERS:
            self.cc_expression = 1.0
            self.bend_st = 0.0
            self.set_pedal(False)

    def set_param(self, name: str, value) -> None:
        if name == "sustain":
            self.sustain_target = float(value)
        elif name == "polyphony":
            self.polyphony = min(int(value), self.max_voices)
        elif name == "morph_held":
            self.morph_held = bool(value)
        elif name in ("attack_s", "decay_s", "release_s", "volume", "velocity_curve",
                      "velocity_floor", "bend_range"):
            setattr(self, name, float(value))

    # ------------------------------------------------------------------ notes
    def velocity_gain(self, velocity: int) -> float:
        return self.velocity_floor + (1.0 - self.velocity_floor) * (velocity / 127.0) ** self.velocity_curve

    def _clamp(self, pitch: int) -> int:
        lo, hi = self.model_pitches
        return lo if pitch < lo else hi if pitch > hi else pitch

    def _source_for(self, pitch: int) -> tuple[int, float, bool]:
        """(slot, base rate, exact) for a note.

        exact: the newest render of the pitch itself, or for pitches outside the model's
        range, of the nearest pitch in range, resampled. Otherwise (not rendered yet) the
        nearest rendered pitch, resampled; SILENT_SLOT if nothing is rendered at all."""
        target = self._clamp(pitch)
        slot = int(self.table[target])
        if slot:
            return slot, 2.0 ** ((pitch - target) / 12.0), True
        for d in range(1, 128):
            for src in (target - d, target + d):
                if 0 <= src < 128 and self.table[src]:
                    return int(self.table[src]), 2.0 ** ((pitch - src) / 12.0), False
        return SILENT_SLOT, 1.0, False

    def note_on(self, pitch: int, velocity: int) -> None:
        self._make_room()
        row = self._free_row()
        slot, rate, exact = self._source_for(pitch)
        if not exact:
            self.fallback_notes += 1
            if slot == SILENT_SLOT:
                self.silent_notes += 1
        self.order += 1
        self._set_reader(row, slot, 0.0, rate)
        self._set_reader(self.rows + row, SILENT_SLOT, 0.0, 0.0)
        self.v_stage[row] = ATTACK
        self.v_env[row] = 0.0
        self.v_vel[row] = self.velocity_gain(velocity)
        self.v_xf[row] = 1.0
        self.v_pitch[row] = pitch
        self.v_order[row] = self.order
        self.v_keydown[row] = True
        self.v_sustained[row] = False
        self.v_exact[row] = exact
        self.n_inexact += not exact
        self.v_src_pitch[row] = self._clamp(pitch)
        self.sounding[self.v_src_pitch[row]] += 1
        self.v_xfading[row] = False
        self.v_active[row] = True
        self.high_water = max(self.high_water, row + 1)
        self.held_count[pitch] += 1
        self.last_on[pitch] = self.order
        # a voice of this pitch already sounding keeps ringing (it is released as usual)

    def note_off(self, pitch: int) -> None:
        for row in range(self.high_water):
            if self.v_active[row] and self.v_keydown[row] and self.v_pitch[row] == pitch:
                self.v_keydown[row] = False
                if self.pedal:
                    self.v_sustained[row] = True
                else:
                    self._release(row)

    def set_pedal(self, down: bool) -> None:
        self.pedal = down
        if down:
            return
        for row in range(self.high_water):
            if self.v_active[row] and self.v_sustained[row]:
                self.v_sustained[row] = False
                if not self.v_keydown[row]:
                    self._release(row)

    def _release(self, row: int) -> None:
        """Key (and pedal) let go: start the release stage."""
        if self.v_stage[row] in (ATTACK, DECAY, SUSTAIN):
            self.v_stage[row] = RELEASE
            self.order += 1
            self.v_release_order[row] = self.order
        self._recount_held(self.v_pitch[row])

    def _recount_held(self, pitch: int) -> None:
        n = 0
        for row in range(self.high_water):
            if self.v_active[row] and self.v_pitch[row] == pitch and self.v_stage[row] in (ATTACK, DECAY, SUSTAIN):
                n += 1
        self.held_count[pitch] = n

    def _fade(self, row: int) -> None:
        """Fast linear fade to silence in ~fade_s (stealing, All Sound Off)."""
        if self.v_stage[row] == FADE:
            return
        pitch_held = self.v_stage[row] in (ATTACK, DECAY, SUSTAIN)
        self.v_stage[row] = FADE
        self.v_keydown[row] = self.v_sustained[row] = False
        self.v_fade_step[row] = max(self.v_env[row], 1e-6) / (self.fade_s * self.sample_rate)
        if pitch_held:
            self._recount_held(self.v_pitch[row])

    def _make_room(self) -> None:
        """Steal (fade) voices until a new note fits under the polyphony limit."""
        while True:
            sounding, victim, victim_key = 0, -1, None
            for row in range(self.high_water):
                if not self.v_active[row] or self.v_stage[row] == FADE:
                    continue
                sounding += 1
                released = self.v_stage[row] == RELEASE
                # released voices first (oldest release first), then the oldest note
                key = (0, self.v_release_order[row]) if released else (1, self.v_order[row])
                if victim_key is None or key < victim_key:
                    victim, victim_key = row, key
            if sounding < self.polyphony or victim < 0:
                return
            self._fade(victim)

    def _free_row(self) -> int:
        for row in range(self.rows):
            if not self.v_active[row]:
                return row
        # every row busy (a burst while many voices fade): drop the oldest fading voice
        oldest = min(range(self.rows), key=lambda r: self.v_order[r])
        self._free(oldest)
        return oldest

    def _set_reader(self, r: int, slot: int, pos: float, rate: float) -> None:
        old = int(self.r_slot[r])
        if old:
            self.slot_refs[old] -= 1
        if slot:
            self.slot_refs[slot] += 1
        self.r_slot[r] = slot
        self.r_base[r] = slot * self.stride
        self.r_pos[r] = pos
        self.r_rate[r] = rate
        self.r_loop[r] = self.slot_loop_len[slot]
        self.r_loop_i[r] = int(self.slot_loop_len[slot])

    def _free(self, row: int) -> None:
        was_held = self.v_stage[row] in (ATTACK, DECAY, SUSTAIN)
        self._set_reader(row, SILENT_SLOT, 0.0, 0.0)
        self._set_reader(self.rows + row, SILENT_SLOT, 0.0, 0.0)
        if self.v_xfading[row]:
            self.n_xfading -= 1
        self.v_xfading[row] = False
        self.v_active[row] = False
        self.sounding[self.v_src_pitch[row]] -= 1
        self.n_inexact -= not self.v_exact[row]
        self.v_exact[row] = True
        self.v_stage[row] = IDLE
        self.v_env[row] = 0.0
        self.v_vel[row] = 0.0
        self.v_xf[row] = 1.0
        self.v_keydown[row] = self.v_sustained[row] = False
        if was_held:
            self._recount_held(self.v_pitch[row])
        while self.high_water and not self.v_active[self.high_water - 1]:
            self.high_water -= 1

    def all_notes_off(self) -> None:
        for row in range(self.high_water):
            if self.v_active[row]:
                self.v_keydown[row] = self.v_sustained[row] = False
                self._release(row)

    def all_sound_off(self) -> None:
        for row in range(self.high_water):
            if self.v_active[row]:
                self._fade(row)

    def panic(self) -> None:
        self.pedal = False
        self.all_notes_off()
        self.all_sound_off()
        self.bend_st = 0.0
        self.cc_expression = 1.0

    # ------------------------------------------------------------------ renders arriving
    def take_ready(self) -> None:
        """Install renders published by the render worker; morph sounding voices to them."""
        ready = self.ready
        while ready:
            pitch, slot, seq = ready.popleft()
            old = int(self.table[pitch])
            self.table[pitch] = slot
            self.slot_refs[slot] += 1
            if old:
                self.slot_refs[old] -= 1
            self.consumed_seq = seq
            if not (self.sounding[pitch] or self.n_inexact):
                continue  # nothing plays this pitch: no per-voice work (cache hits arrive in bursts)
            for row in range(self.high_water):
                if self.v_active[row] and (not self.v_exact[row] or self.v_src_pitch[row] == pitch):
                    self._maybe_morph(row)

    def _maybe_morph(self, row: int) -> None:
        """Crossfade a voice to the best source for its pitch, at the same time into the note.

        Voices playing a stand-in (another pitch, or silence) always move; voices already
        on their own pitch move to a newer timbre's render only when `morph_held` is on."""
        if self.v_xfading[row] or self.v_stage[row] == FADE:
            return  # a running crossfade re-checks when it completes
        slot, rate, exact = self._source_for(self.v_pitch[row])
        if not slot or slot == self.r_slot[row]:
            return
        if self.v_exact[row] and not self.morph_held:
            return
        R = self.rows
        old_slot, old_pos, old_rate = int(self.r_slot[row]), float(self.r_pos[row]), float(self.r_rate[row])
        # same time into the note (output frames = position / rate)
        pos = old_pos / old_rate * rate if old_rate > 0 and old_slot else 0.0
        if pos >= self.loop_end:
            loop_len = self.slot_loop_len[slot]
            pos = self.loop_end - loop_len + math.fmod(pos - self.loop_end, loop_len)
        self._set_reader(R + row, old_slot, old_pos, old_rate)
        self._set_reader(row, slot, pos, rate)
        self.n_inexact += (not exact) - (not self.v_exact[row])
        self.v_exact[row] = exact
        self.v_xf[row] = 0.0
        self.v_xfading[row] = True
        self.n_xfading += 1

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
        h = self.high_water
        if h == 0:
            dst.fill(0.0)
            return
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
        self._mix_readers(0, h, n, acc)
        if self.n_xfading:
            self._mix_readers(R, h, n, self._acc2[:n])
            acc += self._acc2[:n]
        # master gain ramp
        ramp = self._ramp[:n]
        np.multiply(self._K32[:n], (g1 - g0) / n, out=ramp)
        ramp += g0
        np.multiply(acc, ramp, out=dst)
        self._advance_positions(n)
        self._finish_voices(h)

    def _mix_readers(self, r0: int, h: int, n: int, out: np.ndarray) -> None:
        """out[n] = sum over readers r0..r0+h of weight-ramped interpolated pool reads.

        Absolute read position of reader r at frame k: base_r + pos_r + eff_r * k, built
        for all readers at once as one [h, 2] @ [2, n] matrix product (broadcasting ufuncs
        would allocate iterator buffers), wrapped back by the loop length past loop_end,
        then split into a gather index and a fractional part for linear interpolation.
        When every reader runs at rate 1 on whole-sample positions (no bend, exact pitches)
        it is a single gather.
        """
        rows = slice(r0, r0 + h)
        m = h * n
        IDX = self._IDX[:m].reshape(h, n)
        X0 = self._X0[:m].reshape(h, n)
        OFF = self._OFF[:m].reshape(h, n)
        eff, pos = self.r_eff[rows], self.r_pos[rows]
        A, mr = self._A[:h], self._mr[:h]
        np.copyto(A[:, 0], eff)
        np.add(pos, self.r_base[rows], out=A[:, 1])
        np.matmul(A, self._Bk[:, :n], out=OFF)
        # loop wrap, only for readers crossing loop_end in this block
        t = self._t64[:h]
        np.multiply(eff, n, out=t)
        t += pos
        np.greater_equal(t, self.loop_end, out=mr)
        if mr.any():
            for i in range(h):
                if mr[i]:
                    r = r0 + i
                    k = int(math.ceil((self.loop_end - self.r_pos[r]) / self.r_eff[r])) if self.r_eff[r] > 0 else n
                    if k < n:
                        row = OFF[i, max(k, 0):]
                        np.subtract(row, self.r_loop[r], out=row)
        np.floor(pos, out=self._ipf[:h])
        np.equal(eff, 1.0, out=mr)
        whole = mr.all()
        if whole:
            np.equal(self._ipf[:h], pos, out=mr)
            whole = mr.all()
        if whole:
            np.copyto(IDX, OFF, casting="unsafe")
            self.flat.take(IDX, out=X0, mode="clip")
        else:
            FL = self._FL[:m].reshape(h, n)
            FR64 = self._FR64[:m].reshape(h, n)
            FR = self._FR[:m].reshape(h, n)
            X1 = self._X1[:m].reshape(h, n)
            np.floor(OFF, out=FL)
            np.subtract(OFF, FL, out=FR64)
            np.copyto(FR, FR64, casting="same_kind")
            np.copyto(IDX, FL, casting="unsafe")
            self.flat.take(IDX, out=X0, mode="clip")
            IDX += 1  # past loop_end the renderer copied the loop's first frames
            self.flat.take(IDX, out=X1, mode="clip")
            X1 -= X0
            X1 *= FR
            X0 += X1
        # envelope/crossfade weights ramp linearly across the block: w0 @ X + (dw @ X) * k / n
        np.dot(self._w0[rows], X0, out=out)
        tmp, ramp = self._tmp[:n], self._ramp[:n]
        np.dot(self._dw[rows], X0, out=tmp)
        np.multiply(self._K32[:n], 1.0 / n, out=ramp)
        tmp *= ramp
        out += tmp

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

    # ------------------------------------------------------------------ meters
    def active_voices(self) -> int:
        return sum(1 for row in range(self.high_water) if self.v_active[row])
