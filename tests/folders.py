"""Small generated data folders in the layouts of gpcis.data's readers, for tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_png(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (grey, or BGR for colour) as a PNG, creating the folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def coco_mval_like(root: Path, images: int = 6, objects: int = 2, size: int = 24) -> Path:
    """A COCO_MVal-layout folder (``img/``, ``gt/``): one copy of each image per object,
    named ``thing<k>_<12-digit image id>`` (as the real set), object ``k`` a bar of rows ``2 + 5k .. 6 + 5k``."""
    rng = np.random.default_rng(0)
    for i in range(images):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for k in range(objects):
            mask = np.zeros((size, size), np.uint8)
            mask[2 + 5 * k : 6 + 5 * k, 3:12] = 255
            write_png(root / "img" / f"thing{k:02d}_{i:012d}.png", img)
            write_png(root / "gt" / f"thing{k:02d}_{i:012d}.png", mask)
    return root


def shared_folder(root: Path, name: str) -> Path:
    """``root / name`` of the shared data sets; the test skips when that folder is absent
    (a partial ``../shared/datasets`` skips the tests of what it lacks instead of failing)."""
    import pytest

    folder = root / name
    if not folder.is_dir():
        pytest.skip(f"shared data set {name} not found at {folder}")
    return folder
