"""MiT-B0 / SegFormer: parts against brute-force references, sizes, parameter count."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gpcis.models.backbones.mit import (
    EfficientSelfAttention,
    MiTConfig,
    MixFFN,
    MixVisionTransformer,
    SegFormerBackbone,
)


def test_mit_b0_encoder_parameter_count_is_published() -> None:
    enc = MixVisionTransformer(MiTConfig())
    n = sum(p.numel() for p in enc.parameters())
    assert 3.3e6 <= n <= 3.7e6, n


def test_mit_b0_configuration() -> None:
    enc = MixVisionTransformer()
    kernels = [getattr(enc, f"patch_embed{i}").proj.kernel_size[0] for i in range(1, 5)]
    strides = [getattr(enc, f"patch_embed{i}").proj.stride[0] for i in range(1, 5)]
    assert kernels == [7, 3, 3, 3] and strides == [4, 2, 2, 2]
    heads = [getattr(enc, f"block{i}")[0].attn.num_heads for i in range(1, 5)]
    srs = [getattr(enc, f"block{i}")[0].attn.sr_ratio for i in range(1, 5)]
    depths = [len(getattr(enc, f"block{i}")) for i in range(1, 5)]
    hidden = [getattr(enc, f"block{i}")[0].mlp.fc1.out_features for i in range(1, 5)]
    assert heads == [1, 2, 5, 8] and srs == [8, 4, 2, 1] and depths == [2, 2, 2, 2]
    assert hidden == [4 * c for c in (32, 64, 160, 256)]
    # stochastic depth increases linearly from 0 to 0.1 over the 8 blocks
    probs = [0.0 if not hasattr(b.drop_path, "drop_prob") else b.drop_path.drop_prob
             for i in range(1, 5) for b in getattr(enc, f"block{i}")]
    assert probs == pytest.approx([0.1 * k / 7 for k in range(8)])


def test_encoder_stage_shapes() -> None:
    enc = MixVisionTransformer().eval()
    with torch.no_grad():
        outs = enc(torch.randn(1, 3, 70, 97))
    for i, (o, c) in enumerate(zip(outs, (32, 64, 160, 256))):
        s = 2 ** (i + 2)
        # each stage embeds the previous map with stride 2, i.e. ceil(ceil(H/4)/2) ... = ceil(H/s)
        assert o.shape == (1, c, math.ceil(70 / s), math.ceil(97 / s))


def _reference_attention(m: EfficientSelfAttention, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Eq. 1-2 of SegFormer written out with explicit loops over heads and explicit softmax."""
    b, n, c = x.shape
    heads, dh = m.num_heads, c // m.num_heads
    q = x @ m.q.weight.T + m.q.bias
    if m.sr_ratio > 1:
        grid = x.transpose(1, 2).reshape(b, c, h, w)
        r = F.conv2d(grid, m.sr.weight, m.sr.bias, stride=m.sr_ratio).flatten(2).transpose(1, 2)
        r = F.layer_norm(r, (c,), m.norm.weight, m.norm.bias, m.norm.eps)
        assert r.shape[1] == (h // m.sr_ratio) * (w // m.sr_ratio)  # N / R^2 keys
    else:
        r = x
    kv = r @ m.kv.weight.T + m.kv.bias
    k, v = kv[..., :c], kv[..., c:]
    outs = []
    for i in range(heads):
        sl = slice(i * dh, (i + 1) * dh)
        logits = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(dh)
        weights = torch.exp(logits - logits.amax(-1, keepdim=True))
        outs.append((weights / weights.sum(-1, keepdim=True)) @ v[..., sl])
    return torch.cat(outs, -1) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("dim, heads, sr", [(32, 1, 8), (64, 2, 4), (40, 5, 2), (32, 8, 1)])
def test_efficient_self_attention_matches_reference(dim: int, heads: int, sr: int) -> None:
    torch.manual_seed(0)
    m = EfficientSelfAttention(dim, heads, sr).double()
    h, w = 16, 8
    x = torch.randn(2, h * w, dim, dtype=torch.float64)
    torch.testing.assert_close(m(x, h, w), _reference_attention(m, x, h, w), rtol=1e-10, atol=1e-10)


def test_mix_ffn_matches_reference() -> None:
    torch.manual_seed(0)
    dim, hidden, h, w = 8, 32, 5, 6
    m = MixFFN(dim, hidden).double()
    x = torch.randn(2, h * w, dim, dtype=torch.float64)
    y = x @ m.fc1.weight.T + m.fc1.bias  # (B, N, hidden)
    grid = y.transpose(1, 2).reshape(2, hidden, h, w)
    # the depthwise 3x3 conv computed channel by channel with zero padding
    pad = F.pad(grid, (1, 1, 1, 1))
    conv = torch.zeros_like(grid)
    wk = m.dwconv.dwconv.weight[:, 0]
    for di in range(3):
        for dj in range(3):
            conv += wk[:, di, dj][None, :, None, None] * pad[:, :, di : di + h, dj : dj + w]
    conv += m.dwconv.dwconv.bias[None, :, None, None]
    act = 0.5 * conv * (1 + torch.erf(conv / math.sqrt(2)))  # exact GELU
    ref = act.flatten(2).transpose(1, 2) @ m.fc2.weight.T + m.fc2.bias
    torch.testing.assert_close(m(x, h, w), ref, rtol=1e-10, atol=1e-10)


def test_segformer_backbone_decoder_width() -> None:
    b = SegFormerBackbone().eval()
    assert b.out_channels == 96 and b.decoder.linear_pred.out_channels == 96
    assert [lin.out_channels for lin in b.decoder.linear_c] == [256] * 4
    decoder_params = sum(p.numel() for p in b.decoder.parameters())
    assert 0.3e6 < decoder_params < 0.5e6  # SegFormer-B0's decoder is 0.4 M parameters
