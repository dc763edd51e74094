"""Overlay layers, heat maps and PNG encodings of the demo."""

from __future__ import annotations

import base64
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from gpcis.demo.render import (
    PALETTE,
    data_url,
    encode_jpeg,
    encode_png,
    heatmap_layer,
    label_png,
    mask_layer,
    object_color,
)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_mask_layer_fill_edge_and_order():
    a = np.zeros((10, 10), bool)
    a[2:8, 2:8] = True
    b = np.zeros((10, 10), bool)
    b[4:6, 4:10] = True
    out = mask_layer([a, b], [(10, 20, 30), (200, 100, 0)], alpha=0.5)
    assert out.shape == (10, 10, 4) and out.dtype == np.uint8
    assert (out[~(a | b)] == 0).all()  # transparent outside
    assert tuple(out[2, 3]) == (10, 20, 30, 255)  # inner edge of a: opaque
    assert tuple(out[4, 3]) == (10, 20, 30, 128)  # interior of a: fill at alpha
    assert tuple(out[5, 5]) == (200, 100, 0, 255)  # b is two rows high: all edge
    c = np.zeros((10, 10), bool)
    c[1:9, 1:9] = True
    inner = mask_layer([c], [(1, 2, 3)], alpha=0.5)
    assert tuple(inner[5, 5]) == (1, 2, 3, 128)  # interior: fill at alpha
    with pytest.raises(ValueError, match="one colour per mask"):
        mask_layer([a], [])
    with pytest.raises(ValueError, match="empty"):
        mask_layer([], [])


def test_heatmap_endpoints_follow_the_colormap():
    v = np.array([[0.0, 0.5, 1.0]], np.float32)
    out = heatmap_layer(v, vmax=1.0, alpha=1.0, colormap=cv2.COLORMAP_VIRIDIS)
    ref = cv2.applyColorMap(np.array([[0, 128, 255]], np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]
    np.testing.assert_array_equal(out[..., :3], ref)
    assert (out[..., 3] == 255).all()
    # default vmax is the maximum; an all-zero map does not divide by zero
    np.testing.assert_array_equal(heatmap_layer(2 * v, alpha=1.0)[..., :3], ref)
    assert heatmap_layer(np.zeros((2, 2))).shape == (2, 2, 4)


def test_png_round_trips():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    grey = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    for arr in (rgb, rgba, grey):
        np.testing.assert_array_equal(_decode(encode_png(arr)), arr)
    with pytest.raises(ValueError, match="uint8"):
        encode_png(rgb.astype(np.float32))
    jpg = _decode(encode_jpeg(np.full((16, 16, 3), (200, 40, 90), np.uint8)))
    assert np.abs(jpg.astype(int) - (200, 40, 90)).max() <= 4
    url = data_url(b"abc")
    assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",")[1]) == b"abc"


def test_label_png_keeps_indices_and_palette():
    labels = np.array([[0, 1, 2], [3, 9, 0]], np.uint8)
    img = Image.open(io.BytesIO(label_png(labels)))
    assert img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img), labels)
    pal = img.getpalette()
    assert pal[0:3] == [0, 0, 0]
    assert tuple(pal[3:6]) == PALETTE[0] == object_color(1)
    assert tuple(pal[9 * 3 : 9 * 3 + 3]) == object_color(9) == PALETTE[0]  # the palette cycles
    with pytest.raises(ValueError, match="0..255"):
        label_png(np.array([[300]]))
    with pytest.raises(ValueError, match="index"):
        object_color(0)
