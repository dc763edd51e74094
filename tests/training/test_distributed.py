"""DDP on the CPU: two gloo processes under torchrun train one model in lockstep."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from gpcis.models import load_checkpoint
from gpcis.training.distributed import DistInfo, ResumableDistributedSampler, first_failed_rank, init_distributed

_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from gpcis.training.trainer import Trainer, TrainConfig
    from gpcis.training.distributed import cleanup_distributed
    cfg = TrainConfig(model="ritm_tiny", synthetic_size=32, synthetic_samples=16, batch_size=2, epochs=2,
                      steps_per_epoch=2, val_samples=2, val_max_clicks=2, out=sys.argv[1], progress=False,
                      time_budget_s=1e5, time_milestones=(0.5,))
    t = Trainer(cfg)
    if t.dist.rank == 1:  # a clock far ahead on rank 1 alone: rank 0's clock must decide for both
        t._elapsed_before = 1e6
    assert t.dist.world_size == 2 and type(t.ddp_model).__name__ == "DistributedDataParallel"
    assert torch.distributed.get_backend() == "gloo"
    t.samples.epoch = 0
    t.sampler.set_epoch(0)
    idx = list(iter(t.sampler))
    t.train()
    lrs = [g["lr"] for g in t.optimizer.param_groups]
    torch.save({"state": t.model.state_dict(), "indices": idx, "lrs": lrs, "steps": t.global_step},
               f"{sys.argv[1]}/rank{t.dist.rank}.pt")
    cleanup_distributed()
    """
)


def _torchrun(tmp_path, script_text: str, name: str) -> subprocess.CompletedProcess:
    """Run ``script_text`` as two gloo processes under torchrun (one thread each), with the
    run folder ``tmp_path / "run"`` as its argument."""
    script = tmp_path / name
    script.write_text(script_text)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path / "run")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def test_two_process_gloo_ddp(tmp_path):
    res = _torchrun(tmp_path, _SCRIPT, "ddp.py")
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = torch.load(tmp_path / "run" / "rank0.pt")
    r1 = torch.load(tmp_path / "run" / "rank1.pt")
    assert not set(r0["indices"]) & set(r1["indices"])  # each rank reads its own share
    # time budget and time milestones follow rank 0's clock on every rank
    assert r0["steps"] == r1["steps"] == 4 and r0["lrs"] == r1["lrs"]
    for k, v in r0["state"].items():
        if k.endswith("running_mean") or k.endswith("running_var") or k.endswith("num_batches_tracked"):
            continue  # BatchNorm statistics are per rank (no SyncBN)
        assert torch.equal(v, r1["state"][k]), k  # gradients were averaged: same weights
    extra = load_checkpoint(tmp_path / "run" / "last.pt")["extra"]
    assert extra["global_step"] == 4 and extra["epoch"] == 2
    assert (tmp_path / "run" / "best.pt").exists()


_BAD_ITEM_SCRIPT = textwrap.dedent(
    """
    import os, sys, numpy as np
    from gpcis.data.datasets import Sample
    from gpcis.training.trainer import DataError, Trainer, TrainConfig
    from gpcis.training.distributed import cleanup_distributed

    class Data:  # rank 1 cannot read its items after the first two batches (2 items each)
        reads = 0
        def __len__(self):
            return 16
        def __getitem__(self, i):
            Data.reads += 1
            if os.environ["RANK"] == "1" and Data.reads > 4:
                raise ValueError(f"item {i}: unreadable file")
            img = np.full((32, 32, 3), 100, np.uint8)
            mask = np.zeros((32, 32), bool)
            mask[8:24, 8:24] = True
            return Sample(img, [mask], np.zeros((32, 32), bool), str(i))

    cfg = TrainConfig(model="ritm_tiny", batch_size=2, epochs=1, steps_per_epoch=4, val_samples=0,
                      crop_size=(32, 32), out=sys.argv[1], progress=False)
    t = Trainer(cfg, train_set=Data())
    try:
        t.train()
    except DataError as err:
        print(f"rank {t.dist.rank}: {err}", flush=True)
        cleanup_distributed()
        sys.exit(3)
    """
)


def test_an_unreadable_item_on_one_rank_stops_every_rank_with_a_checkpoint(tmp_path):
    """Rank 1 alone meets a bad item: both ranks stop at the same step with a DataError
    (rank 0 names rank 1) and rank 0 saves last.pt there; before, rank 0 waited in the
    next gradient all-reduce and no checkpoint was written."""
    res = _torchrun(tmp_path, _BAD_ITEM_SCRIPT, "bad.py")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "rank 0: training data: an item on rank 1 could not be used" in out, out[-3000:]
    assert "rank 1: training data: item" in out and "unreadable file" in out, out[-3000:]
    extra = load_checkpoint(tmp_path / "run" / "last.pt")["extra"]
    assert extra["global_step"] == 2 and extra["step_in_epoch"] == 2


def test_first_failed_rank_without_a_process_group():
    info = DistInfo()
    assert first_failed_rank(False, info, torch.device("cpu")) is None
    assert first_failed_rank(True, info, torch.device("cpu")) == 0


def test_single_process_defaults(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed("cpu") == DistInfo(0, 1, 0)
    s = ResumableDistributedSampler(list(range(10)), num_replicas=1, rank=0, seed=0)
    s.set_epoch(1)
    full = list(s)
    s.set_start(4)
    assert list(s) == full[4:] and len(s) == 6 and sorted(full) == list(range(10))
    with pytest.raises(ValueError, match="start"):
        s.set_start(-1)
