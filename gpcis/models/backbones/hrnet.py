"""HRNet-18-small-v2 (timm ``hrnet_w18_small_v2``) with its branches upsampled and fused.

The four parallel branches (strides 4/8/16/32; 18/36/72/144 channels read from timm's
``feature_info``) are bilinearly upsampled to stride 4 and concatenated, as in the HRNetV2
segmentation representation (Wang et al., TPAMI 2020), then fused by a 1x1 conv (BN, ReLU),
a 3x3 conv (BN, ReLU) and a linear 1x1 projection to d = 48. The click encoder's tensor is added
after the first stem conv ``conv1 -> bn1 -> act1`` (stride 2, 64 channels), as in RITM.
timm's branch fusion needs sizes divisible by 32; other inputs are zero-padded at the
bottom/right (and the output cropped back to ``ceil(H/4) x ceil(W/4)``).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpcis.models.backbones.base import Backbone, create_timm_features
from gpcis.models.backbones.layers import conv_bn_relu, upsample_to

__all__ = ["HRNetBackbone"]


class HRNetBackbone(Backbone):
    """timm HRNet + branch fusion: ``(B,3,H,W) -> (B,48,ceil(H/4),ceil(W/4))``.

    Args:
        pretrained: ``False``, ``True`` (timm ImageNet weights) or a local timm
            ``hrnet_w18_small_v2`` state-dict path (its classifier / incre modules are ignored).
        model_name: timm HRNet name.
        out_channels: ``d``.
    """

    def __init__(
        self,
        pretrained: bool | str | os.PathLike = False,
        model_name: str = "hrnet_w18_small_v2",
        out_channels: int = 48,
    ) -> None:
        super().__init__()
        # feature_location='' returns the raw branches instead of the classification incre modules.
        self.encoder = create_timm_features(model_name, pretrained, feature_location="")
        info = self.encoder.feature_info
        chans, strides = info.channels(), info.reduction()
        if strides[:2] != [2, 4]:
            raise ValueError(f"model_name {model_name!r}: expected a stride-2 stem then stride-4 branch, got {strides}")
        self.out_channels = out_channels
        self.side_channels = chans[0]
        self.side_stride = 2
        branch_channels = sum(chans[1:])
        self.fuse = nn.Sequential(
            conv_bn_relu(branch_channels, out_channels, 1),
            conv_bn_relu(out_channels, out_channels, 3),
            nn.Conv2d(out_channels, out_channels, 1),
        )

    def forward(self, image: Tensor, side: Tensor | None = None) -> Tensor:
        """See :meth:`Backbone.forward`; ``side`` is ``(B, 64, ceil(H/2), ceil(W/2))``."""
        self.check_inputs(image, side)
        h, w = image.shape[-2:]
        out_h, out_w = math.ceil(h / 4), math.ceil(w / 4)
        # timm's HRNet fuses branches with fixed 2x upsampling, so it needs sides divisible by 32:
        # pad bottom/right with zeros (the mean colour after normalization) and crop the output.
        pad_h, pad_w = (-h) % 32, (-w) % 32
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
            if side is not None:
                side = F.pad(side, (0, (w + pad_w) // 2 - side.shape[-1], 0, (h + pad_h) // 2 - side.shape[-2]))
        enc = self.encoder
        x = enc.act1(enc.bn1(enc.conv1(image)))
        if side is not None:
            x = x + side
        x = enc.act2(enc.bn2(enc.conv2(x)))
        branches = enc.stages(x)  # [(B, C_i, ceil(H/2^(i+2)), ...)] for i = 0..3
        fused = torch.cat([upsample_to(b, branches[0]) for b in branches], dim=1)
        return self.fuse(fused)[..., :out_h, :out_w]
