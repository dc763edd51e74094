"""The interface every interactive segmentation method implements (models and baselines)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from gpcis.clicks import Click

__all__ = ["PredictionResult", "InteractiveSegmenter", "check_image"]


@dataclass
class PredictionResult:
    """Output of one prediction, all arrays at the image's resolution.

    Attributes:
        mask: ``(H, W)`` bool, the segmentation (``prob > threshold``).
        prob: ``(H, W)`` float32 foreground probability in [0, 1].
        std: ``(H, W)`` float32 posterior standard deviation of the latent function
            (GP methods only), else ``None``.
    """

    mask: np.ndarray
    prob: np.ndarray
    std: Optional[np.ndarray] = None


@runtime_checkable
class InteractiveSegmenter(Protocol):
    """Anything that segments one image from clicks.

    ``set_image`` takes an ``(H, W, 3)`` uint8 RGB image and caches what it can;
    ``predict`` takes every click so far (in order, :class:`gpcis.Click`, row/col
    convention) and the previous mask, and returns a :class:`PredictionResult`.
    """

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(
        self, clicks: Sequence[Click], prev_mask: Optional[np.ndarray] = None
    ) -> PredictionResult: ...


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate an ``(H, W, 3)`` uint8 RGB image; ``ValueError`` naming ``name`` otherwise.

    Returns:
        the same array.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3) (RGB), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 RGB, got dtype {image.dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"{name} is too small: {image.shape} (at least 2x2 pixels)")
    return image
