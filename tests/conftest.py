"""Shared test fixtures: seeds, the optional shared data sets, device markers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# The machine has 2 cores; keep every test single-threaded and deterministic.
torch.set_num_threads(int(os.environ.get("GPCIS_TEST_THREADS", "1")))

# Without CUDA, Triton kernels (gpcis.gp.fused) can only run in Triton's interpreter, which
# must be switched on before triton is imported (gpcis imports it); the library itself
# calls the kernel only for CUDA tensors, so this affects only tests that call it directly.
if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("GPCIS_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="CUDA is not available")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def interpreted():
    """gpcis.gp.fused, its kernels in Triton's interpreter (CPU tensors; switched on above
    where CUDA is absent, before triton is imported); skips where Triton is missing or the
    interpreter is off."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton's interpreter is off (CUDA present, or triton imported before tests/conftest.py)")
    from gpcis.gp import fused

    return fused


@pytest.fixture
def shared_datasets() -> Path:
    """The folder ``../shared/datasets`` beside the checkout; the test skips when absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def released_tiny(tmp_path, monkeypatch) -> Path:
    """Released weights pointed at a temporary folder holding one tiny float16 checkpoint.

    ``gpcis.models.released`` maps ``gpcis_tiny`` to ``gpcis_tiny_test.pt`` in
    ``tmp_path / "weights"`` (the real weights folder and file are never used) and
    ``GPCIS_NO_RELEASED`` is unset. Returns the checkpoint path.
    """
    from gpcis.models import create_model, released, save_checkpoint

    folder = tmp_path / "weights"
    path = save_checkpoint(folder / "gpcis_tiny_test.pt", create_model("gpcis_tiny"), half=True)
    monkeypatch.setattr(released, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(released, "RELEASED_MODELS", {"gpcis_tiny": "gpcis_tiny_test.pt"})
    monkeypatch.delenv(released.NO_RELEASED_ENV, raising=False)
    return path
