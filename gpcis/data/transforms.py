"""Augmentation (OpenCV/NumPy) and the FocalClick target crop with its inverse.

Augmentation follows RITM's training pipeline: uniform random scale, horizontal flip,
pad-if-needed + random crop (320x480 or 256x256), brightness/contrast jitter and an RGB
shift. Every random decision is drawn from an explicit ``numpy.random.Generator``.

Target crop (FocalClick, Chen et al. CVPR 2022): the box around the previous mask and
the new click, expanded 1.4x about its centre, at least ``min_size`` on each side, moved
inside the image, and resized to 256x256. :func:`paste_back` maps a crop-space result
back into the full image; :func:`point_to_crop` / :func:`point_from_crop` map pixel
coordinates (pixel-centre convention, the same as ``cv2.resize``).

Boxes are ``(top, left, bottom, right)`` integer pixel bounds, ``bottom``/``right``
exclusive, so ``array[top:bottom, left:right]`` is the box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import cv2
import numpy as np

from gpcis.clicks import Click
from gpcis.data.datasets import Sample

__all__ = [
    "AugmentConfig",
    "augment",
    "resize_sample",
    "random_scale",
    "random_crop",
    "hflip",
    "brightness_contrast",
    "color_jitter",
    "shift_rgb",
    "Box",
    "expand_box",
    "crop_box_around",
    "crop_resize",
    "paste_back",
    "point_to_crop",
    "point_from_crop",
]


# --------------------------------------------------------------------------- augmentation
@dataclass
class AugmentConfig:
    """Training augmentation settings (RITM defaults).

    Attributes:
        crop_size: ``(height, width)`` of the output crop (RITM: 320x480; also 256x256).
        scale_range: uniform random rescale factor range.
        flip_prob: probability of a horizontal flip.
        brightness: range of the additive brightness change, a fraction of 255 (RITM's
            ``RandomBrightnessContrast(brightness_limit=(-0.25, 0.25))``; one number ``v``
            is ``(-v, v)``, as albumentations reads it).
        contrast: range of the contrast change, ``x * (1 + c)`` (RITM's
            ``contrast_limit=(-0.15, 0.4)``).
        rgb_shift: max absolute per-channel shift (0..255 scale; RITM's ``RGBShift(10)``).
        jitter_prob: probability of each of the two colour changes (RITM: 0.75).
        object_prob: probability that the crop is placed to contain a target pixel.
    """

    crop_size: tuple[int, int] = (320, 480)
    scale_range: tuple[float, float] = (0.75, 1.40)
    flip_prob: float = 0.5
    brightness: tuple[float, float] = (-0.25, 0.25)
    contrast: tuple[float, float] = (-0.15, 0.4)
    rgb_shift: float = 10.0
    jitter_prob: float = 0.75
    object_prob: float = 0.95

    def __post_init__(self) -> None:
        self.crop_size = (int(self.crop_size[0]), int(self.crop_size[1]))
        if min(self.crop_size) < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {self.scale_range}")
        for name in ("brightness", "contrast"):
            lo, hi = _as_range(getattr(self, name), name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi and (name == "brightness" or lo > -1)):
                raise ValueError(f"{name} must be a range (lo, hi) with lo <= hi"
                                 f"{' and lo > -1' if name == 'contrast' else ''}, got {getattr(self, name)}")
            setattr(self, name, (lo, hi))
        if not (math.isfinite(self.rgb_shift) and self.rgb_shift >= 0):
            raise ValueError(f"rgb_shift must be >= 0, got {self.rgb_shift}")
        for name in ("flip_prob", "object_prob", "jitter_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def _as_range(value, name: str) -> tuple[float, float]:
    """``(lo, hi)`` from a pair, or ``(-v, v)`` from one number ``v >= 0``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value >= 0:
            raise ValueError(f"{name} as one number must be >= 0 (the range (-v, v)), got {value}")
        return -float(value), float(value)
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a range (lo, hi) or one number v for (-v, v), got {value!r}") from None
    return lo, hi


def _map_masks(sample: Sample, image: np.ndarray, fn, ignore_fn=None) -> Sample:
    """A new sample with ``image`` and ``fn`` applied to every mask (``ignore_fn`` to ignore)."""
    return replace(sample, image=image, masks=[fn(m) for m in sample.masks], others=[fn(m) for m in sample.others],
                   ignore=(ignore_fn or fn)(sample.ignore))


def resize_sample(sample: Sample, height: int, width: int) -> Sample:
    """Resize image (bilinear), masks and ignore (nearest) to ``height x width``."""
    image = cv2.resize(sample.image, (width, height), interpolation=cv2.INTER_LINEAR)
    near = lambda m: cv2.resize(m.astype(np.uint8), (width, height),  # noqa: E731
                                interpolation=cv2.INTER_NEAREST).astype(bool)
    return _map_masks(sample, image, near)


def random_scale(sample: Sample, rng: np.random.Generator, scale_range: tuple[float, float]) -> Sample:
    """Rescale the image (bilinear) and masks (nearest) by ``s ~ U(scale_range)``."""
    s = float(rng.uniform(*scale_range))
    h, w = sample.image.shape[:2]
    return resize_sample(sample, max(1, int(round(h * s))), max(1, int(round(w * s))))


def hflip(sample: Sample) -> Sample:
    """Mirror the sample left-right."""
    return _map_masks(sample, sample.image[:, ::-1].copy(), lambda m: m[:, ::-1].copy())


def random_crop(sample: Sample, rng: np.random.Generator, size: tuple[int, int], object_prob: float = 0.95
                ) -> Sample:
    """Crop to ``size = (h, w)``, zero-padding first where the image is smaller, centred as
    albumentations' ``PadIfNeeded`` (RITM): ``floor(p / 2)`` rows above, the rest below
    (columns likewise).

    Padded pixels are marked ignored. With probability ``object_prob`` (and a non-empty
    target) the crop window is chosen to contain a random target pixel.
    """
    ch, cw = size
    h, w = sample.image.shape[:2]
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:
        pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        image = cv2.copyMakeBorder(sample.image, *pad[0], *pad[1], cv2.BORDER_CONSTANT, value=(0, 0, 0))
        sample = _map_masks(sample, image, lambda m: np.pad(m, pad),
                            lambda m: np.pad(m, pad, constant_values=True))
        h, w = h + ph, w + pw
    pts = np.argwhere(sample.masks[0]) if rng.random() < object_prob else np.zeros((0, 2))
    if len(pts):
        r, c = pts[int(rng.integers(0, len(pts)))]
        top = int(rng.integers(max(0, r - ch + 1), min(r, h - ch) + 1))
        left = int(rng.integers(max(0, c - cw + 1), min(c, w - cw) + 1))
    else:
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
    sl = (slice(top, top + ch), slice(left, left + cw))
    return _map_masks(sample, sample.image[sl].copy(), lambda m: m[sl].copy())


def brightness_contrast(image: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """``x alpha + 255 beta``, clipped to [0, 255] and truncated to uint8, by a lookup table
    (albumentations' ``RandomBrightnessContrast`` with ``brightness_by_max``, as RITM)."""
    lut = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta * 255.0)
    return cv2.LUT(image, np.clip(lut, 0, 255).astype(np.uint8))


def shift_rgb(image: np.ndarray, shift: Sequence[float]) -> np.ndarray:
    """``x_c + shift_c`` per channel, clipped to [0, 255] and truncated (albumentations'
    ``RGBShift`` on uint8)."""
    out = np.empty_like(image)
    for c in range(3):
        lut = np.arange(256, dtype=np.float32) + np.float32(shift[c])
        out[..., c] = cv2.LUT(image[..., c], np.clip(lut, 0, 255).astype(np.uint8))
    return out


def color_jitter(image: np.ndarray, rng: np.random.Generator,
                 brightness: tuple[float, float] | float = (-0.25, 0.25),
                 contrast: tuple[float, float] | float = (-0.15, 0.4),
                 rgb_shift: float = 10.0, prob: float = 0.75) -> np.ndarray:
    """RITM's colour augmentation of an ``(H, W, 3)`` uint8 image: with probability ``prob``
    :func:`brightness_contrast` with ``alpha = 1 + U(contrast)``, ``beta = U(brightness)``,
    then with probability ``prob`` :func:`shift_rgb` by ``U(-rgb_shift, rgb_shift)`` per
    channel. A range given as one number ``v`` is ``(-v, v)``."""
    brightness, contrast = _as_range(brightness, "brightness"), _as_range(contrast, "contrast")
    out = image
    if rng.random() < prob:
        alpha = 1.0 + float(rng.uniform(*contrast))
        beta = float(rng.uniform(*brightness))
        out = brightness_contrast(out, alpha, beta)
    if rng.random() < prob:
        out = shift_rgb(out, rng.uniform(-rgb_shift, rgb_shift, size=3))
    return out if out is not image else image.copy()


def augment(sample: Sample, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> Sample:
    """Apply scale -> flip -> pad/crop -> colour jitter; returns a new :class:`Sample`.

    Shapes: image ``(h, w, 3)`` uint8 and masks ``(h, w)`` with ``(h, w) = config.crop_size``.
    """
    out = random_scale(sample, rng, config.scale_range)
    if rng.random() < config.flip_prob:
        out = hflip(out)
    out = random_crop(out, rng, config.crop_size, config.object_prob)
    image = color_jitter(out.image, rng, config.brightness, config.contrast, config.rgb_shift, config.jitter_prob)
    return replace(out, image=image)


# --------------------------------------------------------------------------- target crop
class Box(NamedTuple):
    """Integer pixel box; ``bottom`` and ``right`` are exclusive."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        """Rows of the box."""
        return self.bottom - self.top

    @property
    def width(self) -> int:
        """Columns of the box."""
        return self.right - self.left


def expand_box(box: Box | Sequence[int], image_size: tuple[int, int], expand: float = 1.4,
               min_size: int = 40) -> Box:
    """Expand a box about its centre, enforce a minimum size and move it inside the image.

    Args:
        box: ``(top, left, bottom, right)``, exclusive ends.
        image_size: ``(H, W)``.
        expand: scale factor of each side (FocalClick: 1.4).
        min_size: minimum side length in pixels (capped at the image size).

    Returns:
        A :class:`Box` inside ``[0, H) x [0, W)`` of side
        ``min(max(ceil(expand * side), min_size), image side)`` whose centre is the
        original centre unless the box had to be moved inside the image.
    """
    H, W = int(image_size[0]), int(image_size[1])
    if H < 1 or W < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if expand <= 0:
        raise ValueError(f"expand must be positive, got {expand}")
    top, left, bottom, right = (int(v) for v in box)
    if bottom <= top or right <= left:
        raise ValueError(f"box must have bottom > top and right > left, got {tuple(box)}")
    out = []
    for lo, hi, limit in ((top, bottom, H), (left, right, W)):
        side = min(max(int(np.ceil((hi - lo) * expand - 1e-9)), int(min_size)), limit)
        centre = (lo + hi) / 2.0
        start = int(np.floor(centre - side / 2.0 + 1e-9))
        start = min(max(start, 0), limit - side)
        out.append((start, start + side))
    return Box(out[0][0], out[1][0], out[0][1], out[1][1])


def crop_box_around(mask: np.ndarray | None, clicks: Sequence[Click], image_size: tuple[int, int] | None = None,
                    expand: float = 1.4, min_size: int = 40) -> Box:
    """The FocalClick target-crop box: around the previous mask and the clicks, expanded.

    Args:
        mask: ``(H, W)`` bool previous mask, or ``None`` / empty (clicks only).
        clicks: the clicks to include (usually the new click); may be empty when the
            mask is non-empty.
        image_size: ``(H, W)``; required when ``mask`` is ``None``.
        expand: side scale factor (1.4).
        min_size: minimum side length in pixels.

    Returns:
        The :class:`Box` (see :func:`expand_box`).
    """
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
        image_size = mask.shape
    if image_size is None:
        raise ValueError("image_size is required when mask is None")
    rows, cols = [], []
    if mask is not None and mask.any():
        r = np.flatnonzero(mask.any(axis=1))
        c = np.flatnonzero(mask.any(axis=0))
        rows += [int(r[0]), int(r[-1])]
        cols += [int(c[0]), int(c[-1])]
    for k in clicks:
        if not (0 <= k.row < image_size[0] and 0 <= k.col < image_size[1]):
            raise ValueError(f"click {k} is outside the image of size {tuple(image_size)}")
        rows.append(int(k.row))
        cols.append(int(k.col))
    if not rows:
        raise ValueError("crop_box_around needs a non-empty mask or at least one click")
    box = Box(min(rows), min(cols), max(rows) + 1, max(cols) + 1)
    return expand_box(box, image_size, expand, min_size)


def crop_resize(array: np.ndarray, box: Box, size: tuple[int, int] = (256, 256),
                interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Crop ``array[box]`` (``(H, W)`` or ``(H, W, C)``) and resize it to ``size = (h, w)``.

    Bool arrays are resized with nearest-neighbour and returned as bool.
    """
    crop = array[box.top:box.bottom, box.left:box.right]
    if crop.dtype == bool:
        return cv2.resize(crop.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(crop, (size[1], size[0]), interpolation=interpolation)


def paste_back(crop: np.ndarray, box: Box, base: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Inverse of :func:`crop_resize`: resize ``crop`` to the box and write it into a copy of ``base``.

    Args:
        crop: ``(h, w)`` or ``(h, w, C)`` result in crop space (e.g. probabilities).
        box: the box the crop was taken from.
        base: ``(H, W[, C])`` full-image array supplying the values outside the box
            (e.g. the previous probability map).

    Returns:
        A new array shaped like ``base``.
    """
    if box.bottom > base.shape[0] or box.right > base.shape[1] or box.top < 0 or box.left < 0:
        raise ValueError(f"box {tuple(box)} does not fit in base of shape {base.shape[:2]}")
    out = base.copy()
    if crop.dtype == bool:
        region = cv2.resize(crop.astype(np.uint8), (box.width, box.height),
                            interpolation=cv2.INTER_NEAREST).astype(bool)
    else:
        region = cv2.resize(crop, (box.width, box.height), interpolation=interpolation)
    out[box.top:box.bottom, box.left:box.right] = region.astype(out.dtype, copy=False)
    return out


def point_to_crop(row: float, col: float, box: Box, size: tuple[int, int] = (256, 256)) -> tuple[float, float]:
    """Map a full-image pixel ``(row, col)`` into crop coordinates (pixel-centre convention)."""
    sy, sx = size[0] / box.height, size[1] / box.width
    return (row - box.top + 0.5) * sy - 0.5, (col - box.left + 0.5) * sx - 0.5


def point_from_crop(row: float, col: float, box: Box, size: tuple[int, int] = (256, 256)) -> tuple[float, float]:
    """Inverse of :func:`point_to_crop`."""
    sy, sx = size[0] / box.height, size[1] / box.width
    return (row + 0.5) / sy - 0.5 + box.top, (col + 0.5) / sx - 0.5 + box.left
