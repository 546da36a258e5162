"""Timbre pad: NSynth Super corner weights, bilinear weights, slerp, immutable state."""
from __future__ import annotations

import numpy as np
import pytest

from engine.instrument.timbre import Corner, TimbreState, corner_weights, interpolate, slerp


def test_nsynth_weights_centre_edges_and_corners():
    np.testing.assert_allclose(corner_weights(0.5, 0.5), [0.25] * 4)
    # on the bottom edge's midpoint only the two bottom corners count (the top ones are > 1 away)
    np.testing.assert_allclose(corner_weights(0.5, 0.0), [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(corner_weights(0.0, 0.0), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(corner_weights(1.0, 1.0), [0.0, 0.0, 0.0, 1.0])


def test_nsynth_weights_follow_max_zero_one_minus_distance():
    x, y = 0.2, 0.3
    raw = np.array([max(0, 1 - np.hypot(cx - x, cy - y)) for cx, cy in ((0, 0), (1, 0), (0, 1), (1, 1))])
    np.testing.assert_allclose(corner_weights(x, y), raw / raw.sum())
    assert corner_weights(x, y)[3] == 0.0  # (1, 1) is farther than 1


def test_bilinear_weights():
    np.testing.assert_allclose(corner_weights(0.25, 0.5, "bilinear"), [0.375, 0.125, 0.375, 0.125])
    with pytest.raises(ValueError, match="interpolation mode"):
        corner_weights(0.5, 0.5, "cubic")


def test_slerp_keeps_norm_between_orthogonal_unit_vectors():
    a, b = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    mid = slerp(a, b, 0.5)
    np.testing.assert_allclose(mid, [np.sqrt(0.5)] * 2, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(mid), 1.0, atol=1e-6)
    np.testing.assert_allclose(slerp(a, b, 0.0), a, atol=1e-7)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-7)


def test_interpolate_linear_and_spherical():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 256)).astype(np.float32)
    w = np.array([0.25, 0.25, 0.25, 0.25])
    np.testing.assert_allclose(interpolate(z, w), z.mean(0), atol=1e-6)
    sph = interpolate(z, w, spherical=True)
    # the linear mean of 4 independent N(0, I) vectors shrinks to half the norm; slerp does not
    assert np.linalg.norm(z.mean(0)) < 0.6 * np.linalg.norm(z[0])
    assert np.linalg.norm(sph) > 0.85 * np.linalg.norm(z, axis=1).min()
    # a single corner with all the weight is that corner
    np.testing.assert_allclose(interpolate(z, [0, 0, 1, 0], spherical=True), z[2], atol=1e-6)


def test_timbre_state_latent_key_and_grid():
    z = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    t = TimbreState.random(z, pad_grid=4)
    assert t.latent_size == 16 and t.names == ("Random 0.1", "Random 0.2", "Random 0.3", "Random 0.4")
    np.testing.assert_allclose(t.latent, z.mean(0), atol=1e-6)
    # moves inside one grid cell give the same latent (a cache hit); across cells a new one
    assert t.with_pad(0.51, 0.49).key() == t.key()
    assert t.with_pad(0.8, 0.5).key() != t.key()
    assert t.with_pad(0.51, 0.49).pad == (0.51, 0.49)  # the real position is kept for the GUI
    continuous = TimbreState.random(z, pad_grid=0)
    assert continuous.with_pad(0.51, 0.5).key() != continuous.key()
    with pytest.raises(ValueError):
        t.latent[0] = 1.0  # read-only


def test_with_corner_validates_and_replaces():
    z = np.zeros((4, 8), np.float32)
    t = TimbreState.random(z)
    t2 = t.with_corner(1, np.ones(8), "Brass", "#112233")
    assert t2.corners[1].name == "Brass" and t2.corners[1].colour == "#112233"
    assert t.corners[1].name != "Brass"  # the old state is untouched
    np.testing.assert_allclose(t2.latent, np.full(8, 0.25))
    with pytest.raises(ValueError, match="8 values"):
        t.with_corner(0, np.ones(9), "x")
    with pytest.raises(ValueError, match="0..3"):
        t.with_corner(4, np.ones(8), "x")
    with pytest.raises(ValueError, match="4 corners"):
        TimbreState((Corner("a", np.zeros(8)),) * 3)
