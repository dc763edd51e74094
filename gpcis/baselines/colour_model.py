"""Foreground/background colour histograms: the prior mean of the training-free GP.

Two weighted 3-D histograms over quantised Lab colour, smoothed with a Gaussian over the
bins and regularised with a pseudo-count, give the colour log-odds

    m(x) = clip(log p(c(x) | fg) - log p(c(x) | bg), -max_log_odds, max_log_odds),

which :mod:`gpcis.baselines.gp_pixel` scales and uses as the GP prior mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["ColourModelConfig", "ColourHistogramModel"]


@dataclass
class ColourModelConfig:
    """Colour-histogram model.

    Attributes:
        bins: bins per Lab channel (``bins**3`` in all).
        smoothing: Gaussian sigma, in bins, applied to each histogram.
        pseudo_count: probability mass spread uniformly over all bins (0 < . < 1), so that
            unseen colours get finite log-odds.
        max_log_odds: clip of the log-odds.
    """

    bins: int = 16
    smoothing: float = 1.0
    pseudo_count: float = 0.05
    max_log_odds: float = 4.0

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ValueError(f"bins must be >= 2, got {self.bins}")
        if not 0 < self.pseudo_count < 1:
            raise ValueError(f"pseudo_count must be in (0, 1), got {self.pseudo_count}")
        if self.smoothing < 0 or self.max_log_odds <= 0:
            raise ValueError("smoothing must be >= 0 and max_log_odds > 0")


class ColourHistogramModel:
    """Colour log-odds of one image from weighted foreground/background pixels.

    Args:
        lab: ``(h, w, 3)`` float Lab image (L in [0, 100], a/b in [-128, 127]).
        config: histogram settings.
    """

    def __init__(self, lab: np.ndarray, config: ColourModelConfig) -> None:
        if lab.ndim != 3 or lab.shape[2] != 3:
            raise ValueError(f"lab must have shape (h, w, 3), got {lab.shape}")
        self.config = config
        b = config.bins
        lo = np.array([0.0, -128.0, -128.0], np.float32)
        span = np.array([100.0, 256.0, 256.0], np.float32)
        q = np.clip(((lab - lo) / span * b).astype(np.int64), 0, b - 1)
        self.index = (q[..., 0] * b + q[..., 1]) * b + q[..., 2]  # (h, w) bin of each pixel
        self.shape = lab.shape[:2]

    def _density(self, weights: np.ndarray) -> np.ndarray:
        b = self.config.bins
        hist = np.bincount(self.index.reshape(-1), weights=weights.reshape(-1).astype(np.float64), minlength=b**3)
        hist = hist.reshape(b, b, b)
        if self.config.smoothing > 0:
            hist = gaussian_filter(hist, self.config.smoothing, mode="constant")
        total = hist.sum()
        uniform = np.full_like(hist, 1.0 / hist.size)
        if total <= 0:
            return uniform
        return (1 - self.config.pseudo_count) * hist / total + self.config.pseudo_count * uniform

    def log_odds(self, fg_weights: np.ndarray, bg_weights: np.ndarray) -> np.ndarray:
        """Per-pixel colour log-odds.

        Args:
            fg_weights: ``(h, w)`` non-negative weights of foreground evidence.
            bg_weights: ``(h, w)`` non-negative weights of background evidence.

        Returns:
            ``(h, w)`` float32 ``log p(c|fg) - log p(c|bg)``, clipped to ``+-max_log_odds``.
            An empty side gives the uniform density.
        """
        for name, wgt in (("fg_weights", fg_weights), ("bg_weights", bg_weights)):
            if wgt.shape != self.shape:
                raise ValueError(f"{name} must have shape {self.shape}, got {wgt.shape}")
        lo = np.log(self._density(fg_weights)) - np.log(self._density(bg_weights))
        lo = np.clip(lo, -self.config.max_log_odds, self.config.max_log_odds)
        return lo.reshape(-1)[self.index.reshape(-1)].reshape(self.shape).astype(np.float32)
