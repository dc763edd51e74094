"""SegFormer-B0: the Mix Transformer encoder MiT-B0 and the all-MLP decoder.

Implemented from the SegFormer paper (Xie et al., NeurIPS 2021, Sec. 3):

* Overlapped patch merging: a ``K x K`` conv with stride ``S`` and padding ``K // 2`` then
  LayerNorm; ``K=7, S=4`` for the first stage and ``K=3, S=2`` for the others.
* Efficient self-attention (Eq. 1-2): keys/values are computed from a sequence reduced by a
  ``R x R`` stride-``R`` conv (+LayerNorm), ``R = 8/4/2/1`` per stage, so the cost is
  ``O(N^2 / R^2)``.
* Mix-FFN (Eq. 3): ``x_out = MLP(GELU(Conv3x3_depthwise(MLP(x_in)))) + x_in``, mlp ratio 4.
* MiT-B0: widths 32/64/160/256, depths 2/2/2/2, heads 1/2/5/8, stochastic depth (drop path)
  increasing linearly to ``drop_path_rate``.
* All-MLP decoder (Eq. 4): per-stage linear layers to ``C = 256``, upsampling to stride 4,
  concatenation, a linear fuse ``4C -> C`` (BN, ReLU) and a linear prediction layer, here
  ``C -> d = 96`` feature channels instead of class scores.

Parameter names follow the reference implementation (``patch_embed1.proj``, ``block1.0.attn.q``,
``attn.kv``, ``attn.sr``, ``mlp.dwconv.dwconv``, ``norm1`` ...), so an ImageNet ``mit_b0.pth``
state dict loads with ``pretrained="PATH"`` (its ``head.*`` classifier is ignored). timm has no
MiT, so ``pretrained=True`` is an error. The click encoder's tensor (stride 4, 32 channels) is
added to the tokens right after the first patch embedding.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import Tensor, nn

from gpcis.models.backbones.base import Backbone, load_matching_state_dict, load_state_dict_file
from gpcis.models.backbones.layers import upsample_to

__all__ = ["MiTConfig", "MixVisionTransformer", "SegFormerHead", "SegFormerBackbone"]


@dataclass(frozen=True)
class MiTConfig:
    """Hyper-parameters of a Mix Transformer; the defaults are MiT-B0."""

    embed_dims: tuple[int, int, int, int] = (32, 64, 160, 256)
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4
    drop_path_rate: float = 0.1


class OverlapPatchEmbed(nn.Module):
    """Overlapped patch merging: ``Conv(K, stride S, pad K//2) -> LayerNorm`` (Sec. 3.1)."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        """``(B, C_in, H, W) -> (tokens (B, h*w, C), h, w)`` with ``h = floor((H-1)/S)+1``."""
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention with sequence reduction ratio ``R`` (SegFormer Eq. 1-2)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """``(B, N=h*w, C) -> (B, N, C)``; keys/values from ``N / R^2`` reduced tokens."""
        b, n, c = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(b, n, heads, c // heads).transpose(1, 2)
        if self.sr_ratio > 1:
            r = x.transpose(1, 2).reshape(b, c, h, w)
            r = self.norm(self.sr(r).flatten(2).transpose(1, 2))
        else:
            r = x
        kv = self.kv(r).reshape(b, -1, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])  # softmax(QK^T / sqrt(d_head)) V
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    """3x3 depthwise conv on a token sequence (the positional mixing of Mix-FFN)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """``(B, h*w, C) -> (B, h*w, C)``."""
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Mix-FFN (SegFormer Eq. 3, without the residual): ``fc2(GELU(DWConv3x3(fc1(x))))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """``(B, h*w, C) -> (B, h*w, C)``."""
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    """Pre-norm transformer block: efficient self-attention and Mix-FFN, each with drop path."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        """``(B, h*w, C) -> (B, h*w, C)``."""
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(nn.Module):
    """The hierarchical MiT encoder: four stages at strides 4/8/16/32.

    Args:
        config: widths, depths, heads, reduction ratios (default MiT-B0).
        in_chans: input channels.
    """

    def __init__(self, config: MiTConfig = MiTConfig(), in_chans: int = 3) -> None:
        super().__init__()
        self.config = config
        dims = config.embed_dims
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths)).tolist()
        start = 0
        for i in range(4):
            embed = OverlapPatchEmbed(7 if i == 0 else 3, 4 if i == 0 else 2, in_chans if i == 0 else dims[i - 1], dims[i])
            blocks = nn.ModuleList(
                Block(dims[i], config.num_heads[i], config.mlp_ratio, config.sr_ratios[i], rates[start + j])
                for j in range(config.depths[i])
            )
            start += config.depths[i]
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))
        self.apply(_init_weights)

    def forward(self, x: Tensor, side: Tensor | None = None) -> list[Tensor]:
        """Encode an image.

        Args:
            x: ``(B, 3, H, W)``.
            side: ``(B, embed_dims[0], ceil(H/4), ceil(W/4))`` added after the first patch
                embedding, or ``None``.

        Returns:
            Four maps ``(B, embed_dims[i], ceil(H / 2^(i+2)), ceil(W / 2^(i+2)))``.
        """
        outs = []
        b = x.shape[0]
        for i in range(4):
            x, h, w = getattr(self, f"patch_embed{i + 1}")(x)
            if i == 0 and side is not None:
                x = x + side.flatten(2).transpose(1, 2)
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, h, w)
            x = getattr(self, f"norm{i + 1}")(x)
            x = x.transpose(1, 2).reshape(b, -1, h, w)
            outs.append(x)
        return outs


class SegFormerHead(nn.Module):
    """All-MLP decoder (SegFormer Eq. 4) ending in ``out_channels`` features.

    Args:
        in_channels: the four encoder widths.
        embed_dim: the unified width ``C`` (256 for B0).
        out_channels: output channels of the final linear layer.
        dropout: dropout before that layer.
    """

    def __init__(
        self, in_channels: tuple[int, ...], embed_dim: int = 256, out_channels: int = 96, dropout: float = 0.1
    ) -> None:
        super().__init__()
        # 1x1 convs are the per-token linear layers of Eq. 4.
        self.linear_c = nn.ModuleList(nn.Conv2d(c, embed_dim, 1) for c in in_channels)
        self.linear_fuse = nn.Sequential(
            nn.Conv2d(embed_dim * len(in_channels), embed_dim, 1, bias=False),
            nn.BatchNorm2d(embed_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, out_channels, 1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Four maps at strides 4..32 -> ``(B, out_channels, h_4, w_4)`` at the first map's size."""
        ups = [upsample_to(lin(f), feats[0]) for lin, f in zip(self.linear_c, feats)]
        fused = self.linear_fuse(torch.cat(ups[::-1], dim=1))
        return self.linear_pred(self.dropout(fused))


def _init_weights(m: nn.Module) -> None:
    """The reference initialisation: truncated normal linears, fan-out normal convs."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class SegFormerBackbone(Backbone):
    """MiT-B0 + all-MLP decoder: ``(B,3,H,W) -> (B,96,ceil(H/4),ceil(W/4))``.

    Args:
        pretrained: ``False`` or a local path to an ImageNet MiT-B0 state dict in the reference
            naming (``True`` raises: timm has no MiT weights).
        config: encoder hyper-parameters (default MiT-B0).
        decoder_dim: the decoder's unified width ``C``.
        out_channels: ``d``.
    """

    def __init__(
        self,
        pretrained: bool | str | os.PathLike = False,
        config: MiTConfig = MiTConfig(),
        decoder_dim: int = 256,
        out_channels: int = 96,
    ) -> None:
        super().__init__()
        if pretrained is True:
            raise RuntimeError(
                "pretrained=True: MiT-B0 (segformer_b0) is implemented in gpcis, not timm, so there is "
                "no automatic ImageNet download; pass pretrained='PATH/TO/mit_b0.pth' (the SegFormer "
                "release's ImageNet encoder weights)"
            )
        self.encoder = MixVisionTransformer(config)
        if pretrained is not False:
            load_matching_state_dict(
                self.encoder,
                load_state_dict_file(pretrained),
                source=repr(str(pretrained)),
                ignore=lambda k: k.startswith("head."),
            )
        self.decoder = SegFormerHead(config.embed_dims, decoder_dim, out_channels)
        self.out_channels = out_channels
        self.side_channels = config.embed_dims[0]
        self.side_stride = 4
        self._min_size = 4 * config.sr_ratios[0]

    def forward(self, image: Tensor, side: Tensor | None = None) -> Tensor:
        """See :meth:`Backbone.forward`; ``side`` is ``(B, 32, ceil(H/4), ceil(W/4))``."""
        self.check_inputs(image, side)
        if min(image.shape[-2:]) < self._min_size:
            raise ValueError(
                f"image must be at least {self._min_size}x{self._min_size} for the stage-1 sequence "
                f"reduction of MiT, got {tuple(image.shape[-2:])}"
            )
        return self.decoder(self.encoder(image, side))
