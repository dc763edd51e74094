"""Built-in sample images for the demo: a few photos shipped inside scikit-image, and one
procedural scene. Nothing is downloaded."""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

__all__ = ["SAMPLES", "list_samples", "load_sample", "shapes_image"]


def shapes_image(height: int = 320, width: int = 480, seed: int = 0) -> np.ndarray:
    """A procedural scene: three filled shapes on a smooth, noisy background.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        seed: seed of the noise generator (the result is a pure function of the arguments).

    Returns:
        ``(height, width, 3)`` uint8 RGB image.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = np.stack(
        [90 + 60 * xx / width, 110 + 40 * yy / height, 140 - 30 * xx / width], axis=-1
    )
    img = bg + rng.normal(0.0, 6.0, size=bg.shape)
    s = min(height, width)
    cv2.circle(img, (int(0.3 * width), int(0.45 * height)), int(0.22 * s), (230, 70, 40), -1)
    cv2.rectangle(
        img, (int(0.58 * width), int(0.18 * height)), (int(0.88 * width), int(0.55 * height)), (40, 180, 70), -1
    )
    tri = np.array(
        [[int(0.55 * width), int(0.92 * height)], [int(0.75 * width), int(0.62 * height)], [int(0.95 * width), int(0.92 * height)]],
        np.int32,
    )
    cv2.fillPoly(img, [tri], (240, 210, 40))
    img += rng.normal(0.0, 4.0, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3].astype(np.uint8))

    return load


#: sample name -> loader returning ``(H, W, 3)`` uint8 RGB (bundled with scikit-image).
SAMPLES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "coffee": _skimage("coffee"),
    "chelsea": _skimage("chelsea"),
    "rocket": _skimage("rocket"),
    "shapes": shapes_image,
}


def list_samples() -> list[str]:
    """Names accepted by :func:`load_sample`."""
    return list(SAMPLES)


def load_sample(name: str) -> np.ndarray:
    """Load a built-in sample image.

    Raises:
        ValueError: unknown ``name``.
    """
    if name not in SAMPLES:
        raise ValueError(f"sample: unknown sample image {name!r}; choose one of {', '.join(SAMPLES)}")
    return SAMPLES[name]()
