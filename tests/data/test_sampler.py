"""The training click sampler: labels match the masks, counts follow the decay law."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.data.sampler import MultiPointSampler, decay_probs


def _masks(h=64, w=64):
    target = np.zeros((h, w), bool)
    target[10:40, 10:40] = True
    other = np.zeros((h, w), bool)
    other[45:60, 45:60] = True
    ignore = np.zeros((h, w), bool)
    ignore[:, 62:] = True
    return target, other, ignore


def test_decay_probs_closed_form():
    p = decay_probs(24, 0.8)
    q = np.array([0.8**k for k in range(24)])
    np.testing.assert_allclose(p, q / q.sum(), rtol=1e-12)


def test_labels_match_masks_and_ignore_is_avoided():
    target, other, ignore = _masks()
    s = MultiPointSampler()
    on_other = 0
    for seed in range(200):
        clicks = s.sample(target, np.random.default_rng(seed), others=[other], ignore=ignore)
        assert clicks[0].positive
        assert len(set((c.row, c.col) for c in clicks)) == len(clicks)
        for c in clicks:
            assert target[c.row, c.col] == c.positive
            assert not ignore[c.row, c.col]
            on_other += other[c.row, c.col]
    assert on_other > 0  # negatives are also placed on other objects


def test_deterministic_given_generator():
    target, other, ignore = _masks()
    s = MultiPointSampler()
    a = s.sample(target, np.random.default_rng(7), [other], ignore)
    b = s.sample(target, np.random.default_rng(7), [other], ignore)
    assert a == b


def test_count_distribution():
    # large regions so that every requested click fits: counts follow p_k ∝ 0.8^k
    target = np.zeros((96, 96), bool)
    target[8:60, 8:60] = True
    s = MultiPointSampler(max_num_points=6)
    n = 3000
    pos, neg = np.zeros(7), np.zeros(7)
    rng = np.random.default_rng(0)
    for _ in range(n):
        clicks = s.sample(target, rng)
        pos[sum(c.positive for c in clicks)] += 1
        neg[sum(not c.positive for c in clicks)] += 1
    p_pos = np.r_[0, decay_probs(6, 0.8)]
    p_neg = decay_probs(7, 0.8)
    # binomial standard error sqrt(p(1-p)/n) <= 0.0092; allow 4 sigma
    np.testing.assert_allclose(pos / n, p_pos, atol=4 * 0.0092)
    np.testing.assert_allclose(neg / n, p_neg, atol=4 * 0.0092)


def test_first_click_in_interior():
    target, _, _ = _masks()
    s = MultiPointSampler(first_click_inner_prob=1.0, inner_k=1.7)
    for seed in range(30):
        c = s.sample(target, np.random.default_rng(seed))[0]
        # distance to the background of a 30x30 square, brute force
        d = min(c.row - 10 + 1, 40 - c.row, c.col - 10 + 1, 40 - c.col)
        assert d >= 15 / 1.7 - 1


def test_errors():
    s = MultiPointSampler()
    with pytest.raises(ValueError, match="no .*pixel"):
        s.sample(np.zeros((8, 8), bool), np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_num_points"):
        MultiPointSampler(max_num_points=0)


def test_other_objects_and_ignore_may_be_any_mask_type():
    """uint8 / float `others` raised a ufunc type error and a list `ignore` an AttributeError."""
    target = np.zeros((30, 30), bool)
    target[10:20, 10:20] = True
    other = np.zeros((30, 30), np.uint8)
    other[0:5, 0:5] = 255
    ignore = [[False] * 30 for _ in range(30)]
    sampler = MultiPointSampler(max_num_points=6)
    clicks = sampler.sample(target, np.random.default_rng(0), others=[other, other.astype(np.float32)], ignore=ignore)
    assert clicks[0].positive and all(target[c.row, c.col] == c.positive for c in clicks)
