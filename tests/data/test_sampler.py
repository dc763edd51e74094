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
    """RITM's get_point_candidates on the eroded object: exact distance to its background
    strictly beyond max / k. The 30 x 30 square eroded 3 times is the 24 x 24 square
    [13, 37); its distances are min(r - 12, 37 - r, c - 12, 37 - c), at most 12, so the first
    click has distance >= 8 > 12 / 1.7 there, and the ring at exactly 8 is reached (the
    interior of the uneroded square, distance > 15 / 1.7 from its edge, would have been
    distance >= 6 from the eroded one's)."""
    target, _, _ = _masks()
    s = MultiPointSampler(first_click_inner_prob=1.0, inner_k=1.7, positive_erode_prob=1.0)
    dists = []
    for seed in range(100):
        c = s.sample(target, np.random.default_rng(seed))[0]
        assert c.positive
        dists.append(min(c.row - 12, 37 - c.row, c.col - 12, 37 - c.col))
    assert min(dists) == 8 and max(dists) <= 12


def test_erosion_that_leaves_ten_pixels_or_fewer_keeps_the_object():
    """As RITM's _positive_erode: an 8 x 9 object eroded 3 times is 2 x 3 = 6 pixels, too few:
    positives are drawn from the whole object (before, only from those 6)."""
    target = np.zeros((30, 30), bool)
    target[10:18, 10:19] = True
    core = np.zeros_like(target)
    core[13:15, 13:16] = True
    s = MultiPointSampler(positive_erode_prob=1.0, first_click_inner_prob=0.0)
    outside = 0
    for seed in range(50):
        for c in s.sample(target, np.random.default_rng(seed)):
            if c.positive:
                assert target[c.row, c.col]
                outside += not core[c.row, c.col]
    assert outside > 0
    wide = np.zeros((30, 30), bool)
    wide[5:25, 5:25] = True  # eroded: 14 x 14 = 196 pixels, kept: every positive in it
    for seed in range(20):
        assert all(8 <= c.row < 22 and 8 <= c.col < 22 for c in s.sample(wide, np.random.default_rng(seed)) if c.positive)


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


def test_choose_objects_merges_two_with_ritms_probability():
    """RITM's _sample_mask: with probability merge_objects_prob (and >= 2 objects) 2 ..
    max_num_merged_objects distinct objects, else one, uniformly; within 4 standard errors."""
    s = MultiPointSampler(merge_objects_prob=0.15)
    rng = np.random.default_rng(0)
    draws = [s.choose_objects(3, rng) for _ in range(4000)]
    merged = [d for d in draws if len(d) > 1]
    assert all(len(d) == 2 and d[0] < d[1] for d in merged)
    assert abs(len(merged) / 4000 - 0.15) < 4 * np.sqrt(0.15 * 0.85 / 4000)
    singles = np.bincount([d[0] for d in draws if len(d) == 1], minlength=3) / (4000 - len(merged))
    assert np.abs(singles - 1 / 3).max() < 4 * np.sqrt(2 / 9 / (4000 - len(merged)))
    assert s.choose_objects(1, rng) == [0]
    never = MultiPointSampler(merge_objects_prob=0.0)
    state = np.random.default_rng(5)
    assert never.choose_objects(2, state) == [int(np.random.default_rng(5).integers(0, 2))]  # no coin drawn
    with pytest.raises(ValueError, match="merge_objects_prob"):
        MultiPointSampler(merge_objects_prob=1.5)


def test_merged_target_has_a_first_click_in_each_object():
    """RITM's _multi_mask_sample_points: one positive in each object first, the further
    positives in either; every positive inside an object, negatives outside both."""
    a = np.zeros((60, 60), bool)
    a[5:25, 5:25] = True
    b = np.zeros((60, 60), bool)
    b[35:55, 30:55] = True
    s = MultiPointSampler()
    for seed in range(30):
        clicks = s.sample(a | b, np.random.default_rng(seed), parts=[a, b])
        pos = [c for c in clicks if c.positive]
        assert a[pos[0].row, pos[0].col] and b[pos[1].row, pos[1].col]
        assert all((a | b)[c.row, c.col] for c in pos) and len(pos) <= s.max_num_points
        assert len({(c.row, c.col) for c in clicks}) == len(clicks)
        assert not any((a | b)[c.row, c.col] for c in clicks if not c.positive)
    # more objects than max_num_points: at most max_num_points positives (a first click in
    # each object exceeded it) and the negatives kept
    one = MultiPointSampler(max_num_points=1)
    for seed in range(10):
        clicks = one.sample(a | b, np.random.default_rng(seed), parts=[a, b])
        assert sum(c.positive for c in clicks) == 1 and (a | b)[clicks[0].row, clicks[0].col]
        assert sum(not c.positive for c in clicks) <= 1
    # a part cropped away: the single-object rule on what is visible
    hidden = np.zeros_like(b)
    clicks = s.sample(a, np.random.default_rng(0), parts=[a, hidden])
    assert clicks == s.sample(a, np.random.default_rng(0))
