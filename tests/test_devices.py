"""gpcis.devices.resolve_device: every entry point's device check."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from gpcis.devices import resolve_device


def test_devices_and_their_errors(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="'bogus' is not a device name"):
        resolve_device("bogus")
    with pytest.raises(ValueError, match="must be 'cpu' or 'cuda"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="'cuda' requested but CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


def test_the_command_lines_report_a_missing_device(capsys, tmp_path):
    from gpcis.cli import main

    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.zeros((20, 30, 3), np.uint8))
    assert main(["segment", str(image), "--click", "5,5,+", "--out", str(tmp_path / "m.png"), "--device", "bogus"]) == 2
    assert "not a device name" in capsys.readouterr().err
