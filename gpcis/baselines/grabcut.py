"""GrabCut seeded from clicks: a classic, training-free interactive baseline.

Per prediction (rerun from scratch on every click, no state between clicks):

* every pixel starts as "probably background" (``GC_PR_BGD``);
* pixels within ``fg_radius_frac * min(H, W)`` of a positive click become "probably
  foreground" (``GC_PR_FGD``);
* disks of radius ``click_radius`` at the clicks are sure foreground / background
  (``GC_FGD`` / ``GC_BGD``; later clicks overwrite earlier ones, but every clicked pixel
  keeps its own click's label: :func:`gpcis.baselines.refine.click_labels`);
* ``cv2.grabCut`` runs ``iterations`` iterations in ``GC_INIT_WITH_MASK`` mode and the
  foreground is ``GC_FGD | GC_PR_FGD``.

Reference: Rother, Kolmogorov, Blake, "GrabCut: interactive foreground extraction using
iterated graph cuts", SIGGRAPH 2004.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from gpcis.baselines.refine import FORCED_BG, FORCED_FG, click_labels
from gpcis.clicks import Click, check_clicks_in_image
from gpcis.inference.base import PredictionResult
from gpcis.inference.base import check_image

__all__ = ["GrabCutConfig", "GrabCutMethod", "seed_mask"]


@dataclass
class GrabCutConfig:
    """Settings of :class:`GrabCutMethod`.

    Attributes:
        click_radius: radius (pixels) of the sure-label disks at the clicks.
        fg_radius_frac: "probably foreground" within this fraction of ``min(H, W)`` of a
            positive click.
        iterations: ``cv2.grabCut`` iterations.
        seed: seed of OpenCV's RNG (GrabCut's k-means initialisation of its colour models),
            set before every ``cv2.grabCut`` call so that a prediction does not depend on
            what used OpenCV's RNG before (two identical calls differed by tens to hundreds
            of pixels).
            OpenCV has no local generator: this reseeds its global one (as
            :func:`gpcis.baselines.refine.grabcut_refine` does).
    """

    click_radius: int = 5
    fg_radius_frac: float = 0.15
    iterations: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.click_radius < 0:
            raise ValueError(f"click_radius must be >= 0, got {self.click_radius}")
        if self.fg_radius_frac < 0:
            raise ValueError(f"fg_radius_frac must be >= 0, got {self.fg_radius_frac}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")


def seed_mask(clicks: Sequence[Click], size: tuple[int, int], config: GrabCutConfig) -> np.ndarray:
    """The ``cv2.grabCut`` label mask built from the clicks (see the module docstring).

    Args:
        clicks: the clicks.
        size: ``(H, W)``.
        config: the settings.

    Returns:
        ``(H, W)`` uint8 with values in ``{GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD}``.
    """
    h, w = size
    mask = np.full((h, w), cv2.GC_PR_BGD, dtype=np.uint8)
    pos = [c for c in clicks if c.positive]
    if pos:
        seeds = np.ones((h, w), dtype=np.uint8)
        for c in pos:
            seeds[c.row, c.col] = 0
        dist = cv2.distanceTransform(seeds, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        mask[dist <= config.fg_radius_frac * min(h, w)] = cv2.GC_PR_FGD
    forced = click_labels((h, w), clicks, config.click_radius)  # later clicks win; each keeps its pixel
    mask[forced == FORCED_FG] = cv2.GC_FGD
    mask[forced == FORCED_BG] = cv2.GC_BGD
    return mask


class GrabCutMethod:
    """Click-seeded GrabCut implementing the :class:`~gpcis.inference.base.InteractiveSegmenter` protocol.

    Args:
        config: settings (defaults: radius-5 disks, 0.15 * min(H, W), 5 iterations).
    """

    def __init__(self, config: Optional[GrabCutConfig] = None) -> None:
        self.config = config or GrabCutConfig()
        self._image_bgr: Optional[np.ndarray] = None

    def set_image(self, image: np.ndarray) -> None:
        """Cache the ``(H, W, 3)`` uint8 RGB image (as OpenCV BGR)."""
        check_image(image)
        self._image_bgr = np.ascontiguousarray(image[:, :, ::-1])

    def predict(self, clicks: Sequence[Click], prev_mask: Optional[np.ndarray] = None) -> PredictionResult:
        """Segment from all clicks so far (``prev_mask`` is unused: GrabCut reruns from scratch).

        Returns:
            ``PredictionResult`` with a binary ``prob`` (0/1 float32) and ``std=None``.
        """
        if self._image_bgr is None:
            raise RuntimeError("call set_image(image) before predict()")
        h, w = self._image_bgr.shape[:2]
        clicks = list(clicks)
        check_clicks_in_image(clicks, h, w)
        if prev_mask is not None and np.shape(prev_mask) != (h, w):
            raise ValueError(f"prev_mask has shape {np.shape(prev_mask)}, expected {(h, w)}")
        mask = seed_mask(clicks, (h, w), self.config)
        fg_seeds = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        bg_seeds = (mask == cv2.GC_BGD) | (mask == cv2.GC_PR_BGD)
        if not fg_seeds.any() or not bg_seeds.any():
            # grabCut needs samples of both classes for its colour models
            fg = fg_seeds
        else:
            bgd = np.zeros((1, 65), np.float64)
            fgd = np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(int(self.config.seed))
            cv2.grabCut(self._image_bgr, mask, None, bgd, fgd, self.config.iterations, cv2.GC_INIT_WITH_MASK)
            fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        return PredictionResult(mask=fg, prob=fg.astype(np.float32), std=None)
