"""Note loops: where a held note loops and how the loop is made seamless (pure functions).

A rendered note plays up to `loop_end` and then loops a stretch of whole pitch periods
before it; `bake_loop` writes the crossfade that makes the wrap seamless into the note.
`prepare_note` turns a generated note into a playable one (the render worker's last step).
"""
from __future__ import annotations

import numpy as np
import soxr

from engine.gansynth.spectral import midi_to_hz


def bake_loop(note: np.ndarray, loop_start: int, loop_end: int, xfade: int) -> None:
    """In place: make playback wrapping from loop_end to loop_start seamless.

    The `xfade` frames before loop_end become a linear crossfade from the note
    itself into the frames just before loop_start (the loop spans whole pitch
    periods, so the two are nearly in phase and equal-gain keeps the level). The
    frames from loop_end on repeat the loop's first frames, so interpolating across
    the wrap reads the right neighbours. note: float32 [frames].
    """
    w = (np.arange(xfade, dtype=np.float32) + 0.5) / xfade
    head = note[loop_end - xfade:loop_end].copy()
    tail = note[loop_start - xfade:loop_start]
    note[loop_end - xfade:loop_end] = head * (1.0 - w) + tail * w
    guard = min(16, len(note) - loop_end)
    note[loop_end:loop_end + guard] = note[loop_start:loop_start + guard]
    note[loop_end + guard:] = 0.0


def loop_length(pitch: int, sample_rate: int, target_s: float = 1.0) -> int:
    """A loop length near `target_s` holding a whole number of periods of `pitch`."""
    period = sample_rate / float(midi_to_hz(pitch))
    return int(round(max(1, round(target_s * sample_rate / period)) * period))


def loop_points(note_frames: int, sample_rate: int) -> tuple[int, int, int]:
    """(loop_start, loop_end, xfade) in frames: loop up to 1 s ending at 72 % of the note,
    crossfading up to 100 ms.

    GANSynth notes follow NSynth: the key is held for 3 s of the 4 and released for the
    last second, so a held voice loops the sustained part just before that release (and
    the instrument's own envelope does the releasing). The release part, where generated
    notes also carry inverse-STFT edge artefacts, is never played."""
    loop_end = int(note_frames * 0.72)
    length = int(min(sample_rate * 1.0, note_frames * 0.3))
    xfade = int(min(sample_rate * 0.1, length / 4))
    return loop_end - length, loop_end, xfade


SPAN_MARGIN_S = 0.032  # beyond the heard span: soxr HQ's filter reaches a few ms; the note is exact there


def heard_samples(loop: tuple[int, int, int], sample_rate: int, synth) -> int:
    """Samples of a generated note (at `synth`'s rate) that can be heard with these loop
    points (at `sample_rate`): up to the loop's end plus its guard (`bake_loop` zeroes the
    rest), plus SPAN_MARGIN_S for the resampler's filter. Rendering only those skips ~25 % of
    the frames (and ~20 % of the time)."""
    heard_s = (loop[1] + 16) / sample_rate + SPAN_MARGIN_S
    return min(synth.num_samples, int(np.ceil(heard_s * synth.sample_rate)))


def prepare_note(wave: np.ndarray, wave_rate: int, pitch: int, sample_rate: int, note_frames: int,
                 loop: tuple[int, int, int], loop_seconds: float) -> tuple[np.ndarray, int]:
    """A generated note float32 [samples] at `wave_rate` -> (playable float32 [note_frames] at
    `sample_rate`, loop length in frames). `loop`: `loop_points(note_frames, sample_rate)`.

    Rejects non-finite or silent notes (ValueError); resamples with soxr; normalises
    by the absolute peak; bakes a loop of whole periods of `pitch`."""
    wave = np.asarray(wave, np.float32)
    if not np.all(np.isfinite(wave)):
        raise ValueError("non-finite samples in the generated note")
    if wave.size == 0 or float(np.max(np.abs(wave))) < 1e-6:
        raise ValueError("the generated note is silent")
    if wave_rate != sample_rate:
        wave = soxr.resample(wave, wave_rate, sample_rate, quality="HQ")
    note = np.zeros(note_frames, np.float32)
    n = min(len(wave), note_frames)
    note[:n] = wave[:n]
    _, loop_end, xfade = loop
    # normalise by the absolute peak of what can be played (after resampling, which can
    # move the peak; the unplayed end does not count)
    peak = float(np.max(np.abs(note[:loop_end])))
    if peak < 1e-6:
        raise ValueError("the generated note is silent")
    note /= peak
    loop_len = min(loop_length(pitch, sample_rate, loop_seconds), loop_end - xfade)
    bake_loop(note, loop_end - loop_len, loop_end, xfade)
    return note, loop_len
