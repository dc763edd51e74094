"""Segmentation heads: deep features + image + clicks -> logits at the input resolution.

Two heads share one interface (:class:`SegHead`):

* :class:`GPSegHead` -- GPCIS: pixel-wise Gaussian-process classification on the
  (L2-normalized) deep features and the image colour, conditioned on the clicks through
  :class:`gpcis.gp.GPHead` (Zhou et al., CVPR 2023, Sec. 3 and supplement Alg. S2).
* :class:`ConvHead` -- RITM: a learned 1x1 convolution classifier on the same features,
  the baseline the paper replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpcis.clicks import ClickBatch
from gpcis.gp import GPHead, GPHeadConfig, GPHeadOutput, check_num_samples, fused

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize_image",
    "HeadOutput",
    "SegHead",
    "GPSegHead",
    "ConvHead",
    "gather_at_clicks",
    "sample_at_clicks",
    "check_stride",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(image: Tensor, out: Tensor | None = None) -> Tensor:
    """ImageNet mean/std normalization.

    Per channel with Python scalars, ``(image[:, c] - mean_c) / std_c``: no mean/std tensors
    are copied to the device (a host-to-device copy cannot be captured in a CUDA graph).

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1].
        out: optional ``(B, 3, H, W)`` destination (e.g. a slice of a larger buffer); not
            with autograd.

    Returns:
        ``(B, 3, H, W)`` ``(image - mean) / std`` per channel.
    """
    channels = tuple(zip(IMAGENET_MEAN, IMAGENET_STD))
    if out is None and torch.is_grad_enabled() and image.requires_grad:
        return torch.stack([(image[:, c] - m) / s for c, (m, s) in enumerate(channels)], dim=1)
    out = torch.empty_like(image) if out is None else out
    for c, (m, s) in enumerate(channels):
        torch.sub(image[:, c], m, out=out[:, c]).div_(s)
    return out


@dataclass
class HeadOutput:
    """What a segmentation head returns.

    Attributes:
        logits: ``(B, 1, H, W)`` logits at the input resolution.
        aux_loss: scalar auxiliary loss to add to the segmentation loss
            (``alpha * L_VI`` for the GP head, 0 for the conv head).
        std: ``(B, 1, H, W)`` posterior standard deviation of the latent function, or
            ``None`` (not asked for, or a head without uncertainty).
        samples: ``(S, B, 1, H, W)`` pathwise posterior samples of the latent function
            when ``num_samples > 0`` was drawn, else ``None``.
        ok: from a ``sync_free`` call of the GP head, a 0-d bool tensor: ``True`` when the
            result is valid (the click system was factorised without jitter and the
            logits are finite); ``None`` otherwise (nothing to check).
    """

    logits: Tensor
    aux_loss: Tensor
    std: Tensor | None = None
    samples: Tensor | None = None
    ok: Tensor | None = None


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def gather_at_clicks(x: Tensor, coords: Tensor, width: int) -> Tensor:
    """Gather per-pixel vectors at click positions.

    Args:
        x: ``(B, M, D)`` pixel vectors in row-major order (``M = H * W``).
        coords: ``(B, N, 2)`` ``(row, col)`` pixel coordinates (rounded to the nearest
            pixel and clamped into the image, so padded entries are harmless).
        width: image width ``W``.

    Returns:
        ``(B, N, D)`` the vectors at ``x[b, row * W + col]``.
    """
    b, m, d = x.shape
    height = m // width
    rows = coords[..., 0].round().long().clamp(0, height - 1)
    cols = coords[..., 1].round().long().clamp(0, width - 1)
    idx = rows * width + cols  # (B, N)
    return x.gather(1, idx.unsqueeze(-1).expand(b, idx.shape[1], d))


def sample_at_clicks(x: Tensor, coords: Tensor, size: tuple[int, int]) -> Tensor:
    """Values of ``upsample(x, size)`` at click pixels, without building the upsampled map.

    Bilinear sampling with ``align_corners=False`` and border clamping reads, at pixel
    ``(r, c)`` of the ``H x W`` output, exactly what ``F.interpolate(x, size=(H, W),
    mode="bilinear", align_corners=False)`` puts there (both map output pixel ``j`` to the
    source coordinate ``(j + 0.5) * w / W - 0.5``, clamped into the map).

    Args:
        x: ``(B, D, h, w)`` a feature map.
        coords: ``(B, N, 2)`` ``(row, col)`` pixel coordinates of the ``H x W`` image
            (rounded to the nearest pixel and clamped into it, as :func:`gather_at_clicks`).
        size: ``(H, W)`` the image size the coordinates refer to.

    Returns:
        ``(B, N, D)``.
    """
    big_h, big_w = size
    rows = coords[..., 0].round().clamp(0, big_h - 1)
    cols = coords[..., 1].round().clamp(0, big_w - 1)
    grid = torch.stack([(cols + 0.5) / big_w * 2 - 1, (rows + 0.5) / big_h * 2 - 1], dim=-1)  # (B, N, 2) as (x, y)
    # at least float32 sampling: a float16 grid would be off by ~0.1 px at W ~ 400 (float64
    # stays float64: it was rounded to float32 before session 12)
    dt = torch.promote_types(x.dtype, torch.float32)
    out = F.grid_sample(x.to(dt), grid.unsqueeze(1).to(dt), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[:, :, 0].transpose(1, 2).to(x.dtype)  # (B, N, D)


def check_stride(stride: object, name: str = "stride") -> int:
    """``stride`` if it is an int >= 1 (not a bool), else a ``ValueError`` naming ``name``."""
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"{name} must be an int >= 1, got {stride!r}")
    return stride


class SegHead(nn.Module):
    """Interface of a segmentation head (subclasses implement :meth:`forward`)."""

    def forward(  # pragma: no cover - interface
        self,
        features: Tensor,
        image: Tensor,
        clicks: ClickBatch,
        num_samples: int | None = None,
        return_std: bool = False,
        generator: torch.Generator | None = None,
        sync_free: bool = False,
    ) -> HeadOutput:
        """Predict logits at the input resolution.

        Args:
            features: ``(B, d, h, w)`` backbone features (stride 4).
            image: ``(B, 3, H, W)`` the input image in [0, 1].
            clicks: the clicks, in pixels of the ``H x W`` image.
            num_samples: posterior samples to draw (GP head only); ``None`` = the
                head's default.
            return_std: also return the posterior standard deviation (GP head only).
            generator: random generator for the posterior samples (GP head only).
            sync_free: never read a result back to the host (so the call can be captured in
                a CUDA graph; :mod:`gpcis.models.cuda_graph`): inference only, clicks
                already validated; the GP head then reports ``HeadOutput.ok``.

        Returns:
            :class:`HeadOutput` with ``logits`` of shape ``(B, 1, H, W)``.
        """
        raise NotImplementedError


class ConvHead(SegHead):
    """RITM's classifier: a 1x1 convolution ``d -> 1`` on the features, bilinearly upsampled
    to the input size. ``aux_loss`` is 0 and ``std`` is always ``None``.

    Args:
        in_channels: feature width ``d`` (``Backbone.out_channels``).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        self.in_channels = in_channels
        self.classifier = nn.Conv2d(in_channels, 1, kernel_size=1)

    def forward(
        self,
        features: Tensor,
        image: Tensor,
        clicks: ClickBatch,
        num_samples: int | None = None,
        return_std: bool = False,
        generator: torch.Generator | None = None,
        sync_free: bool = False,
    ) -> HeadOutput:
        logits = _upsample(self.classifier(features), tuple(image.shape[-2:]))
        return HeadOutput(logits=logits, aux_loss=features.new_zeros(()), std=None, samples=None)


class GPSegHead(SegHead):
    """GPCIS head: GP classification of every pixel given the clicked pixels.

    Pixel features (supplement Alg. S2, line 3)::

        X = [ upsample(normalize_L2(features)) , normalize_imagenet(image) ]   (B, d+3, H, W)

    (the image part is dropped when ``use_image=False``, for the ablation). The clicked
    pixels' rows of ``X`` with their +-1 labels condition :class:`gpcis.gp.GPHead`, which
    returns the latent function ``f`` at all ``M = H * W`` pixels (the pathwise posterior,
    supplement Eq. S15). The logits are ``f``:

    * training mode: one pathwise posterior **sample** (the paper trains on samples,
      supplement Alg. S1), unless ``num_samples=0`` asks for the mean path;
    * eval mode: the **mean path** (``w = mu_w``, ``f_n = m_xi``); samples are drawn
      only if asked for.

    ``aux_loss = vi_weight * L_VI`` (supplement Eq. S1, the amortized variational loss on
    the clicks); in eval mode under ``torch.no_grad`` (inference) L_VI is not computed and
    ``aux_loss`` is 0. ``std = sqrt(predictive variance)`` (supplement Eq. S5) when asked for.

    Args:
        in_channels: backbone feature width ``d``.
        config: the GP layer's configuration (``num_features`` = ``l``, the number of
            random Fourier features: 256 for ResNet50/HRNet18s, 128 for SegFormer-B0).
        vi_weight: ``alpha``, the weight of ``L_VI`` in ``aux_loss``.
        use_image: concatenate the normalized image to the features (``D = d + 3``).
        stride: evaluate the GP on a grid ``stride`` times coarser than the input
            (``ceil(H / stride) x ceil(W / stride)`` pixels, image area-downsampled) and
            upsample its outputs bilinearly; 1 (the paper) evaluates every input pixel.
            The clicks' inputs ``X_n`` are always those of the full-resolution pixels
            (:func:`sample_at_clicks`), so the GP is conditioned on exactly the same
            training points; only the test grid is coarser, which divides the head's cost
            by ``stride**2`` (the CPU training recipe of docs/training.md uses 2).
    """

    def __init__(
        self,
        in_channels: int,
        config: GPHeadConfig | None = None,
        vi_weight: float = 0.01,
        use_image: bool = True,
        stride: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if vi_weight < 0:
            raise ValueError(f"vi_weight must be >= 0, got {vi_weight}")
        check_stride(stride)
        self.in_channels = in_channels
        self.stride = stride
        self.use_image = bool(use_image)
        self.vi_weight = float(vi_weight)
        self.feature_dim = in_channels + (3 if self.use_image else 0)
        self.gp = GPHead(self.feature_dim, config if config is not None else GPHeadConfig())

    def pixel_features(self, features: Tensor, image: Tensor) -> Tensor:
        """The GP inputs ``X`` at every pixel (of the input, at ``stride`` 1).

        Args:
            features: ``(B, d, h, w)`` backbone features.
            image: ``(B, 3, H, W)`` image in [0, 1].

        Returns:
            ``(B, D, H, W)`` with ``D = d + 3`` (or ``d`` without the image).
        """
        size = (int(image.shape[-2]), int(image.shape[-1]))
        small = F.normalize(features, p=2, dim=1)
        if not self.use_image:
            return _upsample(small, size)
        if torch.is_grad_enabled() and (features.requires_grad or image.requires_grad):
            return torch.cat([_upsample(small, size), normalize_image(image).to(small.dtype)], dim=1)
        # Inference: both parts written into one buffer. The upsampled map and the concatenation
        # were two more full-resolution arrays per click (2 x 28 MB at 384^2), each a fresh
        # allocation whose page faults cost more than the arithmetic (one thread: 33 -> 10 ms).
        b, d = small.shape[:2]
        x = small.new_empty(b, d + 3, *size)
        if tuple(small.shape[-2:]) == size:
            x[:, :d] = small
        else:  # the kernel F.interpolate(mode="bilinear", align_corners=False) runs, into x
            torch.ops.aten.upsample_bilinear2d.out(small, list(size), False, None, None, out=x[:, :d])
        normalize_image(image, out=x[:, d:])
        return x

    def _fused_inference(self, features: Tensor, image: Tensor, clicks: ClickBatch,
                         sync_free: bool) -> GPHeadOutput | None:
        """The mean path at inference on a GPU in five small Triton kernels (stride 1), or ``None``.

        :func:`gpcis.gp.fused.pixel_features` writes ``X`` (what :meth:`pixel_features`
        builds with about ten operations) and :meth:`gpcis.gp.GPHead.fused_mean` reads the
        clicked pixels' rows of it by their coordinates (no gather): the click system, then
        the mean path at every pixel.
        """
        gp = self.gp
        if (self.training or torch.is_grad_enabled() or gp._fused_error is not None or not fused.usable(features)
                or image.dtype != torch.float32 or not 0 < clicks.max_clicks <= fused.MAX_CLICKS):
            return None
        size = (int(image.shape[-2]), int(image.shape[-1]))
        try:
            x = fused.pixel_features(features, image if self.use_image else None, size, IMAGENET_MEAN, IMAGENET_STD)
        except Exception as err:  # e.g. no compiler for Triton's launcher: the PyTorch path instead
            gp.fused_failed(err, stacklevel=3)
            return None
        return gp.fused_mean(x.flatten(2).transpose(1, 2), clicks.labels, clicks.valid, coords=clicks.coords,
                             size=size, sync_free=sync_free)

    def grid_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(H', W')`` of the test grid for an ``H x W`` input: ``ceil(H / stride)`` etc."""
        return (-(-size[0] // self.stride), -(-size[1] // self.stride))

    def click_features(self, features: Tensor, image: Tensor, coords: Tensor) -> Tensor:
        """``X_n``: the rows of :meth:`pixel_features` at the clicked pixels.

        Args:
            features: ``(B, d, h, w)`` backbone features.
            image: ``(B, 3, H, W)`` image in [0, 1].
            coords: ``(B, N, 2)`` click ``(row, col)`` in input pixels.

        Returns:
            ``(B, N, D)``.
        """
        size = (int(image.shape[-2]), int(image.shape[-1]))
        x = sample_at_clicks(F.normalize(features, p=2, dim=1), coords, size)
        if self.use_image:
            x = torch.cat([x, gather_at_clicks(normalize_image(image).flatten(2).transpose(1, 2), coords, size[1]).to(x.dtype)], dim=-1)
        return x

    def forward(
        self,
        features: Tensor,
        image: Tensor,
        clicks: ClickBatch,
        num_samples: int | None = None,
        return_std: bool = False,
        generator: torch.Generator | None = None,
        sync_free: bool = False,
    ) -> HeadOutput:
        if num_samples is None:
            num_samples = 1 if self.training else 0
        check_num_samples(num_samples)
        b, _, big_h, big_w = image.shape
        h, w = self.grid_size((big_h, big_w))  # the input's size at stride 1
        out = None
        if self.stride == 1 and num_samples == 0 and not return_std:  # GPU inference: fused kernels
            out = self._fused_inference(features, image, clicks, sync_free)
        if out is None:
            if self.stride == 1:
                x = self.pixel_features(features, image)  # (B, D, H, W)
                x_test = x.flatten(2).transpose(1, 2)  # (B, M, D)
                x_click = gather_at_clicks(x_test, clicks.coords, w)  # (B, N, D)
            else:
                small = F.interpolate(image, size=(h, w), mode="area")
                x = self.pixel_features(features, small)  # (B, D, H', W')
                x_test = x.flatten(2).transpose(1, 2)  # (B, M', D)
                x_click = self.click_features(features, image, clicks.coords)  # (B, N, D)
            out = self.gp(
                x_test,
                x_click,
                clicks.labels.to(x.dtype),
                clicks.valid,
                num_samples=num_samples,
                return_variance=return_std,
                generator=generator,
                compute_vi_loss=False if sync_free else None,
                sync_free=sync_free,
            )
        size = (int(big_h), int(big_w))
        samples = None
        if out.samples is not None and num_samples > 0:
            samples = out.samples.reshape(num_samples * b, 1, h, w)
            samples = _upsample(samples, size).reshape(num_samples, b, 1, *size)
        if self.training and samples is not None:
            logits = samples[0]
        else:
            logits = _upsample(out.mean.reshape(b, 1, h, w), size)
        std = None
        if return_std:
            if out.variance is None:
                raise RuntimeError("GPHead returned no variance although return_variance=True")
            std = _upsample(out.variance.clamp_min(0).sqrt().reshape(b, 1, h, w), size)
        # L_VI only where it can be trained on (inference: 0, as the conv head's aux_loss)
        aux = self.vi_weight * out.vi_loss if out.vi_loss is not None else logits.new_zeros(())
        ok = None
        if sync_free:
            assert out.cholesky_info is not None
            ok = (out.cholesky_info == 0).all() & torch.isfinite(logits).all()
        return HeadOutput(logits=logits, aux_loss=aux, std=std, samples=samples, ok=ok)
