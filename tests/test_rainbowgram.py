"""engine.gansynth.rainbowgram: CQT magnitude and IF colour on synthetic signals; the PNG writer."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from engine.gansynth.rainbowgram import (C1_HZ, cqt, cqt_frequencies, instantaneous_frequency, rainbowgram,
                                         read_png_rgb, save_png)

SR = 16000
HOP = 256
BPO = 8


def tone(f0_hz, seconds=4.0, harmonics=(1.0,)):
    t = np.arange(int(seconds * SR)) / SR
    return sum(a * np.sin(2 * np.pi * f0_hz * (h + 1) * t + h) for h, a in enumerate(harmonics))


def test_unit_sine_at_a_bin_centre_has_unit_magnitude_there():
    freqs = cqt_frequencies(bins_per_octave=BPO, n_octaves=7)
    assert len(freqs) == 56 and freqs[0] == pytest.approx(C1_HZ) and freqs[8] == pytest.approx(2 * C1_HZ)
    for k in (5, 20, 43):
        coefs = cqt(tone(freqs[k]), SR, HOP, bins_per_octave=BPO)
        mid = np.abs(coefs[:, 100:150])
        assert np.all(np.argmax(mid, axis=0) == k)
        np.testing.assert_allclose(mid[k], 1.0, atol=0.01)
        # Two bins away the band has no response.
        assert mid[k + 2].max() < 1e-3 and mid[k - 2].max() < 1e-3


def test_frames_are_centred_on_multiples_of_the_hop():
    x = np.zeros(SR * 2)
    x[100 * HOP] = 1.0                                      # a click at frame 100
    coefs = cqt(x, SR, HOP, bins_per_octave=BPO)
    top = np.abs(coefs[-1])                                 # the shortest (highest) band
    assert int(np.argmax(top)) == 100
    assert coefs.shape == (56, len(x) // HOP)


def test_if_of_a_steady_tone_is_its_phase_advance_per_hop():
    f = 440.0
    coefs = cqt(tone(f), SR, HOP, bins_per_octave=BPO)
    k = int(round(BPO * np.log2(f / C1_HZ)))
    dphase = instantaneous_frequency(coefs)[k, 20:230]
    expected = np.angle(np.exp(2j * np.pi * f * HOP / SR))
    np.testing.assert_allclose(dphase, expected, atol=1e-3)


def test_rainbowgram_of_a_steady_harmonic_tone():
    f0 = 220.0
    rgb = rainbowgram(tone(f0, harmonics=(1.0, 0.5, 0.25)), SR, HOP, bins_per_octave=BPO)
    assert rgb.dtype == np.uint8 and rgb.shape == (56, 250, 3)
    k = int(round(BPO * np.log2(f0 / C1_HZ)))                # 22: row k is bin k (low first)
    brightness = rgb[:, 20:230].max(axis=2).astype(int)      # HSV value
    assert int(np.argmax(brightness.mean(axis=1))) == k
    assert brightness[k].min() >= 250
    # Hue constant along the steady fundamental and its octave, and the two differ
    # (their phase advances per hop are 2 pi f hop / sr apart mod 2 pi).
    for row in (k, k + BPO):
        colours = rgb[row, 20:230].astype(int)
        assert np.abs(colours - colours[0]).max() <= 2, row
    assert np.abs(rgb[k, 100].astype(int) - rgb[k + BPO, 100].astype(int)).max() > 30
    # Far from every partial it is dark (70 dB range).
    assert brightness[2].max() < 30


def test_chirp_bright_bin_rises_and_hue_cycles():
    t = np.arange(4 * SR) / SR
    f_start, f_end = 60.0, 2000.0
    phase = 2 * np.pi * (f_start * t + 0.5 * (f_end - f_start) / 4.0 * t ** 2)
    coefs = cqt(np.sin(phase), SR, HOP, bins_per_octave=BPO)
    peak_bin = np.argmax(np.abs(coefs[:, 10:240]), axis=0)
    assert np.all(np.diff(peak_bin) >= 0)
    f_now = f_start + (f_end - f_start) * (10 + np.arange(230)) * HOP / SR / 4.0
    expected_bin = np.round(BPO * np.log2(f_now / C1_HZ))
    assert np.abs(peak_bin - expected_bin).max() <= 1
    rgb = rainbowgram(np.sin(phase), SR, HOP, bins_per_octave=BPO)
    k = peak_bin[200]
    hues = {tuple(rgb[k, 10 + i] // 64) for i in range(150, 230) if peak_bin[i] == k}
    assert len(hues) > 2      # the colour changes as the frequency sweeps through the bin


def test_max_frames_limits_the_width_of_long_audio():
    rgb = rainbowgram(tone(110.0, seconds=30.0), SR, HOP, max_frames=500)
    assert rgb.shape[1] <= 500 and rgb.shape[1] >= 250


def test_silence_is_black():
    rgb = rainbowgram(np.zeros(SR), SR)
    assert rgb.max() == 0


def test_png_round_trip_and_format(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    path = save_png(rgb, tmp_path / "x.png", scale=(2, 3))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR" and int.from_bytes(data[16:20], "big") == 33 and \
        int.from_bytes(data[20:24], "big") == 14
    assert zlib.crc32(data[12:29]) == int.from_bytes(data[29:33], "big")
    back = read_png_rgb(path)
    np.testing.assert_array_equal(back, np.repeat(np.repeat(rgb[::-1], 2, 0), 3, 1))  # origin lower
    top = read_png_rgb(save_png(rgb, tmp_path / "y.png", origin="upper"))
    np.testing.assert_array_equal(top, rgb)
    assert not list(tmp_path.glob(".*partial"))
    with pytest.raises(ValueError):
        save_png(rgb.astype(np.float32), tmp_path / "z.png")
