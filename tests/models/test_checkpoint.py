"""Tests of gpcis.models.checkpoint."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from gpcis.clicks import Click, ClickBatch
from gpcis.models import CheckpointError, create_model, load_checkpoint, save_checkpoint
from gpcis.models import checkpoint as ckpt_module
from gpcis.models.checkpoint import load_model_weights

SIZE = 32


def _inputs():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, SIZE, SIZE, generator=gen), ClickBatch.from_lists([[Click(5, 7, True), Click(20, 25, False)]])


def _perturb(model):
    """Move every weight away from its initial value so the round trip is not trivially true."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize("name", ["gpcis_tiny", "ritm_tiny"])
def test_round_trip_identical_outputs(tmp_path, name):
    model = _perturb(create_model(name)).eval()
    image, clicks = _inputs()
    extra = {"epoch": 3, "optimizer": {"lr": torch.tensor(0.1)}, "rng": [1, 2, 3]}
    path = save_checkpoint(tmp_path / "sub" / "model.pt", model, extra=extra)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left
    data = load_checkpoint(path)
    assert data["gpcis_version"] and data["config"]["name"] == name and data["extra"]["epoch"] == 3
    loaded = create_model(checkpoint=path)  # no name needed
    assert not loaded.training
    with torch.no_grad():
        a = model(image, clicks, return_std=True)
        b = loaded(image, clicks, return_std=True)
    assert torch.equal(a.logits, b.logits)
    if a.std is not None:
        assert torch.equal(a.std, b.std)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_half_precision_file_loads_as_float32(tmp_path):
    model = _perturb(create_model("gpcis_tiny")).eval()
    full = save_checkpoint(tmp_path / "full.pt", model)
    half = save_checkpoint(tmp_path / "half.pt", model, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    data = load_checkpoint(half)
    assert data["dtype"] == "float16"
    for k, v in model.state_dict().items():
        w = data["state_dict"][k]
        assert w.dtype == v.dtype, k
        if v.is_floating_point():
            # float16 round-to-nearest: relative error <= 2^-11 (normal range), absolute
            # <= 2^-25 (half the smallest subnormal) below it.
            err = torch.where(w == v, torch.zeros_like(v), (w - v).abs())  # inf bounds stay inf
            assert (err <= v.abs() * 2.0**-11 + 2.0**-25).all(), k
    loaded = create_model(checkpoint=half)
    # the loaded model is exactly the original with every multi-element float tensor rounded
    # to float16 and back (scalars kept): its outputs equal that model's bit for bit
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for t in list(rounded.parameters()) + list(rounded.buffers()):
            if t.is_floating_point() and t.numel() > 1:
                t.copy_(t.half().float())
    image, clicks = _inputs()
    with torch.no_grad():
        a, b = rounded(image, clicks).logits, loaded(image, clicks).logits
    assert torch.equal(a, b)


def test_half_precision_refuses_out_of_range_weights(tmp_path):
    model = create_model("ritm_tiny")
    with torch.no_grad():
        model.head.classifier.weight[0, 0] = 1e6
    with pytest.raises(ValueError, match="float16"):
        save_checkpoint(tmp_path / "m.pt", model, half=True)


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", create_model("ritm_tiny"), extra={"epoch": 1})

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_module.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, create_model("ritm_tiny"), extra={"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["extra"]["epoch"] == 1
    assert os.listdir(tmp_path) == ["m.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        create_model(checkpoint=tmp_path / "nope.pt")


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_file(tmp_path, cut):
    path = save_checkpoint(tmp_path / "m.pt", create_model("ritm_tiny"))
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="truncated or corrupt|corrupt"):
        create_model(checkpoint=path)


def test_not_a_gpcis_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(create_model("ritm_tiny").state_dict(), path)
    with pytest.raises(CheckpointError, match="not a gpcis checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not a gpcis checkpoint"):
        load_checkpoint(path)


def test_config_weights_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("gpcis_tiny"))
    data = torch.load(path, weights_only=True)
    data["config"]["gp"]["num_features"] = 64  # the file's weights have l = 128
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="do not match.*shape mismatch"):
        create_model(checkpoint=path)
    data["config"]["head"] = "conv"
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="unexpected"):
        create_model(checkpoint=path)


def test_bad_config_in_file(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("ritm_tiny"))
    data = torch.load(path, weights_only=True)
    data["config"]["bogus"] = 1
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="config cannot be used.*bogus"):
        create_model(checkpoint=path)


def test_newer_format_version(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("ritm_tiny"))
    data = torch.load(path, weights_only=True)
    data["format_version"] = 99
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


class _Custom:
    pass


def test_unsafe_extra_needs_weights_only_false(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("ritm_tiny"), extra={"obj": _Custom()})
    with pytest.raises(CheckpointError, match="weights_only=False"):
        load_checkpoint(path)
    assert isinstance(load_checkpoint(path, weights_only=False)["extra"]["obj"], _Custom)


def test_bad_save_arguments(tmp_path):
    with pytest.raises(ValueError, match="SegmentationModel"):
        save_checkpoint(tmp_path / "m.pt", torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="extra"):
        save_checkpoint(tmp_path / "m.pt", create_model("ritm_tiny"), extra=[1])


def test_wrapped_models_save_plain_names(tmp_path):
    """torch.compile (._orig_mod) and DataParallel (.module) wrappers, nested: the checkpoint
    holds the plain parameter names and loads into a plain model (a compiled model's file
    had every key prefixed with _orig_mod. and did not load)."""
    model = create_model("ritm_tiny")
    wrapped = torch.compile(torch.nn.DataParallel(model))
    path = save_checkpoint(tmp_path / "m.pt", wrapped)
    loaded = create_model(checkpoint=path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    target = create_model("ritm_tiny")
    load_model_weights(torch.compile(target), load_checkpoint(path))  # into a wrapped model too
    assert all(torch.equal(target.state_dict()[k], v) for k, v in model.state_dict().items())

    class Outer(torch.nn.Module):  # a model whose own child is called "module": not a wrapper
        def __init__(self):
            super().__init__()
            self.module = torch.nn.Linear(2, 2)

    outer = Outer()
    assert ckpt_module.unwrap_model(outer) is outer
    assert ckpt_module.unwrap_model(torch.nn.DataParallel(outer)) is outer
