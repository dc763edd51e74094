"""Metrics on known IoU sequences and masks."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.clicks import Click
from gpcis.evaluation.metrics import aggregate, count_invalid_clicks, iou, iou_at, is_failure, miou_curve, noc


def test_iou_against_counting_and_ignore():
    rng = np.random.default_rng(1)
    a = rng.random((13, 11)) < 0.5
    b = rng.random((13, 11)) < 0.5
    ign = rng.random((13, 11)) < 0.2
    inter = sum(1 for r in range(13) for c in range(11) if a[r, c] and b[r, c] and not ign[r, c])
    union = sum(1 for r in range(13) for c in range(11) if (a[r, c] or b[r, c]) and not ign[r, c])
    assert iou(a, b, ign) == pytest.approx(inter / union)
    assert iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        iou(a, b[:5])


def test_noc_first_hit():
    ious = [0.5, 0.86, 0.88, 0.91, 0.95]
    assert noc(ious, 0.85) == 2
    assert noc(ious, 0.90) == 4
    assert noc([0.9], 0.9) == 1  # >= counts


def test_noc_never_reached_counts_max_and_failure_edge():
    never = [0.5] * 20
    assert noc(never, 0.9, 20) == 20 and is_failure(never, 0.9, 20)
    at_20 = [0.5] * 19 + [0.95]            # reached exactly at click 20: NoC 20, a failure (RITM)
    assert noc(at_20, 0.9, 20) == 20 and is_failure(at_20, 0.9, 20)
    at_19 = [0.5] * 18 + [0.95]
    assert noc(at_19, 0.9, 20) == 19 and not is_failure(at_19, 0.9, 20)
    late = [0.5] * 30 + [0.95]             # only clicks within the budget count
    assert noc(late, 0.9, 20) == 20 and noc(late, 0.9, 100) == 31


def test_miou_carries_forward():
    assert iou_at([0.3, 0.6], 5) == 0.6
    curve = miou_curve([[0.2, 0.4, 0.9], [0.5, 0.95]], max_clicks=4)
    assert curve == pytest.approx([0.35, 0.675, 0.925, 0.925])


def test_noic_counting():
    clicks = [Click(0, 0, True), Click(1, 1, False), Click(2, 2, True)]
    p1 = np.zeros((3, 3), bool)              # click 1 (positive) misclassified
    p2 = np.eye(3, dtype=bool)               # click 2 (negative at (1,1)) predicted fg: invalid
    p3 = np.eye(3, dtype=bool)               # click 3 (positive at (2,2)) is fg: valid
    assert count_invalid_clicks(clicks, [p1, p2, p3]) == 2
    with pytest.raises(ValueError):
        count_invalid_clicks(clicks, [p1])


def test_aggregate():
    seqs = [[0.9], [0.8, 0.86, 0.91], [0.1] * 20 + [0.2] * 80]
    m = aggregate(seqs, noic=[0, 1, 5], seconds=6.0, num_clicks=104, max_clicks=20, long_max_clicks=100)
    assert m["num_images"] == 3
    assert m["noc85"] == pytest.approx((1 + 2 + 20) / 3)
    assert m["noc90"] == pytest.approx((1 + 3 + 20) / 3)
    assert m["nof90"] == 1 and m["nof85"] == 1
    assert m["noc100_90"] == pytest.approx((1 + 3 + 100) / 3) and m["nof100_90"] == 1
    assert len(m["miou_at"]) == 20 and m["miou_at"][0] == pytest.approx((0.9 + 0.8 + 0.1) / 3)
    assert m["noic"] == 6 and m["sec_per_click"] == pytest.approx(6.0 / 104)
    with pytest.raises(ValueError):
        aggregate([], [], 0.0, 0)
