"""Rainbowgrams (GANSynth / NSynth papers): constant-Q magnitude as brightness,
instantaneous frequency as colour. Qt-free; the GUI shows the same RGB array.

    rgb = rainbowgram(audio, sample_rate=16000)      # uint8 [bins, frames, 3], row 0 = lowest bin
    save_png(rgb, "/tmp/note.png", scale=(4, 2))     # low notes at the bottom of the picture

The constant-Q transform is computed in the frequency domain: one FFT of the
whole signal, then per bin a Hann-shaped band around the bin's centre
frequency, folded to `frames` bins and inverse-FFT'd. Folding the band
spectrum modulo M = n_fft / hop is exactly the spectrum of the band signal
sampled every `hop` samples, so each bin costs one M-point iFFT, whatever its
bandwidth. The band is symmetric around the centre, so each coefficient's
phase is referenced to its frame's centre, as in an STFT.

Instantaneous frequency = the phase advance from one frame to the next,
angle(X[t] * conj(X[t-1])) in (-pi, pi] (the time difference of the unwrapped
phase). A steady partial advances by 2*pi*f*hop/sample_rate per frame, so it
keeps one colour; the hue cycles every sample_rate/hop Hz, which gives the
rainbow look.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from engine.util.fileio import atomic_path

C1_HZ = 32.703195662574764  # MIDI 24, GANSynth's lowest pitch


def cqt_frequencies(fmin_hz: float = C1_HZ, bins_per_octave: int = 8, n_octaves: int = 7) -> np.ndarray:
    """Centre frequencies float64 [bins_per_octave * n_octaves] in Hz, ascending."""
    k = np.arange(bins_per_octave * n_octaves)
    return fmin_hz * 2.0 ** (k / bins_per_octave)


def cqt(audio, sample_rate: int = 16000, hop: int = 256, fmin_hz: float = C1_HZ,
        bins_per_octave: int = 8, n_octaves: int = 7, filter_scale: float = 1.0) -> np.ndarray:
    """Constant-Q transform, complex128 [bins, frames]; frame t is centred on sample t*hop.

    audio: float [samples] (mono). A sinusoid of amplitude A at a bin's centre
    frequency gives |X| ~= A in that bin. Bands above Nyquist are zero.
    """
    x = np.asarray(audio, np.float64).reshape(-1)
    freqs = cqt_frequencies(fmin_hz, bins_per_octave, n_octaves)
    frames = max(1, -(-len(x) // hop))
    half_bw = freqs * (2.0 ** (filter_scale / bins_per_octave) - 1.0)  # Hz, each side
    # Zero padding longer than the slowest band's impulse response keeps the
    # circular convolution from wrapping the end onto the start.
    pad = int(4.0 * sample_rate / half_bw[0])
    n_fft = -(-(len(x) + pad) // hop) * hop
    n_fft = _fast_length(n_fft, hop)
    spectrum = np.fft.rfft(x, n_fft)
    m = n_fft // hop
    bin_hz = sample_rate / n_fft
    out = np.zeros((len(freqs), frames), np.complex128)
    for k, (f0, bw) in enumerate(zip(freqs, half_bw)):
        lo = int(np.ceil((f0 - bw) / bin_hz))
        hi = min(int(np.floor((f0 + bw) / bin_hz)), len(spectrum) - 1)
        if hi < lo or lo < 1:
            continue
        j = np.arange(lo, hi + 1)
        window = 0.5 + 0.5 * np.cos(np.pi * (j * bin_hz - f0) / bw)  # 1 at f0, 0 at f0 +- bw
        band = spectrum[lo:hi + 1] * window
        folded = np.zeros(m, np.complex128)
        np.add.at(folded, j % m, band)
        # x_k[t*hop] = (1/n_fft) sum_j band_j e^{2 pi i j t hop / n_fft} = ifft_m(folded)/hop;
        # x2: the analytic band of a real sinusoid carries half its amplitude.
        out[k] = (np.fft.ifft(folded) * (2.0 / hop))[:frames]
    return out


def _fast_length(n: int, hop: int) -> int:
    """Smallest multiple of `hop` >= n whose size is 2^a * 3^b * 5^c (fast FFTs)."""
    while True:
        q = n
        for p in (2, 3, 5):
            while q % p == 0:
                q //= p
        if q == 1:
            return n
        n += hop


def instantaneous_frequency(coefs: np.ndarray) -> np.ndarray:
    """Phase advance per frame in radians, float64 [bins, frames] in (-pi, pi].

    Frame 0 copies frame 1 (it has no predecessor).
    """
    dphase = np.zeros(coefs.shape, np.float64)
    if coefs.shape[1] > 1:
        dphase[:, 1:] = np.angle(coefs[:, 1:] * np.conj(coefs[:, :-1]))
        dphase[:, 0] = dphase[:, 1]
    return dphase


def rainbowgram(audio, sample_rate: int = 16000, hop: int = 256, bins_per_octave: int = 8,
                n_octaves: int = 7, fmin_hz: float = C1_HZ, db_range: float = 70.0,
                max_frames: int | None = None) -> np.ndarray:
    """RGB uint8 [bins, frames, 3]: row k is CQT bin k, so row 0 is the LOWEST frequency
    (flip it to draw low notes at the bottom; `save_png` does by default).

    Brightness = magnitude in dB over the top `db_range` dB (relative to the
    loudest coefficient, or -100 dB full scale if all is quieter); hue = instantaneous frequency on a cyclic rainbow.
    `max_frames` raises the hop (to a multiple of the given one) for long audio.
    """
    x = np.asarray(audio, np.float64).reshape(-1)
    if max_frames is not None and len(x) > hop * max_frames:
        hop = hop * -(-len(x) // (hop * max_frames))
    coefs = cqt(x, sample_rate, hop, fmin_hz, bins_per_octave, n_octaves)
    mag_db = 20.0 * np.log10(np.abs(coefs) + 1e-12)
    top = max(float(mag_db.max()), -100.0)  # silence (nothing above -170 dB) stays black
    value = np.clip((mag_db - (top - db_range)) / db_range, 0.0, 1.0)
    hue = (instantaneous_frequency(coefs) + np.pi) / (2.0 * np.pi)  # [0, 1]
    rgb = hsv_to_rgb(hue, np.ones_like(hue), value)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; h, s, v in [0, 1] of equal shape -> float [..., 3] in [0, 1]."""
    h6 = (np.asarray(h) % 1.0) * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def save_png(rgb: np.ndarray, path, scale: tuple[int, int] = (1, 1), origin: str = "lower") -> Path:
    """Write an RGB uint8 [H, W, 3] array as a PNG (zlib + struct, no imaging library).

    origin "lower" (default, as `rainbowgram` returns): row 0 is the bottom of
    the picture; "upper": row 0 is the top.
    `scale` = (rows, columns) repeats each pixel, e.g. (4, 2) for a 56-bin
    rainbowgram. Written to a temporary file and renamed.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    if origin not in ("lower", "upper"):
        raise ValueError(f"origin must be 'lower' or 'upper', not {origin!r}")
    if origin == "lower":
        rgb = rgb[::-1]
    rgb = np.repeat(np.repeat(rgb, scale[0], axis=0), scale[1], axis=1)
    height, width = rgb.shape[:2]
    # Each row: filter type 0 (None), then the raw RGB bytes.
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
           + chunk(b"IEND", b""))
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return path


def read_png_rgb(path) -> np.ndarray:
    """Read back a PNG written by `save_png` (8-bit RGB, filter 0) -> uint8 [H, W, 3], row 0 = top."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    return _parse_png(data, path)


def _parse_png(data: bytes, path) -> np.ndarray:
    pos, idat, width, height = 8, [], 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"{path}: bad CRC in {kind!r} chunk")
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if (depth, colour) != (8, 2):
                raise ValueError(f"{path}: only 8-bit RGB PNGs are supported")
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, 1 + 3 * width)
    if np.any(raw[:, 0] != 0):
        raise ValueError(f"{path}: only PNG filter type 0 is supported")
    return raw[:, 1:].reshape(height, width, 3).copy()
