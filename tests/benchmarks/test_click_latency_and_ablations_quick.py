"""The --quick modes of benchmarks/click_latency.py and benchmarks/ablations.py run end to end."""

from __future__ import annotations

import json

import numpy as np

import pytest

from tests.scripts import load_script


def _load(name: str):
    return load_script(name, f"benchmarks/{name}.py")


def test_click_latency_quick(tmp_path):
    mod = _load("click_latency")
    result = mod.main(["--quick", "--out", str(tmp_path), "--warmup", "2", "--profile"])
    data = json.loads((tmp_path / "click_latency.json").read_text())
    assert data == json.loads(json.dumps(result))
    assert data["warmup"] == 2 and data["cuda_graphs"] is False
    with pytest.raises(SystemExit):  # CUDA graphs on the CPU: an argparse error
        mod.main(["--quick", "--cuda-graphs", "--out", str(tmp_path / "g")])
    # the profiler's operator table of the GP head (only the GP model is profiled)
    table = (tmp_path / "profile_gpcis_tiny.txt").read_text()
    assert "Self CPU time total" in table and "aten::cos" in table  # the RFF prior path ran
    assert not (tmp_path / "profile_ritm_tiny.txt").exists()
    assert (tmp_path / "click_latency.png").stat().st_size > 1000
    models = {r["model"] for r in data["rows"]}
    assert models == {"gpcis_tiny", "ritm_tiny"}
    for r in data["rows"]:
        assert r["backbone_ms"] > 0 and r["head_ms"] > 0
        assert r["total_ms"] == pytest.approx(r["backbone_ms"] + r["head_ms"])
    assert [r["click"] for r in data["rows"] if r["model"] == "gpcis_tiny"] == [1, 2, 3, 4]
    (summary,) = data["summary"]
    assert summary["backbone"] == "tiny" and "gpcis_over_ritm" in summary and "gp_head_growth" in summary
    # --quick caps the pairs at 3; only the GP model is paired
    assert data["pairs"] == 3 and list(data["paired_head_ratios"]) == ["gpcis_tiny"]
    ratios = data["paired_head_ratios"]["gpcis_tiny"]
    assert len(ratios) == 3 and all(r > 0 for r in ratios) and summary["pairs"] == 3
    q1, q3 = summary["gp_head_growth_paired_iqr"]
    assert summary["gp_head_growth_paired"] == pytest.approx(float(np.median(ratios)) - 1)
    assert q1 <= summary["gp_head_growth_paired"] <= q3


def test_paired_head_ratios_cancel_a_drifting_machine():
    """A machine whose speed changes between pairs (not within one): every pair's ratio is
    the heads' true ratio (the single calls' times range over 10-14.3 ms), and the first
    and last click's calls alternate which runs first."""
    mod = _load("click_latency")
    calls, clock = [], {"speed": 1.0}
    cost = {"first": 10.0, "last": 11.0}  # ms at speed 1: the last click's head is 10% slower

    def run(step, features):
        calls.append(step)
        return features

    def timed(fn):
        out = fn()
        return out, cost[calls[-1]] * clock["speed"]

    def drifting_timed(fn):
        out, ms = timed(fn)
        if len(calls) % 2 == 0:  # the machine's speed changes after every pair
            clock["speed"] = 1.3 if clock["speed"] == 1.0 else 1.0
        return out, ms

    ratios = mod.paired_head_ratios(run, [("first", None), ("last", None)], 6, drifting_timed)
    assert ratios == pytest.approx([1.1] * 6)
    assert calls == ["first", "last", "last", "first"] * 3
    with pytest.raises(SystemExit):  # argparse error
        mod.main(["--quick", "--pairs", "-1"])


def test_ablations_quick_and_resume(tmp_path):
    mod = _load("ablations")
    result = mod.main(["--quick", "--gp-stride", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "ablations.json").read_text())
    names = [s["config"] for s in data["summary"]]
    assert names == ["base", "conv head (RITM)", "prior: spectral", "eval eps2 = 0.01"]
    for row in data["rows"]:
        assert 1 <= row["noc85"] <= row["noc90"] <= 5
        assert 0 <= row["miou1"] <= 1 and row["noic"] >= 0
    # at GP stride 1 the head interpolates its clicks at evaluation: no clicked pixel stays wrong
    assert next(r for r in data["rows"] if r["config"] == "base")["noic"] == 0
    assert (tmp_path / "ablations.png").stat().st_size > 1000
    # a second run reuses every cached (configuration, seed) result
    again = mod.main(["--quick", "--gp-stride", "1", "--out", str(tmp_path)])
    assert again["rows"] == result["rows"]


def test_ablation_shards_partition_the_jobs():
    mod = _load("ablations")
    todo = mod.ablations(128)
    every = mod.shard_jobs(todo, 3, (0, 1))
    assert [(a.name, s) for a, s in every] == [(a.name, s) for s in range(3) for a in todo]  # seed-major
    parts = [mod.shard_jobs(todo, 3, (k, 2)) for k in range(2)]
    names = [[(a.name, s) for a, s in part] for part in parts]
    assert sorted(names[0] + names[1]) == sorted((a.name, s) for a in todo for s in range(3))
    assert not set(names[0]) & set(names[1])
    for part in names:  # an evaluation-time variant runs where its base run is trained, after it
        for i, (name, seed) in enumerate(part):
            if name.startswith("eval eps2"):
                assert ("base", seed) in part[:i]
    assert abs(len(parts[0]) - len(parts[1])) <= 7  # 2 eval variants x 3 seeds ride with the base runs


def test_ablation_shards_then_collect(tmp_path, capsys):
    mod = _load("ablations")
    for shard in ("1/2", "2/2"):  # the last shard also evaluates the reference methods
        mod.main(["--quick", "--gp-stride", "2", "--shard", shard, "--references", "--out", str(tmp_path)])
    cached = sorted(p.parent.parent.name for p in (tmp_path / "runs").glob("*/seed0/result.json"))
    assert len(cached) == 4
    assert len(list((tmp_path / "runs").glob("reference_*/result.json"))) == 3
    result = mod.main(["--quick", "--gp-stride", "2", "--references", "--collect", "--out", str(tmp_path)])
    assert [s["config"] for s in result["summary"]] == [
        "base", "conv head (RITM)", "prior: spectral", "eval eps2 = 0.01",
        "reference: gp-pixel", "reference: grabcut", "reference: random-walker"]
    assert result["gp_stride"] == 2
    with pytest.raises(SystemExit):  # cached with stride 2: asking for stride 3 must not reuse them
        mod.main(["--quick", "--gp-stride", "3", "--collect", "--out", str(tmp_path)])
    assert "gp_stride differ" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --collect never trains: a missing result is an error
        mod.main(["--quick", "--collect", "--out", str(tmp_path / "empty")])
    assert "no result yet" in capsys.readouterr().err


def test_report_collects_quick_runs(tmp_path):
    _load("click_latency").main(["--quick", "--out", str(tmp_path / "runs" / "click_latency")])
    _load("ablations").main(["--quick", "--out", str(tmp_path / "runs" / "ablations")])
    (tmp_path / "runs" / "cx").mkdir()
    (tmp_path / "runs" / "cx" / "model_complexity.json").write_text(
        json.dumps([{"model": "gpcis_resnet50", "part": "head", "gflops": 1.97, "mparams": 0.02}])
    )
    report = _load("report")
    out = tmp_path / "docs" / "benchmarks.md"
    text = report.build_report(tmp_path / "runs", out)
    assert out.read_text() == text
    assert "## Per-click latency" in text and "gpcis_tiny" in text
    assert "paired (3 pairs of calls back to back)" in text  # the paired growth beside the medians'
    assert "## Ablations" in text and "conv head (RITM)" in text
    assert "| gpcis_resnet50 | head | 1.97 | 0.02 | 1.93 | 0.02 |" in text  # paper's Table S2 beside ours
    assert (tmp_path / "docs" / "benchmarks" / "click_latency.png").exists()
    # a second machine's results in a subfolder (as benchmarks/gpu_checks.sh writes them):
    # its own PNG name, and the machine of a bare-list JSON read from device.txt
    gpu = tmp_path / "runs" / "gpu"
    _load("click_latency").main(["--quick", "--out", str(gpu / "click_latency")])
    (gpu / "gp_sampler").mkdir()
    (gpu / "gp_sampler" / "gp_sampler.json").write_text(json.dumps([{"impl": "gpcis-mean", "m": 4096, "n": 1, "ms": 2.5}]))
    (gpu / "device.txt").write_text("NVIDIA H200\n")
    text = report.build_report(tmp_path / "runs", out)
    assert text.count("## Per-click latency") == 2
    assert "machine: NVIDIA H200" in text and "| gpcis-mean | 2.5 |" in text
    assert (tmp_path / "docs" / "benchmarks" / "gpu_click_latency.png").exists()
    assert "(benchmarks/gpu_click_latency.png)" in text and "(benchmarks/click_latency.png)" in text
    with pytest.raises(ValueError, match="no benchmark"):
        report.build_report(tmp_path / "missing", out)


def test_training_curves_from_generated_runs(tmp_path):
    mod = _load("training_curves")
    for name, ips in (("a", 2.0), ("b", 8.0)):
        run = tmp_path / name
        run.mkdir()
        steps = ["step,epoch,loss,nfl,aux,lr,elapsed_s"] + [
            f"{s},{1 + s // 10},{1 / s},{1 / s},0,0.001,{s * 1.5}" for s in range(1, 31)
        ]
        (run / "steps.csv").write_text("\n".join(steps) + "\n")
        (run / "metrics.csv").write_text(
            "epoch,step,loss,nfl,aux,lr,images_per_s,epoch_complete,val_noc85,val_noc90,val_miou1\n"
            f"1,10,0.1,0.1,0,0.001,{ips},1,9.0,12.0,0.3\n2,20,0.1,0.1,0,0.001,{ips},1,,,\n"
            f"3,30,0.1,0.1,0,0.001,{ips},1,7.5,11.0,0.4\n"
        )
    out = tmp_path / "curves.png"
    summary = mod.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
    assert out.stat().st_size > 1000
    assert [s["steps"] for s in summary] == [30, 30]
    assert summary[1]["images_per_s"] == pytest.approx(8.0)
    assert (summary[0]["best_val_noc85"], summary[0]["best_val_noc90"]) == (7.5, 11.0)
    assert summary[0]["seconds"] == pytest.approx(45.0)
    with pytest.raises(SystemExit):
        mod.main([str(tmp_path / "missing")])


def test_training_clock_sums_resumed_runs_and_best_epoch_pairs():
    mod = _load("training_curves")
    # two processes: 0..30 s, then a resumed one whose clock restarts at 2 s
    rows = [{"elapsed_s": str(v)} for v in (10, 20, 30, 2, 12)]
    np.testing.assert_allclose(mod.training_clock(rows), [10, 20, 30, 32, 42])
    # already cumulative (no drop): unchanged
    rows = [{"elapsed_s": str(v)} for v in (10, 20, 35)]
    np.testing.assert_allclose(mod.training_clock(rows), [10, 20, 35])


def test_zoom_sweep_quick(tmp_path):
    result = _load("zoom_sweep").main(["--quick", "--out", str(tmp_path)])
    rows = result["rows"]
    # every zoom size with the native and the downscaled (<= 40 px) whole-image view
    assert [(r["zoom"], r["whole"]) for r in rows] == [(32, None), (32, 40), (64, None), (64, 40)]
    for r in rows:
        assert 1 <= r["noc85"] <= r["noc90"] <= 3 and 0 <= r["miou1"] <= 1
    (name,) = result["best"]
    best = min(rows, key=lambda r: (r["noc90"], r["noc85"]))
    assert result["best"][name] == {"zoom": best["zoom"], "whole": best["whole"], "flip": False}
    assert (tmp_path / "zoom_sweep.png").stat().st_size > 1000
    flipped = _load("zoom_sweep").main(["--quick", "--flip", "--out", str(tmp_path / "flip")])["rows"]
    assert [(r["flip"], r["zoom"], r["whole"]) for r in flipped] == [
        (f, z, w) for f in (False, True) for z in (32, 64) for w in (None, 40)]


def test_zoom_sweep_uses_the_runs_own_validation_split(tmp_path):
    """The validation split is rebuilt from the checkpoint's training config: the same
    held-out images the trainer validated on."""
    from gpcis.training import TrainConfig, Trainer, build_datasets

    cfg = TrainConfig(model="ritm_tiny", synthetic_size=32, synthetic_samples=4, val_samples=2, batch_size=2,
                      epochs=1, steps_per_epoch=1, out=str(tmp_path / "run"), progress=False, seed=5)
    Trainer(cfg).train()
    val = _load("zoom_sweep").validation_split(tmp_path / "run" / "last.pt")
    _, ref = build_datasets(cfg)
    assert len(val) == 2
    for i in range(2):
        np.testing.assert_array_equal(val[i].image, ref[i].image)


def test_zoom_sweep_keeps_the_sample_split_of_runs_before_val_split(tmp_path):
    """A checkpoint whose training config has no val_split (runs before session 11) held out
    single samples: the sweep rebuilds that split, not the image split of today's default."""
    from gpcis.models.checkpoint import save_checkpoint
    from gpcis.training import TrainConfig, Trainer, build_datasets
    from tests.folders import coco_mval_like

    coco_mval_like(tmp_path / "coco")
    kw = dict(model="ritm_tiny", data=str(tmp_path / "coco"), dataset_type="COCO_MVal", val_samples=3, batch_size=2,
              out=str(tmp_path / "run"), progress=False, seed=2)
    trainer = Trainer(TrainConfig(**kw))
    extra = {"train_config": {k: v for k, v in trainer.config.to_dict().items() if k != "val_split"}}
    save_checkpoint(tmp_path / "old.pt", trainer.model, extra=extra)
    val = _load("zoom_sweep").validation_split(tmp_path / "old.pt")
    _, ref = build_datasets(TrainConfig(**kw, val_split="sample"))
    _, today = build_datasets(TrainConfig(**kw))
    assert val.indices == ref.indices != today.indices


def test_ablations_never_reuse_a_result_or_checkpoint_of_other_settings(tmp_path, capsys):
    """The cache key holds the data folders (another evaluation set was silently served the
    cached rows), and a checkpoint left without its result is resumed only with the
    settings it was trained with (deleting result.json resumed the old run with new ones)."""
    mod = _load("ablations")
    out = tmp_path / "abl"
    mod.main(["--quick", "--only", "base", "--gp-stride", "1", "--out", str(out)])
    other = tmp_path / "other_eval"
    other.mkdir()
    with pytest.raises(SystemExit):
        mod.main(["--quick", "--only", "base", "--gp-stride", "1", "--out", str(out), "--eval-data", str(other)])
    assert "eval_data" in capsys.readouterr().err
    (out / "runs" / "base" / "seed0" / "result.json").unlink()
    with pytest.raises(SystemExit):
        mod.main(["--quick", "--only", "base", "--gp-stride", "1", "--out", str(out), "--lr", "0.05"])
    assert "last.pt was trained with other" in capsys.readouterr().err
    # a result that recorded no settings matches nothing (it had been taken for defaults)
    done = out / "runs" / "base" / "seed0" / "result.json"
    done.write_text(json.dumps({"config": "base", "noc85": 1.0}))
    with pytest.raises(ValueError, match="other settings"):
        mod.cached(done, mod.settings_of(mod.argparse.Namespace(limit=3, max_clicks=5, quick=True, eval_data="x"),
                                          mod.EVAL_SETTINGS), False, {"eval_data": "x"})
    done.unlink()
    # the same settings: the finished checkpoint is evaluated again, not trained further
    mod.main(["--quick", "--only", "base", "--gp-stride", "1", "--out", str(out)])
    steps = (out / "runs" / "base" / "seed0" / "steps.csv").read_text().strip().splitlines()
    assert len(steps) == 1 + 2  # header + the 2 quick steps


def test_ablation_results_of_an_earlier_recipe_or_evaluation_loop_are_not_reused(tmp_path, capsys):
    """A result cached without recipe / protocol versions predates session 13's training
    recipe and evaluation loop (version 1): it is refused, not collected beside new ones."""
    mod = _load("ablations")
    out = tmp_path / "abl"
    mod.main(["--quick", "--only", "base", "--gp-stride", "1", "--out", str(out)])
    done = out / "runs" / "base" / "seed0" / "result.json"
    row = json.loads(done.read_text())
    assert row["settings"]["recipe"] == mod.RECIPE and row["settings"]["protocol"] == mod.PROTOCOL
    del row["settings"]["recipe"], row["settings"]["protocol"]  # as written before session 13
    done.write_text(json.dumps(row))
    with pytest.raises(SystemExit):
        mod.main(["--quick", "--only", "base", "--gp-stride", "1", "--out", str(out), "--collect"])
    err = capsys.readouterr().err
    assert "protocol" in err and "recipe" in err
