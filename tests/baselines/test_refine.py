"""Tests of the connected-component filter and the GP-seeded GrabCut."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.baselines.refine import (
    GrabCutRefineConfig,
    click_disks,
    grabcut_refine,
    keep_components_with_clicks,
    refined_probability,
)
from gpcis.clicks import Click


def test_keep_components_with_clicks() -> None:
    m = np.zeros((10, 12), bool)
    m[1:4, 1:4] = True  # A
    m[6:9, 6:9] = True  # B
    m[1:3, 9:11] = True  # C
    got = keep_components_with_clicks(m, [Click(2, 2, True), Click(7, 7, False), Click(0, 0, True)])
    want = np.zeros_like(m)
    want[1:4, 1:4] = True
    np.testing.assert_array_equal(got, want)
    # Diagonal neighbours are connected (8-connectivity).
    d = np.eye(5, dtype=bool)
    np.testing.assert_array_equal(keep_components_with_clicks(d, [Click(0, 0, True)]), d)
    assert not keep_components_with_clicks(m, []).any()


def test_click_disks() -> None:
    d = click_disks((11, 11), [Click(5, 5, True), Click(0, 0, False)], 2, positive=True)
    rows, cols = np.mgrid[0:11, 0:11]
    np.testing.assert_array_equal(d, (rows - 5) ** 2 + (cols - 5) ** 2 <= 4)


def test_grabcut_snaps_a_coarse_decision_to_the_edges() -> None:
    rng = np.random.default_rng(0)
    h, w = 60, 80
    rows, cols = np.mgrid[0:h, 0:w]
    gt = (rows - 30) ** 2 + (cols - 40) ** 2 <= 15**2
    img = np.where(gt[..., None], [210, 40, 50], [40, 120, 200]) + rng.normal(0, 10, (h, w, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    # A blurry GP logit whose zero level is a disk 6 px too large.
    logit = (21.0 - np.sqrt((rows - 30.0) ** 2 + (cols - 40.0) ** 2)) / 3.0
    coarse = logit > 0
    clicks = [Click(30, 40, True)]
    out = grabcut_refine(img, logit, clicks, GrabCutRefineConfig(click_radius=3))
    iou = lambda a, b: (a & b).sum() / (a | b).sum()  # noqa: E731
    assert iou(coarse, gt) < 0.6 and iou(out, gt) > 0.95
    # Deterministic.
    np.testing.assert_array_equal(out, grabcut_refine(img, logit, clicks, GrabCutRefineConfig(click_radius=3)))
    # Click disks are sure labels.
    out2 = grabcut_refine(img, logit, clicks + [Click(30, 35, False)], GrabCutRefineConfig(click_radius=3))
    assert out2[30, 40] and not out2[30, 35]


def test_nothing_to_refine() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    assert not grabcut_refine(img, -np.ones((10, 10)), [], GrabCutRefineConfig()).any()
    with pytest.raises(ValueError, match="iterations"):
        GrabCutRefineConfig(iterations=0)


@pytest.mark.parametrize(
    "kw, match",
    [(dict(roi_margin=-5.0), "roi_margin"), (dict(roi_margin=float("nan")), "roi_margin"),
     (dict(sure_bg_logit=float("nan")), "sure_bg_logit"), (dict(sure_bg_distance=-0.1), "sure_bg_distance"),
     (dict(sure_fg_logit=float("nan")), "sure_fg_logit")],
)
def test_config_values_that_would_give_wrong_masks_are_refused(kw, match):
    """A negative roi_margin made an empty crop (the refined mask was the click disks alone)."""
    with pytest.raises(ValueError, match=match):
        GrabCutRefineConfig(**kw)


def test_click_labels_later_disks_win_but_every_clicked_pixel_keeps_its_label():
    from gpcis.baselines.refine import FORCED_BG, FORCED_FG, click_labels

    clicks = [Click(10, 10, True), Click(10, 13, False), Click(30, 30, True), Click(30, 30, False)]
    lab = click_labels((40, 40), clicks, 4)
    assert lab[10, 10] == FORCED_FG  # inside the later negative disk, but clicked itself
    assert lab[10, 11] == FORCED_BG and lab[10, 13] == FORCED_BG and lab[10, 6] == FORCED_FG
    assert lab[30, 30] == FORCED_BG  # two clicks on one pixel: the later wins
    assert lab[0, 0] == 0 and set(np.unique(lab)) == {0, FORCED_FG, FORCED_BG}


@pytest.mark.parametrize("name", ["grabcut", "gp-pixel", "random-walker"])
def test_every_clicked_pixel_keeps_its_label_next_to_a_later_opposite_click(name):
    """A later click of the other sign within the click radius flipped the earlier clicked
    pixel in all three methods (the simulated user then clicked that spot again and again)."""
    from gpcis.baselines import create_method
    from gpcis.demo.samples import load_sample

    img = load_sample("astronaut")
    method = create_method(name)
    method.set_image(img)
    clicks = [Click(200, 250, True), Click(200, 253, False), Click(100, 400, False), Click(102, 401, True)]
    for k in range(1, len(clicks) + 1):
        res = method.predict(clicks[:k])
        for c in clicks[:k]:
            assert res.mask[c.row, c.col] == c.positive, (name, k, c)
            assert (res.prob[c.row, c.col] > 0.5) == c.positive


def test_refined_probability_keeps_its_threshold_contract_at_the_ends():
    """0.55 + 0.45 p rounded to 0.55 for p < ~7e-8, so `prob > 0.55` lost mask pixels; NaN
    and values outside [0, 1] passed through."""
    mask = np.array([True, True, True, False, False, True])
    p = np.array([0.0, 1e-9, np.nan, 1.0, np.nan, 2.0], np.float32)
    out = refined_probability(mask, p)
    assert out.dtype == np.float32 and np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()
    for t in (0.45, 0.5, 0.55):
        np.testing.assert_array_equal(out > np.float32(t), mask)
