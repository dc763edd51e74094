"""Tests of gpcis.models.click_encoder (Conv1S)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gpcis.clicks import Click, ClickBatch, disk_maps
from gpcis.models.click_encoder import Conv1S


@pytest.mark.parametrize("stride", [2, 4, 8])
@pytest.mark.parametrize("size", [(32, 32), (33, 47)])
def test_output_shape_is_ceil_of_input_over_stride(stride, size):
    enc = Conv1S(side_channels=24, side_stride=stride)
    out = enc(torch.rand(2, 3, *size))
    assert out.shape == (2, 24, math.ceil(size[0] / stride), math.ceil(size[1] / stride))


def test_scale_initialised_at_005_and_learned():
    enc = Conv1S(side_channels=8, side_stride=2)
    assert enc.scale.item() == pytest.approx(0.05)
    enc(torch.rand(1, 3, 16, 16)).sum().backward()
    assert enc.scale.grad is not None and enc.scale.grad.abs() > 0


def test_zero_clicks_empty_mask_matches_closed_form():
    """All-zero maps: every interior output equals scale * (sum_k W2 . leaky(b1) + b2)."""
    enc = Conv1S(side_channels=6, side_stride=2)
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_()
    maps = torch.zeros(1, 3, 16, 16)
    out = enc(maps)
    conv1, conv2 = enc.layers[0], enc.layers[2]
    h1 = F.leaky_relu(conv1.bias, 0.2)  # (16,)
    expected = enc.scale * (torch.einsum("ckij,k->c", conv2.weight, h1) + conv2.bias)  # (6,)
    interior = out[0, :, 1:, 1:]  # row/col 0 see the zero padding
    torch.testing.assert_close(interior, expected.view(6, 1, 1).expand_as(interior), rtol=1e-5, atol=1e-6)


def test_click_influence_is_local_to_the_receptive_field():
    """A click disk at (r, c) changes only outputs whose 3x3/s2 receptive field meets the disk."""
    enc = Conv1S(side_channels=4, side_stride=2)
    h = w = 40
    radius = 3
    clicks = ClickBatch.from_lists([[Click(20, 12, True)]])
    maps = torch.cat([disk_maps(clicks, (h, w), radius=radius), torch.zeros(1, 1, h, w)], dim=1)
    diff = (enc(maps) - enc(torch.zeros_like(maps))).abs().amax(dim=1)[0]  # (20, 20)
    disk = maps[0, 0]
    # brute force: output (i, j) reads input rows 2i-1..2i+1 and cols 2j-1..2j+1
    reach = torch.zeros(20, 20, dtype=torch.bool)
    for i in range(20):
        for j in range(20):
            reach[i, j] = bool(disk[max(2 * i - 1, 0) : 2 * i + 2, max(2 * j - 1, 0) : 2 * j + 2].any())
    assert diff[~reach].max() == 0
    assert diff[reach].min() > 0


@pytest.mark.parametrize("kwargs", [dict(side_channels=0, side_stride=2), dict(side_channels=8, side_stride=3),
                                    dict(side_channels=8, side_stride=1)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="side_"):
        Conv1S(**kwargs)


def test_wrong_input_channels():
    with pytest.raises(ValueError, match="maps must have shape"):
        Conv1S(8, 2)(torch.zeros(1, 2, 8, 8))
