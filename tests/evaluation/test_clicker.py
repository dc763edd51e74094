"""The simulated user on hand-built masks, against brute-force distances."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.clicks import Click
from gpcis.evaluation.clicker import SimulatedUser, error_distance_maps, next_click


def brute_force_distance(region: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of each region pixel to the nearest non-region pixel,
    where the one-pixel ring outside the image counts as non-region."""
    h, w = region.shape
    padded = np.pad(region, 1)
    zr, zc = np.nonzero(~padded)
    out = np.zeros((h, w))
    for r, c in zip(*np.nonzero(region)):
        out[r, c] = np.sqrt(((zr - (r + 1)) ** 2 + (zc - (c + 1)) ** 2).min())
    return out


def test_first_click_is_centre_of_square():
    gt = np.zeros((21, 31), bool)
    gt[5:16, 10:21] = True  # 11x11 square centred at (10, 15)
    c = next_click(gt, np.zeros_like(gt))
    assert c == Click(10, 15, True)


def test_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    gt = rng.random((17, 23)) < 0.6
    pred = rng.random((17, 23)) < 0.4
    fn_d, fp_d = error_distance_maps(gt, pred)
    # DIST_MASK_PRECISE is exact Euclidean; float32 output -> tolerance ~1e-5 relative
    np.testing.assert_allclose(fn_d, brute_force_distance(gt & ~pred), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fp_d, brute_force_distance(~gt & pred), rtol=1e-5, atol=1e-5)


def test_border_counts_as_boundary():
    gt = np.ones((9, 15), bool)  # the object fills the image
    fn_d, _ = error_distance_maps(gt, np.zeros_like(gt))
    assert fn_d[0, 0] == pytest.approx(1.0)
    assert fn_d.max() == pytest.approx(5.0)  # centre row 4 is 5 pixels from the padded border
    c = next_click(gt, np.zeros_like(gt))
    assert c.row == 4 and c.positive
    # first row-major maximum: every pixel of row 4 with col 4..10 has distance 5
    assert c.col == 4


def test_fp_vs_fn_choice():
    gt = np.zeros((40, 40), bool)
    gt[2:12, 2:12] = True          # object; predicted with a small fn hole
    pred = gt.copy()
    pred[5:8, 5:8] = False         # fn: 3x3 (max dist 2)
    pred[20:35, 20:35] = True      # fp: 15x15 (max dist 8)
    c = next_click(gt, pred)
    assert not c.positive and c == Click(27, 27, False)
    pred[20:35, 20:35] = False
    pred[21:24, 21:24] = True      # fp now 3x3 too, fn 3x3: tie -> negative (fn must be strictly larger)
    c = next_click(gt, pred)
    assert not c.positive
    pred[21:24, 21:24] = False     # only fn remains
    c = next_click(gt, pred)
    assert c == Click(6, 6, True)


def test_ignore_pixels_are_never_errors():
    gt = np.zeros((20, 20), bool)
    gt[2:18, 2:18] = True
    ignore = np.zeros_like(gt)
    ignore[2:18, 2:10] = True  # left half of the object is ignored
    c = next_click(gt, np.zeros_like(gt), ignore)
    assert c.positive and c.col >= 10
    fn_d, _ = error_distance_maps(gt, np.zeros_like(gt), ignore)
    assert (fn_d[ignore] == 0).all()


def test_clicked_pixels_excluded():
    gt = np.zeros((21, 21), bool)
    gt[5:16, 5:16] = True
    first = next_click(gt, np.zeros_like(gt))
    assert first == Click(10, 10, True)
    second = next_click(gt, np.zeros_like(gt), clicked=[first])
    assert second != first and second.positive
    fn_d, _ = error_distance_maps(gt, np.zeros_like(gt), clicked=[first])
    assert fn_d[10, 10] == 0


def test_simulated_user_is_deterministic_and_remembers():
    gt = np.zeros((21, 21), bool)
    gt[5:16, 5:16] = True
    a, b = SimulatedUser(gt), SimulatedUser(gt)
    seq_a = [a.click() for _ in range(3)]
    seq_b = [b.click() for _ in range(3)]
    assert seq_a == seq_b and a.clicks == seq_a and len(set(seq_a)) == 3


def test_bad_shapes():
    with pytest.raises(ValueError, match="pred"):
        next_click(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="gt"):
        next_click(np.zeros((4, 4, 3), bool), np.zeros((4, 4), bool))
