"""Small building blocks shared by the backbone decoders."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["conv_bn_relu", "SeparableConvBNReLU", "upsample_to"]


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """``Conv2d(kernel, stride, dilation, 'same'-style padding, no bias) -> BatchNorm2d -> ReLU``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3x3 conv -> pointwise 1x1 conv -> BatchNorm2d -> ReLU (as in DeepLabV3+)."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


def upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinearly resize ``x (B, C, h, w)`` to the spatial size of ``ref (B, *, H, W)``."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)
