"""Zoom-in: when to crop, crop geometry and the crop/uncrop round trip."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.clicks import Click
from gpcis.data.transforms import point_from_crop
from gpcis.inference.zoom import ZoomConfig, ZoomIn


def test_no_zoom_on_first_click_or_without_anything_to_frame():
    z = ZoomIn()
    assert z.box(None, [Click(5, 5, True)], (100, 120)) is None
    assert z.box(None, [Click(5, 5, False), Click(6, 6, False)], (100, 120)) is None


def test_box_frames_mask_and_positive_clicks():
    z = ZoomIn(ZoomConfig(min_crop_size=10, expansion=1.4))
    mask = np.zeros((200, 300), bool)
    mask[50:80, 100:150] = True
    clicks = [Click(60, 120, True), Click(90, 160, True), Click(5, 5, False)]
    box = z.box(mask, clicks, (200, 300))
    assert box.top <= 50 and box.bottom >= 91 and box.left <= 100 and box.right >= 161
    # 1.4x the tight box (rows 50..90 -> 41, cols 100..160 -> 61), negative click not framed
    assert box.height == int(np.ceil(41 * 1.4)) and box.width == int(np.ceil(61 * 1.4))
    assert box.top > 5


def test_min_crop_size_and_target_size():
    z = ZoomIn(ZoomConfig(min_crop_size=64, target_size=128))
    mask = np.zeros((300, 200), bool)
    mask[100:110, 50:60] = True
    box = z.box(mask, [Click(105, 55), Click(104, 54)], (300, 200))
    assert box.height == 64 and box.width == 64
    assert z.crop_size(box) == (128, 128)
    mask[20:280, 10:60] = True  # tall object: aspect ratio kept, longer side = target
    box = z.box(mask, [Click(105, 55), Click(104, 54)], (300, 200))
    h, w = z.crop_size(box)
    assert h == 128 and w == round(box.width * 128 / box.height)


def test_crop_uncrop_round_trip():
    z = ZoomIn(ZoomConfig(min_crop_size=10, target_size=96))
    rows, cols = np.mgrid[0:80, 0:120].astype(np.float32)
    values = (rows * 0.01 + cols * 0.004).astype(np.float32)  # a linear ramp: bilinear is exact on it
    mask = np.zeros((80, 120), bool)
    mask[20:50, 30:90] = True
    box = z.box(mask, [Click(30, 40), Click(31, 41)], (80, 120))
    crop = z.crop_map(values, box)
    assert crop.shape == z.crop_size(box)
    back = z.uncrop(crop, box, np.full((80, 120), -1.0, np.float32))
    assert (back[: box.top] == -1).all() and (back[box.bottom:] == -1).all()
    # bilinear resampling reproduces a linear ramp exactly away from the crop edge (where
    # the sampling clamps); values <= 1.3 in float32 -> a few ulps (~1e-7) of rounding
    inner = back[box.top + 1: box.bottom - 1, box.left + 1: box.right - 1]
    ref = values[box.top + 1: box.bottom - 1, box.left + 1: box.right - 1]
    np.testing.assert_allclose(inner, ref, atol=1e-5)
    # at the edge the clamped sample is off by at most one crop pixel of the ramp
    step = max(0.01 * box.height / crop.shape[0], 0.004 * box.width / crop.shape[1])
    np.testing.assert_allclose(back[box.top:box.bottom, box.left:box.right],
                               values[box.top:box.bottom, box.left:box.right], atol=step)


def test_crop_clicks_map_back_and_drop_outside():
    z = ZoomIn(ZoomConfig(min_crop_size=10, target_size=64))
    mask = np.zeros((100, 100), bool)
    mask[40:60, 40:60] = True
    clicks = [Click(45, 50, True), Click(55, 42, False), Click(2, 2, False)]
    box = z.box(mask, clicks, (100, 100))
    cc = z.crop_clicks(clicks, box)
    assert len(cc) == 2 and [c.positive for c in cc] == [True, False]
    for c, orig in zip(cc, clicks):
        r, q = point_from_crop(c.row, c.col, box, z.crop_size(box))
        assert r == pytest.approx(orig.row, abs=1e-4) and q == pytest.approx(orig.col, abs=1e-4)


def test_config_errors():
    with pytest.raises(ValueError, match="expansion"):
        ZoomConfig(expansion=0.5)
    with pytest.raises(ValueError, match="target_size"):
        ZoomConfig(target_size=2)
