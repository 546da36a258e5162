"""Timbre pad: four corner instruments and a pad position -> the current latent.

Corners sit at fixed pad positions (x right, y up, both 0..1):

    corner 2 (0, 1) ---- corner 3 (1, 1)
        |                     |
    corner 0 (0, 0) ---- corner 1 (1, 0)

Weights (`corner_weights`):
  * "nsynth" (default, Open NSynth Super's rule): each corner gets
    max(0, 1 - euclidean distance), then the four are normalised to sum 1.
    At the centre every corner weighs 0.25; on an edge only the two nearest count.
  * "bilinear": (1-x)(1-y), x(1-y), (1-x)y, xy.

The latent is the weighted mean of the corner latents, or with `slerp=True` a
chain of spherical interpolations (exact slerp for two corners), which keeps
the latent norm near that of the corners (z ~ N(0, I) lives near a sphere).

`TimbreState` is immutable: threads exchange it by replacing the reference.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

CORNER_POSITIONS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # [4, (x, y)]
MODES = ("nsynth", "bilinear")
DEFAULT_COLOURS = ("#e4572e", "#17bebb", "#ffc914", "#76b041")


def corner_weights(x: float, y: float, mode: str = "nsynth") -> np.ndarray:
    """Weights of the four corners at pad position (x, y): float64 [4], sum 1."""
    x = min(max(float(x), 0.0), 1.0)
    y = min(max(float(y), 0.0), 1.0)
    if mode == "bilinear":
        return np.array([(1 - x) * (1 - y), x * (1 - y), (1 - x) * y, x * y])
    if mode != "nsynth":
        raise ValueError(f"interpolation mode must be one of {MODES}, not {mode!r}")
    dist = np.hypot(CORNER_POSITIONS[:, 0] - x, CORNER_POSITIONS[:, 1] - y)
    w = np.maximum(0.0, 1.0 - dist)
    return w / w.sum()  # some corner is always within 1/sqrt(2) < 1


def slerp_rows(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Row-wise slerp as Magenta's generate_util: a, b float [n, L], f [n] -> float32 [n, L]."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    f = np.asarray(f, np.float64)[:, None]
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-30)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-30)
    omega = np.arccos(np.clip(np.sum(na * nb, axis=1, keepdims=True), -1.0, 1.0))
    so = np.sin(omega)
    parallel = so == 0.0
    so_safe = np.where(parallel, 1.0, so)
    out = np.sin((1.0 - f) * omega) / so_safe * a + np.sin(f * omega) / so_safe * b
    out = np.where(parallel, (1.0 - f) * a + f * b, out)
    return out.astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation a -> b at t in 0..1 (vectors [n]): one row of `slerp_rows`."""
    return slerp_rows(np.asarray(a)[None], np.asarray(b)[None], np.array([t]))[0]


def interpolate(latents: np.ndarray, weights: np.ndarray, spherical: bool = False) -> np.ndarray:
    """Blend corner latents [4, n] with weights [4] (sum 1) -> float32 [n]."""
    latents = np.asarray(latents, np.float32)
    weights = np.asarray(weights, np.float64)
    if not spherical:
        return (weights @ latents.astype(np.float64)).astype(np.float32)
    acc, acc_w = None, 0.0
    for w, z in zip(weights, latents):
        if w <= 0.0:
            continue
        if acc is None:
            acc, acc_w = z.copy(), w
            continue
        acc = slerp(acc, z, w / (acc_w + w))
        acc_w += w
    return acc.astype(np.float32)


@dataclass(frozen=True)
class Corner:
    """One corner instrument: a name, a latent float32 [latent_size] (read-only) and a colour."""

    name: str
    latent: np.ndarray
    colour: str = "#888888"

    def __post_init__(self):
        z = np.array(self.latent, dtype=np.float32, copy=True).reshape(-1)
        z.setflags(write=False)
        object.__setattr__(self, "latent", z)


@dataclass(frozen=True)
class TimbreState:
    """Four corners, a pad position and how to blend them. Immutable; replace to change.

    `pad_grid` > 0 snaps the pad to a (grid+1) x (grid+1) lattice before blending, so
    returning to a spot finds its notes in the cache; 0 means continuous.
    """

    corners: tuple[Corner, Corner, Corner, Corner]
    pad: tuple[float, float] = (0.5, 0.5)
    mode: str = "nsynth"
    spherical: bool = False
    pad_grid: int = 32
    _latent: np.ndarray = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if len(self.corners) != 4:
            raise ValueError(f"a timbre needs 4 corners, got {len(self.corners)}")
        sizes = {c.latent.shape[0] for c in self.corners}
        if len(sizes) != 1:
            raise ValueError(f"corner latents differ in length: {sorted(sizes)}")
        if self.mode not in MODES:
            raise ValueError(f"interpolation mode must be one of {MODES}, not {self.mode!r}")
        x, y = (min(max(float(v), 0.0), 1.0) for v in self.pad)
        object.__setattr__(self, "pad", (x, y))
        object.__setattr__(self, "corners", tuple(self.corners))
        z = interpolate(self.latents(), self.weights(), self.spherical)
        z.setflags(write=False)
        object.__setattr__(self, "_latent", z)

    @classmethod
    def random(cls, synth_or_latents, seed: int = 0, names=None, **kwargs) -> "TimbreState":
        """Four corners from `synth.random_latents(4, seed)` (or an array [4, n])."""
        z = synth_or_latents.random_latents(4, seed) if hasattr(synth_or_latents, "random_latents") \
            else np.asarray(synth_or_latents, np.float32)
        names = names or [f"Random {seed}.{i + 1}" for i in range(4)]
        corners = tuple(Corner(names[i], z[i], DEFAULT_COLOURS[i]) for i in range(4))
        return cls(corners, **kwargs)

    @property
    def latent_size(self) -> int:
        return int(self.corners[0].latent.shape[0])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.corners)

    def latents(self) -> np.ndarray:
        return np.stack([c.latent for c in self.corners])  # [4, latent_size]

    def snapped_pad(self) -> tuple[float, float]:
        if self.pad_grid <= 0:
            return self.pad
        g = float(self.pad_grid)
        return (round(self.pad[0] * g) / g, round(self.pad[1] * g) / g)

    def weights(self) -> np.ndarray:
        """Corner weights float64 [4] at the (snapped) pad position."""
        return corner_weights(*self.snapped_pad(), self.mode)

    @property
    def latent(self) -> np.ndarray:
        """The current blended latent, float32 [latent_size] (read-only)."""
        return self._latent

    def key(self) -> bytes:
        """Identity of the current latent (equal latents -> equal keys)."""
        return hashlib.blake2b(self._latent.tobytes(), digest_size=16).digest()

    def corner_keys(self) -> tuple[bytes, bytes, bytes, bytes]:
        """The key each corner's latent has as a timbre of its own (the pad on that corner)."""
        return tuple(hashlib.blake2b(c.latent.tobytes(), digest_size=16).digest() for c in self.corners)

    def with_pad(self, x: float, y: float) -> "TimbreState":
        return replace(self, pad=(x, y))

    def with_corner(self, i: int, latent, name: str, colour: str | None = None) -> "TimbreState":
        if not 0 <= i < 4:
            raise ValueError(f"corner index must be 0..3, got {i}")
        z = np.asarray(latent, np.float32).reshape(-1)
        if z.shape[0] != self.latent_size:
            raise ValueError(f"corner latent must have {self.latent_size} values, got {z.shape[0]}")
        corners = list(self.corners)
        corners[i] = Corner(str(name), z, colour or corners[i].colour)
        return replace(self, corners=tuple(corners))
