"""Spectral pipeline, computed as Magenta's GANSynth does.

Three layers:
1. pure torch functions on `[batch, time, freq]` tensors;
2. `SpecgramsHelper`, which precomputes windows and mel matrices once per device;
3. inverse pairs: `waves_to_specgrams` / `specgrams_to_waves`,
   `stfts_to_specgrams` / `specgrams_to_stfts`, `specgrams_to_melspecgrams` /
   `melspecgrams_to_specgrams`, `normalize` / `denormalize`.

Traps reproduced on purpose: the DC bin (not Nyquist) is dropped; all padding
(3072 samples for H) is on the left; the analysis window is a periodic Hann and
the synthesis window hann/1.5 with plain overlap-add (no edge renormalisation);
the mel matrix uses linspace(0, 8000, n) bin frequencies with Magenta's band
widening done in place on aliased views of one edge linspace (the config's
`mel_construction` says which construction a model was trained with), built in
float64, and its diagonal-scaled transpose as pseudo-inverse.
"""
from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import torch

from engine.gansynth.config import MEL_CONSTRUCTIONS, SpectralConfig

_LOG_EPS = 1e-6
_MEL_BREAK_HZ = 700.0
_MEL_HIGH_Q = 1127.0


# ----------------------------------------------------------------------------- helpers

def hertz_to_mel(f_hz):
    """HTK mel scale: 1127 ln(1 + f/700)."""
    return _MEL_HIGH_Q * np.log(1.0 + np.asarray(f_hz, np.float64) / _MEL_BREAK_HZ)


def midi_to_hz(pitch):
    """Equal-tempered frequency of a MIDI pitch (A4 = 69 = 440 Hz); scalars or arrays."""
    return 440.0 * 2.0 ** ((np.asarray(pitch, np.float64) - 69.0) / 12.0)


_PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(pitch: int) -> str:
    """60 -> 'C4', 61 -> 'C#4' (MIDI pitch, middle C = C4)."""
    return f"{_PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


def mel_to_hertz(mel):
    return _MEL_BREAK_HZ * (np.exp(np.asarray(mel, np.float64) / _MEL_HIGH_Q) - 1.0)


def linear_to_mel_matrix(num_mel_bins: int, num_spectrogram_bins: int, sample_rate: int,
                         lower_edge_hz: float = 0.0, upper_edge_hz: float | None = None,
                         construction: str = "magenta") -> np.ndarray:
    """Magenta's float64 mel weight matrix M, shape [freq, mel].

    Linear bin k sits at linspace(0, nyquist, freq)[k]; row 0 is zero. Band i has its lower,
    centre and upper edge at points i, i+1, i+2 of one mel linspace of mel+2 points. Bands
    narrower than 1.5 * (nyquist / freq) Hz are widened symmetrically in mel around the centre.

    construction:
    - "magenta": as Magenta's `linear_to_mel_weight_matrix` does it. The three edge arrays
      are views of the one linspace and the widening writes into it, band by band, so a
      widening also moves the neighbours' edges and centres (points i and i+2 are shared by
      bands i-2 .. i+2), and later bands test and widen from the moved points.
    - "unaliased_edges": each band widened from the untouched linspace (the three arrays
      copied first). Models trained by this project before the distinction use it.
    """
    if construction not in MEL_CONSTRUCTIONS:
        raise ValueError(f"mel construction must be one of {MEL_CONSTRUCTIONS}, not {construction!r}")
    nyquist = sample_rate / 2.0
    upper_edge_hz = nyquist if upper_edge_hz is None else upper_edge_hz
    linear_hz = np.linspace(0.0, nyquist, num_spectrogram_bins)[1:, None]  # [freq-1, 1]
    points = np.linspace(hertz_to_mel(lower_edge_hz), hertz_to_mel(upper_edge_hz), num_mel_bins + 2)
    if construction == "magenta":
        lower, center, upper = points[:-2], points[1:-1], points[2:]  # views: writes are shared
    else:
        lower, center, upper = points[:-2].copy(), points[1:-1].copy(), points[2:].copy()
    freq_th = 1.5 * nyquist / float(num_spectrogram_bins)
    for i in range(num_mel_bins):
        center_hz = mel_to_hertz(center[i])
        if mel_to_hertz(upper[i]) - mel_to_hertz(lower[i]) < freq_th:
            rhs = 0.5 * freq_th / (center_hz + _MEL_BREAK_HZ)
            dm = _MEL_HIGH_Q * np.log(rhs + np.sqrt(1.0 + rhs ** 2))
            lower[i] = center[i] - dm
            upper[i] = center[i] + dm
    lower_hz, center_hz, upper_hz = (mel_to_hertz(m)[None, :] for m in (lower, center, upper))
    lower_slopes = (linear_hz - lower_hz) / (center_hz - lower_hz)
    upper_slopes = (upper_hz - linear_hz) / (upper_hz - center_hz)
    weights = np.maximum(0.0, np.minimum(lower_slopes, upper_slopes))
    return np.pad(weights, [[1, 0], [0, 0]])


def mel_to_linear_matrix(m: np.ndarray) -> np.ndarray:
    """Magenta's approximate inverse Minv = M^T diag(d), d_f = 1 / sum_i (M M^T)[i, f]."""
    p = m @ m.T
    sums = p.sum(axis=0)
    d = np.where(np.abs(sums) > 1e-8, 1.0 / np.where(sums == 0, 1.0, sums), sums)
    return m.T @ np.diag(d)


# ----------------------------------------------------------------------------- pure functions

def phase_to_if(phase: torch.Tensor) -> torch.Tensor:
    """Instantaneous frequency / pi from phase [batch, time, freq].

    Frame 0 keeps the raw phase; later frames hold the wrapped time difference.
    """
    dphase = phase[:, 1:] - phase[:, :-1]
    wrapped = torch.remainder(dphase + math.pi, 2 * math.pi) - math.pi
    return torch.cat([phase[:, :1], wrapped], dim=1) / math.pi


def if_to_phase(ifreq: torch.Tensor) -> torch.Tensor:
    """Inverse of `phase_to_if` up to multiples of 2 pi: pi * cumsum over time, as a product
    with a lower-triangular matrix of pi (the same sums in another order: float rounding).
    On the CPU that is ~2.8x faster than torch.cumsum along a dim that is not the innermost
    (a span note's 98 x 1024: 0.25 against 0.69 ms, 1 thread). Never in reduced precision:
    under autocast the product keeps the input's dtype."""
    with torch.autocast(ifreq.device.type, enabled=False):
        return torch.matmul(_pi_tril(ifreq.shape[1], ifreq.device, ifreq.dtype), ifreq)


@functools.lru_cache(maxsize=8)
def _pi_tril(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode(False):   # a normal tensor: autograd may save it (the sound fit)
        return torch.tril(torch.full((n, n), math.pi, dtype=dtype, device=device))


def _polar(mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """mag * exp(i phase): torch.polar computes cos and sin one element at a time on the CPU,
    the vectorised cos and sin take a third of its time (98 x 1024: 0.41 against 1.1 ms)."""
    return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))


def frame_waves(waves: torch.Tensor, n_fft: int, hop: int, pad_left: int) -> torch.Tensor:
    """[batch, samples] -> [batch, time, n_fft] frames after left padding."""
    padded = torch.nn.functional.pad(waves, (pad_left, 0))
    return padded.unfold(-1, n_fft, hop)


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """[batch, time, n_fft] -> [batch, hop * (time - 1) + n_fft] by plain overlap-add."""
    batch, time, n_fft = frames.shape
    length = hop * (time - 1) + n_fft
    if n_fft % hop == 0:  # hop-sized pieces: n_fft / hop shifted adds (4 for GANSynth)
        k = n_fft // hop
        out = frames.new_zeros(batch, time + k - 1, hop)
        pieces = frames.reshape(batch, time, k, hop)
        for j in range(k):
            out[:, j:j + time] += pieces[:, :, j]
        return out.reshape(batch, length)
    # fold treats the signal as a 1 x length image; frames become columns.
    out = torch.nn.functional.fold(
        frames.transpose(1, 2), output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop))
    return out.reshape(batch, length)


# ----------------------------------------------------------------------------- helper class

class SpecgramsHelper:
    """Precomputed windows and mel matrices for one `SpectralConfig` on one device.

    Shapes: waves [batch, samples]; stfts complex [batch, time, freq];
    specgrams [batch, 2, time, freq] with channel 0 = log magnitude (or log-mel
    power) and channel 1 = IF (or mel-IF), both / pi where applicable.
    """

    def __init__(self, config: SpectralConfig, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        c = config
        self.window = torch.hann_window(c.n_fft, periodic=True, dtype=torch.float64)
        self.window = self.window.to(torch.float32).to(self.device)
        overlaps = c.n_fft // c.hop_length
        denom = sum(torch.roll(self.window.double() ** 2, k * c.hop_length) for k in range(overlaps))
        self.synthesis_window = (self.window.double() / denom).float()  # hann / 1.5 for 2048/512
        m = linear_to_mel_matrix(c.freq_bins, c.freq_bins, c.sample_rate, construction=c.mel_construction)
        self.mel_matrix_f64 = m
        self.mel = torch.from_numpy(m).float().to(self.device)  # [freq, mel]
        self.mel_inv = torch.from_numpy(mel_to_linear_matrix(m)).float().to(self.device)  # [mel, freq]
        # The matrices hold ~2.3k non-zeros of 1M: on CPU a sparse product is ~8x faster.
        self._mel_t_sparse = self._mel_inv_t_sparse = None
        if self.device.type == "cpu":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                self._mel_t_sparse = self.mel.T.contiguous().to_sparse_csr()
                self._mel_inv_t_sparse = self.mel_inv.T.contiguous().to_sparse_csr()
        self.norm_a = torch.tensor(c.norm_a, device=self.device).view(1, 2, 1, 1)
        self.norm_b = torch.tensor(c.norm_b, device=self.device).view(1, 2, 1, 1)

    # waves <-> stfts
    def waves_to_stfts(self, waves: torch.Tensor) -> torch.Tensor:
        """[batch, samples] float -> complex [batch, time, freq] (DC dropped)."""
        c = self.config
        waves = _crop_or_pad(waves, c.num_samples)
        frames = frame_waves(waves.float(), c.n_fft, c.hop_length, c.pad_left) * self.window
        return torch.fft.rfft(frames, n=c.n_fft, dim=-1)[..., 1:]

    def stfts_to_waves(self, stfts: torch.Tensor) -> torch.Tensor:
        """complex [batch, time, freq] -> [batch, samples] (zero DC prepended, hann/1.5 OLA)."""
        c = self.config
        stfts = torch.nn.functional.pad(stfts, (1, 0))
        frames = torch.fft.irfft(stfts, n=c.n_fft, dim=-1) * self.synthesis_window
        return overlap_add(frames, c.hop_length)[:, c.pad_left:c.pad_left + c.num_samples]

    # stfts <-> linear specgrams
    @staticmethod
    def stfts_to_specgrams(stfts: torch.Tensor) -> torch.Tensor:
        logmag = torch.log(stfts.abs() + _LOG_EPS)
        # + 0 turns -0.0 into +0.0: some FFTs (MKL's on AVX-512 CPUs) give a silent frame -0.0 real
        # parts, whose angle is pi where TensorFlow's (and the same FFT elsewhere) is 0
        ifreq = phase_to_if(torch.angle(stfts + 0.0))
        return torch.stack([logmag, ifreq], dim=1)

    @staticmethod
    def specgrams_to_stfts(specgrams: torch.Tensor) -> torch.Tensor:
        mag = torch.exp(specgrams[:, 0])
        phase = if_to_phase(specgrams[:, 1])
        return _polar(mag, phase)

    # linear <-> mel specgrams
    def specgrams_to_melspecgrams(self, specgrams: torch.Tensor) -> torch.Tensor:
        """log-mel power and mel-IF from (logmag, IF)."""
        mel_power = self._apply(torch.exp(2.0 * specgrams[:, 0]), self.mel, self._mel_t_sparse)
        mel_phase = self._apply(if_to_phase(specgrams[:, 1]), self.mel, self._mel_t_sparse)
        return torch.stack([torch.log(mel_power + _LOG_EPS), phase_to_if(mel_phase)], dim=1)

    def melspecgrams_to_specgrams(self, melspecgrams: torch.Tensor) -> torch.Tensor:
        power, phase = self._mel_to_power_phase(melspecgrams)
        return torch.stack([0.5 * torch.log(power), phase_to_if(phase)], dim=1)

    def _mel_to_power_phase(self, melspecgrams: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear power (+ the log epsilon) and phase from log-mel power and mel-IF."""
        mag2 = self._apply(torch.exp(melspecgrams[:, 0]), self.mel_inv, self._mel_inv_t_sparse)
        phase = self._apply(if_to_phase(melspecgrams[:, 1]), self.mel_inv, self._mel_inv_t_sparse)
        return mag2 + _LOG_EPS, phase

    @staticmethod
    def _apply(x: torch.Tensor, dense: torch.Tensor, sparse_t: torch.Tensor | None) -> torch.Tensor:
        """x [batch, time, freq] @ dense [freq, out], through the sparse transpose when present."""
        if sparse_t is None or x.dtype != torch.float32:
            return x @ dense
        batch, time, freq = x.shape
        out = sparse_t @ x.reshape(batch * time, freq).T  # [out, batch*time]
        return out.T.reshape(batch, time, -1)

    # normalizer
    def normalize(self, specgrams: torch.Tensor) -> torch.Tensor:
        return torch.clamp(specgrams * self.norm_a + self.norm_b, -1.0, 1.0)

    def denormalize(self, normalized: torch.Tensor) -> torch.Tensor:
        return (normalized - self.norm_b) / self.norm_a

    # full chains
    def waves_to_specgrams(self, waves: torch.Tensor) -> torch.Tensor:
        """[batch, samples] -> normalized model-space [batch, 2, time, freq]."""
        spec = self.stfts_to_specgrams(self.waves_to_stfts(waves.to(self.device)))
        if self.config.representation == "mel_if":
            spec = self.specgrams_to_melspecgrams(spec)
        return self.normalize(spec)

    def specgrams_to_waves(self, normalized: torch.Tensor) -> torch.Tensor:
        """normalized model-space [batch, 2, time, freq] -> [batch, samples]."""
        spec = self.denormalize(normalized.float())
        if self.config.representation != "mel_if":
            return self.stfts_to_waves(self.specgrams_to_stfts(spec))
        # Magenta goes phase -> IF (wrapped differences) -> phase (cumsum); that round trip
        # only adds multiples of 2 pi, so the phase goes to the STFT directly.
        power, phase = self._mel_to_power_phase(spec)
        return self.stfts_to_waves(_polar(torch.sqrt(power), phase))  # = exp(0.5 log power)


def _crop_or_pad(waves: torch.Tensor, length: int) -> torch.Tensor:
    n = waves.shape[-1]
    if n > length:
        return waves[..., :length]
    if n < length:
        return torch.nn.functional.pad(waves, (0, length - n))
    return waves
