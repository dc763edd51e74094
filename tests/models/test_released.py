"""Tests of gpcis.models.released and ``create_model(pretrained_checkpoint=True)``.

The ``released_tiny`` fixture (tests/conftest.py) points the released weights at a tiny
checkpoint in a temporary folder, so no test depends on the real file being installed.
"""

from __future__ import annotations

import pytest
import torch

from gpcis.models import (
    RELEASED_MODELS,
    available_released_models,
    create_model,
    default_released_checkpoint,
    default_released_model,
    list_models,
    load_checkpoint,
    released,
    released_checkpoint,
)


def test_the_shipped_registry():
    assert RELEASED_MODELS == {"gpcis_efflite0": "gpcis_efflite0_coco.pt"}
    assert set(RELEASED_MODELS) <= set(list_models())
    assert released.WEIGHTS_DIR.name == "weights" and released.WEIGHTS_DIR.parent.name == "models"
    assert (released.WEIGHTS_DIR / "README.md").is_file()


def test_the_shipped_file_loads_and_segments():
    """The released gpcis_efflite0 file (when this checkout has it): the documented model,
    at most 25 MB, its evaluation stored beside the weights, and a working predictor."""
    import numpy as np

    from gpcis import Click, Predictor, create_model

    name = "gpcis_efflite0"
    path = released.WEIGHTS_DIR / RELEASED_MODELS[name]
    if not path.is_file():
        pytest.skip(f"no released weights installed at {path}")
    assert path.stat().st_size <= 25 * 2**20
    data = load_checkpoint(path)
    assert (data["config"]["backbone"], data["config"]["head"]) == ("efflite0", "gp")
    assert "optimizer" not in data["extra"] and data["extra"]["metrics"]["GrabCut"]["num_images"] == 50
    model = create_model(name, pretrained_checkpoint=True)
    assert not model.training
    image = np.zeros((96, 128, 3), np.uint8)
    image[30:70, 40:90] = (220, 40, 40)  # a red box on black
    predictor = Predictor(model, with_std=True)
    predictor.set_image(image)
    clicks = [Click(50, 65, True), Click(10, 10, False)]
    result = predictor.predict(clicks)
    assert result.mask.shape == (96, 128) and np.isfinite(result.std).all()
    for c in clicks:  # the GP mean interpolates the clicks (NoIC = 0)
        assert bool(result.mask[c.row, c.col]) == c.positive


def test_unknown_name_lists_the_released_ones(released_tiny):
    with pytest.raises(ValueError, match=r"model 'gpcis_resnet50' has no released weights.*gpcis_tiny"):
        released_checkpoint("gpcis_resnet50")


def test_missing_file_says_where_it_was_expected(released_tiny):
    released_tiny.unlink()
    with pytest.raises(FileNotFoundError) as info:
        released_checkpoint("gpcis_tiny")
    msg = str(info.value)
    assert f"file expected at {released_tiny}" in msg
    assert "this install has no released weights for gpcis_tiny" in msg
    assert "docs/training.md" in msg and "pass a checkpoint" in msg
    assert available_released_models() == []
    assert default_released_checkpoint() is None and default_released_model() is None
    with pytest.raises(FileNotFoundError, match="no released weights for gpcis_tiny"):
        create_model("gpcis_tiny", pretrained_checkpoint=True)


def test_available_and_default(released_tiny, monkeypatch, tmp_path):
    assert released_checkpoint("gpcis_tiny") == released_tiny
    assert available_released_models() == ["gpcis_tiny"]
    assert default_released_checkpoint() == released_tiny and default_released_model() == "gpcis_tiny"
    # the first available entry of the mapping wins; absent files are skipped
    monkeypatch.setattr(released, "RELEASED_MODELS", {"gpcis_hrnet18s": "absent.pt", "gpcis_tiny": released_tiny.name})
    assert available_released_models() == ["gpcis_tiny"] and default_released_checkpoint() == released_tiny
    # GPCIS_NO_RELEASED forces the training-free fallback (but the files stay listed)
    monkeypatch.setenv("GPCIS_NO_RELEASED", "1")
    assert default_released_checkpoint() is None and default_released_model() is None
    assert available_released_models() == ["gpcis_tiny"]
    for off in ("0", "", "false"):
        monkeypatch.setenv("GPCIS_NO_RELEASED", off)
        assert default_released_checkpoint() == released_tiny
    # a directory with the file's name is not a released file
    monkeypatch.setattr(released, "WEIGHTS_DIR", tmp_path / "other")
    (tmp_path / "other" / released_tiny.name).mkdir(parents=True)
    assert available_released_models() == [] and default_released_checkpoint() is None


def test_pretrained_checkpoint_loads_like_checkpoint(released_tiny, monkeypatch):
    monkeypatch.setenv("GPCIS_NO_RELEASED", "1")  # only the front ends' default is affected
    a = create_model("gpcis_tiny", pretrained_checkpoint=True)
    b = create_model(checkpoint=released_tiny)
    assert not a.training and a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
        if sa[key].is_floating_point():
            assert sa[key].dtype == torch.float32, key  # float16 in the file, float32 loaded


def test_pretrained_checkpoint_conflicts(released_tiny):
    with pytest.raises(ValueError, match="needs a model name.*gpcis_tiny"):
        create_model(pretrained_checkpoint=True)
    with pytest.raises(ValueError, match="'ritm_tiny' has no released weights"):
        create_model("ritm_tiny", pretrained_checkpoint=True)
    with pytest.raises(ValueError, match="pretrained_checkpoint=True and checkpoint= are exclusive"):
        create_model("gpcis_tiny", pretrained_checkpoint=True, checkpoint=released_tiny)
    with pytest.raises(ValueError, match="pretrained_checkpoint=True and pretrained= are exclusive"):
        create_model("gpcis_tiny", pretrained_checkpoint=True, pretrained=True)
    with pytest.raises(ValueError, match=r"overrides \['vi_weight'\] cannot be combined with pretrained_checkpoint"):
        create_model("gpcis_tiny", pretrained_checkpoint=True, vi_weight=0.5)
