"""The simulated user of the NoC protocol (RITM's clicker, reproduced exactly).

Given the ground truth and the current prediction, the next click goes to the pixel of
the larger error region that is farthest from that region's boundary:

1. false negatives ``fn = gt & ~pred`` and false positives ``fp = ~gt & pred``, both
   restricted to non-ignored pixels;
2. each map is padded by one pixel of zeros, so the image border counts as boundary;
3. the exact L2 distance transform (``cv2.distanceTransform``, ``DIST_L2``,
   ``DIST_MASK_PRECISE``) is taken and the padding removed;
4. distances at already-clicked pixels are set to 0;
5. if ``max(fn_dist) > max(fp_dist)`` the click is positive at the first (row-major)
   pixel attaining ``max(fn_dist)``, otherwise negative at the first maximum of
   ``fp_dist``.

The first click on an empty prediction is therefore positive, at the object's most
interior point. Everything is deterministic.
"""

from __future__ import annotations

from typing import Iterable, Optional

import cv2
import numpy as np

from gpcis.clicks import Click

__all__ = ["error_distance_maps", "next_click", "SimulatedUser"]


def _check_mask(mask: np.ndarray, name: str, shape: Optional[tuple[int, int]] = None) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) mask, got shape {mask.shape}")
    if shape is not None and mask.shape != shape:
        raise ValueError(f"{name} has shape {mask.shape}, expected {shape}")
    return mask.astype(bool)


def _padded_distance(mask: np.ndarray) -> np.ndarray:
    """Exact L2 distance of each ``True`` pixel to the nearest ``False`` pixel or the border.

    Args:
        mask: ``(H, W)`` bool.

    Returns:
        ``(H, W)`` float32 distances (0 outside ``mask``).
    """
    padded = np.pad(mask.astype(np.uint8), ((1, 1), (1, 1)), mode="constant", constant_values=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[1:-1, 1:-1]


def error_distance_maps(
    gt: np.ndarray,
    pred: np.ndarray,
    ignore: Optional[np.ndarray] = None,
    clicked: Iterable[Click] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Distance maps of the false-negative and false-positive regions (steps 1-4 above).

    Args:
        gt: ``(H, W)`` bool ground truth.
        pred: ``(H, W)`` bool current prediction.
        ignore: ``(H, W)`` bool, ``True`` = ignored pixel (never an error), or ``None``.
        clicked: clicks made so far; their pixels get distance 0.

    Returns:
        ``(fn_dist, fp_dist)``, each ``(H, W)`` float32.
    """
    gt = _check_mask(gt, "gt")
    pred = _check_mask(pred, "pred", gt.shape)
    valid = ~_check_mask(ignore, "ignore", gt.shape) if ignore is not None else np.ones_like(gt)
    fn = gt & ~pred & valid
    fp = ~gt & pred & valid
    fn_dist = _padded_distance(fn)
    fp_dist = _padded_distance(fp)
    h, w = gt.shape
    for c in clicked:
        if 0 <= c.row < h and 0 <= c.col < w:
            fn_dist[c.row, c.col] = 0.0
            fp_dist[c.row, c.col] = 0.0
    return fn_dist, fp_dist


def next_click(
    gt: np.ndarray,
    pred: np.ndarray,
    ignore: Optional[np.ndarray] = None,
    clicked: Iterable[Click] = (),
) -> Click:
    """The simulated user's next click (RITM protocol, see the module docstring).

    Args:
        gt: ``(H, W)`` bool ground truth.
        pred: ``(H, W)`` bool current prediction (all ``False`` before the first click).
        ignore: ``(H, W)`` bool ignore mask or ``None``.
        clicked: clicks already made (their pixels are never chosen again while any
            other pixel has a positive distance).

    Returns:
        The next :class:`~gpcis.clicks.Click` (row/col convention).
    """
    fn_dist, fp_dist = error_distance_maps(gt, pred, ignore, clicked)
    fn_max = float(fn_dist.max())
    fp_max = float(fp_dist.max())
    positive = fn_max > fp_max
    dist, best = (fn_dist, fn_max) if positive else (fp_dist, fp_max)
    # first pixel (row-major, as np.where) attaining the maximum
    flat = int(np.flatnonzero(dist == best)[0])
    row, col = divmod(flat, dist.shape[1])
    return Click(row=row, col=col, positive=positive)


class SimulatedUser:
    """Stateful wrapper of :func:`next_click` for one object: remembers its clicks.

    Args:
        gt: ``(H, W)`` bool ground truth of the object.
        ignore: ``(H, W)`` bool ignore mask or ``None``.
    """

    def __init__(self, gt: np.ndarray, ignore: Optional[np.ndarray] = None) -> None:
        self.gt = _check_mask(gt, "gt")
        self.ignore = _check_mask(ignore, "ignore", self.gt.shape) if ignore is not None else None
        self.clicks: list[Click] = []

    def click(self, pred: Optional[np.ndarray] = None) -> Click:
        """Make (and remember) the next click given the current prediction.

        Args:
            pred: ``(H, W)`` bool current prediction, ``None`` for an empty one.
        """
        if pred is None:
            pred = np.zeros_like(self.gt)
        c = next_click(self.gt, pred, self.ignore, self.clicks)
        self.clicks.append(c)
        return c
