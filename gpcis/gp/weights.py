"""The weight-space prior of the decoupled sampler: w ~ N(mu_w, sigma_w^2 I_l) (supplement Eq. S13)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from gpcis.gp.kernels import LogPositive

__all__ = ["WeightPrior"]


class WeightPrior(nn.Module):
    r"""Distribution of the RFF weights, ``w ~ N(mu_w, sigma_w^2 I_l)``.

    In the paper both moments are learned: ``mu_w`` initialised from ``N(0, 0.25 I)``
    and ``sigma_w^2 = 0.025`` (stored as ``raw_variance = log sigma_w^2``). With
    ``learnable=False`` the prior is the standard normal ``N(0, I)`` that makes
    ``Phi(x)^T w`` a draw of the GP whose spectral density Phi samples (the
    ``"spectral"`` mode of :class:`~gpcis.gp.kernels.FourierFeatureKernel`).

    Args:
        num_features: l.
        learnable: learn ``mu_w`` and ``sigma_w^2`` (paper) or fix ``N(0, I)``.
        init_mean_std: std of the random initial ``mu_w`` (0.5, i.e. variance 0.25).
        init_variance: initial ``sigma_w^2``.
        generator: random generator for the initial ``mu_w``.
    """

    def __init__(
        self,
        num_features: int,
        learnable: bool = True,
        init_mean_std: float = 0.5,
        init_variance: float = 0.025,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.learnable = bool(learnable)
        self.variance_constraint = LogPositive()
        if learnable:
            self.mean = nn.Parameter(torch.randn(num_features, generator=generator) * init_mean_std)
            self.raw_variance = nn.Parameter(
                self.variance_constraint.inverse_transform(torch.tensor(float(init_variance)))
            )
        else:
            self.register_buffer("mean", torch.zeros(num_features))
            self.register_buffer("raw_variance", torch.zeros(()))  # log 1

    @property
    def variance(self) -> Tensor:
        """sigma_w^2 (a scalar tensor)."""
        return self.variance_constraint.transform(self.raw_variance)

    def sample(
        self,
        num_samples: int,
        batch_shape: torch.Size = torch.Size([]),
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """Reparameterised draws ``w = mu_w + sigma_w * e``, ``e ~ N(0, I)``.

        Returns:
            ``(num_samples, *batch_shape, l)``.
        """
        shape = (num_samples, *batch_shape, self.num_features)
        device = generator.device if generator is not None else self.mean.device
        eps = torch.randn(shape, generator=generator, dtype=self.mean.dtype, device=device)
        eps = eps.to(self.mean.device)
        return self.mean + self.variance.sqrt() * eps
