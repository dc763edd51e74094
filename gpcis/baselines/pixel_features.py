"""Hand-made per-pixel features for the training-free GP (``gp-pixel``).

The image is first resized so that its longer side is at most
:attr:`PixelFeatureConfig.max_side` (the GP's working resolution); every feature is
computed there. The features are grouped; each group gets its own kernel precision in
:class:`gpcis.baselines.gp_pixel.GPPixelConfig`:

- ``colour``: CIE Lab (L/100, a/100, b/100), at one or several Gaussian blur scales;
- ``gradient``: gradient magnitude of the (lightly blurred) lightness channel;
- ``position``: ``(row, col)`` divided by the working image's longer side;
- ``superpixel``: the mean Lab colour of the pixel's SLIC superpixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from gpcis.inference.base import check_image  # re-exported for the baselines

__all__ = ["PixelFeatureConfig", "PixelFeatures", "compute_pixel_features", "to_lab", "check_image", "segment_mean"]


@dataclass
class PixelFeatureConfig:
    """Which per-pixel features to compute, at which resolution.

    Attributes:
        max_side: the longer side of the GP's working resolution, in pixels (images
            that are smaller are not upsampled).
        colour_scales: Gaussian blur sigmas (working-resolution pixels) of the Lab
            colour features; ``0`` means the unblurred colour. Empty disables colour.
        gradient: add the gradient magnitude of the lightness.
        gradient_sigma: blur sigma applied to the lightness before the Sobel filter.
        position: add the normalised ``(row, col)`` position.
        superpixels: approximate number of SLIC superpixels whose mean Lab colour is a
            feature; ``0`` disables the group.
        slic_compactness: SLIC compactness (scikit-image, Lab space).
    """

    max_side: int = 256
    colour_scales: tuple[float, ...] = (0.0, 2.0, 5.0)
    gradient: bool = True
    gradient_sigma: float = 1.0
    position: bool = True
    superpixels: int = 300
    slic_compactness: float = 10.0

    def __post_init__(self) -> None:
        if self.max_side < 8:
            raise ValueError(f"max_side must be >= 8, got {self.max_side}")
        if any(s < 0 for s in self.colour_scales):
            raise ValueError(f"colour_scales must be >= 0, got {self.colour_scales}")
        if self.superpixels < 0:
            raise ValueError(f"superpixels must be >= 0, got {self.superpixels}")


@dataclass
class PixelFeatures:
    """Per-pixel features of one image at the working resolution.

    Attributes:
        features: ``(h, w, D)`` float32 feature image.
        groups: ``D`` group names (``colour``, ``gradient``, ``position``, ``superpixel``).
        lab: ``(h, w, 3)`` float32 Lab image (L in [0, 100], a/b in about [-128, 127]).
        image_size: ``(H, W)`` of the original image.
        superpixel_labels: ``(h, w)`` int64 SLIC labels (0..S-1), or ``None`` when the
            superpixel group is disabled.
    """

    features: np.ndarray
    groups: list[str] = field(default_factory=list)
    lab: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), np.float32))
    image_size: tuple[int, int] = (0, 0)
    superpixel_labels: Optional[np.ndarray] = None

    @property
    def size(self) -> tuple[int, int]:
        """``(h, w)``: the working resolution."""
        return int(self.features.shape[0]), int(self.features.shape[1])


def to_lab(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W, 3)`` float32 CIE Lab (L in [0, 100])."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def working_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The ``(h, w)`` with longer side ``min(max_side, max(H, W))`` and the same aspect."""
    s = min(1.0, max_side / max(height, width))
    return max(2, int(round(height * s))), max(2, int(round(width * s)))


def segment_mean(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Replace each pixel of ``values`` (``(h, w)`` or ``(h, w, C)``) by the mean over its segment.

    Args:
        values: per-pixel values.
        labels: ``(h, w)`` non-negative integer segment labels.
    """
    flat = labels.reshape(-1)
    count = np.maximum(np.bincount(flat), 1).astype(np.float64)
    v = values.reshape(flat.size, -1)
    means = np.stack([np.bincount(flat, weights=v[:, c]) / count for c in range(v.shape[1])], axis=-1)
    return means[labels].reshape(values.shape).astype(np.float32)


def _superpixels(lab: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    from skimage.segmentation import slic

    return slic(
        lab.astype(np.float64), n_segments=n_segments, compactness=compactness,
        start_label=0, convert2lab=False, channel_axis=-1,
    ).astype(np.int64)


def compute_pixel_features(image: np.ndarray, config: PixelFeatureConfig) -> PixelFeatures:
    """Compute the per-pixel feature image of ``image`` at the working resolution.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        config: which features, at which resolution.

    Returns:
        :class:`PixelFeatures` with ``features`` of shape ``(h, w, D)``.
    """
    check_image(image)
    height, width = image.shape[:2]
    h, w = working_size(height, width, config.max_side)
    small = image if (h, w) == (height, width) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    lab = to_lab(small)
    lab_n = lab / 100.0
    feats: list[np.ndarray] = []
    groups: list[str] = []
    for sigma in config.colour_scales:
        blurred = lab_n if sigma == 0 else cv2.GaussianBlur(lab_n, (0, 0), sigmaX=sigma, sigmaY=sigma)
        feats.append(blurred)
        groups += ["colour"] * 3
    if config.gradient:
        light = lab_n[..., 0]
        if config.gradient_sigma > 0:
            light = cv2.GaussianBlur(light, (0, 0), sigmaX=config.gradient_sigma)
        gx = cv2.Sobel(light, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(light, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        feats.append(np.sqrt(gx**2 + gy**2)[..., None])
        groups.append("gradient")
    if config.position:
        side = float(max(h, w))
        rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
        feats.append(np.stack([rows / side, cols / side], axis=-1))
        groups += ["position"] * 2
    sp_labels = None
    if config.superpixels > 0:
        sp_labels = _superpixels(lab, config.superpixels, config.slic_compactness)
        feats.append(segment_mean(lab, sp_labels) / 100.0)
        groups += ["superpixel"] * 3
    if not feats:
        raise ValueError("PixelFeatureConfig enables no feature group")
    features = np.concatenate(feats, axis=-1).astype(np.float32)
    return PixelFeatures(features=features, groups=groups, lab=lab.astype(np.float32), image_size=(height, width),
        superpixel_labels=sp_labels,
    )
