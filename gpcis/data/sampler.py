"""RITM's multi-point click sampler for training (Sofiiuk et al., "Reviving Iterative
Training with Mask Guidance for Interactive Segmentation", 2021, Sec. 3.2).

For one target object it draws ``n_pos >= 1`` positive and ``n_neg >= 0`` negative
clicks, with ``P(n_pos = k) ∝ gamma^(k-1)`` for ``k = 1..max_num_points`` and
``P(n_neg = k) ∝ gamma^k`` for ``k = 0..max_num_points`` (``gamma = 0.8``): few clicks are
likely, many are possible.

* Positives are drawn inside the object, eroded (3 iterations, with probability 0.9) so
  that they keep off the boundary; the first positive click is, with probability
  ``first_click_inner_prob``, drawn from the object's interior: pixels whose distance to
  the background is ``> max_distance / inner_k`` (RITM's ``sfc_inner_k = 1.7``); erosion
  that leaves 10 pixels or fewer keeps the object (as RITM).
* Each negative click picks a source region with probabilities
  ``negative_bg_prob / negative_other_prob / negative_border_prob``: anywhere in the
  background, on another annotated object, or in a band around the object (the object
  dilated by ``border_ratio`` of its size, minus the object); absent regions are dropped
  and the rest renormalised.
* Ignored pixels are never clicked; clicks in one region are distinct pixels.

The sampler is deterministic given the ``numpy.random.Generator`` passed to
:meth:`MultiPointSampler.sample`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from gpcis.clicks import Click

__all__ = ["MultiPointSampler", "decay_probs"]


def decay_probs(n: int, gamma: float) -> np.ndarray:
    """``(n,)`` probabilities ``p_k ∝ gamma^k``, ``k = 0..n-1``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    p = gamma ** np.arange(n, dtype=np.float64)
    return p / p.sum()


@dataclass
class MultiPointSampler:
    """Training click sampler (RITM's ``MultiPointSampler``).

    Attributes:
        max_num_points: maximum number of positive (and of negative) clicks (24).
        prob_gamma: probability decay per extra click (0.8).
        positive_erode_prob: probability of eroding the object before drawing positives.
        positive_erode_iters: erosion iterations (3x3 kernel).
        first_click_inner_prob: probability that the first click is in the interior of the
            (eroded) positive region. RITM's configurations leave it at 0 (its
            ``first_click_center=False``: the first click anywhere in that region), the GPCIS
            code base at 1; 0.5, between them, is this project's default (the released
            model's).
        inner_k: interior = distance ``> max distance / inner_k``.
        negative_bg_prob: weight of "anywhere in the background" negatives.
        negative_other_prob: weight of "on another object" negatives.
        negative_border_prob: weight of "band around the object" negatives.
        border_ratio: band width as a fraction of the object's bounding-box size.
        merge_objects_prob: probability that an image's target is 2 or more of its objects
            merged (:meth:`choose_objects`; RITM's and GPCIS's training configs: 0.15).
        max_num_merged_objects: most objects merged into one target (2).
    """

    max_num_points: int = 24
    prob_gamma: float = 0.8
    positive_erode_prob: float = 0.9
    positive_erode_iters: int = 3
    first_click_inner_prob: float = 0.5
    inner_k: float = 1.7
    negative_bg_prob: float = 0.1
    negative_other_prob: float = 0.4
    negative_border_prob: float = 0.5
    border_ratio: float = 0.1
    merge_objects_prob: float = 0.15
    max_num_merged_objects: int = 2

    def __post_init__(self) -> None:
        if self.max_num_points < 1:
            raise ValueError(f"max_num_points must be >= 1, got {self.max_num_points}")
        if not 0.0 < self.prob_gamma <= 1.0:
            raise ValueError(f"prob_gamma must be in (0, 1], got {self.prob_gamma}")
        if not 0.0 <= self.first_click_inner_prob <= 1.0:
            raise ValueError(f"first_click_inner_prob must be in [0, 1], got {self.first_click_inner_prob}")
        if not 0.0 <= self.merge_objects_prob <= 1.0:
            raise ValueError(f"merge_objects_prob must be in [0, 1], got {self.merge_objects_prob}")
        if self.max_num_merged_objects < 2:
            raise ValueError(f"max_num_merged_objects must be >= 2, got {self.max_num_merged_objects}")
        self.pos_probs = decay_probs(self.max_num_points, self.prob_gamma)
        self.neg_probs = decay_probs(self.max_num_points + 1, self.prob_gamma)

    # ------------------------------------------------------------------ regions
    def _positive_region(self, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        region = target
        if self.positive_erode_iters > 0 and rng.random() < self.positive_erode_prob:
            eroded = cv2.erode(target.astype(np.uint8), np.ones((3, 3), np.uint8),
                               iterations=self.positive_erode_iters).astype(bool)
            if eroded.sum() > 10:  # RITM keeps the object when erosion leaves 10 pixels or fewer
                region = eroded
        return region

    def _inner_region(self, target: np.ndarray) -> np.ndarray:
        # RITM's get_point_candidates: exact distances, strictly beyond max / k
        padded = np.pad(target.astype(np.uint8), 1)
        dt = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        return dt > dt.max() / self.inner_k

    def _border_region(self, target: np.ndarray) -> np.ndarray:
        rows, cols = np.flatnonzero(target.any(1)), np.flatnonzero(target.any(0))
        size = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
        r = max(1, int(round(self.border_ratio * size)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        dilated = cv2.dilate(target.astype(np.uint8), kernel).astype(bool)
        return dilated & ~target

    @staticmethod
    def _draw(region: np.ndarray, k: int, rng: np.random.Generator, positive: bool) -> list[Click]:
        pts = np.argwhere(region)
        if k <= 0 or len(pts) == 0:
            return []
        idx = rng.choice(len(pts), size=min(k, len(pts)), replace=False)
        return [Click(int(pts[i, 0]), int(pts[i, 1]), positive) for i in idx]

    def _first_click(self, region: np.ndarray, rng: np.random.Generator) -> list[Click]:
        """The first positive click: in the interior of ``region`` (RITM's
        get_point_candidates) with probability ``first_click_inner_prob``, else anywhere in it."""
        if rng.random() < self.first_click_inner_prob:
            return self._draw(self._inner_region(region), 1, rng, True)
        return self._draw(region, 1, rng, True)

    def _merged_positives(self, parts: Sequence[np.ndarray], allowed: np.ndarray,
                          rng: np.random.Generator) -> list[Click]:
        """Positives of a merged target (RITM's ``_multi_mask_sample_points``): a first click
        in each object, then ``k ~ P(n_neg)`` more (RITM draws them as it draws negatives),
        each in a uniformly chosen object, at most ``max_num_points`` in all."""
        regions = [self._positive_region(p, rng) & allowed for p in parts]
        clicks: list[Click] = []
        for region in regions:
            clicks += self._first_click(region & ~_clicked(clicks, region.shape), rng)
        extra = int(rng.choice(self.max_num_points + 1, p=self.neg_probs))
        extra = max(0, min(extra, self.max_num_points - len(clicks)))
        which = rng.integers(0, len(regions), size=extra)
        for j, region in enumerate(regions):
            clicks += self._draw(region & ~_clicked(clicks, region.shape), int((which == j).sum()), rng, True)
        return clicks

    def choose_objects(self, count: int, rng: np.random.Generator) -> list[int]:
        """Which of an image's ``count`` objects make the target: with probability
        ``merge_objects_prob`` (and at least two objects) ``2..max_num_merged_objects`` distinct
        ones, merged (RITM's ``_sample_mask``), else one, uniformly."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        if count > 1 and self.merge_objects_prob > 0 and rng.random() < self.merge_objects_prob:
            k = int(rng.integers(2, min(count, self.max_num_merged_objects) + 1))
            return sorted(int(i) for i in rng.choice(count, size=k, replace=False))
        return [int(rng.integers(0, count))]

    # ------------------------------------------------------------------ public
    def sample(self, target: np.ndarray, rng: np.random.Generator, others: Sequence[np.ndarray] = (),
               ignore: np.ndarray | None = None, parts: Sequence[np.ndarray] | None = None) -> list[Click]:
        """Draw the clicks of one training sample.

        Args:
            target: ``(H, W)`` bool target mask (must have a non-ignored pixel).
            rng: the random generator (the only source of randomness).
            others: other objects' ``(H, W)`` bool masks (sources of negatives).
            ignore: ``(H, W)`` bool, pixels never clicked.
            parts: the objects of a merged target (:meth:`choose_objects`; their union is
                ``target``): the positives are drawn per object (:meth:`_merged_positives`)
                when two or more of them are visible.

        Returns:
            ``list[Click]``: the first click is positive; positives then negatives.
        """
        target = np.asarray(target, dtype=bool)
        if target.ndim != 2:
            raise ValueError(f"target must be (H, W), got shape {target.shape}")
        if ignore is not None:
            ignore = np.asarray(ignore, dtype=bool)
        allowed = ~ignore if ignore is not None else np.ones_like(target)
        if ignore is not None and ignore.shape != target.shape:
            raise ValueError(f"ignore shape {ignore.shape} != target shape {target.shape}")
        obj = target & allowed
        if not obj.any():
            raise ValueError("target mask has no (non-ignored) pixel to click")
        visible = []
        for part in parts or ():
            part = np.asarray(part, dtype=bool)
            if part.shape != target.shape:
                raise ValueError(f"parts mask shape {part.shape} != target shape {target.shape}")
            if (part & allowed).any():
                visible.append(part & allowed)
        visible = visible[: self.max_num_points]  # a first click each, within the cap (RITM)
        n_pos = 1 + int(rng.choice(self.max_num_points, p=self.pos_probs))
        n_neg = int(rng.choice(self.max_num_points + 1, p=self.neg_probs))

        if len(visible) > 1:
            clicks = self._merged_positives(visible, allowed, rng)
        else:
            pos_region = self._positive_region(obj, rng) & allowed
            first = self._first_click(pos_region, rng)
            rest_region = pos_region & ~_clicked(first, target.shape)
            clicks = first + self._draw(rest_region, n_pos - 1, rng, True)

        background = ~target & allowed
        other = np.zeros_like(target)
        for m in others:
            m = np.asarray(m, dtype=bool)  # uint8 / float masks too
            if m.shape != target.shape:
                raise ValueError(f"others mask shape {m.shape} != target shape {target.shape}")
            other |= m
        regions = {
            "bg": (background, self.negative_bg_prob),
            "other": (other & background, self.negative_other_prob),
            "border": (self._border_region(target) & background, self.negative_border_prob),
        }
        names = [k for k, (r, p) in regions.items() if p > 0 and r.any()]
        if n_neg and names:
            p = np.array([regions[k][1] for k in names], dtype=np.float64)
            choice = rng.choice(len(names), size=n_neg, p=p / p.sum())
            for j, name in enumerate(names):
                k = int((choice == j).sum())
                clicks += self._draw(regions[name][0] & ~_clicked(clicks, target.shape), k, rng, False)
        return clicks


def _clicked(clicks: Sequence[Click], shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    for c in clicks:
        m[c.row, c.col] = True
    return m
