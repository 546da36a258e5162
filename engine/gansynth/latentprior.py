"""Where new instruments come from in a GLO-trained model: its latent prior.

GLO learns one latent per training voice, all on a sphere of `radius`. A new
instrument is one of those voices, varied:

    z = center + spread * eps @ basis,   eps ~ N(0, I_k),   then rescaled to the sphere

where `basis` rows are (latent - mean) / sqrt(n - 1), so eps @ basis has the learned
latents' covariance, and `spread` scales it. A call for n instruments takes n
different centers while there are enough. spread = 0 gives the learned voices.

`names` (optional, one per center) say which training voice each center is, e.g.
"FluidR3_GM/reed_acoustic_071 v127": `nearest_name(z)` names the voice an instrument
was drawn from (the palette shows it).

Model files exported before centers existed carry only mean and basis; for them
z = mean + eps @ basis, the Gaussian of all learned latents (its samples are blends
of many voices at once). Both live in `config.json` as `provenance.latent_prior`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class LatentPrior:
    mean: np.ndarray                    # [d]
    basis: np.ndarray                   # [k, d]
    centers: np.ndarray | None = None   # [n, d]: the learned latents
    spread: float = 0.0
    radius: float = 0.0                 # 0: no rescaling
    names: tuple[str, ...] | None = None  # one per center: the training voice it is

    @classmethod
    def fit(cls, latents: np.ndarray, spread: float, radius: float, names=None) -> "LatentPrior":
        latents = np.asarray(latents, np.float64)
        mean = latents.mean(0)
        basis = (latents - mean) / math.sqrt(max(1, len(latents) - 1))
        if names is not None and len(names) != len(latents):
            raise ValueError(f"{len(names)} voice names for {len(latents)} latents")
        return cls(mean, basis, latents, float(spread), float(radius),
                   None if names is None else tuple(str(n) for n in names))

    def nearest_name(self, z: np.ndarray) -> str | None:
        """The name of the learned voice nearest to z (cosine), or None when the prior has no names."""
        if self.centers is None or self.names is None:
            return None
        z = np.asarray(z, np.float64).reshape(-1)
        c = self.centers / np.maximum(np.linalg.norm(self.centers, axis=1, keepdims=True), 1e-12)
        return self.names[int(np.argmax(c @ z))]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """float32 [n, d]."""
        eps = rng.standard_normal((n, self.basis.shape[0]))
        if self.centers is None:
            return (self.mean + eps @ self.basis).astype(np.float32)
        count = len(self.centers)
        order = np.concatenate([rng.permutation(count) for _ in range(-(-n // count))])[:n]
        z = self.centers[order] + self.spread * eps @ self.basis
        if self.radius > 0:
            z *= self.radius / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        return z.astype(np.float32)

    def to_json(self) -> dict:
        def rows(a):
            return [[round(float(v), 6) for v in row] for row in a]

        out = {"mean": [round(float(v), 6) for v in self.mean], "basis": rows(self.basis)}
        if self.centers is not None:
            out.update(centers=rows(self.centers), spread=self.spread, radius=self.radius)
            if self.names is not None:
                out["names"] = list(self.names)
        return out

    @classmethod
    def from_json(cls, d: dict, latent_size: int) -> "LatentPrior":
        """Raises ValueError saying what is wrong."""
        try:
            mean = np.asarray(d["mean"], np.float64)
            basis = np.asarray(d["basis"], np.float64)
            centers = np.asarray(d["centers"], np.float64) if "centers" in d else None
            spread, radius = float(d.get("spread", 0.0)), float(d.get("radius", 0.0))
            names = d.get("names")
        except (KeyError, TypeError, ValueError):
            raise ValueError("needs 'mean' [d] and 'basis' [k][d] (optionally 'centers' [n][d], "
                             "'spread', 'radius' numbers)") from None
        if names is not None and (centers is None or not isinstance(names, list) or len(names) != len(centers)
                                  or not all(isinstance(n, str) and len(n) <= 200 for n in names)):
            raise ValueError("'names' must be a list of short strings, one per center")
        arrays = [mean, basis] + ([] if centers is None else [centers])
        if mean.shape != (latent_size,) or basis.ndim != 2 or basis.shape[1] != latent_size \
                or (centers is not None and (centers.ndim != 2 or centers.shape[1] != latent_size
                                             or len(centers) == 0)) \
                or not all(np.isfinite(a).all() for a in arrays) \
                or not (math.isfinite(spread) and spread >= 0 and math.isfinite(radius) and radius >= 0):
            raise ValueError(f"does not match latent size {latent_size} (or has bad numbers)")
        return cls(mean, basis, centers, spread, radius, None if names is None else tuple(names))
