"""Amortized click posterior and weight prior."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from gpytorch.distributions import MultivariateNormal

from gpcis.gp import AmortizedClickPosterior, WeightPrior


def test_click_posterior_is_softplus_mlp_times_label_with_fixed_variance():
    q = AmortizedClickPosterior(3, hidden=8, variance=0.01)
    x = torch.randn(2, 4, 3)
    y = torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, 1.0]])
    valid = torch.tensor([[True, True, True, False], [True] * 4])
    dist = q(x, y, valid)
    assert isinstance(dist, MultivariateNormal)
    expected = F.softplus(q.mlp(x).squeeze(-1)) * y * valid
    torch.testing.assert_close(dist.mean, expected)
    torch.testing.assert_close(dist.covariance_matrix, 0.01 * torch.eye(4).expand(2, 4, 4))
    with pytest.raises(ValueError, match="variance"):
        AmortizedClickPosterior(3, variance=0.0)


def test_weight_prior_initialisation_and_samples():
    wp = WeightPrior(2000, generator=torch.Generator().manual_seed(0))
    assert wp.variance.item() == pytest.approx(0.025, rel=1e-6)
    assert wp.raw_variance.item() == pytest.approx(math.log(0.025), rel=1e-6)
    # mu_w ~ N(0, 0.25 I): sample variance of 2000 entries within 4 s.e. (s.e. = 0.25 sqrt(2/1999))
    assert wp.mean.var().item() == pytest.approx(0.25, abs=4 * 0.25 * math.sqrt(2 / 1999))
    s = wp.sample(500, torch.Size([2]), generator=torch.Generator().manual_seed(1))
    assert s.shape == (500, 2, 2000)
    resid = (s - wp.mean).detach()
    # 2e6 draws of N(0, 0.025): the sample variance has relative s.e. sqrt(2/2e6) = 1e-3
    assert resid.var().item() == pytest.approx(0.025, rel=5e-3)


def test_fixed_weight_prior_is_standard_normal():
    wp = WeightPrior(16, learnable=False)
    assert list(wp.parameters()) == []
    assert torch.equal(wp.mean, torch.zeros(16)) and wp.variance.item() == pytest.approx(1.0)
