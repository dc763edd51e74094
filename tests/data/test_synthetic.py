"""The procedural data set: exact, consistent, deterministic per seed and index."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.data.synthetic import SyntheticConfig, SyntheticDataset


def test_samples_are_valid_and_deterministic():
    cfg = SyntheticConfig(height=48, width=64, max_objects=3, min_area=0.02)
    a, b = SyntheticDataset(12, cfg, seed=5), SyntheticDataset(12, cfg, seed=5)
    for i in range(12):
        s, t = a[i], b[i]
        s.validate()
        assert s.image.shape == (48, 64, 3)
        np.testing.assert_array_equal(s.image, t.image)
        assert len(s.masks) == 1 and len(s.others) == len(t.others) <= 2
        assert all(np.array_equal(m, n) for m, n in zip(s.masks + s.others, t.masks + t.others))
        assert s.mask.sum() >= 0.02 * 48 * 64
        assert not s.ignore.any()
        # masks are disjoint visible regions
        total = np.sum([m.astype(int) for m in s.masks + s.others], axis=0)
        assert total.max() <= 1
    # a different seed gives different images; the index order does not matter
    c = SyntheticDataset(12, cfg, seed=6)
    assert not np.array_equal(a[0].image, c[0].image)
    np.testing.assert_array_equal(a[7].image, SyntheticDataset(12, cfg, seed=5)[7].image)


def test_objects_are_visible_in_the_image():
    # the target differs in colour statistics from its surroundings on average
    ds = SyntheticDataset(20, SyntheticConfig(height=64, width=64), seed=0)
    diffs = []
    for i in range(20):
        s = ds[i]
        inside = s.image[s.mask].astype(float).mean(0)
        outside = s.image[~s.mask].astype(float).mean(0)
        diffs.append(np.abs(inside - outside).max())
    assert np.median(diffs) > 15


def test_bad_config():
    with pytest.raises(ValueError, match="height"):
        SyntheticConfig(height=4)
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticDataset(0)
    with pytest.raises(IndexError):
        SyntheticDataset(3)[3]
