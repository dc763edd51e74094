"""Tiny deterministic InteractiveSegmenters for the demo's unit tests."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from gpcis.clicks import Click
from gpcis.inference.base import PredictionResult


class ColourSegmenter:
    """Foreground = pixels whose colour is nearer the positive clicks' colours than the
    negative ones' (or within ``radius`` of a positive click's colour when there is no
    negative click); prob is a logistic of the distance difference and std grows with the
    distance (in pixels) to the nearest click. Records every call for assertions."""

    def __init__(self, radius: float = 60.0, with_std: bool = True) -> None:
        self.radius = radius
        self.with_std = with_std
        self.image: Optional[np.ndarray] = None
        self.calls: list[tuple[list[Click], Optional[np.ndarray]]] = []

    def set_image(self, image: np.ndarray) -> None:
        self.image = image.astype(np.float32)

    def predict(self, clicks: Sequence[Click], prev_mask: Optional[np.ndarray] = None) -> PredictionResult:
        assert self.image is not None
        self.calls.append((list(clicks), None if prev_mask is None else prev_mask.copy()))
        img = self.image

        def dist(group: list[Click]) -> np.ndarray:
            if not group:
                return np.full(img.shape[:2], np.inf, np.float32)
            return np.min([np.linalg.norm(img - img[c.row, c.col], axis=2) for c in group], axis=0)

        d_pos = dist([c for c in clicks if c.positive])
        d_neg = dist([c for c in clicks if not c.positive])
        d_neg = np.minimum(d_neg, self.radius)
        z = np.clip((d_neg - d_pos) / 10.0, -30, 30)
        prob = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        std = None
        if self.with_std:
            h, w = img.shape[:2]
            rr, cc = np.mgrid[0:h, 0:w]
            d = np.min([np.hypot(rr - c.row, cc - c.col) for c in clicks], axis=0)
            std = (d / max(h, w)).astype(np.float32)
        return PredictionResult(mask=prob > 0.5, prob=prob, std=std)


def two_squares(h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey background with a red and a blue square; returns (image, red mask, blue mask)."""
    img = np.full((h, w, 3), 128, np.uint8)
    red = np.zeros((h, w), bool)
    blue = np.zeros((h, w), bool)
    red[8:24, 8:24] = True
    blue[20:40, 36:56] = True
    img[red] = (220, 30, 30)
    img[blue] = (30, 30, 220)
    return img, red, blue
