"""The amortized variational posterior at the clicks (supplement Eq. S10-S11)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from gpytorch.distributions import MultivariateNormal
from linear_operator.operators import DiagLinearOperator
from torch import Tensor, nn

__all__ = ["AmortizedClickPosterior"]


class AmortizedClickPosterior(nn.Module):
    r"""``q(f_n) = N(m_xi, sigma^2 I_n)`` with ``m_xi = Softplus(MLP(X_n)) * y_n``.

    The mean's magnitude is predicted from the click's features by a small MLP and its
    sign is the click's label, so the posterior at a click always agrees with the user.

    Args:
        in_dim: feature dimension D of a click point.
        hidden: width of the MLP's hidden layer.
        variance: ``sigma^2`` (fixed, 0.01 in the paper).
        generator: draws the MLP's initial weights (PyTorch's ``nn.Linear`` initialisation,
            ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases); ``None``: the
            global RNG, as ``nn.Linear`` itself.
    """

    def __init__(self, in_dim: int, hidden: int = 32, variance: float = 0.01,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        if variance <= 0:
            raise ValueError(f"variance must be > 0, got {variance}")
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        if generator is not None:
            with torch.no_grad():
                for layer in (self.mlp[0], self.mlp[2]):
                    # nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) is U(+-1/sqrt(fan_in))
                    bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features else 0.0
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)
        self.variance = float(variance)

    def mean(self, x_click: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
        """``m_xi`` (Eq. S11), zero at padded clicks.

        Args:
            x_click: ``(B, N, D)`` click features.
            labels: ``(B, N)`` labels in {-1, +1}.
            valid: ``(B, N)`` bool.

        Returns:
            ``(B, N)``.
        """
        magnitude = F.softplus(self.mlp(x_click).squeeze(-1))
        return magnitude * labels * valid.to(magnitude.dtype)

    def forward(self, x_click: Tensor, labels: Tensor, valid: Tensor) -> MultivariateNormal:
        """``q(f_n)`` as a GPyTorch ``MultivariateNormal`` with a diagonal covariance operator."""
        m = self.mean(x_click, labels, valid)
        cov = DiagLinearOperator(torch.full_like(m, self.variance))
        return MultivariateNormal(m, cov)
