r"""The variational loss L_VI of the click posterior (supplement Eq. S1; Alg. S2 line 12).

.. math::
    \mathcal{L}_{VI} = \sum_{c} \mathrm{BCE}(y_c, f_c)
        + \tfrac12\, m_\xi^\top (K_{nn} + \varepsilon^2 I)^{-1} m_\xi

The first term is the expected log-likelihood of the click labels under a Bernoulli
(sigmoid) likelihood, estimated at one reparameterised draw ``f_c ~ q(f_n)`` (or at the
mean); the second is the part of ``KL(q(f_n) || p(f_n))`` that depends on ``m_xi`` (the
covariance of ``q`` is fixed, so the trace and log-determinant terms do not depend on
``m_xi``; they do depend on the kernel: ``GPHeadConfig.vi_kernel_grad=False`` makes the GP
head pass a detached Cholesky factor here, as the paper's released code detaches the
inverse, since the quadratic term alone pushes the kernel's amplitude up; the default keeps
the gradient, which the toy problem needs, docs/gp_layer.md).

Reduction (documented choice): summed over the valid clicks of an item, averaged over
the batch. The paper's released code differs in three ways, as recorded in this
project's issue on the GP layer: it averages over the clicks instead of summing, it
drops the 1/2 in front of the quadratic term, and it weights L_VI by 0.001 in the
total objective. ``reduction="mean_clicks"``, ``quad_scale=1.0`` here,
``GPHeadConfig.vi_kernel_grad=False`` and ``vi_weight=0.001`` in the model configuration
reproduce it.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gpcis.gp.pathwise import solve_clicks

__all__ = ["vi_loss"]


def vi_loss(
    click_mean: Tensor,
    f_click: Tensor,
    labels: Tensor,
    valid: Tensor,
    chol: Tensor,
    reduction: Literal["sum_clicks", "mean_clicks"] = "sum_clicks",
    quad_scale: float = 0.5,
) -> Tensor:
    """L_VI (Eq. S1).

    Args:
        click_mean: ``(B, N)`` ``m_xi``.
        f_click: ``(B, N)`` or ``(S, B, N)`` latent values at the clicks for the BCE term
            (reparameterised draws of ``q(f_n)``; averaged over ``S``).
        labels: ``(B, N)`` in {-1, +1}.
        valid: ``(B, N)`` bool.
        chol: ``(B, N, N)`` Cholesky factor of the padded ``K_nn + eps^2 I``.
        reduction: ``"sum_clicks"`` (sum over clicks, the formula) or ``"mean_clicks"``
            (mean over each item's clicks, the released code); both average over items.
        quad_scale: factor of the quadratic term (1/2 in the formula).

    Returns:
        Scalar tensor.
    """
    if click_mean.shape[-1] == 0:
        return click_mean.sum() * 0.0
    v = valid.to(click_mean.dtype)
    target = (labels > 0).to(click_mean.dtype)
    fc = f_click if f_click.dim() == 3 else f_click.unsqueeze(0)
    bce = F.binary_cross_entropy_with_logits(fc, target.expand_as(fc), reduction="none").mean(0)
    bce = (bce * v).sum(-1)  # (B,)
    alpha = solve_clicks(chol, click_mean * v)  # A^{-1} m, solve dtype
    quad = (click_mean.to(alpha.dtype) * v.to(alpha.dtype) * alpha).sum(-1).to(click_mean.dtype)
    per_item = bce + quad_scale * quad
    if reduction == "mean_clicks":
        per_item = per_item / v.sum(-1).clamp_min(1.0)
    elif reduction != "sum_clicks":
        raise ValueError(f"reduction must be 'sum_clicks' or 'mean_clicks', got {reduction!r}")
    return per_item.mean()
