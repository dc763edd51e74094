"""benchmarks/fused_sweep.py --quick: both sweeps run (in Triton's interpreter on the CPU), every
configuration's output agrees with the first's, the JSON / PNG / report section are written."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_script


def test_fused_sweep_quick(interpreted, tmp_path, capsys):
    mod = load_script("fused_sweep", "benchmarks/fused_sweep.py")
    result = mod.main(["--quick", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "fused_sweep.json").read_text())
    assert data == json.loads(json.dumps(result))
    assert data["benchmark"] == "fused_sweep" and data["device"] == "cpu"
    assert len(data["mean"]) == len(mod.QUICK_MEAN_CONFIGS)
    assert len(data["solve"]) == 2 * len(mod.SOLVE_VARIANTS)  # two click counts
    for r in data["mean"] + data["solve"]:
        assert r["us"] > 0 and r["rel_diff"] <= data["tol"] and r.get("error") is None
    assert {r["clicks"] for r in data["solve"]} == {3, 20} and all(r["info"] == 0 for r in data["solve"])
    assert set(data["best_mean"]) == {"11"} and set(data["best_solve"]) == {"3", "20"}  # JSON keys
    best = data["best_solve"]["20"]
    assert best["us"] == min(r["us"] for r in data["solve"] if r["clicks"] == 20)
    assert "best mean for D = 11" in capsys.readouterr().out
    assert (tmp_path / "fused_sweep.png").stat().st_size > 1000
    report = load_script("report", "benchmarks/report.py")
    text = report.section_fused_sweep(tmp_path / "fused_sweep.json", tmp_path / "assets")
    assert "smoke run, not a timing" in text and text.count("| 11 | 16 |") == len(mod.QUICK_MEAN_CONFIGS)
    assert (tmp_path / "assets" / "fused_sweep.png").exists()


def test_best_skips_configurations_that_disagree_or_failed():
    mod = load_script("fused_sweep", "benchmarks/fused_sweep.py")
    rows = [{"dim": 51, "us": 5.0, "rel_diff": 1e-3, "error": None},   # fastest, but disagrees
            {"dim": 51, "us": 6.0, "rel_diff": 0.0, "error": "OutOfResources"},
            {"dim": 51, "us": 9.0, "rel_diff": 1e-7, "error": None},
            {"dim": 99, "us": float("nan"), "rel_diff": float("nan"), "error": "x"}]
    assert mod.best(rows, "dim", 1e-5) == {51: rows[2]}


def test_fused_sweep_argument_errors(interpreted):
    mod = load_script("fused_sweep", "benchmarks/fused_sweep.py")
    with pytest.raises(SystemExit):
        mod.main(["--dims", "51,99", "--features", "256"])
