"""LatentPrior: draws near the learned latents, the legacy Gaussian, and its JSON form."""
from __future__ import annotations

import numpy as np
import pytest

from engine.gansynth.latentprior import LatentPrior


def learned(n=6, d=5, seed=0):
    z = np.random.default_rng(seed).standard_normal((n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_spread_zero_gives_the_learned_latents_each_once():
    lat = learned()
    z = LatentPrior.fit(lat, spread=0.0, radius=1.0).sample(6, np.random.default_rng(1))
    np.testing.assert_allclose(np.sort(z, axis=0), np.sort(lat, axis=0).astype(np.float32), atol=1e-6)
    # more draws than voices: every voice before any repeats
    z = LatentPrior.fit(lat, spread=0.0, radius=1.0).sample(9, np.random.default_rng(1))
    first = [np.linalg.norm(lat - v, axis=1).argmin() for v in z[:6]]
    assert sorted(first) == list(range(6))


def test_spread_varies_around_centers_on_the_sphere():
    lat = learned(n=20, d=8)
    prior = LatentPrior.fit(lat, spread=0.3, radius=2.0)
    z = prior.sample(400, np.random.default_rng(2)).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 2.0, rtol=1e-5)
    dist = np.linalg.norm(z[:, None] / 2.0 - lat[None], axis=2)
    spread_of_data = np.linalg.norm(lat - lat.mean(0), axis=1).mean()
    assert 0 < np.median(dist.min(1)) < 0.6 * spread_of_data   # near a learned voice, not on it
    wider = LatentPrior.fit(lat, spread=1.0, radius=2.0).sample(400, np.random.default_rng(2))
    assert np.linalg.norm(wider[:, None] / 2.0 - lat[None], axis=2).min(1).mean() > dist.min(1).mean()


def test_legacy_prior_is_the_gaussian_of_the_latents():
    lat = learned(n=30, d=4)
    full = LatentPrior.fit(lat, 0.3, 1.0).to_json()
    legacy = LatentPrior.from_json({"mean": full["mean"], "basis": full["basis"]}, 4)
    z = legacy.sample(20000, np.random.default_rng(3)).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), lat.mean(0), atol=0.02)
    np.testing.assert_allclose(np.cov(z.T), np.cov(lat.T), atol=0.02)


def test_json_round_trip_and_bad_values():
    prior = LatentPrior.fit(learned(), 0.3, 1.0)
    again = LatentPrior.from_json(prior.to_json(), 5)
    rng = lambda: np.random.default_rng(4)  # noqa: E731
    np.testing.assert_allclose(again.sample(3, rng()), prior.sample(3, rng()), atol=1e-5)
    good = prior.to_json()
    for bad, message in ((dict(good, mean=[0.0] * 4), "latent size 5"),
                         (dict(good, centers=[[0.0] * 5, [float("nan")] * 5]), "bad numbers"),
                         (dict(good, spread=-1), "bad numbers"),
                         ({"basis": good["basis"]}, "needs 'mean'"),
                         (dict(good, centers="x"), "needs 'mean'")):
        with pytest.raises(ValueError, match=message):
            LatentPrior.from_json(bad, 5)


def test_named_voices_round_trip_and_name_the_nearest():
    lat = learned()
    names = [f"SF/reed_acoustic_{i:03d} v127" for i in range(6)]
    prior = LatentPrior.from_json(LatentPrior.fit(lat, 0.3, 1.0, names).to_json(), 5)
    assert prior.names == tuple(names)
    z = prior.sample(6, np.random.default_rng(5))   # six draws: six different voices, each named
    assert sorted(prior.nearest_name(v) for v in z) == sorted(names)
    assert prior.nearest_name(lat[3] * 7.0) == names[3]   # by direction, not scale
    assert LatentPrior.fit(lat, 0.3, 1.0).nearest_name(lat[0]) is None
    with pytest.raises(ValueError, match="6 latents"):
        LatentPrior.fit(lat, 0.3, 1.0, names[:2])
    good = prior.to_json()
    for bad in (dict(good, names=names[:5]), dict(good, names=[1] * 6), dict(good, names="x"),
                dict({k: v for k, v in good.items() if k != "centers"}, names=names)):
        with pytest.raises(ValueError, match="names"):
            LatentPrior.from_json(bad, 5)
