"""The normalized focal loss against a direct implementation of the formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpcis.training.losses import NormalizedFocalLoss, normalized_focal_loss


def _direct_nfl(x: np.ndarray, y: np.ndarray, ignore: np.ndarray, alpha=0.5, gamma=2.0) -> np.ndarray:
    """Loop over images; plain probabilities, no log-sigmoid tricks (float64)."""
    out = []
    for b in range(x.shape[0]):
        p = 1.0 / (1.0 + np.exp(-x[b].astype(np.float64)))
        pos = y[b] > 0.5
        valid = ~ignore[b]
        pt = np.where(pos, p, 1.0 - p)
        a = np.where(pos, alpha, 1.0 - alpha)
        beta = np.where(valid, (1.0 - pt) ** gamma, 0.0)
        norm = valid.sum() / beta.sum()
        terms = -a * beta * norm * np.log(pt)
        out.append(terms[valid].sum() / valid.sum())
    return np.array(out)


def _data(seed=0, shape=(3, 1, 9, 11)):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, shape)
    y = (rng.random(shape) < 0.3).astype(np.float64)
    ign = rng.random(shape) < 0.2
    return x, y, ign


def test_value_matches_direct_formula():
    x, y, ign = _data()
    got = normalized_focal_loss(torch.tensor(x), torch.tensor(y), torch.tensor(ign))
    # float64 both (the loss ran in float32 before session 12): sums of ~300 terms, ~1e-13 relative
    np.testing.assert_allclose(got.numpy(), _direct_nfl(x, y, ign), rtol=1e-11)
    # no ignore == an all-False ignore
    none = normalized_focal_loss(torch.tensor(x), torch.tensor(y))
    np.testing.assert_allclose(none.numpy(), _direct_nfl(x, y, np.zeros_like(ign)), rtol=1e-11)


def test_ignored_pixels_have_no_effect():
    x, y, ign = _data(1)
    x2 = x.copy()
    x2[ign] = np.random.default_rng(5).normal(0, 10, ign.sum())
    a = normalized_focal_loss(torch.tensor(x), torch.tensor(y), torch.tensor(ign))
    b = normalized_focal_loss(torch.tensor(x2), torch.tensor(y), torch.tensor(ign))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)  # float64; ignored terms are exact zeros


def test_gradient_with_detached_normalizer():
    x, y, ign = _data(2, (2, 1, 5, 6))
    xt = torch.tensor(x, requires_grad=True)
    normalized_focal_loss(xt, torch.tensor(y), torch.tensor(ign)).sum().backward()
    # reference: the same formula in float64 autograd, normaliser as a constant
    xr = torch.tensor(x, requires_grad=True)
    p = torch.sigmoid(xr)
    yt, valid = torch.tensor(y) > 0.5, ~torch.tensor(ign)
    pt = torch.where(yt, p, 1 - p)
    beta = torch.where(valid, (1 - pt) ** 2, torch.zeros_like(pt))
    with torch.no_grad():
        norm = valid.sum((1, 2, 3), keepdim=True) / beta.sum((1, 2, 3), keepdim=True)
    terms = -0.5 * beta * norm * torch.log(pt) * valid
    (terms.sum((1, 2, 3)) / valid.sum((1, 2, 3))).sum().backward()
    # float64 both: each pixel's gradient is O(10) operations and a ratio of sums over
    # <= 66 pixels: relative error <~ 100 x 2^-53 ~ 1e-14
    np.testing.assert_allclose(xt.grad.numpy(), xr.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert (xt.grad[torch.tensor(ign)] == 0).all()


def test_module_and_errors():
    x, y, ign = _data(3)
    m = NormalizedFocalLoss()
    expected = _direct_nfl(x, y, ign).mean()
    assert m(torch.tensor(x), torch.tensor(y), torch.tensor(ign)).item() == pytest.approx(expected, rel=1e-11)
    with pytest.raises(ValueError, match="same shape"):
        normalized_focal_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
    with pytest.raises(ValueError, match="alpha"):
        NormalizedFocalLoss(alpha=2)
