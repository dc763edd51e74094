"""Pictures the demo page shows: mask overlays, probability / uncertainty heat maps, and
the saved label PNG. All arrays are RGB(A) uint8; encoding goes through OpenCV / Pillow."""

from __future__ import annotations

import base64
import io
from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = [
    "PALETTE",
    "object_color",
    "mask_layer",
    "heatmap_layer",
    "encode_png",
    "encode_jpeg",
    "data_url",
    "label_png",
]

#: colours of objects 1, 2, ... (RGB); object k uses PALETTE[(k - 1) % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 160),
    (64, 160, 255),
    (255, 200, 0),
    (0, 220, 180),
    (180, 100, 255),
    (255, 120, 40),
    (120, 220, 40),
    (0, 90, 255),
)


def object_color(index: int) -> tuple[int, int, int]:
    """RGB colour of object ``index`` (1-based)."""
    if index < 1:
        raise ValueError(f"index must be >= 1, got {index}")
    return PALETTE[(index - 1) % len(PALETTE)]


def mask_layer(masks: Sequence[np.ndarray], colors: Sequence[tuple[int, int, int]], alpha: float = 0.5) -> np.ndarray:
    """A transparent layer with each mask filled in its colour and outlined opaquely.

    Later masks are drawn over earlier ones.

    Args:
        masks: ``(H, W)`` bool masks, at least one.
        colors: one RGB colour per mask.
        alpha: fill opacity in [0, 1].

    Returns:
        ``(H, W, 4)`` uint8 RGBA.
    """
    if not masks:
        raise ValueError("masks must not be empty")
    if len(colors) != len(masks):
        raise ValueError(f"need one colour per mask, got {len(colors)} for {len(masks)}")
    h, w = masks[0].shape
    out = np.zeros((h, w, 4), np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    a = int(round(255 * float(np.clip(alpha, 0.0, 1.0))))
    for m, col in zip(masks, colors):
        m = np.asarray(m, dtype=bool)
        if m.shape != (h, w):
            raise ValueError(f"all masks must be {h}x{w}, got {m.shape}")
        out[m] = (*col, a)
        edge = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_GRADIENT, kernel) > 0
        out[edge & m] = (*col, 255)
    return out


def heatmap_layer(values: np.ndarray, vmax: Optional[float] = None, alpha: float = 0.6, colormap: int = cv2.COLORMAP_VIRIDIS) -> np.ndarray:
    """Colour-map an ``(H, W)`` array into a semi-transparent RGBA layer.

    Args:
        values: ``(H, W)`` non-negative values.
        vmax: value mapped to the top of the colour map (default: the max, or 1 if 0).
        alpha: opacity in [0, 1].
        colormap: an OpenCV colour map id.

    Returns:
        ``(H, W, 4)`` uint8 RGBA.
    """
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"values must be (H, W), got shape {v.shape}")
    top = float(v.max()) if vmax is None else float(vmax)
    if not np.isfinite(top) or top <= 0:
        top = 1.0
    grey = np.clip(np.nan_to_num(v / top) * 255.0, 0, 255).round().astype(np.uint8)
    bgr = cv2.applyColorMap(grey, colormap)
    rgba = np.empty(v.shape + (4,), np.uint8)
    rgba[..., :3] = bgr[..., ::-1]
    rgba[..., 3] = int(round(255 * float(np.clip(alpha, 0.0, 1.0))))
    return rgba


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA uint8 array."""
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    elif image.ndim != 2:
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    """JPEG bytes of an ``(H, W, 3)`` uint8 RGB image."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def data_url(data: bytes, mime: str = "image/png") -> str:
    """A ``data:`` URL of encoded bytes."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def label_png(labels: np.ndarray) -> bytes:
    """An indexed (palette) PNG of a label map: pixel value = object index, 0 = background.

    The values stay machine-readable object ids; the palette shows them in the demo's
    colours (background black).

    Args:
        labels: ``(H, W)`` integer array with values in ``0..255``.
    """
    from PIL import Image

    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
        raise ValueError("labels must be in 0..255 (at most 255 objects)")
    img = Image.fromarray(np.ascontiguousarray(lab.astype(np.uint8)))  # mode "L"; putpalette makes it "P"
    palette = [0, 0, 0]
    for k in range(1, 256):
        palette.extend(object_color(k))
    img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
