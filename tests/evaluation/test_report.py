"""Report writers: JSON, CSV, markdown table, plots (matplotlib and the OpenCV fallback)."""

from __future__ import annotations

import json

import cv2
import numpy as np

from gpcis.clicks import Click
from gpcis.evaluation import report
from gpcis.evaluation.protocol import ObjectRecord


def _metrics(noc90: float):
    return {"noc85": 1.5, "noc90": noc90, "nof85": 0, "nof90": 1, "noc100_90": None, "nof100_90": None,
            "miou_at": [0.5, 0.6, 0.7, 0.8, 0.9], "noic": 3, "sec_per_click": float("nan"), "num_images": 2}


def test_metrics_json_is_strict_json(tmp_path):
    path = report.write_metrics_json(tmp_path / "m" / "metrics.json", {"GrabCut": _metrics(2.0)})
    data = json.loads(path.read_text())  # NaN became null: valid JSON
    assert data["GrabCut"]["sec_per_click"] is None and data["GrabCut"]["noc90"] == 2.0
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp files left


def test_csv_and_table(tmp_path):
    rec = ObjectRecord("a", ious=[0.5, 0.95], clicks=[Click(1, 2, True), Click(3, 4, False)], noic=1, seconds=0.2)
    path = report.write_records_csv(tmp_path / "x.csv", {"GrabCut": [rec]}, max_clicks=20)
    text = path.read_text()
    assert "GrabCut,a,2,2,2,2,0.5000,0.9500,0.9500,1,0.2000" in text and "1:2:+;3:4:-" in text
    table = report.markdown_table({"m1": {"GrabCut": _metrics(2.0)}, "m2": {"GrabCut": _metrics(3.25)}})
    lines = [l for l in table.splitlines() if l.startswith("| m")]
    assert lines[0].startswith("| m1 | 1.50 | 2.00 | 1 | - | - | 0.500 | 0.900 | 3 | - |")
    assert lines[1].split("|")[3].strip() == "3.25"


def test_plots_matplotlib_and_opencv(tmp_path, monkeypatch):
    curves = {"a": [0.5 + 0.02 * k for k in range(20)], "b": [0.6] * 20}
    p = report.plot_miou_curves(tmp_path / "mpl.png", curves, "GrabCut")
    assert cv2.imread(str(p)) is not None

    def no_mpl(*args, **kwargs):
        raise ImportError("matplotlib")

    monkeypatch.setattr(report, "_plot_matplotlib", no_mpl)
    p = report.plot_miou_curves(tmp_path / "cv.png", curves, "GrabCut")
    img = cv2.imread(str(p))
    assert img is not None and img.shape == (480, 720, 3)
    assert (np.abs(img.astype(int) - [180, 119, 31]).sum(-1) < 10).any()  # line "a" drawn in its colour (BGR)


def test_table_names_rows_of_an_earlier_evaluation_loop_and_carried_miou():
    """Runs saved before session 13 have neither ``protocol`` nor ``miou_exact``: they are
    named as measured with the earlier loop, and as carrying the mIoU forward."""
    from gpcis.evaluation.report import markdown_table

    row = {"noc85": 2.0, "noc90": 3.0, "nof90": 0, "miou_at": [0.5] * 5, "noic": 0, "sec_per_click": 0.1,
           "num_images": 3}
    table = markdown_table({"new": {"GrabCut": {**row, "protocol": 2, "miou_exact": True}},
                            "old": {"GrabCut": row}})
    assert "IoU&1 / IoU&5 of old: objects" in table
    assert "old: measured with an earlier evaluation loop" in table and "new: measured" not in table
