"""Predictor: interactive segmentation of one image with a trained gpcis model.

Two ways to drive it (both keep the predictor's own click history, so :meth:`undo`
and :meth:`suggest_click` work either way):

* **incremental** -- :meth:`Predictor.add_click` appends one click and predicts using
  the predictor's previous probability map as the previous mask;
* **stateless** (the :class:`~gpcis.inference.base.InteractiveSegmenter` protocol used by
  the evaluation loop) -- :meth:`Predictor.predict` takes the *full* click list and an
  optional previous mask. The list replaces the history. If ``prev_mask`` is ``None`` and
  the list extends the history by new clicks, the previous probability map is used as
  the previous mask; otherwise the previous mask is empty.

With ``zoom_in`` (default), from the second click on the model sees the FocalClick/RITM
target crop (:mod:`gpcis.inference.zoom`) and the result is mapped back. Inputs are
zero-padded (bottom/right) to a multiple of ``size_divisor`` and the output cropped.
Outside the crop the model did not look again: the probability there is the previous mask's,
and the std the previous prediction's (when the clicks continue the predictor's history) or
else the prior std ``sqrt(eta0)`` of the GP kernel (the model did not evaluate those pixels in
this run; the prior std is the largest the GP can give, never a false certainty).

With ``refine=GrabCutRefineConfig()`` the model's decision is post-processed as gp-pixel's
GP decision is (:func:`gpcis.baselines.refine.refine_decision`: connected components under
positive clicks, GrabCut seeded from the decision, click disks keep their labels); the
probability map is squeezed to agree with the refined mask (``prob > thresh`` is the mask)
and is what the next click sees as the previous mask.

Clicks that the model would read at one input pixel (a pixel clicked again with the other
label, or neighbours a downscaling crop maps together) reach it only as the newest of them:
as one GP input with two labels they were averaged and the newest click lost its label. A
prediction that is not zoomed sees the whole image, downscaled to ``zoom.whole_image_size``
when that is set (without ``zoom_in``: every prediction).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from gpcis.baselines.refine import GrabCutRefineConfig, refine_decision, refined_probability
from gpcis.clicks import Click, ClickBatch, check_clicks_in_image
from gpcis.devices import resolve_device
from gpcis.inference.base import PredictionResult, check_image
from gpcis.inference.zoom import CropClick, ZoomConfig, ZoomIn

__all__ = ["Predictor"]


def _to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


def _latest_per_pixel(clicks: Sequence[CropClick | Click], size: tuple[int, int]) -> list[CropClick | Click]:
    """The clicks without those a later click shares its model-input pixel with.

    The model reads a click at its rounded pixel (:func:`gpcis.models.heads.gather_at_clicks`:
    round half to even, clamped); two clicks there -- the same pixel clicked again to flip
    its label, or neighbours that a downscaling zoom-in crop maps onto one pixel -- are the
    same GP input with two labels, and the GP averaged them: the newest click lost its label
    half of the time. The newest click on a pixel is the user's last word; earlier clicks
    elsewhere keep their order.
    """
    h, w = size
    last: dict[tuple[int, int], int] = {}
    for i, c in enumerate(clicks):
        last[(int(np.clip(np.round(c.row), 0, h - 1)), int(np.clip(np.round(c.col), 0, w - 1)))] = i
    if len(last) == len(clicks):
        return list(clicks)
    return [clicks[i] for i in sorted(last.values())]


def _latest_per_pixel_of(clicks: Sequence[Click], zoom: ZoomIn, box: Any, target: Optional[int]) -> list[Click]:
    """The image clicks whose crop clicks :func:`_latest_per_pixel` keeps (the ones the model
    read), in order; clicks outside the box are left out."""
    inside = [c for c in clicks if box.top <= c.row < box.bottom and box.left <= c.col < box.right]
    crop = zoom.crop_clicks(inside, box, target)
    kept = {id(k) for k in _latest_per_pixel(crop, zoom.crop_size(box, target))}
    return [c for c, k in zip(inside, crop) if id(k) in kept]


class Predictor:
    """Interactive segmentation with a :class:`~gpcis.models.SegmentationModel`.

    Args:
        model: a model whose ``forward(image, clicks, prev_mask, return_std=...)`` returns
            an object with ``logits`` ``(1, 1, h, w)`` and ``std`` ``(1, 1, h, w)`` or ``None``.
        device: where to run (default: the model's device).
        zoom_in: use the target crop from the second click on.
        thresh: ``mask = prob > thresh``.
        zoom: zoom-in settings (default :class:`ZoomConfig`).
        size_divisor: pad model inputs to a multiple of this (the backbones' stride).
        with_std: also compute the GP posterior std map (``PredictionResult.std``); turn it
            off when only masks are needed (evaluation), it costs ``O(M N^2)`` per click.
        refine: edge-aware post-processing of the decision (``None``: the model's mask as
            it is); see the module docstring. It runs ``cv2.grabCut`` on the whole image
            (``roi_margin`` limits it to the object's neighbourhood): about 0.3-0.4 s more
            per click at GrabCut's image sizes on one CPU core. The result's ``mask`` is
            the refined mask; ``prob > thresh`` agrees with it (for any ``thresh``).
        flip: test-time horizontal flip, as in RITM's evaluation (``with_flip``): the model
            also sees the mirrored input (image, clicks, previous mask) in the same batch,
            and the probabilities (and std maps) of the two are averaged. Twice the work.
        cuda_graphs: run the model's head through CUDA graphs
            (``model.enable_cuda_graphs()``, :mod:`gpcis.models.cuda_graph`; on an H200 the
            GP head takes 0.4-0.5 ms per click at 384^2 this way, 1.2-1.5 ms without; session 10). CUDA devices only;
            the result equals the eager head's up to rounding. It enables them on ``model``.
    """

    def __init__(
        self,
        model: nn.Module,
        device: Optional[torch.device | str] = None,
        zoom_in: bool = True,
        thresh: float = 0.5,
        zoom: Optional[ZoomConfig] = None,
        size_divisor: int = 32,
        with_std: bool = True,
        refine: Optional[GrabCutRefineConfig] = None,
        flip: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(thresh, bool) or not isinstance(thresh, numbers.Real) or not 0.0 <= thresh < 1.0:
            raise ValueError(f"thresh must be a number in [0, 1), got {thresh!r}")
        if isinstance(size_divisor, bool) or not isinstance(size_divisor, numbers.Integral) or size_divisor < 1:
            raise ValueError(f"size_divisor must be an int >= 1, got {size_divisor!r}")
        thresh, size_divisor = float(thresh), int(size_divisor)
        if device is None:  # the model's own device, as it is
            p = next(iter(model.parameters()), None)
            self.device = p.device if p is not None else torch.device("cpu")
        else:
            self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        if cuda_graphs:
            if self.device.type != "cuda":
                raise ValueError(f"cuda_graphs=True needs a CUDA device, the predictor runs on {self.device}")
            if not hasattr(model, "enable_cuda_graphs"):
                raise ValueError(f"cuda_graphs=True needs a gpcis SegmentationModel, got {type(model).__name__}")
            model.enable_cuda_graphs()
        self.zoom_in = bool(zoom_in)
        self.zoom = ZoomIn(zoom)
        self.thresh = float(thresh)
        self.size_divisor = int(size_divisor)
        self.with_std = bool(with_std)
        if refine is not None and not isinstance(refine, GrabCutRefineConfig):
            raise ValueError(f"refine must be a GrabCutRefineConfig or None, got {type(refine).__name__}")
        self.refine = refine
        self.flip = bool(flip)
        self._image: Optional[np.ndarray] = None
        self._tensor: Optional[torch.Tensor] = None
        self._clicks: list[Click] = []
        self._results: list[Optional[PredictionResult]] = []

    # ------------------------------------------------------------------ state
    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the current image."""
        self._require_image()
        assert self._image is not None
        return self._image.shape[0], self._image.shape[1]

    @property
    def clicks(self) -> list[Click]:
        """A copy of the click history."""
        return list(self._clicks)

    @property
    def result(self) -> Optional[PredictionResult]:
        """The latest prediction (``None`` before the first)."""
        return self._results[-1] if self._results else None

    def _require_image(self) -> None:
        if self._image is None:
            raise RuntimeError("call set_image(image) before predicting")

    def set_image(self, image: np.ndarray) -> None:
        """Set a new ``(H, W, 3)`` uint8 RGB image (clears the click history).

        The full-image tensor (padded to ``size_divisor``) is cached on the device.
        """
        check_image(image)
        self._image = np.array(image, order="C", copy=True)  # the caller may reuse its buffer
        self._tensor = self._pad(_to_tensor(self._image, self.device))
        self.reset()

    def reset(self) -> None:
        """Forget all clicks and predictions (the image stays)."""
        self._clicks = []
        self._results = []

    # ------------------------------------------------------------------ prediction
    def predict(
        self, clicks: Optional[Sequence[Click]] = None, prev_mask: Optional[np.ndarray] = None
    ) -> PredictionResult:
        """Predict from the full click list (see the module docstring for the history rule).

        Args:
            clicks: every click so far, in order (``None``: the current history).
            prev_mask: ``(H, W)`` bool or float in [0, 1] previous mask, or ``None``.

        Returns:
            :class:`PredictionResult` with ``mask`` ``(H, W)`` bool, ``prob`` ``(H, W)``
            float32 and ``std`` ``(H, W)`` float32 for GP models (``None`` otherwise).

        Raises:
            RuntimeError: before :meth:`set_image`.
            ValueError: a click outside the image or not at integer pixels, a ``prev_mask``
                of the wrong shape or with values outside [0, 1].
        """
        self._require_image()
        h, w = self.image_size
        if isinstance(clicks, Click):
            raise ValueError("clicks must be a list of Click (every click so far), got a single Click")
        clicks = list(self._clicks if clicks is None else clicks)
        check_clicks_in_image(clicks, h, w)
        n_old = len(self._clicks)
        continues = n_old < len(clicks) and clicks[:n_old] == self._clicks and self.result is not None
        # the std outside a zoom-in crop comes from the prediction this one continues
        prev_std = self.result.std if continues and self.result is not None else None
        if prev_mask is not None:
            prev = np.asarray(prev_mask)
            if prev.shape != (h, w):
                raise ValueError(f"prev_mask has shape {prev.shape}, expected {(h, w)}")
            prev = prev.astype(np.float32)
            if prev.size and not (np.isfinite(prev).all() and prev.min() >= 0.0 and prev.max() <= 1.0):
                raise ValueError(
                    f"prev_mask values must be in [0, 1] (a bool mask or probabilities), got "
                    f"{prev.min():g}..{prev.max():g}; for a 0/255 mask pass mask > 0"
                )
            results: list[Optional[PredictionResult]] = [None] * max(len(clicks) - 1, 0)
        elif continues and self.result is not None:
            prev = self.result.prob
            results = self._results + [None] * (len(clicks) - n_old - 1)
        else:
            prev = None
            results = [None] * max(len(clicks) - 1, 0)
        result = self._run(clicks, prev, prev_std)
        self._clicks = clicks
        self._results = results + [result] if clicks else []
        return result

    def add_click(self, click: Click) -> PredictionResult:
        """Append one click to the history and predict (previous mask = previous prediction)."""
        return self.predict(self._clicks + [click])

    def undo(self) -> Optional[PredictionResult]:
        """Remove the last click; returns the prediction for the remaining clicks (``None`` if none)."""
        self._require_image()
        if not self._clicks:
            return None
        self._clicks = self._clicks[:-1]
        self._results = self._results[:-1]
        if not self._clicks:
            return None
        if self._results[-1] is None:  # not computed in this session (stateless use): recompute
            self._results[-1] = self._run(self._clicks, None)
        return self._results[-1]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        d = self.size_divisor
        ph, pw = (-h) % d, (-w) % d
        return torch.nn.functional.pad(x, (0, pw, 0, ph)) if ph or pw else x

    @torch.no_grad()
    def _forward(
        self, image_t: torch.Tensor, size: tuple[int, int], clicks: Sequence[CropClick | Click],
        prev: Optional[np.ndarray],
    ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Run the model on a padded ``(1, 3, h', w')`` input; return ``(prob, std)`` ``(h, w)``."""
        h, w = size
        clicks = _latest_per_pixel(clicks, size)
        coords = torch.tensor([[[float(c.row), float(c.col)] for c in clicks]], dtype=torch.float32).view(1, -1, 2)
        labels = torch.tensor([[1.0 if c.positive else -1.0 for c in clicks]], dtype=torch.float32).view(1, -1)
        prev_t = None
        if prev is not None:
            prev_t = torch.from_numpy(np.ascontiguousarray(prev, dtype=np.float32)).to(self.device)[None, None]
        if self.flip:  # item 1: the mirror image; pixel-centre columns map to w - 1 - col
            mirrored = coords.clone()
            cols = coords[..., 1]
            # the model reads a click at its rounded pixel, half to even: at a half-pixel column
            # (every click of a 2x upscaled crop) the mirror would round to the other neighbour
            # and the flipped item condition one pixel off; there the mirror of the pixel read
            tie = (cols - cols.floor()) == 0.5
            mirrored[..., 1] = torch.where(tie, (w - 1) - cols.round(), (w - 1) - cols)
            coords, labels = torch.cat([coords, mirrored]), torch.cat([labels, labels])
            image_t = torch.cat([image_t, self._pad(image_t[..., :h, :w].flip(-1))])
            if prev_t is not None:
                prev_t = torch.cat([prev_t, prev_t.flip(-1)])
        batch = ClickBatch(coords, labels, torch.ones_like(labels, dtype=torch.bool)).to(self.device)
        if prev_t is not None:
            prev_t = self._pad(prev_t)
        out: Any = self.model(image_t, batch, prev_t, return_std=self.with_std)
        prob_t = torch.sigmoid(out.logits[:, 0, :h, :w].float())
        std_t = getattr(out, "std", None)
        std_t = std_t[:, 0, :h, :w].float() if std_t is not None else None
        if self.flip:
            prob_t = 0.5 * (prob_t[:1] + prob_t[1:].flip(-1))
            std_t = 0.5 * (std_t[:1] + std_t[1:].flip(-1)) if std_t is not None else None
        prob = prob_t[0].cpu().numpy()
        std_np = std_t[0].cpu().numpy() if std_t is not None else None
        return prob, std_np

    def _prior_std(self, evaluated: np.ndarray) -> float:
        """The std of a pixel no click informs: ``sqrt(eta0)`` of a GP head's kernel (the
        latent function's prior std); for a model without one, the largest std of the
        ``evaluated`` region."""
        kernel = getattr(getattr(getattr(self.model, "head", None), "gp", None), "kernel", None)
        scale = getattr(kernel, "outputscale", None)
        if isinstance(scale, torch.Tensor):
            return float(scale.detach().max().sqrt())
        return float(evaluated.max())

    def _run(self, clicks: Sequence[Click], prev: Optional[np.ndarray],
             prev_std: Optional[np.ndarray] = None) -> PredictionResult:
        """One prediction; ``prev_std`` (the previous prediction's std) fills the std outside
        a zoom-in crop (else :meth:`_prior_std`)."""
        assert self._image is not None and self._tensor is not None
        h, w = self.image_size
        if not clicks:
            prob = np.zeros((h, w), np.float32)
            return PredictionResult(mask=prob > self.thresh, prob=prob, std=None)
        box, target = None, None
        effective = _latest_per_pixel(clicks, (h, w))  # a click clicked over does not steer the box
        if self.zoom_in:
            box = self.zoom.box(prev > self.thresh if prev is not None else None, effective, (h, w))
        if box is None:  # not zoomed (also without zoom-in): the whole image, downscaled if set
            box = self.zoom.whole_image_box((h, w))
            target = self.zoom.config.whole_image_size
        if box is None:
            prob, std = self._forward(self._tensor, (h, w), clicks, prev)
        else:
            size = self.zoom.crop_size(box, target)
            crop_t = self._pad(_to_tensor(self.zoom.crop_image(self._image, box, target), self.device))
            crop_prev = self.zoom.crop_map(prev, box, target) if prev is not None else None
            prob_c, std_c = self._forward(crop_t, size, self.zoom.crop_clicks(clicks, box, target), crop_prev)
            base = prev if prev is not None else np.zeros((h, w), np.float32)
            kept = _latest_per_pixel_of(clicks, self.zoom, box, target)  # the clicks the model read
            prob = self.zoom.uncrop(prob_c, box, base, kept, target)
            std = None
            if std_c is not None:
                if prev_std is None or prev_std.shape != (h, w):
                    prev_std = np.full((h, w), self._prior_std(std_c), np.float32)
                std = self.zoom.uncrop(std_c, box, prev_std, kept, target)
        prob = np.clip(prob.astype(np.float32), 0.0, 1.0)
        if self.refine is None:
            return PredictionResult(mask=prob > self.thresh, prob=prob, std=std)
        p = np.clip(prob.astype(np.float64), 1e-6, 1.0 - 1e-6)
        t = min(max(self.thresh, 1e-6), 1.0 - 1e-6)
        logit = np.log(p) - np.log1p(-p) - np.log(t / (1.0 - t))  # > 0 iff prob > thresh
        mask = refine_decision(self._image, logit, effective, self.refine)
        return PredictionResult(mask=mask, prob=refined_probability(mask, prob, self.thresh), std=std)

    # ------------------------------------------------------------------ active suggestion
    def suggest_click(self, min_distance: float = 10.0) -> Optional[Click]:
        """The most useful next click according to the model's uncertainty.

        Score ``= std * (1 - |2 p - 1|)``: high posterior std of the latent function
        (GP models; 1 when the model has no std) times closeness to the decision boundary,
        restricted to pixels at least ``min_distance`` pixels from every click so far.
        The returned click's label is the model's current guess at that pixel
        (``prob > thresh``); the user keeps it or flips it.

        Returns:
            A :class:`Click`, or ``None`` before the first prediction or when every pixel is
            too close to a click.
        """
        if isinstance(min_distance, bool) or not isinstance(min_distance, numbers.Real) or not (
                math.isfinite(min_distance) and min_distance >= 1):
            # below 1 pixel the existing clicks themselves qualify
            raise ValueError(f"min_distance must be a finite number >= 1 (pixels), got {min_distance!r}")
        self._require_image()
        res = self.result
        if res is None:
            return None
        h, w = self.image_size
        score = 1.0 - np.abs(2.0 * res.prob.astype(np.float64) - 1.0)
        if res.std is not None:
            score = score * res.std.astype(np.float64)
        free = np.ones((h, w), np.uint8)
        for c in self._clicks:
            free[c.row, c.col] = 0
        dist = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        score = np.where(dist >= min_distance, score, -np.inf)
        if not np.isfinite(score).any():
            return None
        row, col = np.unravel_index(int(np.argmax(score)), score.shape)
        return Click(int(row), int(col), bool(res.prob[row, col] > self.thresh))
