"""ResNet-50 (timm, dilated to output stride 8) with a DeepLabV3+ decoder.

DeepLabV3+ (Chen et al., ECCV 2018): ASPP on the stride-8 ``layer4`` map (a 1x1 branch,
three 3x3 atrous branches at rates 12/24/36 and an image-pooling branch, 256 channels each,
projected to 256), upsampled to stride 4 and concatenated with the 1x1-projected stride-4
``layer1`` map (48 channels), then two 3x3 separable convs and a 1x1 projection to d = 48.
This is RITM's / GPCIS' ResNet-50 feature extractor. The click encoder's tensor is added after
the stem ``conv1 -> bn1 -> act1`` (stride 2, 64 channels), before the max-pool, as in RITM.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from gpcis.models.backbones.base import Backbone, create_timm_features
from gpcis.models.backbones.layers import SeparableConvBNReLU, conv_bn_relu, upsample_to

__all__ = ["ASPP", "ResNetDeepLab"]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of every branch and of the output.
        rates: dilation rates of the 3x3 branches.
        dropout: dropout after the projection.
    """

    def __init__(
        self, in_channels: int, out_channels: int = 256, rates: tuple[int, ...] = (12, 24, 36), dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels, 1)]
            + [conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            # no BatchNorm here: a 1x1 map has no batch statistics at batch size 1
            nn.Conv2d(in_channels, out_channels, 1),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Sequential(
            conv_bn_relu(out_channels * (len(rates) + 2), out_channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, h, w) -> (B, out_channels, h, w)``."""
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class ResNetDeepLab(Backbone):
    """timm ResNet-50 (output stride 8) + DeepLabV3+: ``(B,3,H,W) -> (B,48,ceil(H/4),ceil(W/4))``.

    Args:
        pretrained: ``False``, ``True`` (timm ImageNet weights) or a local timm ``resnet50``
            state-dict path.
        model_name: timm model name (any ResNet with ``conv1/bn1/act1/maxpool/layer1-4``).
        out_channels: ``d``.
        aspp_channels: ASPP / decoder width.
        aspp_rates: ASPP dilation rates.
        low_level_channels: width of the projected stride-4 skip connection.
    """

    def __init__(
        self,
        pretrained: bool | str | os.PathLike = False,
        model_name: str = "resnet50",
        out_channels: int = 48,
        aspp_channels: int = 256,
        aspp_rates: tuple[int, ...] = (12, 24, 36),
        low_level_channels: int = 48,
    ) -> None:
        super().__init__()
        self.encoder = create_timm_features(model_name, pretrained, output_stride=8)
        info = self.encoder.feature_info
        names, chans, strides = info.module_name(), info.channels(), info.reduction()
        if strides[0] != 2 or 4 not in strides:
            raise ValueError(f"model_name {model_name!r}: expected stride-2 stem and stride-4 features, got {strides}")
        self._side_module = names[0]
        self._low_module = names[strides.index(4)]
        self._high_module = names[-1]
        self.out_channels = out_channels
        self.side_channels = chans[0]
        self.side_stride = 2
        self.aspp = ASPP(chans[-1], aspp_channels, aspp_rates)
        self.skip = conv_bn_relu(chans[strides.index(4)], low_level_channels, 1)
        self.head = nn.Sequential(
            SeparableConvBNReLU(aspp_channels + low_level_channels, aspp_channels),
            SeparableConvBNReLU(aspp_channels, aspp_channels),
            nn.Conv2d(aspp_channels, out_channels, 1),
        )

    def forward(self, image: Tensor, side: Tensor | None = None) -> Tensor:
        """See :meth:`Backbone.forward`; ``side`` is ``(B, 64, ceil(H/2), ceil(W/2))``."""
        self.check_inputs(image, side)
        x = image
        low = high = None
        # timm's FeatureListNet is a ModuleDict run in order (conv1, bn1, act1, maxpool, layer1..4).
        for name, module in self.encoder.items():
            x = module(x)
            if name == self._side_module and side is not None:
                x = x + side
            if name == self._low_module:
                low = x
            if name == self._high_module:
                high = x
        assert low is not None and high is not None
        y = upsample_to(self.aspp(high), low)
        return self.head(torch.cat([y, self.skip(low)], dim=1))
