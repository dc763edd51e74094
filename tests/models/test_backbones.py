"""Tests of the backbone interface shared by every backbone, the registry and weight loading."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from gpcis.models.backbones import Backbone, create_backbone, list_backbones
from gpcis.models.backbones.resnet_deeplab import ASPP

NAMES = ["tiny", "resnet50", "hrnet18s", "segformer_b0", "efflite0"]
# d, side_channels, side_stride: d is the specification; side channels are the stem widths of
# the published architectures (ResNet/HRNet 64, EfficientNet-Lite0 32, MiT-B0 stage 1 32).
SPEC = {
    "tiny": (48, 24, 2),
    "resnet50": (48, 64, 2),
    "hrnet18s": (48, 64, 2),
    "segformer_b0": (96, 32, 4),
    "efflite0": (48, 32, 2),
}


@pytest.fixture(scope="module")
def backbones() -> dict[str, Backbone]:
    torch.manual_seed(0)
    return {name: create_backbone(name).eval() for name in NAMES}


def _stem_module(name: str, backbone: Backbone) -> nn.Module:
    """The module whose output the side tensor must be added to (independent of forward())."""
    return {
        "tiny": lambda b: b.stem,
        "resnet50": lambda b: b.encoder.act1,
        "hrnet18s": lambda b: b.encoder.act1,
        "segformer_b0": lambda b: b.encoder.patch_embed1,
        "efflite0": lambda b: b.encoder.bn1,
    }[name](backbone)


def test_list_backbones() -> None:
    assert list_backbones() == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(64, 64), (50, 70)])
def test_output_shape_and_attributes(backbones, name: str, size: tuple[int, int]) -> None:
    b = backbones[name]
    d, side_c, side_s = SPEC[name]
    assert (b.out_channels, b.side_channels, b.side_stride) == (d, side_c, side_s)
    h, w = size
    with torch.no_grad():
        out = b(torch.randn(2, 3, h, w))
    assert out.shape == (2, d, math.ceil(h / 4), math.ceil(w / 4))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_side_is_added_after_the_stem(backbones, name: str) -> None:
    """forward(image, side) equals forward(image) with `side` added by a hook on the stem output."""
    b = backbones[name]
    h, w = 64, 96  # multiples of 32: HRNet pads other sizes before its stem
    image = torch.randn(1, 3, h, w)
    s = b.side_stride
    side = torch.randn(1, b.side_channels, math.ceil(h / s), math.ceil(w / s))

    def add_side(module, inputs, output):
        if isinstance(output, tuple):  # MiT patch embedding: (tokens (B, N, C), h, w)
            return (output[0] + side.flatten(2).transpose(1, 2),) + output[1:]
        return output + side

    with torch.no_grad():
        plain = b(image)
        zeros = b(image, torch.zeros_like(side))
        with_side = b(image, side)
        handle = _stem_module(name, b).register_forward_hook(add_side)
        try:
            hooked = b(image)
        finally:
            handle.remove()
    torch.testing.assert_close(zeros, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(with_side, hooked, rtol=1e-5, atol=1e-5)
    assert (with_side - plain).abs().max() > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_image_side_and_parameters(backbones, name: str) -> None:
    b = backbones[name]
    b.train()
    try:
        image = torch.randn(2, 3, 64, 64, requires_grad=True)
        s = b.side_stride
        side = torch.randn(2, b.side_channels, 64 // s, 64 // s, requires_grad=True)
        b.zero_grad()
        b(image, side).square().mean().backward()
    finally:
        b.eval()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert side.grad is not None and side.grad.abs().sum() > 0
    no_grad = [n for n, p in b.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


@pytest.mark.parametrize("name", ["tiny", "segformer_b0"])
def test_bad_inputs_name_the_argument(backbones, name: str) -> None:
    b = backbones[name]
    with pytest.raises(ValueError, match="image"):
        b(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="side"):
        b(torch.randn(1, 3, 64, 64), torch.randn(1, b.side_channels + 1, 64 // b.side_stride, 64 // b.side_stride))
    with pytest.raises(ValueError, match="side"):
        b(torch.randn(1, 3, 64, 64), torch.randn(1, b.side_channels, 64 // b.side_stride + 1, 64 // b.side_stride))


def test_segformer_rejects_images_smaller_than_the_reduction(backbones) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        backbones["segformer_b0"](torch.randn(1, 3, 16, 64))


def test_unknown_name_and_bad_pretrained_type() -> None:
    with pytest.raises(ValueError, match="unknown backbone name 'resnet51'.*tiny"):
        create_backbone("resnet51")
    with pytest.raises(ValueError, match="pretrained"):
        create_backbone("tiny", pretrained=3)


def test_tiny_is_small() -> None:
    assert create_backbone("tiny").num_parameters() < 1_000_000


def test_aspp_rates_and_resnet_dilation(backbones) -> None:
    b = backbones["resnet50"]
    dilations = [branch[0].dilation[0] for branch in b.aspp.branches]
    assert dilations == [1, 12, 24, 36]
    assert isinstance(b.aspp, ASPP)
    assert b.encoder.feature_info.reduction() == [2, 4, 8, 8, 8]  # output stride 8


# ----------------------------------------------------------------------------- pretrained


def test_missing_and_unreadable_files(tmp_path) -> None:
    with pytest.raises(ValueError, match="not found.*nope.pth"):
        create_backbone("tiny", pretrained=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="cannot read.*bad.pth"):
        create_backbone("tiny", pretrained=str(bad))
    not_tensors = tmp_path / "list.pth"
    torch.save({"a": 1}, not_tensors)
    with pytest.raises(ValueError, match="state dict of tensors"):
        create_backbone("tiny", pretrained=not_tensors)


def test_tiny_path_round_trip_and_mismatch(tmp_path) -> None:
    torch.manual_seed(1)
    src = create_backbone("tiny")
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": src.state_dict()}, path)  # wrapped checkpoints are unwrapped
    loaded = create_backbone("tiny", pretrained=path)
    for (k, v), (k2, v2) in zip(src.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    state = src.state_dict()
    state["stem.0.weight"] = torch.zeros(5, 3, 3, 3)
    del state["proj.bias"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"1 missing keys.*proj\.bias.*1 shape mismatches.*stem\.0\.weight"):
        create_backbone("tiny", pretrained=path)
    with pytest.raises(ValueError, match="no published ImageNet weights"):
        create_backbone("tiny", pretrained=True)


def test_hrnet_loads_a_timm_classifier_state_dict(tmp_path) -> None:
    """A full timm ImageNet model file (classifier, incre modules) loads into the encoder."""
    torch.manual_seed(2)
    full = timm.create_model("hrnet_w18_small_v2")
    path = tmp_path / "hrnet.pth"
    torch.save(full.state_dict(), path)
    b = create_backbone("hrnet18s", pretrained=str(path))
    ref = full.state_dict()
    enc = b.encoder.state_dict()
    assert len(enc) > 100
    for k, v in enc.items():
        assert torch.equal(v, ref[k]), k


def test_wrong_architecture_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save(create_backbone("tiny").state_dict(), path)
    with pytest.raises(ValueError, match=r"tiny\.pth.*do not match \w+; \d+ missing keys.*conv1\.weight"):
        create_backbone("resnet50", pretrained=path)
    # a whole gpcis checkpoint (a previous run's best.pt) and a file that is not a state dict
    from gpcis.models import create_model, save_checkpoint

    run = save_checkpoint(tmp_path / "best.pt", create_model("ritm_tiny"))
    with pytest.raises(ValueError, match="is a gpcis checkpoint.*checkpoint=.*--resume"):
        create_backbone("tiny", pretrained=run)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"(?s)cannot read pretrained weights file .*junk\.pth.*\(\w+Error: .*\.safetensors"):
        create_backbone("tiny", pretrained=junk)


def test_segformer_loads_reference_named_weights_and_ignores_the_classifier(tmp_path) -> None:
    torch.manual_seed(3)
    src = create_backbone("segformer_b0")
    state = dict(src.encoder.state_dict())
    state["head.weight"] = torch.randn(1000, 256)  # the ImageNet classifier of mit_b0.pth
    state["head.bias"] = torch.randn(1000)
    path = tmp_path / "mit_b0.pth"
    torch.save(state, path)
    loaded = create_backbone("segformer_b0", pretrained=path)
    for k, v in src.encoder.state_dict().items():
        assert torch.equal(v, loaded.encoder.state_dict()[k]), k
    with pytest.raises(RuntimeError, match="pretrained='PATH"):
        create_backbone("segformer_b0", pretrained=True)


@pytest.mark.parametrize("name, timm_name", [("resnet50", "resnet50"), ("hrnet18s", "hrnet_w18_small_v2")])
def test_pretrained_true_offline_is_a_clear_error(monkeypatch, tmp_path, name: str, timm_name: str) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match=rf"'{timm_name}'.*pretrained='PATH"):
        create_backbone(name, pretrained=True)
