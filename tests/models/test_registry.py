"""Tests of gpcis.models.registry."""

from __future__ import annotations

import pytest

from gpcis.models import create_model, list_models, model_config, save_checkpoint
from gpcis.models.backbones import list_backbones

REQUIRED = [
    f"{p}_{b}" for p in ("gpcis", "ritm") for b in ("resnet50", "hrnet18s", "segformer_b0", "tiny", "efflite0")
]


def test_all_required_names_listed_and_sorted():
    names = list_models()
    assert set(REQUIRED) <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", REQUIRED)
def test_configs(name):
    cfg = model_config(name)
    prefix, backbone = name.split("_", 1)
    assert cfg.backbone == backbone and cfg.backbone in list_backbones()
    assert cfg.head == ("gp" if prefix == "gpcis" else "conv")
    assert cfg.name == name and cfg.pretrained is False
    expected_l = {"resnet50": 256, "hrnet18s": 256, "segformer_b0": 128}.get(backbone)
    if expected_l is not None:  # paper Sec. 4.1
        assert cfg.gp.num_features == expected_l


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown model name 'gpcis_vit'.*gpcis_tiny"):
        create_model("gpcis_vit")
    with pytest.raises(ValueError, match="needs a model name or a checkpoint"):
        create_model()


def test_overrides():
    model = create_model("gpcis_tiny", use_image_in_kernel=False, vi_weight=0.25)
    assert model.config.use_image_in_kernel is False and model.head.vi_weight == 0.25
    assert model.head.feature_dim == model.backbone.out_channels
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        create_model("gpcis_tiny", bogus=1)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("ritm_tiny"))
    with pytest.raises(ValueError, match="not 'gpcis_tiny'"):
        create_model("gpcis_tiny", checkpoint=path)
    assert create_model("ritm_tiny", checkpoint=path).config.name == "ritm_tiny"
    with pytest.raises(ValueError, match="cannot be combined"):
        create_model(checkpoint=path, vi_weight=2.0)


def test_model_from_checkpoint_is_create_model_from_the_loaded_file(tmp_path):
    import torch

    from gpcis.models import CheckpointError, load_checkpoint, model_from_checkpoint

    source = create_model("gpcis_tiny")
    path = save_checkpoint(tmp_path / "m.pt", source)
    data = load_checkpoint(path)
    model = model_from_checkpoint(data, "gpcis_tiny", source=str(path))
    ref = create_model("gpcis_tiny", checkpoint=path)
    assert not model.training and model.config == ref.config
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match=r"m\.pt holds a .*not 'ritm_tiny'"):
        model_from_checkpoint(data, "ritm_tiny", source=str(path))
    with pytest.raises(ValueError, match="unknown model name 'nope'"):
        model_from_checkpoint(data, "nope")
    with pytest.raises(CheckpointError, match="mine: its model config cannot be used"):
        model_from_checkpoint({"model": {}}, source="mine")
