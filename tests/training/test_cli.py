"""`gpcis train` and the example scripts (thin front ends over the trainer)."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import pytest

from gpcis.cli import main as gpcis_main
from gpcis.models import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = ["--synthetic-size", "32", "--synthetic-samples", "8", "--batch-size", "2", "--epochs", "1",
        "--steps-per-epoch", "2", "--val-samples", "1", "--no-progress"]


def test_gpcis_train_command(tmp_path, capsys):
    out = tmp_path / "run"
    assert gpcis_main(["train", "--model", "ritm_tiny", "--out", str(out), "--seed", "4", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "NoC@85" in printed and "NoC@90" in printed
    extra = load_checkpoint(out / "last.pt")["extra"]
    assert extra["global_step"] == 2 and extra["train_config"]["seed"] == 4
    # --resume with more epochs continues from the checkpoint
    assert gpcis_main(["train", "--model", "ritm_tiny", "--out", str(out), "--resume", "--seed", "4",
                       *TINY, "--epochs", "2"]) == 0
    assert load_checkpoint(out / "last.pt")["extra"]["global_step"] == 4


def test_gp_stride_option_reaches_the_model_and_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert gpcis_main(["train", "--model", "gpcis_tiny", "--gp-stride", "2", "--out", str(out),
                       *TINY, "--steps-per-epoch", "1"]) == 0
    data = load_checkpoint(out / "last.pt")
    assert data["config"]["gp_stride"] == 2 and data["extra"]["train_config"]["gp_stride"] == 2


def test_time_milestones_option(tmp_path):
    out = tmp_path / "run"
    assert gpcis_main(["train", "--model", "ritm_tiny", "--out", str(out), *TINY, "--time-budget", "1000",
                       "--time-milestones", "0.9", "0.5"]) == 0
    extra = load_checkpoint(out / "last.pt")["extra"]
    assert tuple(extra["train_config"]["time_milestones"]) == (0.5, 0.9) and extra["time_drops"] == 0


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    assert gpcis_main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "data: folder not found" in capsys.readouterr().err
    assert gpcis_main(["train", "--model", "ritm_tiny", "--gp-stride", "2", "--out", str(tmp_path)]) == 2
    assert "gp_stride applies to GP-head models" in capsys.readouterr().err


@pytest.mark.parametrize("script,model", [("train_gpcis.py", "gpcis_tiny"), ("train_ritm.py", "ritm_tiny")])
def test_examples(tmp_path, monkeypatch, capsys, script, model):
    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [script, "--out", str(out), "--max-steps", "1", *TINY])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(REPO / "examples" / script), run_name="__main__")
    assert exc.value.code == 0
    assert f"trained {model}" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["config"]["name"] == model


def test_click_sampler_options_reach_the_trainer(tmp_path):
    """The GPCIS code base's sampler (decay 0.7, interior first clicks) from the command line."""
    from gpcis.training.cli import add_arguments, config_from_args
    from gpcis.training.trainer import Trainer

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "ritm_tiny", "--out", str(tmp_path / "run"), *TINY,
                              "--click-prob-gamma", "0.7", "--first-click-inner-prob", "1", "--max-num-points", "12"])
    cfg = config_from_args(args)
    sampler = Trainer(cfg).samples.sampler
    assert (sampler.prob_gamma, sampler.first_click_inner_prob, sampler.max_num_points) == (0.7, 1.0, 12)
