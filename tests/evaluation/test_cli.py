"""`gpcis evaluate` end to end on a generated 3-image data set in GrabCut layout."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpcis.evaluation import cli


def _make_grabcut(root: Path, n: int = 3) -> Path:
    ds = root / "GrabCut"
    (ds / "data_GT").mkdir(parents=True)
    (ds / "boundary_GT").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 48, 64
        img = (rng.normal(0, 6, (h, w, 3)) + np.array([40, 150, 70])).clip(0, 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        cv2.circle(mask, (30 + 2 * i, 24), 12 + i, 255, -1)
        band = cv2.dilate(mask, np.ones((3, 3), np.uint8)) - cv2.erode(mask, np.ones((3, 3), np.uint8))
        img[mask > 0] = (rng.normal(0, 6, (int((mask > 0).sum()), 3)) + np.array([210, 50, 40])).clip(0, 255)
        mask[band > 0] = 128  # the GrabCut "unknown" band
        cv2.imwrite(str(ds / "data_GT" / f"img{i}.jpg"), img[:, :, ::-1])
        cv2.imwrite(str(ds / "boundary_GT" / f"img{i}.bmp"), mask)
    return root


def _parse(argv):
    parser = argparse.ArgumentParser(prog="gpcis")
    sub = parser.add_subparsers()
    cli.add_parser(sub)
    return parser.parse_args(["evaluate", *argv])


def test_evaluate_grabcut_end_to_end(tmp_path, capsys):
    root = _make_grabcut(tmp_path / "data")
    out = tmp_path / "out"
    args = _parse(["--method", "grabcut", "--datasets", "GrabCut", "--data-root", str(root),
                   "--out", str(out), "--max-clicks", "5", "--noc100-clicks", "8", "--quiet"])
    assert args.func(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["GrabCut"]
    for key in ("noc85", "noc90", "nof90", "noc100_90", "nof100_90", "miou_at", "noic", "sec_per_click",
                "num_images"):
        assert key in m
    assert m["num_images"] == 3 and len(m["miou_at"]) == 5
    assert 1 <= m["noc90"] <= 5 and m["miou_at"][0] > 0.8  # a distinct disk: easy for GrabCut
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["name"] for r in rows] == ["img0", "img1", "img2"]
    assert np.mean([float(r["noc90"]) for r in rows]) == pytest.approx(m["noc90"])
    table = (out / "table.md").read_text()
    assert "| grabcut |" in table and "NoC@90" in table
    assert m["miou_exact"] is False and "IoU&1 / IoU&5 of grabcut: objects that reached" in table
    assert m["protocol"] == 2 and "earlier evaluation loop" not in table
    png = cv2.imread(str(out / "miou_GrabCut.png"))
    assert png is not None and png.shape[0] > 100
    assert json.loads((out / "run.json").read_text())["label"] == "grabcut"

    # a second run compared with the first: both in the table and the plot
    out2 = tmp_path / "out2"
    args = _parse(["--method", "grabcut", "--datasets", "grabcut", "--data-root", str(root), "--out", str(out2),
                   "--max-clicks", "5", "--all-clicks", "--limit", "2", "--label", "gc-all",
                   "--compare", str(out), "--quiet"])
    assert args.func(args) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())["GrabCut"]
    assert m2["num_images"] == 2
    rows = list(csv.DictReader((out2 / "per_image.csv").open()))
    assert all(int(r["num_clicks"]) == 5 for r in rows)  # --all-clicks runs every click
    assert m2["miou_exact"] is True
    table = (out2 / "table.md").read_text()
    # 2 objects (--limit 2) against 3: each row says its count, the header that they differ
    assert "| gc-all (2 objects) |" in table and "| grabcut (3 objects) |" in table and "not comparable" in table

    # a compared run with this run's label (two runs' best.pt are both "best" by default):
    # both rows stay, the compared one named by its folder
    out3 = tmp_path / "out3"
    args = _parse(["--method", "grabcut", "--datasets", "grabcut", "--data-root", str(root), "--out", str(out3),
                   "--max-clicks", "5", "--compare", str(out), "--quiet"])
    assert args.func(args) == 0
    table = (out3 / "table.md").read_text()
    assert "| grabcut |" in table and "| grabcut (out) |" in table
    assert "label 'grabcut' is taken" in capsys.readouterr().err


def test_evaluate_errors(tmp_path, capsys):
    root = _make_grabcut(tmp_path / "data")
    args = _parse(["--method", "grabcut", "--datasets", "Nope", "--data-root", str(root), "--out", str(tmp_path)])
    assert args.func(args) == 2
    assert "unknown data set 'Nope'" in capsys.readouterr().err
    args = _parse(["--method", "grabcut", "--datasets", "Berkeley", "--data-root", str(root)])
    assert args.func(args) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "GrabCut" / "data_GT").mkdir(parents=True)
    (empty / "GrabCut" / "boundary_GT").mkdir()
    args = _parse(["--method", "grabcut", "--data-root", str(empty), "--out", str(tmp_path / "o")])
    assert args.func(args) == 2
    assert "GrabCut" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --method and --checkpoint are exclusive, one is required
        _parse(["--datasets", "GrabCut"])
    with pytest.raises(SystemExit):
        _parse(["--method", "grabcut", "--checkpoint", "x.pt"])
    with pytest.raises(SystemExit):  # was accepted (and meant "no continuation")
        _parse(["--method", "grabcut", "--noc100-clicks", "-3"])
    assert "must be >= 0, got -3" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        _parse(["--help"])
    text = capsys.readouterr().out
    for opt in ("--method", "--checkpoint", "--model", "--datasets", "--data-root", "--max-clicks",
                "--target-iou", "--thresh", "--zoom-in", "--no-zoom-in", "--limit", "--out", "--device",
                "--all-clicks", "--gp-stride", "--zoom-size", "--whole-image-size", "--refine", "--flip",
                "--cuda-graphs"):
        assert opt in text


def test_evaluate_checkpoint_tiny_model(tmp_path):
    import torch

    from gpcis.models import create_model, save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", create_model("gpcis_tiny"))
    root = _make_grabcut(tmp_path / "data", n=1)
    out = tmp_path / "out"
    args = _parse(["--checkpoint", str(ckpt), "--model", "gpcis_tiny", "--data-root", str(root),
                   "--out", str(out), "--max-clicks", "2", "--noc100-clicks", "0", "--device", "cpu", "--quiet"])
    assert args.func(args) == 0
    m = json.loads((out / "metrics.json").read_text())["GrabCut"]
    assert m["num_images"] == 1 and m["noc100_90"] is None and len(m["miou_at"]) == 2
    assert json.loads((out / "run.json").read_text())["label"] == "gpcis_tiny"
    args = _parse(["--checkpoint", str(ckpt), "--model", "ritm_tiny", "--data-root", str(root), "--out", str(out)])
    assert args.func(args) == 2  # the checkpoint holds another model
    # the parameter-free GP test grid can be changed at evaluation time
    args = _parse(["--checkpoint", str(ckpt), "--gp-stride", "2", "--zoom-size", "64", "--whole-image-size", "48",
                   "--data-root", str(root), "--out", str(out),
                   "--max-clicks", "2", "--noc100-clicks", "0", "--device", "cpu", "--quiet"])
    import gpcis.inference.predictor as predictor_module

    seen = {}
    real_init = predictor_module.Predictor.__init__

    def spy(self, model, *a, **kw):
        seen["stride"], seen["zoom"] = model.head.stride, kw["zoom"].target_size
        seen["whole"] = kw["zoom"].whole_image_size
        seen["refine"] = kw["refine"]
        seen["flip"] = kw["flip"]
        seen["cuda_graphs"] = kw["cuda_graphs"]
        real_init(self, model, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(predictor_module.Predictor, "__init__", spy)
        assert args.func(args) == 0
    assert seen == {"stride": 2, "zoom": 64, "whole": 48, "refine": None, "flip": False, "cuda_graphs": False}
    from gpcis.baselines.refine import GrabCutRefineConfig

    args_refine = _parse(["--checkpoint", str(ckpt), "--refine", "--flip", "--data-root", str(root), "--out", str(tmp_path / "r"),
                          "--max-clicks", "1", "--noc100-clicks", "0", "--device", "cpu", "--quiet"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(predictor_module.Predictor, "__init__", spy)
        assert args_refine.func(args_refine) == 0
    assert seen["refine"] == GrabCutRefineConfig() and seen["flip"] is True
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["gp_stride"] == 2 and settings["zoom_size"] == 64 and settings["whole_image_size"] == 48
    args = _parse(["--method", "grabcut", "--gp-stride", "2", "--data-root", str(root), "--out", str(out)])
    assert args.func(args) == 2
    args = _parse(["--method", "grabcut", "--whole-image-size", "64", "--data-root", str(root), "--out", str(out)])
    assert args.func(args) == 2
    args = _parse(["--method", "grabcut", "--refine", "--data-root", str(root), "--out", str(out)])
    assert args.func(args) == 2
    args = _parse(["--method", "grabcut", "--flip", "--data-root", str(root), "--out", str(out)])
    assert args.func(args) == 2
    args = _parse(["--method", "grabcut", "--cuda-graphs", "--data-root", str(root), "--out", str(out)])
    assert args.func(args) == 2
    # CUDA graphs on the CPU: the predictor's clear error, exit status 2
    args = _parse(["--checkpoint", str(ckpt), "--cuda-graphs", "--device", "cpu", "--data-root", str(root),
                   "--out", str(out)])
    assert args.func(args) == 2


def test_default_data_root_is_the_shared_folder_beside_the_checkout(monkeypatch, tmp_path):
    """``../shared/datasets`` next to the repository when it exists (then --data-root is
    optional), else None (then --data-root is required)."""
    from gpcis.evaluation import cli as ecli

    repo = Path(ecli.__file__).resolve().parents[2]
    expected = repo.parent / "shared" / "datasets"
    assert ecli.default_data_root() == (expected if expected.is_dir() else None)
    fake = tmp_path / "checkout" / "gpcis" / "evaluation" / "cli.py"
    monkeypatch.setattr(ecli, "__file__", str(fake))
    assert ecli.default_data_root() is None
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    assert ecli.default_data_root() == tmp_path / "shared" / "datasets"


def test_sbd_is_evaluated_on_its_validation_split(tmp_path):
    """As RITM's SBDEvaluationDataset(split='val'): the reader's default split is training's."""
    from scipy.io import savemat

    root = tmp_path / "data" / "SBD"
    (root / "img").mkdir(parents=True)
    (root / "inst").mkdir()
    rng = np.random.default_rng(0)
    for name in ("tr_a", "tr_b", "va_a"):
        inst = np.zeros((32, 40), np.uint8)
        inst[5:20, 5:20] = 1
        inst[22:30, 25:38] = 2
        cv2.imwrite(str(root / "img" / f"{name}.jpg"), rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
        savemat(root / "inst" / f"{name}.mat", {"GTinst": {"Segmentation": inst}})
    (root / "train.txt").write_text("tr_a\ntr_b\n")
    (root / "val.txt").write_text("va_a\n")
    out = tmp_path / "out"
    args = _parse(["--method", "random-walker", "--datasets", "SBD", "--data-root", str(tmp_path / "data"),
                   "--out", str(out), "--max-clicks", "2", "--noc100-clicks", "0", "--quiet"])
    assert args.func(args) == 0
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert sorted(r["name"] for r in rows) == ["va_a#1", "va_a#2"]
