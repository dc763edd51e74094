"""Random walker seeded from clicks: a classic, training-free interactive baseline.

Per prediction (from scratch on every click): the image (converted to CIE Lab, scaled
to unit range per channel) is downscaled so that its longer side is at most
``max_side`` pixels; seeds are disks of radius ``click_radius`` (in full-resolution
pixels, at least one pixel after downscaling) at the clicks -- label 1 for positive,
2 for negative -- and, when ``border_background`` is set, the one-pixel image border
is seeded as background (unless a positive click's disk touches it). The foreground
probability from :func:`skimage.segmentation.random_walker` (``return_full_prob``) is
upsampled bilinearly to the image size.

Reference: Grady, "Random walks for image segmentation", TPAMI 2006.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np
from skimage.segmentation import random_walker

from gpcis.baselines.refine import FORCED_BG, FORCED_FG, click_labels
from gpcis.clicks import Click, check_clicks_in_image
from gpcis.inference.base import PredictionResult
from gpcis.inference.base import check_image

__all__ = ["RandomWalkerConfig", "RandomWalkerMethod"]


@dataclass
class RandomWalkerConfig:
    """Settings of :class:`RandomWalkerMethod`.

    Attributes:
        beta: edge weight ``exp(-beta * |grad|^2)``; scikit-image divides it by 10x the
            image's standard deviation, so the value is scale-free. 5000 (sharp edges)
            beat scikit-image's default 130 clearly on GrabCut (docs/evaluation.md).
        max_side: the longer image side after downscaling (speed).
        click_radius: seed-disk radius in full-resolution pixels.
        border_background: seed the image border as background.
        mode: scikit-image solver: ``"bf"`` (exact sparse direct solve; the iterative
            ``"cg_j"`` / ``"cg"`` leave visible errors at large ``beta``).
        tol: solver tolerance.
    """

    beta: float = 5000.0
    max_side: int = 160
    click_radius: int = 5
    border_background: bool = True
    mode: str = "bf"
    tol: float = 1e-3

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.max_side < 8:
            raise ValueError(f"max_side must be >= 8, got {self.max_side}")
        if self.click_radius < 0:
            raise ValueError(f"click_radius must be >= 0, got {self.click_radius}")
        if self.mode not in ("cg_j", "cg", "bf", "cg_mg"):
            raise ValueError(f"mode must be one of cg_j, cg, bf, cg_mg, got {self.mode!r}")


class RandomWalkerMethod:
    """Click-seeded random walker implementing the ``InteractiveSegmenter`` protocol.

    Args:
        config: settings.
    """

    def __init__(self, config: Optional[RandomWalkerConfig] = None) -> None:
        self.config = config or RandomWalkerConfig()
        self._size: Optional[tuple[int, int]] = None
        self._small: Optional[np.ndarray] = None
        self._scale = 1.0

    def set_image(self, image: np.ndarray) -> None:
        """Cache the downscaled Lab image (``(h, w, 3)`` float, each channel in [0, 1])."""
        check_image(image)
        h, w = image.shape[:2]
        self._size = (h, w)
        self._scale = min(1.0, self.config.max_side / max(h, w))
        sh, sw = max(2, round(h * self._scale)), max(2, round(w * self._scale))
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA) if self._scale < 1 else image
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float64) / 255.0
        if lab.std() == 0:
            # a flat image: skimage scales its edge weights by 1 / std (NaN weights, NaN
            # probabilities); distinct channel offsets make the std positive and leave every
            # gradient 0, i.e. uniform weights
            lab = lab + np.array([0.0, 0.0, 1e-3])
        self._small = lab

    def _labels(self, clicks: Sequence[Click]) -> np.ndarray:
        assert self._small is not None and self._size is not None
        sh, sw = self._small.shape[:2]
        h, w = self._size
        labels = np.zeros((sh, sw), dtype=np.int32)
        if self.config.border_background:
            labels[0, :] = labels[-1, :] = 2
            labels[:, 0] = labels[:, -1] = 2
        r = max(1, int(round(self.config.click_radius * self._scale)))
        # pixel centres to the working grid (as cv2's area / linear resizing map them)
        small = [Click(min(sh - 1, int((c.row + 0.5) * sh / h)), min(sw - 1, int((c.col + 0.5) * sw / w)), c.positive)
                 for c in clicks]
        forced = click_labels((sh, sw), small, r)  # later clicks win; each keeps its own pixel
        labels[forced == FORCED_FG] = 1
        labels[forced == FORCED_BG] = 2
        return labels

    def predict(self, clicks: Sequence[Click], prev_mask: Optional[np.ndarray] = None) -> PredictionResult:
        """Segment from all clicks so far (``prev_mask`` is unused).

        Returns:
            ``PredictionResult`` with ``prob`` the random-walk foreground probability
            (``(H, W)`` float32) and ``std=None``.
        """
        if self._small is None or self._size is None:
            raise RuntimeError("call set_image(image) before predict()")
        h, w = self._size
        clicks = list(clicks)
        check_clicks_in_image(clicks, h, w)
        if prev_mask is not None and np.shape(prev_mask) != (h, w):
            raise ValueError(f"prev_mask has shape {np.shape(prev_mask)}, expected {(h, w)}")
        labels = self._labels(clicks)
        if not (labels == 1).any():
            prob_small = np.zeros(labels.shape, dtype=np.float64)
        elif not (labels == 2).any():
            prob_small = np.ones(labels.shape, dtype=np.float64)
        elif not (labels == 0).any():
            # every pixel seeded (tiny images): skimage returns the labels themselves, as
            # (H, W, labels) instead of (labels, H, W), and full[0] was the image's first row
            prob_small = (labels == 1).astype(np.float64)
        else:
            full = random_walker(
                self._small, labels, beta=self.config.beta, mode=self.config.mode,
                tol=self.config.tol, channel_axis=-1, return_full_prob=True,
            )
            prob_small = full[0]
        prob = cv2.resize(prob_small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        prob = np.clip(prob, 0.0, 1.0)
        # the seeds were on the working grid, where two nearby clicks can share a cell and the
        # upsampling blends across 0.5: the clicks' labels again at full resolution
        forced = click_labels((h, w), clicks, int(self.config.click_radius))
        prob[forced == FORCED_FG] = 1.0
        prob[forced == FORCED_BG] = 0.0
        return PredictionResult(mask=prob > 0.5, prob=prob, std=None)
