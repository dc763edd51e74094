"""Edge-aware refinement of a GP decision: connected components and a GP-seeded GrabCut.

The GP's decision is smooth in feature space but does not follow image edges exactly.
:func:`grabcut_refine` runs OpenCV's GrabCut (Rother et al., 2004) initialised from it:
"probably foreground" where the GP says foreground, "probably background" elsewhere,
sure labels on the click disks, and "sure background" where the GP is very confident and
far from every positive click. :func:`keep_components_with_clicks` keeps only the
connected components that contain a positive click. :func:`refine_decision` chains them
(the post-processing of ``gp-pixel``, and of any model through
``Predictor(refine=GrabCutRefineConfig())``).
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from gpcis.clicks import Click

__all__ = [
    "click_labels",
    "FORCED_FG",
    "FORCED_BG",
    "GrabCutRefineConfig",
    "keep_components_with_clicks",
    "click_disks",
    "grabcut_refine",
    "refine_decision",
    "refined_probability",
]

_MIN_GMM_PIXELS = 10


@dataclass
class GrabCutRefineConfig:
    """GP-seeded GrabCut.

    Attributes:
        enabled: run the refinement at all.
        iterations: GrabCut iterations (GMM refit + graph cut), from the GP initialisation.
        click_radius: radius in image pixels of the sure-label disks at the clicks.
        sure_bg_logit: pixels whose GP latent mean is below ``-sure_bg_logit`` ...
        sure_bg_distance: ... and farther than this fraction of ``max(H, W)`` from every
            positive click are "sure background".
        sure_fg_logit: pixels whose GP latent mean is above this are "sure foreground"
            (``inf`` disables).
        roi_margin: GrabCut runs on the bounding box of the candidate foreground expanded
            by this fraction of ``max(H, W)`` (the rest stays background); ``None`` runs
            on the whole image.
        seed: seed of OpenCV's RNG (GrabCut's k-means initialisation), for determinism.
    """

    enabled: bool = True
    iterations: int = 3
    click_radius: int = 5
    sure_bg_logit: float = 2.0
    sure_bg_distance: float = 0.2
    sure_fg_logit: float = float("inf")
    roi_margin: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.click_radius < 0:
            raise ValueError(f"click_radius must be >= 0, got {self.click_radius}")
        if not (math.isfinite(self.sure_bg_logit) and math.isfinite(self.sure_bg_distance) and self.sure_bg_distance >= 0):
            raise ValueError(f"sure_bg_logit must be finite and sure_bg_distance finite and >= 0, got "
                             f"{self.sure_bg_logit}, {self.sure_bg_distance}")
        if math.isnan(self.sure_fg_logit):
            raise ValueError("sure_fg_logit must be a number (inf: no sure foreground from the logits), got nan")
        if self.roi_margin is not None and not (math.isfinite(self.roi_margin) and self.roi_margin >= 0):
            raise ValueError(f"roi_margin must be None or finite and >= 0, got {self.roi_margin}")


def click_disks(shape: tuple[int, int], clicks: Sequence[Click], radius: int, positive: bool) -> np.ndarray:
    """``(H, W)`` bool: union of the disks of radius ``radius`` at the clicks of one sign."""
    out = np.zeros(shape, np.uint8)
    for c in clicks:
        if c.positive == positive:
            cv2.circle(out, (int(c.col), int(c.row)), int(radius), 1, thickness=-1)
    return out.astype(bool)


#: values of :func:`click_labels`
FORCED_FG, FORCED_BG = 1, 2


def click_labels(shape: tuple[int, int], clicks: Sequence[Click], radius: int) -> np.ndarray:
    """``(H, W)`` uint8: the label the clicks force on each pixel -- :data:`FORCED_FG`,
    :data:`FORCED_BG` or 0 (none).

    Each click's disk of radius ``radius`` in click order (a later click wins where disks
    overlap), then every clicked pixel itself in click order: a click keeps its own pixel
    unless a later click is on that very pixel. (With the disks alone, a later click of the
    other sign within ``radius`` flipped an earlier clicked pixel; the simulated user then
    clicked the same spot again and again.)
    """
    out = np.zeros(shape, np.uint8)
    for c in clicks:
        cv2.circle(out, (int(c.col), int(c.row)), int(radius), FORCED_FG if c.positive else FORCED_BG,
                   thickness=-1)
    for c in clicks:
        out[c.row, c.col] = FORCED_FG if c.positive else FORCED_BG
    return out


def keep_components_with_clicks(mask: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
    """Keep the 8-connected components of ``mask`` that contain a positive click.

    Args:
        mask: ``(H, W)`` bool.
        clicks: clicks in image pixels; only positive ones matter.

    Returns:
        ``(H, W)`` bool, a subset of ``mask`` (empty when no positive click lies on it).
    """
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    for c in clicks:
        if c.positive:
            keep[labels[c.row, c.col]] = True
    keep[0] = False  # label 0 is the background of connectedComponents
    return keep[labels]


def grabcut_refine(
    image: np.ndarray,
    gp_logit: np.ndarray,
    clicks: Sequence[Click],
    config: GrabCutRefineConfig,
    init_fg: np.ndarray | None = None,
) -> np.ndarray:
    """GrabCut initialised from the GP decision.

    Args:
        image: ``(H, W, 3)`` uint8 image.
        gp_logit: ``(H, W)`` GP latent mean (logit) at the image's resolution.
        clicks: all clicks, image pixels.
        config: refinement settings.
        init_fg: ``(H, W)`` bool initial foreground (default ``gp_logit > 0``).

    Returns:
        ``(H, W)`` bool mask; the pixels :func:`click_labels` forces carry their label (in
        GrabCut's hard seeds and in the result alike).
    """
    shape = gp_logit.shape
    fg = gp_logit > 0 if init_fg is None else init_fg
    forced = click_labels(shape, clicks, config.click_radius)
    pos_disk, neg_disk = forced == FORCED_FG, forced == FORCED_BG
    init = np.where(fg, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    pos_pts = np.ones(shape, np.uint8)
    for c in clicks:
        if c.positive:
            pos_pts[c.row, c.col] = 0
    if (pos_pts == 0).any():
        dist = cv2.distanceTransform(pos_pts, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        far = dist > config.sure_bg_distance * max(shape)
    else:
        far = np.ones(shape, bool)
    init[(gp_logit < -config.sure_bg_logit) & far] = cv2.GC_BGD
    init[gp_logit > config.sure_fg_logit] = cv2.GC_FGD
    init[neg_disk] = cv2.GC_BGD
    init[pos_disk] = cv2.GC_FGD
    fg_like = (init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD)
    if not fg_like.any():
        return np.zeros(shape, bool)
    if fg_like.sum() < _MIN_GMM_PIXELS:  # too few samples for GrabCut's 5-component GMM
        return fg_like
    r0, r1, c0, c1 = 0, shape[0], 0, shape[1]
    if config.roi_margin is not None:
        rows, cols = np.nonzero(fg_like)
        m = int(round(config.roi_margin * max(shape)))
        r0, r1 = max(0, rows.min() - m), min(shape[0], rows.max() + m + 1)
        c0, c1 = max(0, cols.min() - m), min(shape[1], cols.max() + m + 1)
    sub = np.ascontiguousarray(init[r0:r1, c0:c1])
    bg_like = (sub == cv2.GC_BGD) | (sub == cv2.GC_PR_BGD)
    if bg_like.sum() < _MIN_GMM_PIXELS:
        out = np.zeros(shape, bool)
        out[r0:r1, c0:c1] = True
        out[neg_disk] = False
        return out
    cv2.setRNGSeed(config.seed)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    crop = np.ascontiguousarray(image[r0:r1, c0:c1])
    cv2.grabCut(crop, sub, None, bgd, fgd, config.iterations, cv2.GC_INIT_WITH_MASK)
    out = np.zeros(shape, bool)
    out[r0:r1, c0:c1] = (sub == cv2.GC_FGD) | (sub == cv2.GC_PR_FGD)
    out[pos_disk] = True
    out[neg_disk] = False
    return out


def refine_decision(
    image: np.ndarray,
    logit: np.ndarray,
    clicks: Sequence[Click],
    config: GrabCutRefineConfig,
    keep_components: bool = True,
) -> np.ndarray:
    """Decision ``logit > 0``, its components under positive clicks, GrabCut seeded from it.

    Args:
        image: ``(H, W, 3)`` uint8 image.
        logit: ``(H, W)`` decision function at the image's resolution, foreground iff > 0
            (a GP latent mean minus the logit of the threshold, or a model's logit).
        clicks: all clicks, image pixels.
        config: GrabCut settings (``enabled=False``: components and click disks only).
        keep_components: keep only the connected components that contain a positive click
            (before and after GrabCut).

    Returns:
        ``(H, W)`` bool mask; the pixels :func:`click_labels` forces (click disks of radius
        ``config.click_radius``, later clicks winning, and every clicked pixel itself) carry
        their label, so no clicked pixel is left wrong (NoIC = 0 for every click, not only
        the newest).
    """
    shape = logit.shape
    fg = logit > 0
    if keep_components:
        fg = keep_components_with_clicks(fg, clicks)
    if config.enabled and any(c.positive for c in clicks):
        mask = grabcut_refine(image, logit, clicks, config, init_fg=fg)
        if keep_components:
            mask = keep_components_with_clicks(mask, clicks)
    else:
        mask = fg
    forced = click_labels(shape, clicks, config.click_radius)
    mask[forced == FORCED_FG] = True
    mask[forced == FORCED_BG] = False
    return mask


def refined_probability(mask: np.ndarray, prob: np.ndarray, thresh: float = 0.5) -> np.ndarray:
    """A probability map consistent with a refined ``mask``: ``prob`` (clipped to [0, 1],
    NaN read as 0.5) squeezed into (max(0.55, thresh), 1] on the mask and
    [0, min(0.45, thresh)] off it, so ``prob > thresh`` -- and any threshold in [0.45, 0.55] --
    gives ``mask``, and the ordering of ``prob`` within each side is kept. float32 ``(H, W)``.

    The mask side starts one float32 step above its bound: ``0.55 + 0.45 p`` rounds to 0.55
    itself for ``p`` below ~7e-8, which ``> 0.55`` then missed. (A predictor's threshold
    outside [0.45, 0.55] left mask != prob > thresh before session 12.)"""
    if not 0.0 <= thresh < 1.0:
        raise ValueError(f"thresh must be in [0, 1), got {thresh}")
    p = np.nan_to_num(np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0), nan=0.5)
    t = np.float32(thresh)
    t_off = t if float(t) <= thresh else np.nextafter(t, np.float32(0.0))  # float32(0.3) > 0.3
    t_on = t if float(t) >= thresh else np.nextafter(t, np.float32(1.0))
    low = np.nextafter(max(np.float32(0.55), t_on), np.float32(1.0))
    on = low + (np.float32(1.0) - low) * p
    return np.where(mask, on, min(np.float32(0.45), t_off) * p).astype(np.float32)
