"""Metrics of the NoC protocol: pure functions on masks and per-click IoU sequences.

Conventions (RITM's ``compute_noc_metric``):

* ``NoC@t`` of one object is the 1-based index of the first click whose IoU is
  ``>= t``; when no click among the first ``max_clicks`` reaches ``t`` it is
  ``max_clicks``.
* ``NoF@t`` counts objects with ``NoC@t >= max_clicks`` (a failure), i.e. not reaching
  ``t`` within ``max_clicks - 1`` clicks (reaching it exactly at click ``max_clicks``
  also counts, as in RITM).
* ``NoC100@90`` / ``NoF100@90`` are the same with ``max_clicks = 100``.
* mIoU after ``k`` clicks averages the IoU after click ``k``; a sequence that stopped
  early (the target was reached) is carried forward with its last IoU.
* NoIC (number of invalid clicks, GPCIS supplement) counts clicks after which the clicked
  pixel itself is still misclassified.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from gpcis.clicks import Click

__all__ = [
    "iou",
    "noc",
    "is_failure",
    "iou_at",
    "miou_curve",
    "count_invalid_clicks",
    "aggregate",
]


def iou(pred: np.ndarray, gt: np.ndarray, ignore: Optional[np.ndarray] = None) -> float:
    """Intersection over union of two masks, ignoring ``ignore`` pixels.

    Args:
        pred: ``(H, W)`` bool prediction.
        gt: ``(H, W)`` bool ground truth.
        ignore: ``(H, W)`` bool, ``True`` = excluded from both sets, or ``None``.

    Returns:
        IoU in [0, 1]; 1.0 when both masks are empty on the valid pixels.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred has shape {pred.shape} but gt has shape {gt.shape}")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise ValueError(f"ignore has shape {ignore.shape} but gt has shape {gt.shape}")
        valid = ~ignore
        pred = pred & valid
        gt = gt & valid
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt)) / float(union)


def _check_ious(ious: Sequence[float]) -> np.ndarray:
    arr = np.asarray(ious, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"ious must be a 1-D sequence, got shape {arr.shape}")
    return arr


def noc(ious: Sequence[float], target: float, max_clicks: int = 20) -> int:
    """Number of clicks to reach ``target`` IoU (``max_clicks`` when never reached).

    Args:
        ious: IoU after click 1, 2, ... (any length; only the first ``max_clicks`` count).
        target: IoU threshold, e.g. 0.85 or 0.9.
        max_clicks: click budget.
    """
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
    arr = _check_ious(ious)[:max_clicks]
    hit = np.flatnonzero(arr >= target)
    return int(hit[0]) + 1 if hit.size else max_clicks


def is_failure(ious: Sequence[float], target: float, max_clicks: int = 20) -> bool:
    """RITM's failure criterion: ``noc(ious, target, max_clicks) >= max_clicks``."""
    return noc(ious, target, max_clicks) >= max_clicks


def iou_at(ious: Sequence[float], k: int) -> float:
    """IoU after click ``k`` (1-based); carried forward from the last click if the run stopped."""
    arr = _check_ious(ious)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if arr.size == 0:
        return 0.0
    return float(arr[min(k, arr.size) - 1])


def miou_curve(all_ious: Sequence[Sequence[float]], max_clicks: int = 20) -> list[float]:
    """Mean IoU after ``k = 1..max_clicks`` clicks over objects (carry-forward for early stops)."""
    if len(all_ious) == 0:
        return [float("nan")] * max_clicks
    return [float(np.mean([iou_at(s, k) for s in all_ious])) for k in range(1, max_clicks + 1)]


def count_invalid_clicks(clicks: Sequence[Click], preds: Sequence[np.ndarray]) -> int:
    """NoIC of one object: clicks whose own pixel is misclassified in the prediction after it.

    Args:
        clicks: the clicks, in order.
        preds: ``preds[i]`` is the ``(H, W)`` bool prediction made after ``clicks[i]``.
    """
    if len(clicks) != len(preds):
        raise ValueError(f"got {len(clicks)} clicks but {len(preds)} predictions")
    return sum(int(bool(p[c.row, c.col]) != c.positive) for c, p in zip(clicks, preds))


def aggregate(
    all_ious: Sequence[Sequence[float]],
    noic: Sequence[int],
    seconds: float,
    num_clicks: int,
    max_clicks: int = 20,
    long_max_clicks: Optional[int] = 100,
) -> dict:
    """Data-set metrics from per-object IoU sequences.

    Args:
        all_ious: per object, the IoU after each click made.
        noic: per object, the number of invalid clicks.
        seconds: total prediction time over the data set.
        num_clicks: total number of clicks (predictions) made.
        max_clicks: budget of NoC@85/90, NoF@90 and the mIoU curve.
        long_max_clicks: budget of NoC100@90 / NoF100@90 (``None``: not computed).

    Returns:
        dict with ``noc85``, ``noc90``, ``nof85``, ``nof90``, ``noc100_90``, ``nof100_90``,
        ``miou_at`` (list of ``max_clicks`` floats), ``noic`` (sum), ``sec_per_click``,
        ``num_images`` (number of objects).
    """
    n = len(all_ious)
    out: dict = {"num_images": n}
    if n == 0:
        raise ValueError("cannot aggregate metrics over zero objects")
    for t, key in ((0.85, "85"), (0.90, "90")):
        nocs = [noc(s, t, max_clicks) for s in all_ious]
        out[f"noc{key}"] = float(np.mean(nocs))
        out[f"nof{key}"] = int(sum(v >= max_clicks for v in nocs))
    if long_max_clicks is not None:
        nocs = [noc(s, 0.90, long_max_clicks) for s in all_ious]
        out["noc100_90"] = float(np.mean(nocs))
        out["nof100_90"] = int(sum(v >= long_max_clicks for v in nocs))
    else:
        out["noc100_90"] = None
        out["nof100_90"] = None
    out["miou_at"] = miou_curve(all_ious, max_clicks)
    out["noic"] = int(sum(noic))
    out["sec_per_click"] = float(seconds / num_clicks) if num_clicks else float("nan")
    return out
