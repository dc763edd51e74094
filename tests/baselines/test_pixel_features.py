"""Tests of the per-pixel features of gp-pixel."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2lab

from gpcis.baselines.pixel_features import (
    PixelFeatureConfig,
    check_image,
    compute_pixel_features,
    segment_mean,
    to_lab,
    working_size,
)


def test_lab_matches_skimage() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    # OpenCV's float Lab vs scikit-image's (independent implementation), both D65. They
    # differ by up to ~0.25 Lab units (OpenCV's rounded constants); 0.5 is ~5x below a
    # just-noticeable colour difference (~2.3).
    np.testing.assert_allclose(to_lab(img), rgb2lab(img), atol=0.5)


def test_working_size() -> None:
    assert working_size(480, 640, 256) == (192, 256)
    assert working_size(100, 50, 256) == (100, 50)  # never upsampled
    assert working_size(1000, 3, 100) == (100, 2)


def test_feature_layout_and_position() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    cfg = PixelFeatureConfig(max_side=30, colour_scales=(0.0, 2.0), superpixels=10)
    f = compute_pixel_features(img, cfg)
    assert f.size == (20, 30) and f.image_size == (40, 60)
    assert f.groups == ["colour"] * 6 + ["gradient"] + ["position"] * 2 + ["superpixel"] * 3
    assert f.features.shape == (20, 30, 12) and f.features.dtype == np.float32
    pos = f.features[..., 7:9]
    assert pos[0, 0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(pos[19, 29], [19 / 30, 29 / 30], rtol=1e-6)
    assert f.features[..., 6].min() >= 0  # gradient magnitude
    # Superpixel features are constant on each superpixel and equal its mean Lab / 100.
    labels = f.superpixel_labels
    for s in np.unique(labels):
        vals = f.features[labels == s][:, 9:12]
        np.testing.assert_allclose(vals, np.broadcast_to(f.lab[labels == s].mean(0) / 100, vals.shape), atol=1e-4)


def test_segment_mean_brute_force() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, (6, 7))
    v = rng.normal(size=(6, 7))
    got = segment_mean(v, labels)
    for r in range(6):
        for c in range(7):
            assert abs(got[r, c] - v[labels == labels[r, c]].mean()) < 1e-5


def test_gradient_of_a_step() -> None:
    img = np.zeros((20, 20, 3), np.uint8)
    img[:, 10:] = 255
    f = compute_pixel_features(img, PixelFeatureConfig(colour_scales=(0.0,), superpixels=0, position=False))
    g = f.features[..., 3]
    assert g[:, 9:11].min() > 0.1 and g[:, :4].max() < 1e-6 and g[:, 16:].max() < 1e-6


def test_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        check_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        check_image(np.zeros((4, 4, 3), np.float64))
    with pytest.raises(ValueError, match="max_side"):
        PixelFeatureConfig(max_side=2)
    with pytest.raises(ValueError, match="no feature"):
        compute_pixel_features(
            np.zeros((4, 4, 3), np.uint8),
            PixelFeatureConfig(colour_scales=(), gradient=False, position=False, superpixels=0),
        )
