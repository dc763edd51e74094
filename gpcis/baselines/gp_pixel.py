"""``gp-pixel``: training-free interactive segmentation with the gpcis GP layer.

No network weights: the GP of :mod:`gpcis.gp` runs on hand-made per-pixel features
(:mod:`gpcis.baselines.pixel_features`). Per prediction:

1. **Training points**: the clicks (latent targets ``+-click_value``) and background
   pseudo-clicks spaced along the image border (kept throughout, except near positive
   clicks).
2. **Prior mean**: the colour log-odds of foreground/background Lab histograms
   (:mod:`gpcis.baselines.colour_model`), seeded around the clicks and on the border,
   scaled by ``prior_scale``.
3. **GP posterior** (GPCIS supplement Eq. S4/S5), exact: mean
   ``m(X_*) + K_*n (K_nn + eps^2 I)^-1 (y - m(X_n))``
   (:func:`gpcis.gp.pathwise.update_path`) and variance
   ``k(x_*, x_*) - k_*n (K_nn + eps^2 I)^-1 k_n*``
   (:func:`gpcis.gp.pathwise.predictive_variance`), with the ARD RBF kernel of Eq. S2
   (:class:`gpcis.gp.kernels.ARDRBFKernel`) at fixed, per-feature-group precisions.
4. **Self-training**: the colour histograms are refit on the GP's own decision and the
   posterior recomputed (``refit_iterations`` times).
5. **Decision**: upsample the posterior to the image, keep the connected components under
   positive clicks, and (optionally) refine with GrabCut initialised from the GP
   decision (:mod:`gpcis.baselines.refine`), which makes the boundary follow image edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from gpcis.baselines.colour_model import ColourHistogramModel, ColourModelConfig
from gpcis.baselines.pixel_features import (
    PixelFeatureConfig,
    PixelFeatures,
    check_image,
    compute_pixel_features,
    segment_mean,
)
from gpcis.baselines.refine import (
    GrabCutRefineConfig,
    click_disks,
    keep_components_with_clicks,
    refine_decision,
    refined_probability,
)
from gpcis.clicks import Click, check_clicks_in_image
from gpcis.gp import ARDRBFKernel, click_gram_cholesky, predictive_variance, update_path
from gpcis.inference.base import PredictionResult

__all__ = ["GPPixelConfig", "GPPixelMethod", "GPPixelPosterior"]


@dataclass
class GPPixelConfig:
    """Every knob of ``gp-pixel``.

    Attributes:
        features: per-pixel features and the GP's working resolution.
        colour: colour-histogram prior mean.
        refine: GP-seeded GrabCut refinement (``refine.enabled=False`` for the pure GP).
        outputscale: kernel amplitude eta0 (Eq. S2).
        precision: kernel precision eta_t (inverse squared lengthscale) per feature group
            (``colour``, ``gradient``, ``position``, ``superpixel``); every dimension of a
            group gets the group's value.
        noise: observation noise eps^2 of the click targets.
        click_value: latent target ``+-click_value`` at positive / negative clicks.
        prior_scale: prior mean = ``prior_scale`` x colour log-odds (0: zero prior mean).
        prior_superpixel_mix: the log-odds are mixed with their superpixel means,
            ``(1 - a) lo + a mean_sp(lo)`` (needs the superpixel features; 0 disables).
        border_points: number of background pseudo-clicks along the image border
            (0 disables them).
        border_exclusion: pseudo-clicks closer than this fraction of the working image's
            longer side to a positive click are dropped.
        seed_radius: foreground colour seeds: disks of this fraction of the working
            longer side around positive clicks.
        border_band: background colour seeds: a band of this many working pixels along
            the border (plus the negative-click disks).
        refit_iterations: times the colour histograms are refit on the GP's decision.
        keep_components: keep only connected components that contain a positive click.
        threshold: probability above which a pixel is foreground in the GP decision.
    """

    features: PixelFeatureConfig = field(default_factory=PixelFeatureConfig)
    colour: ColourModelConfig = field(default_factory=ColourModelConfig)
    refine: GrabCutRefineConfig = field(default_factory=GrabCutRefineConfig)
    outputscale: float = 1.0
    precision: dict[str, float] = field(
        default_factory=lambda: {"colour": 25.0, "gradient": 10.0, "position": 10.0, "superpixel": 25.0}
    )
    noise: float = 0.01
    click_value: float = 3.0
    prior_scale: float = 1.0
    prior_superpixel_mix: float = 0.5
    border_points: int = 40
    border_exclusion: float = 0.1
    seed_radius: float = 0.05
    border_band: int = 3
    refit_iterations: int = 2
    keep_components: bool = True
    threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("outputscale", "noise", "click_value"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.noise < 1e-6:  # the kernel is float32: duplicate clicks of both signs blew the mean up
            raise ValueError(f"noise must be >= 1e-6 (the float32 kernel's click system), got {self.noise}")
        for k, v in self.precision.items():
            if v <= 0:
                raise ValueError(f"precision[{k!r}] must be > 0, got {v}")
        if self.border_points < 0 or self.refit_iterations < 0 or self.border_band < 0:
            raise ValueError("border_points, refit_iterations and border_band must be >= 0")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")


@dataclass
class GPPixelPosterior:
    """The GP posterior at the working resolution (for inspection and tests).

    Attributes:
        mean: ``(h, w)`` latent posterior mean.
        std: ``(h, w)`` latent posterior standard deviation.
        prior_mean: ``(h, w)`` prior mean (scaled colour log-odds) of the last refit.
    """

    mean: np.ndarray
    std: np.ndarray
    prior_mean: np.ndarray


def _border_indices(h: int, w: int, n: int) -> np.ndarray:
    """``(n, 2)`` working ``(row, col)`` points evenly spaced along the image border."""
    if n == 0:
        return np.zeros((0, 2), np.int64)
    perim = 2 * (h - 1) + 2 * (w - 1)
    out = []
    for t in (np.arange(n) + 0.5) * perim / n:
        t = float(t)
        if t < w - 1:
            out.append((0, t))
        elif t < w - 1 + h - 1:
            out.append((t - (w - 1), w - 1))
        elif t < 2 * (w - 1) + h - 1:
            out.append((h - 1, (w - 1) - (t - (w - 1 + h - 1))))
        else:
            out.append(((h - 1) - (t - (2 * (w - 1) + h - 1)), 0))
    return np.clip(np.rint(np.array(out)).astype(np.int64), 0, [h - 1, w - 1])


class GPPixelMethod:
    """Training-free GP segmentation (implements :class:`gpcis.inference.base.InteractiveSegmenter`).

    Args:
        config: all settings; defaults are the tuned method.

    Example:
        >>> method = GPPixelMethod()
        >>> method.set_image(image)                                  # (H, W, 3) uint8 RGB
        >>> res = method.predict([Click(row=120, col=200, positive=True)])
        >>> res.mask, res.prob, res.std                              # (H, W) each
    """

    def __init__(self, config: Optional[GPPixelConfig] = None) -> None:
        self.config = config or GPPixelConfig()
        self._image: Optional[np.ndarray] = None
        self._feats: Optional[PixelFeatures] = None
        self._x: Optional[torch.Tensor] = None
        self._colour: Optional[ColourHistogramModel] = None
        self._kernel: Optional[ARDRBFKernel] = None
        self.last_posterior: Optional[GPPixelPosterior] = None

    # ------------------------------------------------------------------ image
    def set_image(self, image: np.ndarray) -> None:
        """Compute and cache the per-pixel features of ``image`` (``(H, W, 3)`` uint8 RGB)."""
        check_image(image)
        feats = compute_pixel_features(image, self.config.features)
        unknown = set(feats.groups) - set(self.config.precision)
        if unknown:
            raise ValueError(f"config.precision has no value for feature group(s) {sorted(unknown)}")
        h, w = feats.size
        self._image = np.array(image, order="C", copy=True)  # the caller may reuse its buffer
        self._feats = feats
        self._x = torch.from_numpy(feats.features.reshape(1, h * w, -1))
        self._colour = ColourHistogramModel(feats.lab, self.config.colour)
        kernel = ARDRBFKernel(ard_num_dims=feats.features.shape[-1])
        with torch.no_grad():
            kernel.outputscale = self.config.outputscale
            kernel.precision = torch.tensor([self.config.precision[g] for g in feats.groups])
        kernel.requires_grad_(False)
        self._kernel = kernel
        self.last_posterior = None

    # -------------------------------------------------------------- posterior
    def _to_working(self, clicks: Sequence[Click]) -> list[Click]:
        assert self._feats is not None
        (hh, ww), (h, w) = self._feats.image_size, self._feats.size
        return [
            Click(min(h - 1, int((c.row + 0.5) * h / hh)), min(w - 1, int((c.col + 0.5) * w / ww)), c.positive)
            for c in clicks
        ]

    def training_points(self, clicks: Sequence[Click]) -> tuple[np.ndarray, np.ndarray]:
        """The GP's training points for ``clicks`` (image pixels).

        Returns:
            ``rc`` ``(N, 2)`` int64 working-resolution ``(row, col)`` and ``y`` ``(N,)``
            float64 latent targets: the clicks first (in order), then the border
            pseudo-clicks farther than ``border_exclusion`` from every positive click.
        """
        if self._feats is None:
            raise RuntimeError("call set_image(image) before predict()/posterior()")
        cfg = self.config
        h, w = self._feats.size
        wclicks = self._to_working(clicks)
        pos_rc = np.array([(c.row, c.col) for c in wclicks if c.positive], np.float64).reshape(-1, 2)
        pts = [(c.row, c.col, cfg.click_value if c.positive else -cfg.click_value) for c in wclicks]
        border = _border_indices(h, w, cfg.border_points)
        if len(pos_rc) and len(border):
            d = np.sqrt(((border[:, None, :] - pos_rc[None]) ** 2).sum(-1)).min(1)
            border = border[d > cfg.border_exclusion * max(h, w)]
        pts += [(int(r), int(c), -cfg.click_value) for r, c in border]
        rc = np.array([(p[0], p[1]) for p in pts], np.int64).reshape(-1, 2)
        return rc, np.array([p[2] for p in pts], np.float64)

    def posterior(self, clicks: Sequence[Click]) -> GPPixelPosterior:
        """GP posterior at the working resolution for ``clicks`` (image pixels).

        Raises:
            RuntimeError: before :meth:`set_image`.
            ValueError: a click outside the image.
        """
        if self._feats is None or self._x is None or self._colour is None or self._kernel is None:
            raise RuntimeError("call set_image(image) before predict()/posterior()")
        cfg = self.config
        clicks = list(clicks)
        check_clicks_in_image(clicks, *self._feats.image_size)
        h, w = self._feats.size
        wclicks = self._to_working(clicks)
        rc, targets = self.training_points(clicks)
        flat = rc[:, 0] * w + rc[:, 1]
        y = torch.from_numpy(targets).reshape(1, -1)
        x_click = self._x[:, torch.from_numpy(flat)]
        valid = torch.ones(1, len(targets), dtype=torch.bool)

        # Colour seeds.
        seed_r = max(1, int(round(cfg.seed_radius * max(h, w))))
        fg_w = click_disks((h, w), wclicks, seed_r, positive=True).astype(np.float64)
        bg_w = click_disks((h, w), wclicks, seed_r, positive=False).astype(np.float64)
        if cfg.border_band > 0:
            b = cfg.border_band
            band = np.ones((h, w), bool)
            band[b:-b, b:-b] = False
            bg_w = np.maximum(bg_w, band & (fg_w == 0))

        with torch.no_grad():
            chol = click_gram_cholesky(self._kernel, x_click, valid, cfg.noise)
            for it in range(cfg.refit_iterations + 1):
                prior = self._prior_mean(fg_w, bg_w)
                prior_flat = torch.from_numpy(prior.reshape(1, -1).astype(np.float32))
                residual = y - prior_flat[:, torch.from_numpy(flat)].double()
                mean = prior_flat + update_path(self._kernel, self._x, x_click, residual, valid, cfg.noise, chol=chol)
                mean_img = mean.reshape(h, w).numpy()
                if it < cfg.refit_iterations:
                    fg = mean_img > _logit(cfg.threshold)
                    if cfg.keep_components:
                        fg = keep_components_with_clicks(fg, wclicks)
                    fg_w = fg.astype(np.float64)
                    bg_w = (~fg).astype(np.float64)
            var = predictive_variance(self._kernel, self._x, x_click, valid, cfg.noise, chol=chol)
        post = GPPixelPosterior(
            mean=mean_img.astype(np.float32),
            std=var.reshape(h, w).sqrt().numpy().astype(np.float32),
            prior_mean=prior.astype(np.float32),
        )
        self.last_posterior = post
        return post

    def _prior_mean(self, fg_w: np.ndarray, bg_w: np.ndarray) -> np.ndarray:
        """``(h, w)`` prior mean: scaled colour log-odds, optionally superpixel-smoothed."""
        assert self._colour is not None and self._feats is not None
        cfg = self.config
        if cfg.prior_scale == 0:
            return np.zeros(self._feats.size, np.float32)
        lo = self._colour.log_odds(fg_w, bg_w)
        a = cfg.prior_superpixel_mix
        if a > 0 and self._feats.superpixel_labels is not None:
            lo = (1 - a) * lo + a * segment_mean(lo, self._feats.superpixel_labels)
        return (cfg.prior_scale * lo).astype(np.float32)

    # ---------------------------------------------------------------- predict
    def predict(self, clicks: Sequence[Click], prev_mask: Optional[np.ndarray] = None) -> PredictionResult:
        """Segment the current image from all clicks so far.

        Args:
            clicks: every click so far, in order (image pixels, row/col).
            prev_mask: ``(H, W)`` previous mask; checked for shape, otherwise unused
                (the method is stateless given the clicks).

        Returns:
            :class:`PredictionResult`: ``mask`` (H, W) bool; ``prob`` (H, W) float32, the
            GP probability sigmoid(mean) squeezed into [0.55, 1] on the mask and [0, 0.45]
            off it, so any threshold in [0.45, 0.55] reproduces ``mask``; ``std`` (H, W)
            float32, the GP posterior standard deviation of the latent function.

        Raises:
            RuntimeError: before :meth:`set_image`.
            ValueError: a click outside the image or a ``prev_mask`` of the wrong shape.
        """
        if self._image is None:
            raise RuntimeError("call set_image(image) before predict()")
        height, width = self._image.shape[:2]
        if prev_mask is not None and np.shape(prev_mask) != (height, width):
            raise ValueError(f"prev_mask must have shape {(height, width)}, got {np.shape(prev_mask)}")
        clicks = list(clicks)
        post = self.posterior(clicks)
        cfg = self.config
        mean = _resize(post.mean, height, width)
        std = np.maximum(_resize(post.std, height, width), 0.0)
        mask = refine_decision(self._image, mean - _logit(cfg.threshold), clicks, cfg.refine, cfg.keep_components)
        prob = refined_probability(mask, 1.0 / (1.0 + np.exp(-mean)))
        return PredictionResult(mask=mask, prob=prob, std=std.astype(np.float32))


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _resize(a: np.ndarray, height: int, width: int) -> np.ndarray:
    if a.shape == (height, width):
        return a.astype(np.float32)
    return cv2.resize(a.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
