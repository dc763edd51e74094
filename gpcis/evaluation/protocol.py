"""The NoC evaluation loop: simulated user -> method -> IoU, per object, per data set.

Every sample is one object: its target ``masks[0]`` (the readers emit one sample per
instance; further masks are other objects and are not evaluated). The method sees the
image (``set_image``), then for click ``k = 1..max``: the simulated user clicks on the
errors of the previous prediction (:func:`gpcis.evaluation.clicker.next_click`), the
method predicts from *all* clicks so far plus its previous mask -- the previous
*probability* map, as RITM's predictor feeds ``prev_prediction`` back (before session 13
this loop fed the thresholded mask, which the models never see in training: the model
rows documented before then are that loop's) -- and the IoU (ignore pixels excluded) is
recorded. The loop stops once the IoU reaches ``target_iou`` unless
``all_clicks`` is set. An object still below ``target_iou`` after ``max_clicks`` clicks
continues up to ``long_max_clicks`` clicks (for NoC100@90), again stopping at the target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from gpcis.clicks import Click
from gpcis.evaluation.clicker import next_click
from gpcis.evaluation.metrics import aggregate, iou, noc
from gpcis.inference.base import InteractiveSegmenter

__all__ = ["EVAL_PROTOCOL", "EvalConfig", "ObjectRecord", "evaluate_object", "evaluate_dataset", "summarize"]

#: version of the evaluation loop: 2 since session 13 (the previous probability map is fed
#: back; NoIC over the protocol's clicks). Results of other versions are not comparable.
EVAL_PROTOCOL = 2


@dataclass
class EvalConfig:
    """Settings of the protocol.

    Attributes:
        max_clicks: click budget of NoC@85/90 and the mIoU curve (20).
        long_max_clicks: budget of NoC100@90 (100); ``None`` or <= ``max_clicks`` disables
            the continuation and NoC100 is then not reported.
        target_iou: stop once this IoU is reached (0.9; at least 0.9, the highest threshold
            reported: stopping lower would count objects between it and 0.9 as NoC@90 failures).
        thresh: foreground iff ``prob > thresh`` (0.5; RITM uses 0.49).
        all_clicks: run every one of ``max_clicks`` clicks regardless of the IoU.
        limit: evaluate at most this many samples of each data set (``None``: all).
        progress: show a tqdm progress bar.
    """

    max_clicks: int = 20
    long_max_clicks: Optional[int] = 100
    target_iou: float = 0.9
    thresh: float = 0.5
    all_clicks: bool = False
    limit: Optional[int] = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_clicks < 1:
            raise ValueError(f"max_clicks must be >= 1, got {self.max_clicks}")
        if not 0.9 <= self.target_iou <= 1.0:
            # an object stopped below 0.9 would count as a failure of NoC@90, NoF@90 and
            # NoC100@90 although more clicks might have reached 0.9
            raise ValueError(
                f"target_iou must be in [0.9, 1] (the highest IoU threshold reported, NoC@90), got "
                f"{self.target_iou}"
            )
        if not 0.0 <= self.thresh < 1.0:
            raise ValueError(f"thresh must be in [0, 1), got {self.thresh}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")

    @property
    def budget(self) -> int:
        """The most clicks any object can receive."""
        if self.long_max_clicks is None:
            return self.max_clicks
        return max(self.max_clicks, self.long_max_clicks)

    @property
    def reports_long(self) -> bool:
        """Whether NoC100@90 / NoF100@90 are reported (a continuation beyond ``max_clicks``)."""
        return self.long_max_clicks is not None and self.long_max_clicks > self.max_clicks


@dataclass
class ObjectRecord:
    """Result of one object (one mask of one sample).

    Attributes:
        name: the sample name.
        ious: IoU after each click made.
        clicks: the simulated user's clicks.
        noic: clicks whose own pixel was misclassified right after them, counted over the
            protocol's clicks: up to the one that reached ``target_iou``, at most
            ``max_clicks`` (not the NoC100 continuation, not ``all_clicks``' extra clicks,
            so that it does not depend on them).
        seconds: total time spent in ``method.predict``.
    """

    name: str
    ious: list[float] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    noic: int = 0
    seconds: float = 0.0


def evaluate_object(
    method: InteractiveSegmenter,
    gt: np.ndarray,
    ignore: Optional[np.ndarray],
    config: EvalConfig,
    name: str = "",
) -> ObjectRecord:
    """Run the click loop on one object; ``method.set_image`` must have been called.

    Args:
        method: anything with ``predict(clicks, prev_mask)`` returning a ``PredictionResult``.
        gt: ``(H, W)`` bool object mask.
        ignore: ``(H, W)`` bool ignore mask or ``None``.
        config: protocol settings.
        name: record name.

    Raises:
        ValueError: ``gt`` not 2-D, ``ignore`` of another shape, or no object pixel outside
            ``ignore`` (its IoU would be 1 for any prediction: the object would count as
            solved at the first click).
    """
    gt = np.asarray(gt, dtype=bool)
    label = f"object {name!r}" if name else "the object"
    if gt.ndim != 2:
        raise ValueError(f"{label}: gt must be an (H, W) mask, got shape {gt.shape}")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise ValueError(f"{label}: ignore has shape {ignore.shape}, gt {gt.shape}")
    scored = gt if ignore is None else gt & ~ignore
    if not scored.any():
        where = "" if ignore is None else " outside the ignore mask"
        raise ValueError(f"{label}: the ground-truth mask is empty{where}")
    rec = ObjectRecord(name=name)
    pred = np.zeros_like(gt)
    prev_mask: Optional[np.ndarray] = None
    reached_at: Optional[int] = None
    for k in range(1, config.budget + 1):
        if k > config.max_clicks:
            # continuation for NoC100@90: only objects still below the target
            if reached_at is not None or not config.reports_long:
                break
        click = next_click(gt, pred, ignore, rec.clicks)
        rec.clicks.append(click)
        t0 = time.perf_counter()
        result = method.predict(list(rec.clicks), prev_mask)
        rec.seconds += time.perf_counter() - t0
        prob = np.asarray(result.prob)
        if prob.shape != gt.shape:
            raise ValueError(f"{label}: the method returned prob of shape {prob.shape} for a gt of shape {gt.shape} "
                             "(is the gt the image's size?)")
        pred = prob > config.thresh
        prev_mask = np.clip(prob, 0.0, 1.0).astype(np.float32, copy=False)  # RITM's prev_prediction
        rec.ious.append(iou(pred, gt, ignore))
        if reached_at is None and k <= config.max_clicks:
            rec.noic += int(bool(pred[click.row, click.col]) != click.positive)
        if reached_at is None and rec.ious[-1] >= config.target_iou:
            reached_at = k
        if reached_at is not None and not (config.all_clicks and k < config.max_clicks):
            break
    return rec


def evaluate_dataset(
    method: InteractiveSegmenter,
    dataset: Sequence[Any],
    config: EvalConfig = EvalConfig(),
    desc: str = "",
) -> list[ObjectRecord]:
    """Evaluate ``method`` on every object of ``dataset``.

    Args:
        method: the interactive method.
        dataset: indexable collection of samples with ``image`` (H, W, 3) uint8,
            ``masks`` (list of (H, W) bool; ``masks[0]`` is evaluated), ``ignore``
            ((H, W) bool or ``None``) and ``name``.
        config: protocol settings.
        desc: progress-bar label.

    Returns:
        One :class:`ObjectRecord` per object, in data-set order.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError(f"data set {desc!r} is empty")
    if config.limit is not None:
        n = min(n, config.limit)
    records: list[ObjectRecord] = []
    bar = tqdm(range(n), desc=desc or "evaluate", unit="img", disable=not config.progress)
    for i in bar:
        sample = dataset[i]
        if not len(sample.masks):
            raise ValueError(f"sample {sample.name!r} of data set {desc!r} has no object mask")
        method.set_image(sample.image)
        records.append(evaluate_object(method, sample.masks[0], sample.ignore, config, sample.name))
        if records:
            mean_noc = np.mean([noc(r.ious, config.target_iou, config.max_clicks) for r in records])
            bar.set_postfix(noc=f"{mean_noc:.2f}")
    return records


def summarize(records: Iterable[ObjectRecord], config: EvalConfig) -> dict:
    """Data-set metrics (see :func:`gpcis.evaluation.metrics.aggregate`) of the records,
    ``miou_exact``: whether every object was clicked ``max_clicks`` times (``all_clicks``),
    as RITM's IoU analysis does (otherwise the mIoU after a stop carries its last IoU
    forward), and ``protocol``: :data:`EVAL_PROTOCOL`."""
    records = list(records)
    out = aggregate(
        [r.ious for r in records],
        [r.noic for r in records],
        seconds=sum(r.seconds for r in records),
        num_clicks=sum(len(r.ious) for r in records),
        max_clicks=config.max_clicks,
        long_max_clicks=config.long_max_clicks if config.reports_long else None,
    )
    out["miou_exact"] = bool(config.all_clicks)
    out["protocol"] = EVAL_PROTOCOL
    return out
