"""The mixer's voices: note on/off, pedal, stealing, controllers, renders arriving; their
state, in numpy arrays the mixing kernels (engine/instrument/mixer.py) read. Audio thread only.

Notes are float32 rows of one shared pool (`NoteCache.pool`, [slots, stride]) at the
output rate; slot 0 is silence. A voice has two readers over the pool, `a` (the
current source) and `b` (the source it is crossfading away from), each with a slot,
a fractional read position and a base rate (1.0 for a note rendered at the voice's
own pitch; 2**(semitones/12) when a neighbour pitch stands in). Pitch bend scales
every rate, so bending is resampling with a fractional read position (linear
interpolation).

Stages: ATTACK -> DECAY -> SUSTAIN while the key (or the pedal) holds the note, RELEASE
after, FADE for a stolen or All-Sound-Off voice; a released voice below SILENCE_LEVEL
and a faded one are freed. When a render arrives, voices playing a stand-in crossfade to it,
at the same time into the note; voices on their own pitch do too while `morph_held` is on.
"""
from __future__ import annotations

import collections
import math

import numpy as np

from engine.instrument import events as ev

IDLE, ATTACK, DECAY, SUSTAIN, RELEASE, FADE = range(6)
SILENT_SLOT = 0
SILENCE_LEVEL = 1e-4  # -80 dB: a releasing voice below this is freed


class Voices:
    """Voices over a shared note pool.

    pool: float32 [slots, stride] (slot 0 all zeros), written by the renderer.
    loop: (loop_start, loop_end) in frames of a note at `sample_rate`: the default
        loop; the renderer sets `slot_loop_len[slot]` per note before publishing it.
    model_pitches: (lowest, highest) MIDI pitches the renderer can produce.
    """

    def __init__(self, pool: np.ndarray, sample_rate: int, loop: tuple[int, int],
                 model_pitches: tuple[int, int], max_voices: int = 64, spare_voices: int = 16,
                 max_block: int = 256, fade_s: float = 0.005, morph_s: float = 0.04):
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
        R = self.rows
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
        self.r_loop_i = np.full(2 * R, int(self.loop_len), np.int64)
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

    # ------------------------------------------------------------------ meters
    def active_voices(self) -> int:
        return sum(1 for row in range(self.high_water) if self.v_active[row])
