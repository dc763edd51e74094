"""``gpcis segment``: one-shot segmentation of one image from clicks given on the command line.

Also home of the helpers every front end shares (``gpcis segment`` and ``gpcis demo``):
the ``--method | --checkpoint | --device`` options and the factory they describe
(:func:`make_method_factory`), and image decoding with clear errors (:func:`decode_image`,
:func:`read_image`).

Without ``--method`` and ``--checkpoint`` the front ends use the released model shipped
with the package when its weights are installed (:func:`gpcis.models.default_released_checkpoint`),
else the training-free ``gp-pixel``; set ``GPCIS_NO_RELEASED=1`` to force ``gp-pixel``.

Example::

    gpcis segment photo.jpg --click 120,200,+ --click 40,30,- --out mask.png --overlay overlay.png
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

from gpcis.atomic import atomic_write_bytes
from gpcis.clicks import Click, check_clicks_in_image
from gpcis.inference.base import InteractiveSegmenter, PredictionResult

__all__ = [
    "DEFAULT_METHOD",
    "ImageTooLargeError",
    "MethodFactory",
    "add_method_arguments",
    "add_parser",
    "decode_image",
    "make_method_factory",
    "method_factory_from_args",
    "parse_click",
    "read_image",
    "render_overlay",
    "run_segment",
    "write_png",
]

#: The training-free method used when no released weights are installed (or with
#: ``GPCIS_NO_RELEASED=1``) and neither ``--method`` nor ``--checkpoint`` is given.
DEFAULT_METHOD = "gp-pixel"
#: Images with more pixels than this are refused (decompression-bomb guard), 100 MP.
DEFAULT_MAX_PIXELS = 100_000_000

MethodFactory = Callable[[], InteractiveSegmenter]


class ImageTooLargeError(ValueError):
    """An image has more pixels than the configured limit."""


# --------------------------------------------------------------------------- images
def decode_image(data: bytes, source: str = "image", max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an encoded image (PNG, JPEG, BMP, TIFF, WebP, ...) into RGB uint8.

    The EXIF orientation of photos is applied; grey, palette, 16-bit and RGBA images are
    converted to 8-bit RGB (alpha dropped). The size is checked from the header before
    the pixels are decoded.

    Args:
        data: the file's bytes.
        source: a name for error messages (file name, ``"upload"``).
        max_pixels: refuse images with more pixels (``None``: no limit).

    Returns:
        ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ValueError: ``data`` is empty or not a readable image.
        ImageTooLargeError: the image has more than ``max_pixels`` pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ValueError(f"{source}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageTooLargeError(
                    f"{source}: the image is too large ({w}x{h} = {w * h / 1e6:.1f} MP; "
                    f"the limit is {max_pixels / 1e6:.1f} MP); resize it first"
                )
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                hi = max(float(arr.max()), 1.0)
                grey = np.round(arr * (255.0 / hi)).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
            rgb = np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{source}: the image is too large ({err})") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{source}: not a readable image ({type(err).__name__}: {err})") from err
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"{source}: decoded to an unexpected array of shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def read_image(path: str | os.PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB.

    Raises:
        ValueError: the file does not exist, is a directory, or is not a readable image.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"image file not found: {p}")
    if not p.is_file():
        raise ValueError(f"image path is not a file: {p}")
    return decode_image(p.read_bytes(), source=str(p), max_pixels=max_pixels)


def write_png(path: str | os.PathLike, image: np.ndarray, what: str = "--out") -> Path:
    """Write an ``(H, W)`` or ``(H, W, 3)`` RGB uint8 array as PNG, atomically.

    The file is written beside the target under a temporary name and renamed into place.

    Raises:
        ValueError: the folder does not exist, or the name does not end in ``.png``.
    """
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise ValueError(f"{what}: {p} must end in .png")
    if not p.parent.is_dir():
        raise ValueError(f"{what}: folder {p.parent} does not exist")
    arr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:  # pragma: no cover - cv2 only fails on unsupported dtypes
        raise ValueError(f"{what}: could not encode a {image.dtype} array of shape {image.shape} as PNG")
    return atomic_write_bytes(p, buf.tobytes())


def render_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    clicks: Sequence[Click] = (),
    color: tuple[int, int, int] = (255, 64, 160),
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend a mask onto an image and draw the clicks (green = positive, red = negative).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool.
        clicks: clicks to draw as filled dots with a white ring.
        color: RGB fill colour of the mask.
        alpha: opacity of the fill.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    out = image.astype(np.float32)
    m = mask.astype(bool)
    out[m] = (1.0 - alpha) * out[m] + alpha * np.asarray(color, np.float32)
    contour = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[contour] = color
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    radius = max(3, round(0.008 * max(image.shape[:2])))
    for c in clicks:
        fill = (0, 200, 0) if c.positive else (230, 0, 0)
        cv2.circle(out, (int(c.col), int(c.row)), radius + 1, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, (int(c.col), int(c.row)), radius, fill, -1, cv2.LINE_AA)
    return out


# --------------------------------------------------------------------------- methods
def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--method NAME | --checkpoint PATH``, ``--model NAME`` and ``--device`` to a parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--method",
        default=None,
        help=(
            f"training-free method from gpcis.baselines, e.g. {DEFAULT_METHOD}, grabcut "
            "(default without --method and --checkpoint: the released gpcis model when its weights "
            f"are installed, else {DEFAULT_METHOD}; GPCIS_NO_RELEASED=1 forces {DEFAULT_METHOD})"
        ),
    )
    group.add_argument(
        "--checkpoint",
        default=None,
        help="a trained gpcis checkpoint (.pt), instead of the released model or a --method",
    )
    parser.add_argument(
        "--model", default=None, help="model name for --checkpoint (default: the one stored in it)"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="torch device of a model (--checkpoint or the released model), e.g. cpu, cuda:0",
    )
    parser.add_argument(
        "--refine",
        action="store_true",
        help="post-process a model's mask with GrabCut seeded from it (edge-aware; gp-pixel's "
        "refinement, about 0.3-0.4 s more per click for a 640x480 image on a CPU core)",
    )
    parser.add_argument(
        "--flip",
        action="store_true",
        help="test-time horizontal flip for a model: the mirrored input is predicted too and the two "
        "averaged (RITM's with_flip; twice the model's work)",
    )


def make_method_factory(
    method: Optional[str] = None,
    checkpoint: Optional[str | os.PathLike] = None,
    model: Optional[str] = None,
    device: Optional[str] = None,
    refine: bool = False,
    flip: bool = False,
) -> tuple[MethodFactory, str]:
    """Build a factory of fresh :class:`InteractiveSegmenter` instances.

    ``checkpoint`` gives ``gpcis.inference.predictor.Predictor`` over
    ``gpcis.models.create_model(checkpoint=...)`` (the model is loaded once, on the first
    call, and shared by every predictor made); ``method`` gives
    ``gpcis.baselines.create_method(method)``. With neither, the default is the released
    model when its weights are installed (:func:`gpcis.models.default_released_checkpoint`,
    loaded like ``checkpoint``), else :data:`DEFAULT_METHOD` (``"gp-pixel"``, training-free);
    the environment variable ``GPCIS_NO_RELEASED=1`` forces the latter. Nothing heavy
    happens here: errors of loading appear when the factory is called.

    Args:
        method: a name from ``gpcis.baselines.list_methods()``.
        checkpoint: path of a trained checkpoint (exclusive with ``method``).
        model: optional model name passed to ``create_model`` with ``checkpoint``.
        device: torch device of the predictor (a model only: ``checkpoint`` or the
            released default).
        refine: post-process a model's decision with
            ``gpcis.baselines.refine.GrabCutRefineConfig()`` (a model only).
        flip: the predictor's test-time flip (``Predictor(flip=True)``; a model only).

    Returns:
        ``(factory, description)``, the description for messages (``"gp-pixel"``,
        ``"checkpoint run/best.pt"``, ``"released model gpcis_efflite0 (.../gpcis_efflite0_coco.pt)"``).

    Raises:
        ValueError: both ``method`` and ``checkpoint`` given, an unknown ``method``,
            ``checkpoint`` missing, ``model`` given without ``checkpoint``, ``device`` / ``refine`` / ``flip`` given
            when the method is a training-free baseline, or a device that is not there.
    """
    if method is not None and checkpoint is not None:
        raise ValueError("give either --method or --checkpoint, not both")

    def check_device() -> None:  # for a model: now, not when the first image is opened
        if device is not None:
            from gpcis.devices import resolve_device

            resolve_device(device)

    if checkpoint is None:
        if model is not None:
            raise ValueError("--model only applies with --checkpoint")
        if method is None:
            from gpcis.models.released import default_released_model, released_checkpoint

            released = default_released_model()  # None without weights or with GPCIS_NO_RELEASED=1
            if released is not None:
                path = released_checkpoint(released)
                label = f"released model {released} ({path})"
                check_device()
                return _checkpoint_factory(path, released, device, label, refine, flip), label
        if device is not None or refine or flip:
            raise ValueError(
                "--device, --refine and --flip only apply to a model (--checkpoint, or the released model when its "
                "weights are installed); the training-free baselines run on the CPU (gp-pixel refines itself)"
            )
        name = method or DEFAULT_METHOD
        from gpcis.baselines import list_methods

        if name not in list_methods():  # now, not when the first image is opened (the demo served on)
            raise ValueError(f"--method {name!r} is not a method; available: {', '.join(list_methods())}")

        def baseline_factory() -> InteractiveSegmenter:
            try:
                from gpcis.baselines import create_method
            except ImportError as err:  # pragma: no cover - the package always has baselines
                raise ValueError(f"--method {name}: gpcis.baselines is not available ({err})") from err
            try:
                return create_method(name)
            except (KeyError, ValueError) as err:
                raise ValueError(f"--method {name}: {err}") from err

        return baseline_factory, name

    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"--checkpoint: file not found: {path}")
    check_device()
    return _checkpoint_factory(path, model, device, f"--checkpoint {path}", refine, flip), f"checkpoint {path}"


def _checkpoint_factory(
    path: Path, model: Optional[str], device: Optional[str], label: str, refine: bool = False, flip: bool = False
) -> MethodFactory:
    """Predictors over ``create_model(model, checkpoint=path)``, the model loaded once, lazily.

    ``label`` starts the message of a failure to load.
    """
    lock = threading.Lock()
    cache: dict[str, Any] = {}

    def checkpoint_factory() -> InteractiveSegmenter:
        with lock:
            if "model" not in cache:
                try:
                    from gpcis.models import create_model

                    kwargs: dict[str, Any] = {"checkpoint": str(path)}
                    cache["model"] = create_model(model, **kwargs) if model else create_model(**kwargs)
                except Exception as err:  # any failure to load is reported the same way
                    raise ValueError(
                        f"{label}: could not load the model ({type(err).__name__}: {err})"
                    ) from err
        from gpcis.baselines.refine import GrabCutRefineConfig
        from gpcis.inference.predictor import Predictor

        return Predictor(cache["model"], device=device, refine=GrabCutRefineConfig() if refine else None, flip=flip)

    return checkpoint_factory


def method_factory_from_args(args: argparse.Namespace) -> tuple[MethodFactory, str]:
    """:func:`make_method_factory` from the options of :func:`add_method_arguments`."""
    return make_method_factory(
        method=args.method, checkpoint=args.checkpoint, model=args.model, device=args.device,
        refine=getattr(args, "refine", False), flip=getattr(args, "flip", False),
    )


# --------------------------------------------------------------------------- clicks
def parse_click(text: str) -> Click:
    """Parse ``ROW,COL,+`` (positive) or ``ROW,COL,-`` (negative) into a :class:`Click`.

    Raises:
        argparse.ArgumentTypeError: malformed text (argparse prints it as a usage error).
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or parts[2] not in ("+", "-"):
        raise argparse.ArgumentTypeError(f"--click {text!r}: expected ROW,COL,+ or ROW,COL,- (e.g. 120,200,+)")
    try:
        row, col = int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"--click {text!r}: ROW and COL must be integers") from None
    return Click(row=row, col=col, positive=parts[2] == "+")


# --------------------------------------------------------------------------- command
def run_segment(
    image_path: str | os.PathLike,
    clicks: Sequence[Click],
    factory: MethodFactory,
    out: str | os.PathLike,
    overlay: Optional[str | os.PathLike] = None,
    replay: bool = False,
) -> tuple[PredictionResult, dict[str, float]]:
    """Segment one image from clicks and write the mask (0/255 PNG) and optionally an overlay.

    Args:
        image_path: the image file.
        clicks: at least one click, in order.
        factory: builds the method.
        out: mask PNG path.
        overlay: overlay PNG path (image + mask + clicks), or ``None``.
        replay: feed the clicks one at a time, each prediction becoming the next
            probability map as ``prev_mask`` (as in the demo and the evaluation); otherwise one
            ``predict`` with all clicks.

    Returns:
        ``(result, timings)`` with timings ``{"set_image_s", "predict_s"}``.

    Raises:
        ValueError: unreadable image, no clicks, a click outside the image, bad output path.
    """
    if not clicks:
        raise ValueError("give at least one --click ROW,COL,+")
    image = read_image(image_path)
    h, w = image.shape[:2]
    check_clicks_in_image(clicks, h, w)
    # validate the output paths before the (possibly slow) work
    for p, what in ((out, "--out"), (overlay, "--overlay")):
        if p is not None:
            pp = Path(p)
            if pp.suffix.lower() != ".png":
                raise ValueError(f"{what}: {pp} must end in .png")
            if not pp.parent.is_dir():
                raise ValueError(f"{what}: folder {pp.parent} does not exist")
    method = factory()
    t0 = time.perf_counter()
    method.set_image(image)
    t1 = time.perf_counter()
    if replay:
        result: Optional[PredictionResult] = None
        for k in range(1, len(clicks) + 1):
            result = method.predict(list(clicks[:k]), prev_mask=None if result is None else result.prob)
        assert result is not None
    else:
        result = method.predict(list(clicks))
    t2 = time.perf_counter()
    mask = np.asarray(result.mask).astype(bool)
    if mask.shape != (h, w):
        raise ValueError(f"the method returned a mask of shape {mask.shape} for an image of {h}x{w}")
    write_png(out, mask.astype(np.uint8) * 255, "--out")
    if overlay is not None:
        write_png(overlay, render_overlay(image, mask, clicks), "--overlay")
    return result, {"set_image_s": t1 - t0, "predict_s": t2 - t1}


def _main(args: argparse.Namespace) -> int:
    try:
        factory, description = method_factory_from_args(args)
        out = args.out if args.out is not None else f"{Path(args.image).stem}_mask.png"
        result, times = run_segment(args.image, args.click, factory, out, args.overlay, args.replay)
    except ValueError as err:
        print(f"gpcis segment: error: {err}", file=sys.stderr)
        return 2
    mask = np.asarray(result.mask, dtype=bool)
    h, w = mask.shape
    area = int(mask.sum())
    n_pos = sum(c.positive for c in args.click)
    print(f"method: {description}")
    print(f"image: {args.image} ({w}x{h})")
    print(f"clicks: {len(args.click)} ({n_pos} positive, {len(args.click) - n_pos} negative)")
    print(f"area: {area} px ({100.0 * area / (h * w):.2f}% of the image)")
    print(
        f"time: set_image {1000 * times['set_image_s']:.0f} ms, "
        f"predict {1000 * times['predict_s']:.0f} ms"
    )
    print(f"mask: {out}")
    if args.overlay is not None:
        print(f"overlay: {args.overlay}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``gpcis segment`` on an ``argparse`` subparsers object and set ``func``."""
    p = subparsers.add_parser(
        "segment",
        help="segment one image from clicks given on the command line",
        description="Segment one image from clicks and write the mask as a 0/255 PNG.",
    )
    p.add_argument("image", help="the image file (PNG, JPEG, ...)")
    p.add_argument(
        "--click",
        action="append",
        type=parse_click,
        required=True,
        metavar="ROW,COL,+|-",
        help="a click: 0-based pixel row and column and + (object) or - (background); repeat, in order",
    )
    add_method_arguments(p)
    p.add_argument("--out", default=None, help="mask PNG (default: IMAGE-STEM_mask.png here)")
    p.add_argument("--overlay", default=None, help="also write the image with the mask and clicks (PNG)")
    p.add_argument(
        "--replay",
        action="store_true",
        help="feed the clicks one at a time with the previous mask, as the demo does",
    )
    p.set_defaults(func=_main)
    return p
