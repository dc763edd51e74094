"""The training loop: it learns, resumes exactly, survives Ctrl-C and kills while saving."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gpcis.models import create_model, load_checkpoint
from gpcis.training.losses import normalized_focal_loss
from gpcis.training.trainer import DataError, Trainer, TrainConfig, _batch_clicks, build_datasets, collate
from tests.folders import coco_mval_like, shared_folder, write_png

REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(model="ritm_tiny", synthetic_size=48, synthetic_samples=64, batch_size=2, epochs=2,
                steps_per_epoch=3, val_samples=0, out=str(tmp_path / "run"), progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _fixed_loss(trainer: Trainer, batch) -> float:
    """The training objective, NFL + the model's aux loss (alpha L_VI for GPCIS), on a fixed
    batch with fixed clicks, in eval mode (mean path). Gradients stay on so that the GP head
    computes L_VI (it skips it at inference); for gpcis_tiny the 30 steps mostly lower
    L_VI (0.29 -> 0.09) while the held-out NFL stays at 0.33."""
    model = trainer.model.eval()
    with torch.enable_grad():
        out = model(batch["image"], _batch_clicks(batch, "cpu"), None)
        loss = (normalized_focal_loss(out.logits, batch["target"], batch["ignore"]).mean() + out.aux_loss).detach()
    model.train()
    return float(loss)


@pytest.mark.parametrize("model", ["ritm_tiny", "gpcis_tiny"])
def test_thirty_steps_lower_the_loss(tmp_path, model):
    cfg = _config(tmp_path, model=model, synthetic_size=64, synthetic_samples=200, batch_size=4, epochs=1,
                  steps_per_epoch=30, seed=1)
    trainer = Trainer(cfg)
    trainer.samples.epoch = 99  # a held-out draw of crops and clicks
    batch = collate([trainer.samples[i] for i in range(16)])
    before = _fixed_loss(trainer, batch)
    trainer.train()
    after = _fixed_loss(trainer, batch)
    assert trainer.global_step == 30
    assert after < 0.95 * before, (before, after)
    rows = list(csv.DictReader(open(tmp_path / "run" / "steps.csv")))
    assert len(rows) == 30 and all(np.isfinite(float(r["loss"])) for r in rows)


def test_resume_is_exact(tmp_path):
    # gpcis_tiny: the GP head draws posterior samples from the torch RNG in training, so
    # this also checks the RNG state; milestones=(1,) checks the scheduler across epochs.
    kw = dict(model="gpcis_tiny", milestones=(1,), max_num_next_clicks=2)
    straight = Trainer(_config(tmp_path / "a", max_steps=4, **kw))
    straight.train()
    first = Trainer(_config(tmp_path / "b", max_steps=2, **kw))
    first.train()
    assert (first.epoch, first.step_in_epoch) == (0, 2)
    resumed = Trainer(_config(tmp_path / "b", max_steps=4, resume=True, **kw))
    assert resumed.global_step == 2
    resumed.train()
    assert resumed.global_step == 4 and resumed.epoch == 1
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.optimizer.param_groups[1]["lr"] == resumed.optimizer.param_groups[1]["lr"] == pytest.approx(
        straight.config.effective_lr * 0.1)
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(_config(tmp_path, epochs=3))
    real_step = trainer.train_step
    calls = []

    def step(batch):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(1)
        return real_step(batch)

    monkeypatch.setattr(trainer, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    extra = load_checkpoint(tmp_path / "run" / "last.pt")["extra"]
    assert (extra["global_step"], extra["epoch"], extra["step_in_epoch"]) == (4, 1, 1)
    again = Trainer(_config(tmp_path, epochs=3, resume=True))
    again.train()
    assert again.global_step == 9 and (tmp_path / "run" / "metrics.csv").exists()


def test_validation_and_best_checkpoint(tmp_path):
    trainer = Trainer(_config(tmp_path, epochs=1, steps_per_epoch=2, val_samples=2, val_max_clicks=3))
    row = trainer.train()
    assert 1 <= row["val_noc90"] <= 3 and 1 <= row["val_noc85"] <= row["val_noc90"]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["extra"]["best_noc90"] == row["val_noc90"]
    # last.pt carries the best score of its own epoch, so a resumed run compares with it
    # (it carried the score before that epoch's validation: a resumed run's first
    # validation replaced best.pt whatever its score)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["best_noc90"] == row["val_noc90"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the run's own settings: no warning
        resumed = Trainer(_config(tmp_path, epochs=1, steps_per_epoch=2, val_samples=2, val_max_clicks=3, resume=True))
    assert resumed.best_noc90 == row["val_noc90"]
    # other data or optimisation settings continue a different run: said in a warning
    with pytest.warns(UserWarning, match=r"other settings.*batch_size: 2 -> 4.*seed: 3 -> 5"):
        Trainer(_config(tmp_path, epochs=3, steps_per_epoch=2, val_samples=2, val_max_clicks=3, resume=True,
                        batch_size=4, seed=5))
    model = create_model(checkpoint=tmp_path / "run" / "best.pt")
    assert model.config.name == "ritm_tiny"


def test_an_interrupt_while_best_is_written_keeps_the_previous_best_score(tmp_path, monkeypatch):
    """best.pt is written before last.pt, and its score is kept only once it is written: an
    interrupt (or crash) during that write leaves last.pt with the previous best, so the
    resumed run's next validation writes best.pt."""
    kw = dict(steps_per_epoch=2, val_samples=2, val_max_clicks=3)
    trainer = Trainer(_config(tmp_path, epochs=1, **kw))
    real_save = trainer.save

    def save(path):
        if Path(path).name == "best.pt":
            raise KeyboardInterrupt
        return real_save(path)

    monkeypatch.setattr(trainer, "save", save)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert not (tmp_path / "run" / "best.pt").exists()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["best_noc90"] is None  # no best yet
    resumed = Trainer(_config(tmp_path, epochs=2, resume=True, **kw))
    row = resumed.train()
    best = load_checkpoint(tmp_path / "run" / "best.pt")["extra"]
    assert best["best_noc90"] == row["val_noc90"] == resumed.best_noc90


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time, torch
    from gpcis.training.trainer import Trainer, TrainConfig
    cfg = TrainConfig(model="ritm_tiny", synthetic_size=32, synthetic_samples=8, batch_size=2, epochs=1,
                      steps_per_epoch=1, val_samples=0, out=sys.argv[1], progress=False)
    trainer = Trainer(cfg)
    trainer.save(trainer.out / "last.pt")          # a good checkpoint
    trainer.save(trainer.out / "reference.pt")     # the same, for comparison
    real_save = torch.save
    def slow_save(obj, fh, *a, **k):               # write part of the file, then hang
        fh.write(b"PK\\x03\\x04 half a checkpoint")
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)
    torch.save = slow_save
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)
    trainer.save(trainer.out / "last.pt")
    """
)


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.strip() == b"writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    data = load_checkpoint(out / "last.pt")  # the previous, complete checkpoint
    ref = load_checkpoint(out / "reference.pt")
    assert data["extra"]["global_step"] == 0
    assert data["state_dict"].keys() == ref["state_dict"].keys()
    for k, v in ref["state_dict"].items():  # not the edited (+1.0) weights, not a mixture
        assert torch.equal(data["state_dict"][k], v), k
    create_model(checkpoint=out / "last.pt")  # and it builds a model
    assert sum(1 for p in out.iterdir() if p.suffix == ".tmp") == 1  # the partial write is a separate file


def test_build_datasets_holds_out_validation(tmp_path, shared_datasets):
    """COCO_MVal has several objects of one image as separate files: whole images are held
    out (with single samples 19 of 100 validation samples shared their image with training)."""
    cfg = _config(tmp_path, data=str(shared_folder(shared_datasets, "COCO_MVal")), val_samples=100)
    train, val = build_datasets(cfg)  # one training item per image (train_items "image")
    train_idx = [i for g in train.groups for i in g]
    assert len(val) >= 100 and len(train_idx) + len(val) == 800 and len(train) < len(train_idx)
    assert not set(train_idx) & set(val.indices)
    key = train.base.image_key
    assert not {key(i) for i in train_idx} & {key(i) for i in val.indices}
    assert all(len({key(i) for i in g}) == 1 for g in train.groups)
    per_object, _ = build_datasets(dataclasses.replace(cfg, train_items="sample"))
    assert sorted(per_object.indices) == sorted(train_idx)


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="model: unknown name 'nope'"):
        TrainConfig(model="nope")
    with pytest.raises(ValueError, match="data: folder not found"):
        TrainConfig(data=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="'bogus' is not a device name"):
        Trainer(_config(tmp_path, device="bogus"))
    with pytest.raises(ValueError, match="prob_gamma must be in"):
        TrainConfig(click_prob_gamma=0.0)
    with pytest.raises(ValueError, match="first_click_inner_prob must be in"):
        TrainConfig(first_click_inner_prob=1.5)
    with pytest.raises(ValueError, match="resume: checkpoint not found"):
        Trainer(_config(tmp_path, resume=True))
    with pytest.raises(ValueError, match="gp_stride applies to GP-head models"):
        TrainConfig(model="ritm_tiny", gp_stride=2)
    with pytest.raises(ValueError, match="gp_stride must be an int >= 1"):
        TrainConfig(model="gpcis_tiny", gp_stride=0)
    with pytest.raises(ValueError, match="gp_stride must be an int >= 1"):
        TrainConfig(model="gpcis_tiny", gp_stride=2.5)
    with pytest.raises(ValueError, match="gp_stride must be an int >= 1"):
        TrainConfig(model="gpcis_tiny", gp_stride=2.0)  # one rule with ModelConfig.gp_stride: ints only


def test_training_on_a_data_folder(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    for i in range(6):
        img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
        mask = np.zeros((40, 50), np.uint8)
        mask[10:30, 5 + i:25 + i] = 255
        (tmp_path / "my data" / "img").mkdir(parents=True, exist_ok=True)
        (tmp_path / "my data" / "gt").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "my data" / "img" / f"im {i}.jpg"), img)
        cv2.imwrite(str(tmp_path / "my data" / "gt" / f"im {i}.png"), mask)
    cfg = _config(tmp_path, data=str(tmp_path / "my data"), val_samples=2, crop_size=(32, 32), epochs=1,
                  steps_per_epoch=None)
    train, val = build_datasets(cfg)  # img/ + gt/ is recognised as the DAVIS layout
    assert len(train) == 4 and len(val) == 2
    trainer = Trainer(cfg)
    row = trainer.train()
    assert trainer.global_step == 2 and row["val_noc90"] != ""


def test_training_samples_pick_a_target_among_several_masks(tmp_path):
    from gpcis.data.datasets import Sample

    a = np.zeros((40, 40), bool)
    a[5:15, 5:15] = True
    b = np.zeros((40, 40), bool)
    b[25:35, 25:35] = True
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    data = [Sample(img, [a, b], np.zeros((40, 40), bool), "two")] * 8
    trainer = Trainer(_config(tmp_path, crop_size=(40, 40), scale_range=(1.0, 1.0), merge_objects_prob=0.0),
                      train_set=data)
    seen = set()
    for epoch in range(12):
        trainer.samples.epoch = epoch
        item = trainer.samples[0]
        target = item["target"][0].bool().numpy()
        # the target is one of the two squares (maybe flipped), never both (no merging here)
        seen.add(int(target[:20].any()) * 2 + int(target[20:].any()))
        pts, valid = item["points"][item["valid"]], item["valid"]
        assert valid.any() and all(target[int(r), int(c)] == (lab > 0) for r, c, lab in pts.tolist())
    assert seen == {1, 2}


@pytest.mark.gpu
def test_cuda_amp_steps(tmp_path):
    trainer = Trainer(_config(tmp_path, model="gpcis_tiny", device="cuda", epochs=1, steps_per_epoch=2))
    assert trainer.use_amp and next(trainer.model.parameters()).is_cuda
    trainer.train()
    extra = load_checkpoint(tmp_path / "run" / "last.pt")["extra"]
    assert extra["global_step"] == 2 and extra["scaler"] is not None


def test_time_budget_counts_the_time_of_earlier_runs(tmp_path, monkeypatch):
    """A resumed run continues the budget's clock instead of restarting it."""
    first = Trainer(_config(tmp_path, max_steps=2))
    first.train()
    spent = load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["elapsed_s"]
    assert spent > 0
    # a budget not used up yet: the resumed run trains on and its clock continues
    more = Trainer(_config(tmp_path, max_steps=3, resume=True, time_budget_s=spent * 1e6))
    assert more.elapsed_s() == pytest.approx(spent)
    more.train()
    assert more.global_step == 3
    spent3 = load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["elapsed_s"]
    assert spent3 > spent
    # a budget already used up by earlier runs: the resumed run takes no step (it took one
    # before session 12) and leaves the finished run's checkpoint and logs as they were
    again = Trainer(_config(tmp_path, max_steps=50, resume=True, time_budget_s=spent3))
    row = again.train()
    assert again.global_step == 3 and row == more.history[-1]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["elapsed_s"] == spent3
    assert len((tmp_path / "run" / "steps.csv").read_text().strip().splitlines()) == 1 + 3


def test_a_resume_with_other_optimizer_settings_trains_with_them(tmp_path):
    """The warning says a resumed run continues with its new settings: the learning rates,
    weight decay and schedule restored from the checkpoint's optimizer and scheduler state
    are replaced by the new ones (they were kept, silently), at the schedule's position."""
    kw = dict(steps_per_epoch=1, epochs=6)
    first = Trainer(_config(tmp_path, lr=1e-3, milestones=(1,), max_steps=2, **kw))
    first.train()  # 2 epochs: past the milestone at epoch 1
    assert [g["lr"] for g in first.optimizer.param_groups] == pytest.approx([1e-5, 1e-4])
    new = dict(lr=5e-3, backbone_lr_mult=1.0, milestones=(1, 3), weight_decay=0.1, lr_gamma=0.5)
    with pytest.warns(UserWarning, match="continuing with the new ones"):
        resumed = Trainer(_config(tmp_path, max_steps=4, resume=True, **new, **kw))
    # one of the new milestones (epoch 1) lies behind the resumed position (epoch 2)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([2.5e-3, 2.5e-3])
    assert [g["weight_decay"] for g in resumed.optimizer.param_groups] == [0.1, 0.1]
    resumed.train()  # epochs 3 and 4: the milestone at epoch 3 halves the rates again
    assert resumed.scheduler.last_epoch == 4
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([1.25e-3, 1.25e-3])
    assert load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["scheduler"]["base_lrs"] == pytest.approx([5e-3, 5e-3])
    # the same settings again: the restored state is used as it is (bit for bit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = Trainer(_config(tmp_path, max_steps=5, resume=True, **new, **kw))
    assert [g["lr"] for g in again.optimizer.param_groups] == [g["lr"] for g in resumed.optimizer.param_groups]


def test_time_milestones_drop_the_lr_once_across_resumes(tmp_path):
    """lr x gamma when elapsed >= fraction x budget, applied once by the training loop and
    kept (not re-applied) after a resume; epoch-end scheduler steps keep the dropped lr."""
    kw = dict(lr=1e-3, time_budget_s=1000.0, time_milestones=(0.5,), lr_gamma=0.1, steps_per_epoch=1)
    trainer = Trainer(_config(tmp_path, max_steps=2, **kw))
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    trainer._elapsed_before = 400.0  # before the milestone: nothing happens
    trainer.apply_time_milestones()
    assert [g["lr"] for g in trainer.optimizer.param_groups] == lrs and trainer.time_drops == 0
    trainer._elapsed_before = 600.0  # past it: the loop applies the drop before its first step
    trainer.train()  # 2 steps = 2 epochs of 1 step: the scheduler steps twice
    assert trainer.time_drops == 1
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([0.1 * v for v in lrs])
    steps = (tmp_path / "run" / "steps.csv").read_text().splitlines()
    assert all(float(line.split(",")[5]) == pytest.approx(0.1 * lrs[1]) for line in steps[1:])
    resumed = Trainer(_config(tmp_path, max_steps=3, resume=True, **kw))
    assert resumed.time_drops == 1
    resumed.train()
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([0.1 * v for v in lrs])
    with pytest.raises(ValueError, match="set time_budget_s"):
        TrainConfig(time_milestones=(0.5,))
    with pytest.raises(ValueError, match=r"lie in \(0, 1\)"):
        TrainConfig(time_budget_s=10, time_milestones=(1.5,))


def test_resume_keeps_the_runs_gp_stride_unless_told(tmp_path):
    Trainer(_config(tmp_path, model="gpcis_tiny", max_steps=1, gp_stride=2)).train()
    again = Trainer(_config(tmp_path, model="gpcis_tiny", max_steps=2, resume=True))
    assert again.model.config.gp_stride == 2 and again.model.head.stride == 2
    changed = Trainer(_config(tmp_path, model="gpcis_tiny", max_steps=2, resume=True, gp_stride=3))
    assert changed.model.head.stride == 3  # an explicit --gp-stride wins (the head has no stride parameters)


def test_validation_split_holds_out_whole_images(tmp_path):
    """val_split="image": every object of a held-out image is held out (COCO_MVal copies an
    image per object: its key is the COCO id), no image is in both splits; "sample" is the
    earlier split, one permutation of the samples."""
    root = coco_mval_like(tmp_path / "coco")
    kw = dict(model="ritm_tiny", data=str(root), dataset_type="COCO_MVal", batch_size=2, val_samples=3, seed=1,
              train_items="sample")  # one item per object: the indices compare
    train, val = build_datasets(TrainConfig(**kw))
    key = train.base.image_key
    assert key(0) == "000000000000" and len(val) == 4  # 3 samples asked for: two whole images
    assert not {key(i) for i in train.indices} & {key(i) for i in val.indices}
    assert sorted(train.indices + val.indices) == list(range(12))
    train_s, val_s = build_datasets(TrainConfig(**kw, val_split="sample"))
    perm = np.random.default_rng(1).permutation(12)
    assert val_s.indices == sorted(perm[:3].tolist()) and len(train_s) == 9
    with pytest.raises(ValueError, match="val_split"):
        TrainConfig(**kw, val_split="objects")


def test_an_empty_target_is_a_bad_item_and_a_clear_error(tmp_path, capsys):
    """A mask without an object pixel: --skip-bad drops it up front; without it training
    stops at that item with a DataError naming it, after saving last.pt (resumable), and
    `gpcis train` prints the message (exit 2) instead of a traceback."""
    root = tmp_path / "own"
    rng = np.random.default_rng(0)
    for i in range(6):
        write_png(root / "images" / f"im{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        if i != 3:
            mask[8:20, 8:20] = 255
        write_png(root / "masks" / f"im{i}.png", mask)
    kw = dict(model="ritm_tiny", data=str(root), dataset_type="ImageFolder", batch_size=2, val_samples=0,
              epochs=1, steps_per_epoch=3, crop_size=(32, 32), progress=False)
    with pytest.warns(UserWarning, match="skipped 1 bad item.*object mask is empty"):
        kept = Trainer(TrainConfig(**kw, out=str(tmp_path / "skip"), skip_bad=True))
    assert len(kept.samples) == 5
    strict = Trainer(TrainConfig(**kw, out=str(tmp_path / "strict")))
    with pytest.raises(DataError, match=r"'im3'.*object mask is empty.*saved .*last\.pt.*--resume"):
        strict.train()
    assert (tmp_path / "strict" / "last.pt").exists()
    from gpcis.cli import main as gpcis_main

    code = gpcis_main(["train", "--model", "ritm_tiny", "--data", str(root), "--dataset-type", "ImageFolder",
                       "--batch-size", "2", "--val-samples", "0", "--epochs", "1", "--steps-per-epoch", "3",
                       "--crop-size", "32", "32", "--no-progress", "--out", str(tmp_path / "cli")])
    assert code == 2 and "object mask is empty" in capsys.readouterr().err
    # from a DataLoader worker: the same message, without the worker's traceback
    workers = Trainer(TrainConfig(**{**kw, "num_workers": 1}, out=str(tmp_path / "workers")))
    with pytest.raises(DataError, match="object mask is empty") as info:
        workers.train()
    assert "Traceback" not in str(info.value)


def test_a_bad_item_after_the_epochs_step_cap_is_never_read(tmp_path):
    """The epoch takes steps_per_epoch batches: an item that only a later batch would hold
    does not stop it (it did: the loader fetched one batch past the cap, and every resume
    failed on it again)."""
    root = tmp_path / "own"
    rng = np.random.default_rng(0)
    for i in range(6):
        write_png(root / "images" / f"im{i}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8:20] = 255
        write_png(root / "masks" / f"im{i}.png", mask)
    kw = dict(model="ritm_tiny", data=str(root), dataset_type="ImageFolder", batch_size=2, val_samples=0,
              epochs=1, steps_per_epoch=1, crop_size=(32, 32), progress=False, out=str(tmp_path / "run"))
    order = list(Trainer(TrainConfig(**kw)).sampler)  # the epoch's sample order (seeded, content-free)
    write_png(root / "masks" / f"im{order[2]}.png", np.zeros((32, 32), np.uint8))  # in the second batch
    trainer = Trainer(TrainConfig(**kw))
    trainer.train()
    assert trainer.global_step == 1 and trainer.epoch == 1


def test_a_resumed_run_keeps_its_validation_split(tmp_path):
    """A run saved before val_split existed held out single samples: resuming it keeps that
    split (silently); asking for another split explicitly warns."""
    root = coco_mval_like(tmp_path / "coco")
    kw = dict(model="ritm_tiny", data=str(root), dataset_type="COCO_MVal", batch_size=2, val_samples=3,
              epochs=1, steps_per_epoch=1, progress=False, out=str(tmp_path / "run"))
    first = Trainer(TrainConfig(**kw))
    assert first.config.val_split == "image"  # a new run
    first.save(tmp_path / "run" / "last.pt")
    data = load_checkpoint(tmp_path / "run" / "last.pt", weights_only=False)
    data["extra"]["train_config"].pop("val_split")  # as runs before session 11 saved it
    torch.save(data, tmp_path / "run" / "last.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resumed = Trainer(TrainConfig(**kw, resume=True))
    assert resumed.config.val_split == "sample"
    assert resumed.val_set.base.indices == build_datasets(TrainConfig(**kw, val_split="sample"))[1].indices
    with pytest.warns(UserWarning, match="val_split: 'sample' -> 'image'"):
        Trainer(TrainConfig(**kw, resume=True, val_split="image"))


def test_a_resumed_run_that_reached_max_steps_trains_no_further(tmp_path):
    """Resuming a finished run (max_steps reached on an epoch boundary) used to train one
    more step; now it returns its last row and leaves the checkpoint as it was."""
    kw = dict(max_steps=3, steps_per_epoch=3, epochs=5)
    done = Trainer(_config(tmp_path, **kw))
    done.train()
    assert done.global_step == 3
    again = Trainer(_config(tmp_path, resume=True, **kw))
    row = again.train()
    assert again.global_step == 3 and row == done.history[-1]
    assert len((tmp_path / "run" / "steps.csv").read_text().strip().splitlines()) == 1 + 3


def test_a_run_stopped_in_its_final_bookkeeping_finishes_it_on_resume(tmp_path, monkeypatch):
    """A run interrupted after its last step but inside the final validation (last.pt at
    max_steps, no row logged) runs that validation on resume and writes best.pt."""
    kw = dict(max_steps=3, steps_per_epoch=3, epochs=5, val_samples=2, val_max_clicks=3)
    first = Trainer(_config(tmp_path, **kw))
    monkeypatch.setattr(first, "validate", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert first.global_step == 3 and not first.history
    again = Trainer(_config(tmp_path, resume=True, **kw))
    row = again.train()
    assert row["val_noc90"] != "" and (tmp_path / "run" / "best.pt").exists()
    # without a further step (before session 12 it trained step 4): the row closes epoch 1
    assert again.global_step == 3 and len((tmp_path / "run" / "steps.csv").read_text().strip().splitlines()) == 1 + 3
    assert row["step"] == 3 and row["epoch"] == 1 and row["epoch_complete"] == 1 and row["loss"] == ""
    assert load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["history"][-1] == row


def test_a_run_stopped_in_its_final_bookkeeping_mid_epoch_by_its_time_budget(tmp_path, monkeypatch):
    """The same for a run whose time budget ran out inside an epoch: the resumed run
    validates and saves at the step it had reached, keeping the epoch open."""
    kw = dict(steps_per_epoch=4, epochs=5, val_samples=2, val_max_clicks=3)
    first = Trainer(_config(tmp_path, max_steps=2, **kw))
    monkeypatch.setattr(first, "validate", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        first.train()
    spent = load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["elapsed_s"]
    again = Trainer(_config(tmp_path, resume=True, time_budget_s=spent, **kw))
    row = again.train()
    assert again.global_step == 2 and again.step_in_epoch == 2 and again.epoch == 0
    assert row["epoch"] == 1 and row["epoch_complete"] == 0 and row["val_noc90"] != ""


def test_the_gp_sample_of_a_step_comes_from_seed_step_and_rank(tmp_path):
    """Each step's GP posterior sample is drawn with a generator of its own, seeded from
    (seed, step, rank): the same on a replay of the step (a resume), different on another
    rank (the global RNG, seeded alike on every rank, gave every rank the same noise)."""
    from gpcis.training.distributed import DistInfo

    trainer = Trainer(_config(tmp_path, model="gpcis_tiny"))
    batch = next(iter(trainer._loader()))
    seeds, samples = [], []
    model = trainer.ddp_model

    def recording(*args, generator=None, **kwargs):
        seeds.append(generator.initial_seed())
        out = model(*args, generator=generator, **kwargs)
        samples.append(out.samples.detach().clone())  # the head's drawn sample, not just its seed
        return out

    trainer.ddp_model = recording
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optim = {k: v for k, v in trainer.optimizer.state_dict().items()}
    losses = []
    for rank in (0, 0, 1):
        trainer.model.load_state_dict(state)
        trainer.optimizer.load_state_dict(optim)
        trainer.dist = DistInfo(rank=rank, world_size=2)
        losses.append(trainer.train_step(batch)["loss"])
    assert seeds[0] == seeds[1] != seeds[2]
    assert torch.equal(samples[0], samples[1]) and not torch.equal(samples[0], samples[2])
    assert losses[0] == losses[1]
    trainer.global_step += 1
    trainer.dist = DistInfo(rank=0, world_size=2)
    trainer.train_step(batch)
    assert seeds[3] not in seeds[:3]


def test_validation_downscaling_keeps_objects_that_nearest_neighbour_would_erase():
    """A 1 x 3-pixel object of a 375 x 500 validation image vanished at 320 px (nearest) and
    the evaluation, which refuses an empty target, stopped training at its first validation."""
    import cv2

    from gpcis.data.datasets import Sample
    from gpcis.training.trainer import _Resized

    img = np.zeros((375, 500, 3), np.uint8)
    tiny = np.zeros((375, 500), bool)
    tiny[101, 201:204] = True
    big = np.zeros((375, 500), bool)
    big[50:150, 300:450] = True
    ignore = np.zeros((375, 500), bool)
    s = _Resized([Sample(img, [tiny], ignore, "tiny", others=[big])], 320)[0]
    assert s.image.shape == (240, 320, 3)
    k = 320 / 500
    rows, cols = np.nonzero(s.masks[0])
    assert len(rows) >= 1 and all(abs(r - 101 * k) <= 1 and 201 * k - 1 <= c <= 204 * k for r, c in zip(rows, cols))
    # a large object keeps nearest neighbour's mask exactly
    near = cv2.resize(big.astype(np.uint8), (320, 240), interpolation=cv2.INTER_NEAREST).astype(bool)
    np.testing.assert_array_equal(s.others[0], near)
    # a target the ignore band covers after resizing is scored where it is
    band = np.zeros((375, 500), bool)
    band[95:110, :] = True
    s2 = _Resized([Sample(img, [tiny], band, "tiny")], 320)[0]
    assert (s2.masks[0] & ~s2.ignore).any()


def test_cli_reports_a_resumed_run_that_only_finished_its_bookkeeping(tmp_path, monkeypatch, capsys):
    """The final row of a resume without a step has no loss: the CLI printed it with :.4f and
    crashed after a successful run."""
    from gpcis.training import cli

    out = tmp_path / "run"
    argv = ["--model", "ritm_tiny", "--synthetic-size", "48", "--synthetic-samples", "64", "--batch-size", "2",
            "--epochs", "5", "--steps-per-epoch", "3", "--max-steps", "3", "--val-samples", "2",
            "--out", str(out), "--no-progress"]
    monkeypatch.setattr(Trainer, "validate", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert cli.main(argv) == 130
    monkeypatch.undo()
    assert cli.main(argv + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "trained ritm_tiny: 3 steps; validation (2 samples)" in printed and "last loss" not in printed


def test_a_run_stopped_in_the_bookkeeping_of_its_last_epoch_finishes_it_on_resume(tmp_path, monkeypatch):
    """Its last step ended the last epoch (epoch == epochs in last.pt): the resume returned {}
    without validating; now it validates, logs the row and writes best.pt."""
    kw = dict(steps_per_epoch=2, epochs=2, val_samples=2, val_max_clicks=3)
    first = Trainer(_config(tmp_path, **kw))
    calls = []

    def validate_once_then_interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"val_noc85": 5.0, "val_noc90": 6.0, "val_miou1": 0.5}

    monkeypatch.setattr(first, "validate", validate_once_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert first.epoch == 2 and first.global_step == 4 and len(first.history) == 1
    again = Trainer(_config(tmp_path, resume=True, **kw))
    row = again.train()
    assert row["step"] == 4 and row["epoch"] == 2 and row["val_noc90"] != "" and again.global_step == 4
    assert load_checkpoint(tmp_path / "run" / "last.pt")["extra"]["history"][-1] == row


def test_time_budget_must_be_positive():
    for bad in (0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="time_budget_s must be > 0"):
            TrainConfig(time_budget_s=bad)


def test_a_gp_models_initial_draws_follow_the_run_seed(tmp_path):
    """TrainConfig.seed reaches the GP head's initial draws (GPHeadConfig.seed): two seeds
    give different MLPs and frequencies, one seed the same."""
    a, b, c = (Trainer(_config(tmp_path / str(i), model="gpcis_tiny", seed=s)) for i, s in enumerate((1, 1, 2)))
    assert a.model.config.gp.seed == 1 and c.model.config.gp.seed == 2
    sa, sb, sc = (t.model.head.gp.state_dict() for t in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["posterior.mlp.0.weight"], sc["posterior.mlp.0.weight"])


def test_the_seed_must_be_a_non_negative_int():
    """A negative seed was accepted and failed at the first item inside numpy's default_rng."""
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed must be an int >= 0"):
            TrainConfig(seed=bad)


def test_a_run_saved_before_the_lr_scope_field_resumes_with_its_parameter_groups(tmp_path):
    """A RITM run saved before ModelConfig.backbone_lr_scope trained its whole backbone at
    the reduced rate: its checkpoint's config has no such field and its optimizer state has
    groups of that size. A resume keeps those groups (a model made by name now puts only
    the trunk there, and the saved state did not fit)."""
    cfg = _config(tmp_path, model="ritm_efflite0", max_steps=1, epochs=1, steps_per_epoch=1)
    old_model = create_model("ritm_efflite0")
    old_model.config.backbone_lr_scope = "backbone"
    Trainer(cfg, model=old_model).train()
    path = tmp_path / "run" / "last.pt"
    data = torch.load(path, map_location="cpu", weights_only=False)
    del data["config"]["backbone_lr_scope"]  # as written before the field existed
    torch.save(data, path)
    resumed = Trainer(_config(tmp_path, model="ritm_efflite0", max_steps=2, epochs=2, steps_per_epoch=1, resume=True))
    assert resumed.model.config.backbone_lr_scope == "backbone"
    assert len(resumed.optimizer.param_groups[0]["params"]) == len(list(resumed.model.backbone.parameters()))
    resumed.train()
    assert resumed.global_step == 2


def test_training_items_are_images_with_a_random_object_as_the_target(tmp_path):
    """train_items="image" (RITM's SBD / LVIS training): an epoch is a pass over the images
    and each draw of an image trains on a random one of its objects, the others negatives
    (COCO_MVal-like: 6 images of 2 objects each, copies of the image per object); a resumed
    run saved before the setting keeps one item per object."""
    data = coco_mval_like(tmp_path / "coco", images=6, objects=2, size=32)
    cfg = _config(tmp_path, data=str(data), val_samples=2, crop_size=(32, 32), scale_range=(1.0, 1.0),
                  epochs=1, steps_per_epoch=1)
    trainer = Trainer(cfg)
    assert trainer.config.train_items == "image" and len(trainer.samples) == 5  # 6 images, one held out
    merged = trainer.samples.base[0]
    assert len(merged.masks) == 2 and merged.others == []
    rows = {int(np.argwhere(trainer.samples.base[0].masks[k])[0, 0]) for k in range(2)}
    assert rows == {2, 7}  # the two bars
    targets = set()
    for epoch in range(12):
        trainer.samples.epoch = epoch
        item = trainer.samples[0]
        targets.add(int(np.argwhere(item["target"][0].numpy() > 0)[:, 0].min()))
    assert targets == {2, 7}  # both objects are drawn as the target (P(one only) = 2 / 2^12)
    trainer.train()
    data_ckpt = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    for key in ("train_items", "merge_objects_prob"):  # a run saved before these settings
        del data_ckpt["extra"]["train_config"][key]
    torch.save(data_ckpt, tmp_path / "run" / "last.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own settings: no warning
        resumed = Trainer(dataclasses.replace(cfg, resume=True, max_steps=2, epochs=2))
    assert resumed.config.train_items == "sample" and len(resumed.samples) == 10
    assert resumed.config.merge_objects_prob == 0.0 and trainer.config.merge_objects_prob == 0.15
    # merged targets (RITM's merge_objects_prob): the union of both bars, a positive in each
    merging = Trainer(dataclasses.replace(cfg, out=str(tmp_path / "merge"), merge_objects_prob=1.0))
    item = merging.samples[0]
    rows = np.flatnonzero(item["target"][0].numpy().any(1))
    assert set(rows) == {2, 3, 4, 5, 7, 8, 9, 10}
    pos = item["points"][item["valid"] & (item["points"][:, 2] > 0)]
    assert {int(pos[0, 0]) < 6, int(pos[1, 0]) < 6} == {True, False}
    with pytest.raises(ValueError, match="train_items"):
        TrainConfig(train_items="object")


def test_a_crop_shows_min_object_area_target_pixels_where_it_can(tmp_path):
    """RITM drops objects smaller than min_object_area after augmentation: the augmentation
    is drawn again until the crop shows that many target pixels (a 12 x 12 object in 40 x 40
    crops placed over one of its pixels often shows a corner of it), else the crop that
    showed the most; min_object_area 1 is the earlier rule (any pixel)."""
    from gpcis.data.datasets import Sample

    a = np.zeros((100, 100), bool)
    a[50:62, 30:42] = True
    img = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    data = [Sample(img, [a], np.zeros((100, 100), bool), "small")] * 4
    areas = {}
    for least in (1, 100):
        trainer = Trainer(_config(tmp_path / str(least), crop_size=(40, 40), scale_range=(1.0, 1.0),
                                  min_object_area=least), train_set=data)
        areas[least] = []
        for epoch in range(40):
            trainer.samples.epoch = epoch
            areas[least].append(int(trainer.samples[0]["target"].sum()))
    assert min(areas[1]) < 100  # some crops show a corner only
    assert min(areas[100]) >= 100
    unreachable = Trainer(_config(tmp_path / "big", crop_size=(40, 40), scale_range=(1.0, 1.0),
                                  min_object_area=1000), train_set=data)  # more than the object has
    assert unreachable.samples[0]["target"].sum() == 144  # the crop that showed the most: all of it
    with pytest.raises(ValueError, match="min_object_area"):
        TrainConfig(min_object_area=0)


def test_a_run_of_an_earlier_training_recipe_resumes_with_a_warning_and_forgets_its_best(tmp_path):
    """A checkpoint without the recipe version (before session 13) was trained and validated
    by other code: resuming it says so, and its best validation score (from the earlier
    evaluation loop) is forgotten so that the next validation writes best.pt."""
    kw = dict(epochs=1, steps_per_epoch=1, val_samples=2, val_max_clicks=3)
    Trainer(_config(tmp_path, **kw)).train()
    path = tmp_path / "run" / "last.pt"
    data = torch.load(path, map_location="cpu", weights_only=False)
    assert data["extra"]["recipe"] == 2 and data["extra"]["best_noc90"] is not None
    del data["extra"]["recipe"]
    torch.save(data, path)
    with pytest.warns(UserWarning, match="training recipe 1, this code has 2"):
        resumed = Trainer(_config(tmp_path, resume=True, **dict(kw, epochs=2)))
    assert resumed.best_noc90 == float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a run of this recipe: no warning, its best kept
        again = Trainer(_config(tmp_path / "x", **kw))
        again.train()
        kept = Trainer(_config(tmp_path / "x", resume=True, **dict(kw, epochs=2)))
    assert kept.best_noc90 == again.best_noc90 < float("inf")


def test_sbd_training_drops_ritms_buggy_masks(tmp_path):
    """Training on SBD reads it as RITM's training reader does: instances filling under 8%
    of their bounding box (annotation errors, mostly) are background."""
    from scipy.io import savemat

    root = tmp_path / "SBD"
    (root / "img").mkdir(parents=True)
    (root / "inst").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        inst = np.zeros((40, 40), np.uint8)
        inst[5:20, 5:20] = 1
        for k in range(30):  # a thin diagonal: 30 of 900 box pixels (3%)
            inst[8 + k, 8 + k] = 2 if 8 + k < 40 else 0
        write_png(root / "img" / f"im{i}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        savemat(root / "inst" / f"im{i}.mat", {"GTinst": {"Segmentation": inst}})
    (root / "train.txt").write_text("\n".join(f"im{i}" for i in range(4)) + "\n")
    cfg = _config(tmp_path, data=str(root), dataset_type="SBD", val_samples=0, train_items="sample")
    train, _ = build_datasets(cfg)
    assert train.base.min_fill == 0.08 and len(train) == 4  # the diagonals are gone
