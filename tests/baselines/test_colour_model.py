"""Tests of the colour-histogram prior mean against brute-force counting."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.baselines.colour_model import ColourHistogramModel, ColourModelConfig


def random_lab(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.stack([rng.uniform(0, 100, (h, w)), rng.uniform(-128, 127, (h, w)), rng.uniform(-128, 127, (h, w))], -1)
    return lab.astype(np.float32)


def test_log_odds_match_brute_force_without_smoothing() -> None:
    cfg = ColourModelConfig(bins=4, smoothing=0.0, pseudo_count=0.1, max_log_odds=100.0)
    lab = random_lab(12, 10)
    rng = np.random.default_rng(1)
    fg = rng.uniform(0, 1, (12, 10))
    bg = rng.uniform(0, 1, (12, 10))
    got = ColourHistogramModel(lab, cfg).log_odds(fg, bg)

    # Brute force: bin edges by hand, weighted counts with explicit loops.
    def bin_of(v: np.ndarray) -> tuple[int, int, int]:
        lo = np.array([0.0, -128.0, -128.0])
        span = np.array([100.0, 256.0, 256.0])
        return tuple(int(min(3, max(0, np.floor((v[i] - lo[i]) / span[i] * 4)))) for i in range(3))

    hf = np.zeros((4, 4, 4))
    hb = np.zeros((4, 4, 4))
    for r in range(12):
        for c in range(10):
            hf[bin_of(lab[r, c])] += fg[r, c]
            hb[bin_of(lab[r, c])] += bg[r, c]
    pf = 0.9 * hf / hf.sum() + 0.1 / 64
    pb = 0.9 * hb / hb.sum() + 0.1 / 64
    want = np.array([[np.log(pf[bin_of(lab[r, c])]) - np.log(pb[bin_of(lab[r, c])]) for c in range(10)] for r in range(12)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_separates_colours_clips_and_handles_empty() -> None:
    lab = np.zeros((10, 10, 3), np.float32)
    lab[:, :5] = (30.0, 60.0, 40.0)  # one colour left
    lab[:, 5:] = (80.0, -60.0, -20.0)  # another right
    fg = np.zeros((10, 10))
    fg[:, :2] = 1
    bg = np.zeros((10, 10))
    bg[:, 8:] = 1
    cfg = ColourModelConfig(max_log_odds=3.0)
    lo = ColourHistogramModel(lab, cfg).log_odds(fg, bg)
    assert np.all(lo[:, :5] > 2.0) and np.all(lo[:, 5:] < -2.0)
    assert np.abs(lo).max() <= 3.0
    # No evidence at all on one side: the uniform density, finite log-odds.
    lo0 = ColourHistogramModel(lab, cfg).log_odds(np.zeros((10, 10)), bg)
    assert np.all(np.isfinite(lo0)) and np.all(lo0[:, 5:] < 0)
    np.testing.assert_allclose(ColourHistogramModel(lab, cfg).log_odds(np.zeros((10, 10)), np.zeros((10, 10))), 0.0)


def test_errors() -> None:
    with pytest.raises(ValueError, match="bins"):
        ColourModelConfig(bins=1)
    with pytest.raises(ValueError, match="pseudo_count"):
        ColourModelConfig(pseudo_count=0.0)
    with pytest.raises(ValueError, match="lab"):
        ColourHistogramModel(np.zeros((4, 4)), ColourModelConfig())
    m = ColourHistogramModel(np.zeros((4, 4, 3), np.float32), ColourModelConfig())
    with pytest.raises(ValueError, match="fg_weights"):
        m.log_odds(np.zeros((3, 4)), np.zeros((4, 4)))
