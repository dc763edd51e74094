"""Suggested next click: the helper against a brute-force reference, and method hooks."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.clicks import Click
from gpcis.demo.suggest import Suggestion, suggest_from_uncertainty, suggest_next_click, uncertainty_score
from gpcis.inference.base import PredictionResult


def _brute_force(prob, std, clicks, window, exclusion):
    """Box mean with reflected borders (cv2.BORDER_REFLECT: ...cba|abc...), loops only."""
    h, w = prob.shape
    score = 4 * prob * (1 - prob) * (std if std is not None else 1.0)
    r = window // 2

    def refl(i, n):
        while i < 0 or i >= n:
            i = -i - 1 if i < 0 else 2 * n - i - 1
        return i

    best, arg = -1.0, None
    for y in range(h):
        for x in range(w):
            if any((y - c.row) ** 2 + (x - c.col) ** 2 <= exclusion**2 for c in clicks):
                continue
            acc = sum(score[refl(y + dy, h), refl(x + dx, w)] for dy in range(-r, r + 1) for dx in range(-r, r + 1))
            v = acc / window**2
            if v > best + 1e-6:
                best, arg = v, (y, x)
    return arg


@pytest.mark.parametrize("with_std", [False, True])
def test_matches_brute_force(with_std):
    rng = np.random.default_rng(3)
    prob = rng.uniform(0, 1, (12, 15)).astype(np.float32)
    std = rng.uniform(0, 2, (12, 15)).astype(np.float32) if with_std else None
    clicks = [Click(5, 7, True), Click(1, 1, False)]
    s = suggest_from_uncertainty(prob, std, clicks, window=3, exclusion=2)
    assert (s.row, s.col) == _brute_force(prob, std, clicks, 3, 2)
    assert s.source == ("std" if with_std else "probability") and s.positive is None


def test_finds_the_uncertain_blob_away_from_clicks():
    prob = np.zeros((64, 64), np.float32)
    prob[40:50, 10:20] = 0.5  # one undecided region
    prob[0:5, 0:5] = 0.5  # another, but at an existing click
    s = suggest_from_uncertainty(prob, clicks=[Click(2, 2, True)])
    assert 40 <= s.row < 50 and 10 <= s.col < 20


def test_nothing_when_certain():
    prob = np.zeros((20, 20), np.float32)
    prob[5:10, 5:10] = 1.0
    assert suggest_from_uncertainty(prob) is None
    assert suggest_from_uncertainty(np.full((8, 8), 0.5), std=np.zeros((8, 8))) is None


def test_score_closed_form():
    p = np.array([[0.0, 0.5, 1.0, 0.25]])
    np.testing.assert_allclose(uncertainty_score(p), [[0.0, 1.0, 0.0, 0.75]])
    np.testing.assert_allclose(uncertainty_score(p, 2 * np.ones_like(p)), [[0.0, 2.0, 0.0, 1.5]])
    with pytest.raises(ValueError, match="prob"):
        suggest_from_uncertainty(np.zeros(5))


def test_method_hook_preferred_and_fallback():
    result = PredictionResult(np.zeros((8, 8), bool), np.full((8, 8), 0.5, np.float32), None)

    class WithClick:
        def suggest_click(self):
            return Click(3, 4, False)

    class WithTuple:
        def suggest_click(self):
            return (1, 2)

    class Broken:
        def suggest_click(self):
            raise RuntimeError("no prediction yet")

    assert suggest_next_click(WithClick(), result, []) == Suggestion(3, 4, "method", False)
    assert suggest_next_click(WithTuple(), result, []) == Suggestion(1, 2, "method", None)
    fallback = suggest_next_click(Broken(), result, [])
    assert fallback is not None and fallback.source == "probability"
    assert suggest_next_click(object(), None, []) is None
