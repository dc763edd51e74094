"""Zoom-in (FocalClick / RITM target crop) for inference, recomputed on every click.

From the second click on (``skip_clicks = 1``), the model sees a crop of the image: the
box around the previous mask and the positive clicks, expanded ``expansion`` times
about its centre, at least ``min_crop_size`` per side, moved inside the image, and resized
so that its longer side is ``target_size`` (aspect ratio kept). The prediction is mapped
back into the full image; outside the box the previous probability is kept.

RITM's ``ZoomIn`` has the same parameters (400 px, 1.4, 200 px, skip 1) and differs in
four ways (not reproduced here; an audit's approximate re-implementation of them scored
the released model 0.2-0.3 clicks worse at NoC@85 / @90 on GrabCut): it keeps its box from
click to click unless a positive click falls outside it or the new box overlaps it with
IoU < 0.5; it does not zoom while the previous mask is empty (here: around the positive
clicks); it clips the expanded box at the image border (here: moved inside); and it sets
the probability outside the box to 0 (here: the previous probability is kept).

The box geometry and the crop/paste primitives are :mod:`gpcis.data.transforms`
(:func:`crop_box_around`, :func:`crop_resize`, :func:`paste_back`,
:func:`point_to_crop`); this module decides *when* and *how large* to crop and maps the
clicks.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from gpcis.clicks import Click
from gpcis.data.transforms import Box, crop_box_around, crop_resize, paste_back, point_to_crop

__all__ = ["ZoomConfig", "ZoomIn", "CropClick"]


@dataclass
class ZoomConfig:
    """Zoom-in settings (RITM's evaluation defaults; the box rule differs, see the module).

    Attributes:
        target_size: longer side of the resized crop in pixels.
        expansion: box side scale factor (1.4).
        min_crop_size: minimum box side in full-image pixels (capped at the image size).
        skip_clicks: no zoom while ``len(clicks) <= skip_clicks`` (the first click sees
            the whole image).
        size_divisor: the resized crop's sides are rounded to a multiple of this.
        whole_image_size: for the predictions that are not zoomed (the first
            ``skip_clicks`` clicks, or no positive click yet), the whole image is resized so
            its longer side is at most this many pixels (``None``: the image at its own
            size, RITM's behaviour). A model trained on downscaled images then sees the
            first click at a scale near its training scale; choose it on validation data
            (``benchmarks/zoom_sweep.py --whole-sizes``).
    """

    target_size: int = 400
    expansion: float = 1.4
    min_crop_size: int = 200
    skip_clicks: int = 1
    size_divisor: int = 1
    whole_image_size: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("target_size", "min_crop_size", "skip_clicks", "size_divisor", "whole_image_size"):
            v = getattr(self, name)
            if v is None and name == "whole_image_size":
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):  # numpy ints too
                raise ValueError(f"{name} must be an int, got {v!r}")
            setattr(self, name, int(v))
        if isinstance(self.expansion, bool) or not isinstance(self.expansion, numbers.Real):
            raise ValueError(f"expansion must be a number, got {self.expansion!r}")
        self.expansion = float(self.expansion)
        if not math.isfinite(self.expansion):
            raise ValueError(f"expansion must be finite, got {self.expansion}")
        if self.target_size > 8192 or (self.whole_image_size or 0) > 8192:
            raise ValueError(f"target_size and whole_image_size must be <= 8192 pixels, got {self.target_size}, "
                             f"{self.whole_image_size}")
        if self.target_size < 8:
            raise ValueError(f"target_size must be >= 8, got {self.target_size}")
        if self.expansion < 1.0:
            raise ValueError(f"expansion must be >= 1, got {self.expansion}")
        if self.min_crop_size < 1:
            raise ValueError(f"min_crop_size must be >= 1, got {self.min_crop_size}")
        if self.skip_clicks < 0:
            raise ValueError(f"skip_clicks must be >= 0, got {self.skip_clicks}")
        if self.size_divisor < 1:
            raise ValueError(f"size_divisor must be >= 1, got {self.size_divisor}")
        if self.whole_image_size is not None and self.whole_image_size < 8:
            raise ValueError(f"whole_image_size must be >= 8 or None, got {self.whole_image_size}")


@dataclass(frozen=True)
class CropClick:
    """A click in crop coordinates (sub-pixel, pixel-centre convention)."""

    row: float
    col: float
    positive: bool


class ZoomIn:
    """Target crop and its inverse for one prediction.

    Args:
        config: settings.
    """

    def __init__(self, config: Optional[ZoomConfig] = None) -> None:
        if config is not None and not isinstance(config, ZoomConfig):
            raise ValueError(f"zoom must be a ZoomConfig (or None for the defaults), got {type(config).__name__}")
        self.config = config or ZoomConfig()

    def box(
        self, prev_mask: Optional[np.ndarray], clicks: Sequence[Click], image_size: tuple[int, int]
    ) -> Optional[Box]:
        """The crop box for this prediction, or ``None`` for no zoom.

        Args:
            prev_mask: ``(H, W)`` bool previous mask (or ``None``).
            clicks: all clicks so far; the positive ones are framed.
            image_size: ``(H, W)``.
        """
        if len(clicks) <= self.config.skip_clicks:
            return None
        positives = [c for c in clicks if c.positive]
        has_mask = prev_mask is not None and bool(np.asarray(prev_mask).any())
        if not positives and not has_mask:
            return None
        return crop_box_around(
            np.asarray(prev_mask, dtype=bool) if prev_mask is not None else None,
            positives,
            image_size=image_size,
            expand=self.config.expansion,
            min_size=self.config.min_crop_size,
        )

    def whole_image_box(self, image_size: tuple[int, int]) -> Optional[Box]:
        """The whole image as a box when an unzoomed prediction is to be downscaled.

        Returns:
            ``Box(0, 0, H, W)`` if ``whole_image_size`` is set and the image's longer side
            exceeds it (resize it with ``target_size=whole_image_size``), else ``None``.
        """
        limit = self.config.whole_image_size
        h, w = image_size
        if limit is None or max(h, w) <= limit:
            return None
        return Box(0, 0, h, w)

    def crop_size(self, box: Box, target_size: Optional[int] = None) -> tuple[int, int]:
        """``(h, w)`` of the resized crop: longer side ``target_size`` (default: the
        config's), aspect ratio kept."""
        s = (target_size or self.config.target_size) / max(box.height, box.width)
        d = self.config.size_divisor
        h = max(d, int(round(box.height * s / d)) * d)
        w = max(d, int(round(box.width * s / d)) * d)
        return h, w

    def crop_image(self, image: np.ndarray, box: Box, target_size: Optional[int] = None) -> np.ndarray:
        """``(h, w, C)`` resized crop of an ``(H, W, C)`` image (bilinear)."""
        return crop_resize(image, box, self.crop_size(box, target_size), interpolation=cv2.INTER_LINEAR)

    def crop_map(self, values: np.ndarray, box: Box, target_size: Optional[int] = None) -> np.ndarray:
        """``(h, w)`` float32 resized crop of an ``(H, W)`` map (bilinear)."""
        return crop_resize(np.asarray(values, dtype=np.float32), box, self.crop_size(box, target_size))

    def crop_clicks(self, clicks: Sequence[Click], box: Box,
                    target_size: Optional[int] = None) -> list[CropClick]:
        """Clicks inside the box, mapped to crop coordinates (clicks outside are dropped)."""
        size = self.crop_size(box, target_size)
        out = []
        for c in clicks:
            if box.top <= c.row < box.bottom and box.left <= c.col < box.right:
                r, q = point_to_crop(c.row, c.col, box, size)
                r = min(max(r, 0.0), size[0] - 1.0)
                q = min(max(q, 0.0), size[1] - 1.0)
                out.append(CropClick(r, q, c.positive))
        return out

    def uncrop(self, crop: np.ndarray, box: Box, base: np.ndarray, clicks: Sequence[Click] = (),
               target_size: Optional[int] = None) -> np.ndarray:
        """Map an ``(h, w)`` crop-space map back into a copy of the full-image ``base`` ``(H, W)``.

        Each of ``clicks`` inside the box takes the value of the crop pixel the model read
        it at (:meth:`crop_clicks`, rounded as the model rounds): resizing back blends that
        pixel with unconditioned neighbours (at a 2x upscale every clicked pixel lies half
        way between two crop pixels), and a clicked pixel could lose its label.
        """
        out = paste_back(np.asarray(crop, dtype=np.float32), box, np.asarray(base, dtype=np.float32))
        inside = [c for c in clicks if box.top <= c.row < box.bottom and box.left <= c.col < box.right]
        for c, cc in zip(inside, self.crop_clicks(inside, box, target_size)):
            out[c.row, c.col] = crop[int(np.round(cc.row)), int(np.round(cc.col))]
        return out
