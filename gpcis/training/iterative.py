"""Iterative training's click simulation (GPCIS supplement Alg. S1, after RITM).

Before each training pass, ``0..max_num_next_clicks`` (uniformly random) no-grad passes
are run; each adds one click per image at its current error region and feeds the
prediction back as the previous mask. The click goes to the larger error: false
negatives (object pixels predicted as background) give a positive click, false positives
a negative one; the pixel is drawn uniformly among those whose distance to the error
region's boundary is more than half the larger region's maximum distance. As RITM's and the
GPCIS release's ``get_next_points``: the prediction is ``prob > 0.49``, distances are
OpenCV's 5 x 5 chamfer approximation of the Euclidean one (``DIST_L2``, mask 5: steps 1,
1.4, 2.1969), the image border counts as boundary. (Before session 13 this module used
``prob > 0.5``, exact distances and ``>= 0.49 x`` the maximum: more clicks near the
error's edge.)
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from gpcis.clicks import Click, ClickBatch

__all__ = ["error_click", "add_error_clicks", "iterative_prev_mask"]


#: RITM's next-click rule: probability threshold, and the candidates' share of the maximum distance
NEXT_CLICK_THRESH = 0.49
NEXT_CLICK_RATIO = 0.5


def _dist(mask: np.ndarray) -> np.ndarray:
    # pad with background so the image border counts as a boundary (as RITM does); RITM's
    # 5 x 5 chamfer distance (cv2.DIST_MASK_5)
    padded = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_5)[1:-1, 1:-1]


def error_click(
    pred: np.ndarray,
    gt: np.ndarray,
    rng: np.random.Generator,
    ignore: np.ndarray | None = None,
    ratio: float = NEXT_CLICK_RATIO,
) -> Click | None:
    """One training click at the error region of a binary prediction.

    Args:
        pred: ``(H, W)`` bool prediction.
        gt: ``(H, W)`` bool ground truth.
        rng: random generator choosing among the candidate pixels.
        ignore: ``(H, W)`` bool, pixels that are never errors.
        ratio: candidates have distance ``> ratio * max distance`` (RITM: 1/2).

    Returns:
        The click, or ``None`` when the prediction has no error.
    """
    valid = np.ones_like(gt, dtype=bool) if ignore is None else ~ignore
    fn = gt & ~pred & valid
    fp = ~gt & pred & valid
    fn_dt, fp_dt = _dist(fn), _dist(fp)
    fn_max, fp_max = float(fn_dt.max()), float(fp_dt.max())
    if max(fn_max, fp_max) <= 0:
        return None
    positive = fn_max > fp_max
    dt, best = (fn_dt, fn_max) if positive else (fp_dt, fp_max)
    cand = np.argwhere(dt > ratio * best)
    r, c = cand[int(rng.integers(0, len(cand)))]
    return Click(int(r), int(c), bool(positive))


def add_error_clicks(
    clicks: ClickBatch,
    prob: Tensor,
    gt: Tensor,
    rng: np.random.Generator,
    ignore: Tensor | None = None,
    thresh: float = NEXT_CLICK_THRESH,
    ratio: float = NEXT_CLICK_RATIO,
) -> ClickBatch:
    """Append one error click per image (``valid = False`` where an image has no error).

    Args:
        clicks: the current batch of clicks ``(B, N)``.
        prob: ``(B, 1, H, W)`` foreground probability.
        gt: ``(B, 1, H, W)`` target in {0, 1}.
        rng: random generator.
        ignore: ``(B, 1, H, W)`` bool or ``None``.
        thresh: ``pred = prob > thresh``.
        ratio: see :func:`error_click`.

    Returns:
        A :class:`ClickBatch` of shape ``(B, N + 1)`` on the device of ``clicks``.
    """
    pred = (prob.detach() > thresh)[:, 0].cpu().numpy()
    target = (gt > 0.5)[:, 0].cpu().numpy()
    ign = ignore[:, 0].cpu().numpy() if ignore is not None else [None] * len(pred)
    b = clicks.batch_size
    coords = torch.zeros(b, 1, 2)
    labels = torch.zeros(b, 1)
    valid = torch.zeros(b, 1, dtype=torch.bool)
    for i in range(b):
        c = error_click(pred[i], target[i], rng, ign[i], ratio)
        if c is not None:
            coords[i, 0] = torch.tensor([c.row, c.col], dtype=torch.float32)
            labels[i, 0] = float(c.label)
            valid[i, 0] = True
    dev = clicks.coords.device
    return ClickBatch(
        torch.cat([clicks.coords, coords.to(dev, clicks.coords.dtype)], 1),
        torch.cat([clicks.labels, labels.to(dev, clicks.labels.dtype)], 1),
        torch.cat([clicks.valid, valid.to(dev)], 1),
    )


@torch.no_grad()
def iterative_prev_mask(
    model: nn.Module,
    image: Tensor,
    clicks: ClickBatch,
    gt: Tensor,
    num_iters: int,
    rng: np.random.Generator,
    ignore: Tensor | None = None,
    ratio: float = NEXT_CLICK_RATIO,
) -> tuple[ClickBatch, Tensor]:
    """Run ``num_iters`` no-grad passes (model in eval mode), each adding an error click.

    Args:
        model: the segmentation model (its train/eval mode is restored afterwards).
        image: ``(B, 3, H, W)`` in [0, 1].
        clicks: the sampled clicks.
        gt: ``(B, 1, H, W)`` target.
        num_iters: number of passes (0 returns the inputs and an all-zero mask).
        rng: random generator for the clicks.
        ignore: ``(B, 1, H, W)`` bool or ``None``.
        ratio: see :func:`error_click`.

    Returns:
        ``(clicks, prev_mask)``: the clicks with ``num_iters`` more columns and the last
        predicted probability ``(B, 1, H, W)`` (zeros when ``num_iters == 0``).
    """
    prev = torch.zeros_like(gt, dtype=image.dtype)
    if num_iters <= 0:
        return clicks, prev
    was_training = model.training
    model.eval()
    try:
        for _ in range(num_iters):
            prev = torch.sigmoid(model(image, clicks, prev).logits.float()).to(image.dtype)
            clicks = add_error_clicks(clicks, prev, gt, rng, ignore, ratio=ratio)
    finally:
        model.train(was_training)
    return clicks, prev

