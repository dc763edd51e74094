"""SegmentationModel: click encoder + backbone + head as one module, and its config.

Data flow (one forward pass)::

    image (B,3,H,W) in [0,1] ----------------- ImageNet-normalize --> backbone(image, side)
    clicks -> disk maps (B,2,H,W) --+                                     |
    prev_mask (B,1,H,W) ------------+--> Conv1S --> side ------------------+
                                                                        features (B,d,H/4,W/4)
                                                                              |
                                                    head(features, image, clicks) -> logits (B,1,H,W)
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from gpcis.clicks import ClickBatch, disk_maps
from gpcis.gp import GPHeadConfig, check_num_samples
from gpcis.models.backbones import create_backbone
from gpcis.models.click_encoder import Conv1S
from gpcis.models.cuda_graph import CUDAGraphHead
from gpcis.models.heads import ConvHead, GPSegHead, HeadOutput, SegHead, check_stride, normalize_image

__all__ = ["ModelConfig", "ModelOutput", "SegmentationModel"]

HEADS = ("gp", "conv")
LR_SCOPES = ("auto", "backbone", "encoder")


@dataclass
class ModelConfig:
    """Configuration of a :class:`SegmentationModel` (saved in checkpoints as a dict).

    Attributes:
        backbone: backbone name for :func:`gpcis.models.backbones.create_backbone`
            (``tiny``, ``resnet50``, ``hrnet18s``, ``segformer_b0``, ``efflite0``).
        head: ``"gp"`` (GPCIS) or ``"conv"`` (RITM's 1x1 conv classifier).
        gp: configuration of the GP layer (used by the ``"gp"`` head only).
        vi_weight: ``alpha``, weight of ``L_VI`` in the model's ``aux_loss`` (default 0.01:
            with L_VI summed over clicks it is 8-30 at initialisation against a
            normalized focal loss of about 0.3; at ``alpha = 1`` it swamps the focal loss,
            which then stops decreasing. See docs/training.md, "The weight of L_VI").
        click_radius: radius (input pixels) of the click disks (5 in RITM/GPCIS).
        use_image_in_kernel: append the normalized image to the GP features (D = d + 3).
        gp_stride: the GP head's test grid is ``gp_stride`` times coarser than the input
            (:class:`gpcis.models.heads.GPSegHead`; 1 = every pixel, as in the paper).
        backbone_lr_scope: which parameters train at the trainer's ``backbone_lr_mult``
            (0.1x): ``"backbone"``, the whole feature extractor (GPCIS: its whole
            DeepLabV3+), or ``"encoder"``, only its pretrained trunk (RITM: ``LRMult`` on the
            ResNet / HRNet, the ASPP, decoder and fusion layers at the full rate; a backbone
            without a separate trunk, ``tiny``, counts whole). ``"auto"`` (default):
            ``"backbone"`` for GP heads, ``"encoder"`` for conv heads. Checkpoints written
            before session 13 read as ``"backbone"``, what they trained with.
        pretrained: backbone initialisation (``False``, ``True`` = ImageNet weights, or a
            path to a local state dict, stored as ``str``); ignored when weights come from
            a checkpoint.
        name: registry name the config was made from (informational).
    """

    backbone: str = "tiny"
    head: str = "gp"
    gp: GPHeadConfig = field(default_factory=GPHeadConfig)
    vi_weight: float = 0.01
    click_radius: float = 5.0
    use_image_in_kernel: bool = True
    gp_stride: int = 1
    backbone_lr_scope: str = "auto"
    pretrained: bool | str = False
    name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.pretrained, os.PathLike):
            self.pretrained = os.fspath(self.pretrained)  # plain str: checkpoint-safe
        if isinstance(self.gp, dict):
            known = {f.name for f in dataclasses.fields(GPHeadConfig)}
            unknown = sorted(set(self.gp) - known)
            if unknown:
                raise ValueError(f"unknown GPHeadConfig field(s) {unknown}; known: {sorted(known)}")
            self.gp = GPHeadConfig(**self.gp)
        if not isinstance(self.gp, GPHeadConfig):
            raise ValueError(f"gp must be a GPHeadConfig or a dict of its fields, got {type(self.gp).__name__}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(f"backbone must be a non-empty string, got {self.backbone!r}")
        for name, least in (("click_radius", None), ("vi_weight", 0.0)):
            value = getattr(self, name)
            ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
                  and (value > 0 if least is None else value >= least))
            if not ok:
                raise ValueError(f"{name} must be a finite number {'> 0' if least is None else '>= 0'}, got {value!r}")
        check_stride(self.gp_stride, "gp_stride")
        if self.backbone_lr_scope not in LR_SCOPES:
            raise ValueError(f"backbone_lr_scope must be one of {LR_SCOPES}, got {self.backbone_lr_scope!r}")

    @property
    def effective_backbone_lr_scope(self) -> str:
        """``backbone_lr_scope`` with ``"auto"`` resolved by the head."""
        if self.backbone_lr_scope != "auto":
            return self.backbone_lr_scope
        return "encoder" if self.head == "conv" else "backbone"

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (``dataclasses.asdict``), as stored in checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are a ``ValueError`` naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; known: {sorted(known)}")
        data = dict(data)
        data.setdefault("backbone_lr_scope", "backbone")  # older checkpoints trained so
        if isinstance(data.get("gp"), dict):
            gp_known = {f.name for f in dataclasses.fields(GPHeadConfig)}
            gp_unknown = sorted(set(data["gp"]) - gp_known)
            if gp_unknown:
                raise ValueError(f"unknown GPHeadConfig field(s) {gp_unknown}; known: {sorted(gp_known)}")
            data["gp"] = GPHeadConfig(**data["gp"])
        return cls(**data)


@dataclass
class ModelOutput:
    """What :meth:`SegmentationModel.forward` returns.

    Attributes:
        logits: ``(B, 1, H, W)`` logits at the input resolution.
        aux_loss: scalar (``alpha * L_VI`` for GP heads, 0 for the conv head and at
            inference: eval mode under ``torch.no_grad``).
        std: ``(B, 1, H, W)`` posterior std of the latent function (GP head, when asked).
        samples: ``(S, B, 1, H, W)`` posterior samples when ``num_samples > 0``, else None.
    """

    logits: Tensor
    aux_loss: Tensor
    std: Tensor | None = None
    samples: Tensor | None = None


class SegmentationModel(nn.Module):
    """An interactive segmentation network: Conv1S click encoder + backbone + head.

    Args:
        config: the :class:`ModelConfig`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.backbone = create_backbone(config.backbone, pretrained=config.pretrained)
        self.click_encoder = Conv1S(
            side_channels=int(self.backbone.side_channels), side_stride=int(self.backbone.side_stride)
        )
        d = int(self.backbone.out_channels)
        self.head: SegHead
        if config.head == "gp":
            self.head = GPSegHead(
                d, config.gp, vi_weight=config.vi_weight, use_image=config.use_image_in_kernel,
                stride=config.gp_stride,
            )
        else:
            self.head = ConvHead(d)
        self._graph_head: CUDAGraphHead | None = None

    # ------------------------------------------------------------------ CUDA graphs
    def enable_cuda_graphs(self, enabled: bool = True, click_bucket: int = 8, max_graphs: int = 4) -> None:
        """Run the head through CUDA graphs at inference (:class:`~gpcis.models.cuda_graph.CUDAGraphHead`).

        Used by :meth:`forward` / :meth:`run_head` for CUDA inputs in eval mode under
        ``torch.no_grad`` without posterior samples; everything else runs eagerly as before.
        The result equals the eager head's up to rounding (clicks are padded to a multiple
        of ``click_bucket``; a click system that would need jitter is redone eagerly).
        ``enabled=False`` drops the graphs. Settings read at capture (the head's
        configuration, e.g. ``eval_noise``) are frozen in the graphs: after changing one,
        call this again (:meth:`set_gp_stride` does so itself).
        """
        self._graph_head = CUDAGraphHead(self.head, click_bucket, max_graphs) if enabled else None

    @property
    def cuda_graphs(self) -> CUDAGraphHead | None:
        """The head's :class:`~gpcis.models.cuda_graph.CUDAGraphHead`, or ``None`` (not enabled)."""
        return self._graph_head

    def run_head(
        self,
        features: Tensor,
        image: Tensor,
        clicks: ClickBatch,
        num_samples: int | None = None,
        return_std: bool = False,
        generator: torch.Generator | None = None,
    ) -> HeadOutput:
        """``self.head(...)``, through its CUDA graphs where they are enabled and apply."""
        graphs = self._graph_head
        if (
            graphs is not None and features.is_cuda and not self.training and not torch.is_grad_enabled()
            and not num_samples and generator is None
        ):
            return graphs(features, image, clicks, return_std=return_std)
        return self.head(features, image, clicks, num_samples=num_samples, return_std=return_std,
                         generator=generator)

    def set_gp_stride(self, stride: int) -> None:
        """Change the GP head's test-grid stride (it has no parameters, so any trained
        model can be evaluated at any stride); updates ``config.gp_stride``.

        Raises:
            ValueError: a conv-head model, or ``stride`` not an int >= 1.
        """
        if not isinstance(self.head, GPSegHead):
            raise ValueError(f"gp_stride applies to GP heads; this model has a {self.config.head!r} head")
        self.head.stride = check_stride(stride, "gp_stride")
        self.config.gp_stride = stride
        if self._graph_head is not None:  # the graphs hold the old test grid
            self._graph_head.clear()

    # ------------------------------------------------------------------ parameters
    def _slow_module(self) -> nn.Module:
        encoder = getattr(self.backbone, "encoder", None)
        if self.config.effective_backbone_lr_scope == "encoder" and isinstance(encoder, nn.Module):
            return encoder
        return self.backbone

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters trained at the reduced learning rate (0.1x in both papers): the
        whole backbone or its pretrained trunk only (``ModelConfig.backbone_lr_scope``)."""
        return self._slow_module().parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """All other parameters: the click encoder (Conv1S), the head, and for the
        ``"encoder"`` scope the backbone's own layers after its trunk."""
        slow_ids = {id(p) for p in self._slow_module().parameters()}
        return (p for p in self.parameters() if id(p) not in slow_ids)

    # ------------------------------------------------------------------ forward
    def _check_inputs(
        self, image: Tensor, clicks: ClickBatch, prev_mask: Tensor | None, num_samples: int | None
    ) -> None:
        if not isinstance(image, Tensor):
            raise ValueError(f"image must be a torch.Tensor, got {type(image).__name__}")
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"image must be a float tensor in [0, 1], got dtype {image.dtype}")
        if not isinstance(clicks, ClickBatch):
            raise ValueError(f"clicks must be a gpcis.clicks.ClickBatch, got {type(clicks).__name__}")
        check_num_samples(num_samples, allow_none=True)
        b, _, h, w = image.shape
        if clicks.batch_size != b:
            raise ValueError(f"clicks has batch size {clicks.batch_size}, image has {b}")
        if prev_mask is not None:
            if not isinstance(prev_mask, Tensor) or tuple(prev_mask.shape) != (b, 1, h, w):
                shape = tuple(prev_mask.shape) if isinstance(prev_mask, Tensor) else type(prev_mask).__name__
                raise ValueError(f"prev_mask must have shape {(b, 1, h, w)}, got {shape}")
        # every value check in one read from the device (no masked selection, which reads its
        # size back by itself); min / max are NaN where a NaN is
        checks: dict[str, Tensor] = {}
        if image.numel() > 0:
            checks.update(image_lo=image.min(), image_hi=image.max())
        if prev_mask is not None and prev_mask.numel() > 0:
            checks.update(prev_lo=prev_mask.min(), prev_hi=prev_mask.max())
        if clicks.max_clicks:
            coords, labels, valid = clicks.coords, clicks.labels, clicks.valid
            outside = (~torch.isfinite(coords).all(-1) | (coords < 0).any(-1) | (coords[..., 0] > h - 1)
                       | (coords[..., 1] > w - 1)) & valid
            # one convention for the click maps and the GP head: a 0/1 label's 0 drew no disk
            # while the GP read it as negative
            unsigned = valid & (labels != 1) & (labels != -1)
            checks.update(outside=outside.any(), unsigned=unsigned.any())
        if not checks:
            return
        got = dict(zip(checks, torch.stack([t.to(device=image.device, dtype=torch.float64)
                                            for t in checks.values()]).tolist()))
        if "image_lo" in got and not (got["image_lo"] >= -1e-3 and got["image_hi"] <= 1 + 1e-3):
            if math.isnan(got["image_lo"]) or math.isnan(got["image_hi"]):
                raise ValueError("image contains NaN values")
            raise ValueError(
                f"image values must lie in [0, 1] (got [{got['image_lo']:.3g}, {got['image_hi']:.3g}]); pass "
                "RGB/255, the model applies the ImageNet normalization itself"
            )
        if "prev_lo" in got and not (got["prev_lo"] >= 0 and got["prev_hi"] <= 1):
            raise ValueError(f"prev_mask values must lie in [0, 1] (got [{got['prev_lo']:.3g}, {got['prev_hi']:.3g}]; "
                             "a 0/255 mask? pass mask / 255 or a bool mask)")
        if got.get("outside"):
            raise ValueError(
                f"clicks: a valid click lies outside the {h}x{w} image (rows 0..{h - 1}, cols 0..{w - 1}) or has "
                "a non-finite coordinate"
            )
        if got.get("unsigned"):
            raise ValueError("clicks: labels of valid clicks must be +1 (positive) or -1 (negative); "
                             "padding is marked by valid = False")

    def encode_clicks(self, clicks: ClickBatch, prev_mask: Tensor | None, size: tuple[int, int]) -> Tensor:
        """The 3 click maps: ``(B, 3, H, W)`` = positive disks, negative disks, previous mask."""
        disks = disk_maps(clicks, size, radius=self.config.click_radius)
        if prev_mask is None:
            prev = disks.new_zeros(disks.shape[0], 1, *size)
        else:
            prev = prev_mask.to(disks.dtype)
        return torch.cat([disks, prev], dim=1)

    def forward(
        self,
        image: Tensor,
        clicks: ClickBatch,
        prev_mask: Tensor | None = None,
        num_samples: int | None = None,
        return_std: bool = False,
        generator: torch.Generator | None = None,
    ) -> ModelOutput:
        """Segment.

        Args:
            image: ``(B, 3, H, W)`` float RGB in [0, 1].
            clicks: clicks in pixels of the ``H x W`` image (zero clicks are valid).
            prev_mask: ``(B, 1, H, W)`` previous prediction in [0, 1], or ``None`` (empty).
            num_samples: GP posterior samples (``None``: 1 in training, 0 in eval).
            return_std: also return the GP posterior std (``None`` for the conv head).
            generator: random generator for the GP posterior samples (reproducible draws).

        Returns:
            :class:`ModelOutput` with ``logits`` of shape ``(B, 1, H, W)``.
        """
        self._check_inputs(image, clicks, prev_mask, num_samples)
        clicks = clicks.to(image.device)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        maps = self.encode_clicks(clicks, prev_mask, size).to(image.dtype)
        side = self.click_encoder(maps)
        features = self.backbone(normalize_image(image), side)
        out = self.run_head(features, image, clicks, num_samples=num_samples, return_std=return_std,
                            generator=generator)
        return ModelOutput(logits=out.logits, aux_loss=out.aux_loss, std=out.std, samples=out.samples)
