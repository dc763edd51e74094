"""examples/export_released_model.py: a training checkpoint -> a released float16 file."""

from __future__ import annotations

import json

import pytest
import torch

from gpcis.models import create_model, load_checkpoint
from gpcis.training import TrainConfig, Trainer
from tests.scripts import load_script


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(model="gpcis_tiny", synthetic_size=32, synthetic_samples=4, batch_size=2, epochs=1,
                      steps_per_epoch=1, val_samples=0, out=str(out), progress=False)
    Trainer(cfg).train()
    return out / "last.pt"


def test_export_keeps_the_model_drops_the_training_state(trained, tmp_path, monkeypatch):
    mod = load_script("export_released_model", "examples/export_released_model.py")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"GrabCut": {"noc90": 5.0}}))
    dst = tmp_path / "released.pt"
    reads = []
    monkeypatch.setattr(mod, "load_checkpoint", lambda path: reads.append(path) or load_checkpoint(path))
    assert mod.main(["--checkpoint", str(trained), "--name", "gpcis_tiny", "--out", str(dst),
                     "--gp-stride", "2", "--metrics", str(metrics)]) == 0
    assert reads == [trained]  # the source is read once
    data = load_checkpoint(dst)
    assert data["dtype"] == "float16" and data["config"]["gp_stride"] == 2
    assert "optimizer" not in data["extra"] and data["extra"]["global_step"] == 1
    assert data["extra"]["metrics"]["GrabCut"]["noc90"] == 5.0
    a, b = create_model(checkpoint=trained), create_model(checkpoint=dst)
    assert b.config.gp_stride == 2
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        # float16 rounding: relative error <= 2^-11 per element (normal range)
        torch.testing.assert_close(vb, va, rtol=2.0**-11, atol=1e-7, msg=k)


def test_export_errors(trained, tmp_path, capsys):
    mod = load_script("export_released_model", "examples/export_released_model.py")
    exact = tmp_path / "exact.pt"
    assert mod.main(["--checkpoint", str(trained), "--name", "gpcis_tiny", "--out", str(exact), "--float32"]) == 0
    assert load_checkpoint(exact)["dtype"] == "float32"
    for va, vb in zip(create_model(checkpoint=trained).state_dict().values(),
                      create_model(checkpoint=exact).state_dict().values()):
        assert torch.equal(va, vb)  # bit for bit
    assert oct(exact.stat().st_mode & 0o777) == "0o644"
    assert mod.main(["--checkpoint", str(trained), "--name", "gpcis_tiny"]) == 2  # no released file name
    assert "no released file name" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert mod.main(["--checkpoint", str(trained), "--name", "gpcis_tiny", "--out", str(tmp_path / "x.pt"),
                     "--metrics", str(bad)]) == 2
    assert "--metrics" in capsys.readouterr().err
