"""Augmentation and the target crop (box, crop/resize and the inverse mapping)."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.clicks import Click
from gpcis.data.datasets import Sample
from gpcis.data.synthetic import SyntheticConfig, SyntheticDataset
from gpcis.data.transforms import (
    AugmentConfig,
    Box,
    augment,
    brightness_contrast,
    color_jitter,
    crop_box_around,
    crop_resize,
    expand_box,
    hflip,
    paste_back,
    point_from_crop,
    point_to_crop,
    random_crop,
    random_scale,
    resize_sample,
    shift_rgb,
)


def _sample(h=40, w=50):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    m = np.zeros((h, w), bool)
    m[10:20, 30:45] = True
    other = np.zeros((h, w), bool)
    other[0:5, 0:8] = True
    return Sample(img, [m], np.zeros((h, w), bool), "s", others=[other])


def test_augment_shapes_and_determinism():
    s = SyntheticDataset(1, SyntheticConfig(height=60, width=90))[0]
    cfg = AugmentConfig(crop_size=(32, 48))
    a = augment(s, np.random.default_rng(3), cfg)
    b = augment(s, np.random.default_rng(3), cfg)
    a.validate()
    assert a.image.shape == (32, 48, 3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    # with object_prob = 1 the target is visible in every crop
    cfg = AugmentConfig(crop_size=(24, 24), object_prob=1.0)
    for seed in range(10):
        assert augment(s, np.random.default_rng(seed), cfg).mask.any()


def test_resize_sample_maps_every_mask_by_nearest_neighbour():
    """Image bilinear, target / other objects / ignore nearest: binary, and equal to OpenCV's
    nearest resize of each (the same mapping for all, so they stay aligned)."""
    import cv2

    s = _sample()
    s.ignore[30:, :] = True
    out = resize_sample(s, 23, 71)
    assert out.image.shape == (23, 71, 3) and out.image.dtype == np.uint8
    np.testing.assert_array_equal(out.image, cv2.resize(s.image, (71, 23), interpolation=cv2.INTER_LINEAR))
    for got, src in ((out.mask, s.mask), (out.others[0], s.others[0]), (out.ignore, s.ignore)):
        assert got.dtype == bool and got.shape == (23, 71)
        np.testing.assert_array_equal(got, cv2.resize(src.astype(np.uint8), (71, 23),
                                                      interpolation=cv2.INTER_NEAREST).astype(bool))


def test_random_scale_draws_its_factor_from_the_range():
    """The scale is U(scale_range): over many draws every size lies within the range's sizes
    (rounded) and both ends are approached; one fixed factor gives exactly that size."""
    s = _sample(40, 50)
    rng = np.random.default_rng(0)
    heights = [random_scale(s, rng, (0.5, 1.5)).image.shape[0] for _ in range(200)]
    assert min(heights) >= 20 and max(heights) <= 60
    assert min(heights) <= 22 and max(heights) >= 58  # 200 uniform draws reach within 5% of both ends
    fixed = random_scale(s, np.random.default_rng(1), (0.75, 0.75))
    assert fixed.image.shape[:2] == (30, 38) and fixed.mask.shape == (30, 38)


def test_brightness_contrast_and_rgb_shift_are_albumentations_formulas():
    """Per pixel, in float64 against the lookup tables: trunc(clip(x alpha + 255 beta)) and
    trunc(clip(x_c + s_c)) (albumentations' uint8 paths, which RITM's augmentation uses;
    float32 table values off the float64 ones by < 1e-4 cannot cross an integer here)."""
    img = np.random.default_rng(2).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    x = img.astype(np.float64)
    for alpha, beta in [(1.0, 0.0), (0.85, 0.2), (1.4, -0.25), (1.13, 0.0371)]:
        expected = np.trunc(np.clip(x * alpha + 255 * beta, 0, 255)).astype(np.uint8)
        np.testing.assert_array_equal(brightness_contrast(img, alpha, beta), expected)
    shift = np.array([-9.7, 0.3, 10.0])
    np.testing.assert_array_equal(shift_rgb(img, shift), np.trunc(np.clip(x + shift, 0, 255)).astype(np.uint8))


class _Draws:
    """A stand-in generator: ``random()`` answers from ``coins``, ``uniform`` from ``values``
    (recording the bounds asked for)."""

    def __init__(self, coins, values):
        self.coins, self.values, self.asked = list(coins), list(values), []

    def random(self):
        return self.coins.pop(0)

    def uniform(self, lo, hi, size=None):
        self.asked.append((lo, hi, size))
        v = self.values.pop(0)
        return np.full(size, v) if size else v


def test_color_jitter_draws_as_ritm():
    """Each change applies with probability 0.75 (a coin below it), alpha = 1 + U(-0.15, 0.4),
    beta = U(-0.25, 0.25), shifts U(-10, 10) per channel; with both coins above 0.75 the
    image is returned unchanged (a copy)."""
    img = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    rng = _Draws([0.1, 0.5], [0.3, -0.2, 4.0])
    out = color_jitter(img, rng)
    assert rng.asked == [(-0.15, 0.4, None), (-0.25, 0.25, None), (-10.0, 10.0, 3)]
    np.testing.assert_array_equal(out, shift_rgb(brightness_contrast(img, 1.3, -0.2), [4.0] * 3))
    rng = _Draws([0.8, 0.76], [])
    same = color_jitter(img, rng)
    assert rng.asked == [] and same is not img
    np.testing.assert_array_equal(same, img)
    # the two coins are drawn independently: one change alone
    np.testing.assert_array_equal(color_jitter(img, _Draws([0.9, 0.1], [-5.0])), shift_rgb(img, [-5.0] * 3))
    # over many draws, each applies in 75% of calls (binomial: 4 standard errors)
    rng = np.random.default_rng(0)
    changed = sum(not np.array_equal(color_jitter(img, rng), img) for _ in range(2000))
    p = 1 - 0.25 ** 2  # either change applied (a change that leaves every pixel equal is improbable)
    assert abs(changed / 2000 - p) < 4 * np.sqrt(p * (1 - p) / 2000)
    with pytest.raises(ValueError, match="contrast"):
        AugmentConfig(contrast=(-1.5, 0.4))
    # one number v is the range (-v, v), as albumentations reads it (the earlier signature's floats)
    assert AugmentConfig(brightness=0.2, contrast=0.1).brightness == (-0.2, 0.2)
    rng = _Draws([0.1, 0.9], [0.05, 0.1])
    color_jitter(img, rng, 0.25, 0.1)
    assert rng.asked == [(-0.1, 0.1, None), (-0.25, 0.25, None)]
    with pytest.raises(ValueError, match="brightness must be a range"):
        AugmentConfig(brightness="bright")


def test_crop_pads_small_images_and_marks_padding_ignored():
    # centred as albumentations' PadIfNeeded: 12 rows -> 6 above, 6 below; 18 columns -> 9 and 9;
    # 13 rows -> 6 above, 7 below
    s = _sample(20, 30)
    out = random_crop(s, np.random.default_rng(0), (32, 48), object_prob=1.0)
    assert out.image.shape == (32, 48, 3)
    inner = (slice(6, 26), slice(9, 39))
    ignored = np.ones((32, 48), bool)
    ignored[inner] = False
    np.testing.assert_array_equal(out.ignore, ignored)
    np.testing.assert_array_equal(out.image[inner], s.image)
    assert not out.image[ignored].any()  # zero padding
    np.testing.assert_array_equal(out.others[0][inner], s.others[0])  # others follow the crop
    odd = random_crop(s, np.random.default_rng(0), (33, 30), object_prob=1.0)
    assert odd.ignore[:6].all() and odd.ignore[26:].all() and not odd.ignore[6:26].any()


def test_hflip_is_exact():
    s = _sample()
    f = hflip(s)
    np.testing.assert_array_equal(f.image[:, ::-1], s.image)
    np.testing.assert_array_equal(f.mask[:, 5:20], s.mask[:, 30:45][:, ::-1])
    np.testing.assert_array_equal(f.others[0], s.others[0][:, ::-1])


def test_expand_box_brute_force():
    # size = clip(max(ceil(1.4 * side), min), image), box inside image, centred when possible
    b = expand_box(Box(40, 40, 60, 50), (200, 300), expand=1.4, min_size=10)
    assert (b.height, b.width) == (28, 14)
    assert abs((b.top + b.bottom) / 2 - 50) <= 0.5 and abs((b.left + b.right) / 2 - 45) <= 0.5
    b = expand_box(Box(0, 290, 5, 300), (200, 300), expand=1.4, min_size=40)
    assert b == Box(0, 260, 40, 300)  # min size, moved inside
    b = expand_box(Box(0, 0, 200, 300), (200, 300))
    assert b == Box(0, 0, 200, 300)  # capped at the image
    with pytest.raises(ValueError, match="box"):
        expand_box(Box(5, 5, 5, 9), (10, 10))


def test_crop_box_around_covers_mask_and_click():
    m = np.zeros((100, 120), bool)
    m[30:50, 40:70] = True
    click = Click(80, 20, True)
    box = crop_box_around(m, [click], expand=1.4, min_size=8)
    # bounding box of mask and click: rows 30..80, cols 20..69 -> 51x50, expanded 1.4x
    assert (box.height, box.width) == (72, 70)
    assert box.top <= 30 and box.bottom > 80 and box.left <= 20 and box.right > 69
    assert crop_box_around(None, [Click(5, 5)], image_size=(100, 120), min_size=30) == Box(0, 0, 30, 30)
    with pytest.raises(ValueError, match="outside"):
        crop_box_around(m, [Click(100, 0)])
    with pytest.raises(ValueError, match="non-empty mask or at least one click"):
        crop_box_around(np.zeros((5, 5), bool), [])


def test_crop_and_paste_back_inverse():
    h, w = 90, 110
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = np.sin(yy / 15.0) * np.cos(xx / 20.0)  # smooth, so resampling error is small
    box = Box(10, 20, 74, 84)
    crop = crop_resize(smooth, box, (256, 256))
    assert crop.shape == (256, 256)
    base = np.full((h, w), -5.0, np.float32)
    back = paste_back(crop, box, base)
    assert (back[:10] == -5).all() and (back[:, 84:] == -5).all()
    # up- then down-sampling by 4 of a function with |f''| <= 1/15^2 + 1/20^2: error << 0.01
    np.testing.assert_allclose(back[box.top:box.bottom, box.left:box.right],
                               smooth[box.top:box.bottom, box.left:box.right], atol=0.01)
    # identity when the crop has the box's size
    same = crop_resize(smooth, box, (box.height, box.width))
    np.testing.assert_array_equal(paste_back(same, box, base)[10:74, 20:84], smooth[10:74, 20:84])
    # bool masks stay bool and exact under 4x nearest resampling
    m = np.zeros((h, w), bool)
    m[20:40, 30:60] = True
    mb = paste_back(crop_resize(m, box, (256, 256)), box, np.zeros_like(m))
    np.testing.assert_array_equal(mb, m)


def test_point_mapping_round_trip_and_against_resize():
    box = Box(10, 20, 74, 84)
    for r, c in [(10, 20), (40, 50), (73, 83)]:
        cr, cc = point_to_crop(r, c, box, (256, 256))
        rr, rc = point_from_crop(cr, cc, box, (256, 256))
        assert abs(rr - r) < 1e-9 and abs(rc - c) < 1e-9
    # a one-pixel impulse lands where point_to_crop says (cv2 uses pixel centres)
    img = np.zeros((90, 110), np.float32)
    img[40, 50] = 1.0
    crop = crop_resize(img, box, (256, 256))
    peak = np.array(np.unravel_index(np.argmax(crop), crop.shape), float)
    cr, cc = point_to_crop(40, 50, box, (256, 256))
    assert np.abs(peak - (cr, cc)).max() <= 1.0
