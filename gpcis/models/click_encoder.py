"""Conv1S: RITM's click encoder, fused into the backbone after its stem.

The user input (positive disks, negative disks, previous mask) is a 3-channel map at the
input resolution. Conv1S turns it into a tensor with the channels and stride of the
backbone's stem output, to which the backbone *adds* it (RITM, Sofiiuk et al. 2022,
Sec. 3.2 "Conv1S"; used unchanged by GPCIS, Zhou et al. CVPR 2023, Sec. 4.1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["Conv1S"]


class Conv1S(nn.Module):
    """Click-map encoder: 1x1 conv -> LeakyReLU -> 3x3 stride-2 conv(s) -> learned scale.

    For ``side_stride == 2`` (CNN stems: ResNet, HRNet, EfficientNet-Lite) this is exactly
    RITM's Conv1S: ``Conv1x1(3 -> hidden) -> LeakyReLU(0.2) -> Conv3x3/s2(hidden ->
    side_channels) -> x * scale``. For a larger stride (``side_stride == 4`` for MiT, whose
    first patch embedding has stride 4) one extra ``Conv3x3/s2(hidden -> hidden) ->
    LeakyReLU(0.2)`` block is inserted per extra factor 2 before the last conv, so the
    output lands exactly on the backbone's grid. The scale is a learned scalar initialised
    at ``scale_init`` (0.05 in RITM) so the clicks start as a small perturbation of the
    (possibly pretrained) stem features.

    Every stride-2 conv uses padding 1, so an ``H x W`` input gives
    ``ceil(H / side_stride) x ceil(W / side_stride)`` (the size a stride-2 stem produces).

    Args:
        side_channels: channels of the backbone tensor the output is added to (read from
            ``Backbone.side_channels``, never hard-coded).
        side_stride: stride of that tensor w.r.t. the input; a power of 2, >= 2.
        in_channels: input maps (3: positive disks, negative disks, previous mask).
        hidden_channels: width after the 1x1 conv (16 in RITM).
        scale_init: initial value of the learned output scale.
    """

    def __init__(
        self,
        side_channels: int,
        side_stride: int,
        in_channels: int = 3,
        hidden_channels: int = 16,
        scale_init: float = 0.05,
    ) -> None:
        super().__init__()
        if not isinstance(side_channels, int) or side_channels < 1:
            raise ValueError(f"side_channels must be a positive int, got {side_channels!r}")
        if not isinstance(side_stride, int) or side_stride < 2 or side_stride & (side_stride - 1):
            raise ValueError(f"side_stride must be a power of 2 >= 2, got {side_stride!r}")
        if in_channels < 1 or hidden_channels < 1:
            raise ValueError(
                f"in_channels and hidden_channels must be positive, got {in_channels}, {hidden_channels}"
            )
        self.side_channels = side_channels
        self.side_stride = side_stride
        self.in_channels = in_channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, hidden_channels, kernel_size=1),
            nn.LeakyReLU(negative_slope=0.2),
        ]
        for _ in range(int(math.log2(side_stride)) - 1):
            layers += [
                nn.Conv2d(hidden_channels, hidden_channels, kernel_size=3, stride=2, padding=1),
                nn.LeakyReLU(negative_slope=0.2),
            ]
        layers.append(nn.Conv2d(hidden_channels, side_channels, kernel_size=3, stride=2, padding=1))
        self.layers = nn.Sequential(*layers)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, maps: Tensor) -> Tensor:
        """Encode the click maps.

        Args:
            maps: ``(B, in_channels, H, W)`` float maps (positive disks, negative disks,
                previous mask), values in [0, 1].

        Returns:
            ``(B, side_channels, ceil(H / side_stride), ceil(W / side_stride))``.
        """
        if maps.dim() != 4 or maps.shape[1] != self.in_channels:
            raise ValueError(
                f"maps must have shape (B, {self.in_channels}, H, W), got {tuple(maps.shape)}"
            )
        return self.layers(maps) * self.scale
