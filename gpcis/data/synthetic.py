"""A procedural data set: textured objects on textured backgrounds, with exact masks.

It needs no download, so it is the built-in default for training examples and tests.
Sample ``i`` of ``SyntheticDataset(seed=s)`` is a pure function of ``(s, i)`` and the
configuration: it is generated on demand from ``numpy.random.default_rng([s, i])``.

Each image has a smooth multi-scale noise background blended between two random colours
(optionally with stripes), and ``1..max_objects`` objects (ellipses, polygons, blobs),
each filled with its own noise texture; later objects occlude earlier ones and the masks
are the exact visible regions. ``masks == [target]`` (a randomly chosen object with at
least ``min_area`` visible pixels), ``others`` the other objects. ``ignore`` is all
``False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gpcis.data.datasets import Sample

__all__ = ["SyntheticConfig", "SyntheticDataset", "make_synthetic_sample"]


@dataclass
class SyntheticConfig:
    """Configuration of :class:`SyntheticDataset`.

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        max_objects: at most this many objects per image (at least 1).
        min_area: minimum visible area of the target, as a fraction of the image.
        noise: standard deviation of the per-pixel Gaussian noise (0..255 scale).
    """

    height: int = 128
    width: int = 128
    max_objects: int = 3
    min_area: float = 0.01
    noise: float = 6.0

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"height and width must be >= 16, got {self.height}x{self.width}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if not 0 <= self.min_area < 0.5:
            raise ValueError(f"min_area must be in [0, 0.5), got {self.min_area}")


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scales: int = 3) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1]: a sum of upsampled random grids (value noise)."""
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for s in range(scales):
        cells = 2 ** (s + 1) + int(rng.integers(0, 3))
        grid = rng.random((cells, cells)).astype(np.float32)
        out += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) / (s + 1)
        total += 1.0 / (s + 1)
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo + 1e-6)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB texture in [0, 255] between two random colours."""
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    c2 = rng.uniform(0, 255, 3).astype(np.float32)
    t = _smooth_noise(rng, h, w)
    if rng.random() < 0.4:  # stripes
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 24)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        t = 0.5 * t + 0.5 * stripes
    return c1 + t[..., None] * (c2 - c1)


def _shape_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random ellipse, polygon or blob as an ``(H, W)`` bool mask."""
    m = np.zeros((h, w), np.uint8)
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    size = rng.uniform(0.1, 0.3) * min(h, w)
    kind = rng.integers(0, 3)
    if kind == 0:
        axes = (max(2, int(size * rng.uniform(0.6, 1.4))), max(2, int(size * rng.uniform(0.6, 1.4))))
        cv2.ellipse(m, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = size * rng.uniform(0.5, 1.4, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    else:
        blob = _smooth_noise(rng, h, w, scales=2)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        falloff = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (1.2 * size) ** 2))
        field = blob * falloff
        m = (field > 0.5 * field.max()).astype(np.uint8)
    return m.astype(bool)


def make_synthetic_sample(seed: int, index: int, config: SyntheticConfig = SyntheticConfig()) -> Sample:
    """Generate sample ``index`` of the synthetic data set with ``seed`` (deterministic).

    Returns:
        A :class:`Sample` with a ``(H, W, 3)`` uint8 image, exact masks and an all-False
        ignore mask.
    """
    h, w = config.height, config.width
    min_px = max(1, int(config.min_area * h * w))
    for attempt in range(100):
        rng = np.random.default_rng([int(seed), int(index), attempt])
        image = _texture(rng, h, w)
        n = int(rng.integers(1, config.max_objects + 1))
        label = np.zeros((h, w), np.int32)  # 0 = background, k = object k
        for k in range(1, n + 1):
            shape = _shape_mask(rng, h, w)
            if not shape.any():
                continue
            tex = _texture(rng, h, w)
            image[shape] = tex[shape]
            label[shape] = k
        masks = [label == k for k in range(1, n + 1)]
        masks = [m for m in masks if m.any()]
        big = [i for i, m in enumerate(masks) if m.sum() >= min_px]
        if not big:
            continue
        t = big[int(rng.integers(0, len(big)))]
        others = [m for i, m in enumerate(masks) if i != t]
        image = image + rng.normal(0, config.noise, image.shape)
        image = np.clip(image, 0, 255).astype(np.uint8)
        return Sample(image, [masks[t]], np.zeros((h, w), bool), f"synthetic_{seed}_{index}", others=others)
    raise RuntimeError(f"could not generate a synthetic sample with a target of >= {min_px} px")  # pragma: no cover


class SyntheticDataset:
    """A procedural data set of ``num_samples`` samples (see the module docstring).

    Args:
        num_samples: the length.
        config: image size and content options.
        seed: data set seed; sample ``i`` depends only on ``(seed, i, config)``.
    """

    name = "synthetic"

    def __init__(self, num_samples: int = 1000, config: SyntheticConfig | None = None, seed: int = 0) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)
        self.config = config or SyntheticConfig()
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return make_synthetic_sample(self.seed, index, self.config)
