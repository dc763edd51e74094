"""A tiny multi-scale CNN backbone for CPU tests, examples and quick experiments.

Stem (stride 2) -> residual stages at strides 4, 8 and 16 -> every stage projected to ``d``
channels, upsampled to stride 4 and summed (an FPN-like fuse) -> a 3x3 refinement conv -> a linear 1x1 projection.
About 0.4 M parameters; d = 48 at stride 4; the click-encoder side tensor is added after the
stem (stride 2, ``side_channels`` = stem width).
"""

from __future__ import annotations

import os

import torch.nn.functional as F
from torch import Tensor, nn

from gpcis.models.backbones.base import Backbone, load_matching_state_dict, load_state_dict_file
from gpcis.models.backbones.layers import conv_bn_relu

__all__ = ["TinyBackbone"]


class _ResStage(nn.Module):
    """A stride-2 downsampling conv followed by one residual 3x3-3x3 block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = conv_bn_relu(cin, cout, stride=2)
        self.conv1 = conv_bn_relu(cout, cout)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, cin, H, W) -> (B, cout, ceil(H/2), ceil(W/2))``."""
        x = self.down(x)
        return F.relu(x + self.conv2(self.conv1(x)))


class TinyBackbone(Backbone):
    """Tiny multi-scale CNN: ``(B, 3, H, W) -> (B, 48, ceil(H/4), ceil(W/4))``.

    Args:
        pretrained: ``False`` or a path to a state dict of this module (there are no published
            ImageNet weights, so ``True`` is an error).
        widths: channels of the stem and of the stride-4/8/16 stages.
        out_channels: ``d``.
    """

    def __init__(
        self,
        pretrained: bool | str | os.PathLike = False,
        widths: tuple[int, int, int, int] = (24, 32, 64, 128),
        out_channels: int = 48,
    ) -> None:
        super().__init__()
        if pretrained is True:
            raise ValueError(
                "pretrained=True: the 'tiny' backbone has no published ImageNet weights; "
                "pass pretrained=False or pretrained='PATH' to a state dict of TinyBackbone"
            )
        self.out_channels = out_channels
        self.side_channels = widths[0]
        self.side_stride = 2
        self.stem = conv_bn_relu(3, widths[0], stride=2)
        self.stages = nn.ModuleList(_ResStage(widths[i], widths[i + 1]) for i in range(3))
        self.lateral = nn.ModuleList(
            nn.Conv2d(w, out_channels, 1, bias=False) for w in widths[1:]
        )
        self.fuse = conv_bn_relu(out_channels, out_channels)
        self.proj = nn.Conv2d(out_channels, out_channels, 1)
        if pretrained is not False:
            load_matching_state_dict(self, load_state_dict_file(pretrained), source=repr(str(pretrained)))

    def forward(self, image: Tensor, side: Tensor | None = None) -> Tensor:
        """See :meth:`Backbone.forward`; ``side`` is ``(B, side_channels, ceil(H/2), ceil(W/2))``."""
        self.check_inputs(image, side)
        x = self.stem(image)
        if side is not None:
            x = x + side
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        size = feats[0].shape[-2:]
        out = self.lateral[0](feats[0])
        for lat, f in zip(self.lateral[1:], feats[1:]):
            out = out + F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
        return self.proj(self.fuse(out))
