"""The normalized focal loss (NFL) of RITM's training (``NormalizedFocalLossSigmoid``).

For one image with logits ``x``, labels ``y in {0, 1}`` and the set ``V`` of non-ignored
pixels (Sofiiuk et al., "Reviving Iterative Training...", eq. 1, and FocalClick):

    p_t   = sigmoid(x)       if y = 1  else  1 - sigmoid(x)
    a_t   = alpha            if y = 1  else  1 - alpha
    beta  = (1 - p_t)^gamma                     (0 on ignored pixels)
    NFL   = -(1/|V|) * sum_{i in V} a_t,i * beta_i * (|V| / sum_{j} beta_j) * log(p_t,i)

i.e. the focal weights are rescaled so that they sum to the number of valid pixels;
the normaliser ``|V| / sum beta`` is treated as a constant in the gradient (RITM's
``detach_delimeter=True``). RITM trains with ``alpha = 0.5, gamma = 2``. ``log p_t`` is
computed as ``logsigmoid(+-x)`` (exact where RITM clamps ``p_t + eps``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["normalized_focal_loss", "NormalizedFocalLoss"]


def normalized_focal_loss(
    logits: Tensor,
    target: Tensor,
    ignore: Tensor | None = None,
    alpha: float = 0.5,
    gamma: float = 2.0,
    eps: float = 1e-12,
    detach_normalizer: bool = True,
) -> Tensor:
    """Per-image normalized focal loss.

    Args:
        logits: ``(B, 1, H, W)`` (or ``(B, H, W)``) raw scores.
        target: same shape, values in {0, 1} (``> 0.5`` is foreground).
        ignore: same shape, bool; ``True`` pixels are excluded. ``None``: none ignored.
        alpha: weight of the foreground class (``1 - alpha`` for the background).
        gamma: focusing exponent.
        eps: guards the divisions.
        detach_normalizer: treat ``|V| / sum beta`` as a constant (RITM).

    Returns:
        ``(B,)`` loss per image.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape")
    if ignore is not None and ignore.shape != logits.shape:
        raise ValueError(f"ignore {tuple(ignore.shape)} must have the shape of logits {tuple(logits.shape)}")
    if logits.dim() < 2:
        raise ValueError(f"logits must have a batch dimension, got shape {tuple(logits.shape)}")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32; float64 stays
    fg = target > 0.5
    valid = torch.ones_like(fg) if ignore is None else ~ignore.bool()
    w = valid.to(logits.dtype)
    sign = torch.where(fg, 1.0, -1.0).to(logits.dtype)
    log_pt = F.logsigmoid(sign * logits)
    pt = log_pt.exp()
    a_t = torch.where(fg, alpha, 1.0 - alpha).to(logits.dtype)
    beta = (1.0 - pt).pow(gamma) * w
    dims = tuple(range(1, logits.dim()))
    n_valid = w.sum(dim=dims, keepdim=True)
    mult = n_valid / (beta.sum(dim=dims, keepdim=True) + eps)
    if detach_normalizer:
        mult = mult.detach()
    loss = -(a_t * beta * mult * log_pt) * w
    return loss.sum(dim=dims) / (n_valid.flatten() + eps)


class NormalizedFocalLoss(nn.Module):
    """Module form of :func:`normalized_focal_loss`, averaged over the batch.

    Args:
        alpha: foreground weight (0.5 in RITM/GPCIS training).
        gamma: focusing exponent (2).
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: Tensor, target: Tensor, ignore: Tensor | None = None) -> Tensor:
        """Scalar: mean over the batch of the per-image loss (shapes as in the function)."""
        return normalized_focal_loss(logits, target, ignore, self.alpha, self.gamma).mean()
