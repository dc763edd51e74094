"""Distributed training through PyTorch's own engine (``torchrun`` + DDP).

Launch any training entry point with ``torchrun --nproc_per_node=N ...``; torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``, and
:func:`init_distributed` joins the process group: NCCL on CUDA, gloo on the CPU. Without
those variables everything degrades to a single process. Each rank reads its own share
of every epoch through :class:`ResumableDistributedSampler` (a ``DistributedSampler``
that can also start mid-epoch, for exact resumption).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "wrap_ddp",
    "unwrap",
    "all_reduce_mean",
    "barrier",
    "broadcast_from_main",
    "first_failed_rank",
    "ResumableDistributedSampler",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 (writes checkpoints and logs)."""
        return self.rank == 0


def init_distributed(device: str | torch.device = "cpu") -> DistInfo:
    """Join the process group set up by ``torchrun`` (no-op for a single process).

    Args:
        device: ``"cpu"`` selects the gloo backend, ``"cuda"`` NCCL (and this rank's GPU
            ``cuda:LOCAL_RANK``).

    Returns:
        This process's :class:`DistInfo`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local)


def cleanup_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when running distributed."""
    if not info.distributed:
        return model
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying module of a DDP (or ``torch.compile``) wrapper, or ``model`` itself
    (:func:`gpcis.models.checkpoint.unwrap_model`)."""
    from gpcis.models.checkpoint import unwrap_model

    return unwrap_model(model)


def all_reduce_mean(value: Tensor, info: DistInfo) -> Tensor:
    """Mean of ``value`` over all ranks (identity for one process)."""
    if not info.distributed:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / info.world_size


def broadcast_from_main(value: float, info: DistInfo, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (``value`` itself for one process).

    Decisions that depend on a clock (time budget, time milestones) must be the same on
    every rank: different learning rates or a missing collective would make DDP ranks
    diverge or hang.
    """
    if not info.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def first_failed_rank(failed: bool, info: DistInfo, device: torch.device) -> Optional[int]:
    """The lowest rank on which ``failed`` is true, ``None`` if none (one collective).

    A rank that stops alone (e.g. on an unreadable training item) would leave the others
    waiting in the next gradient all-reduce: every rank asks this before a step, so that
    all of them stop together (and rank 0 can save a checkpoint).
    """
    if not info.distributed:
        return 0 if failed else None
    t = torch.tensor([info.rank if failed else info.world_size], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    rank = int(t.item())
    return rank if rank < info.world_size else None


def barrier(info: DistInfo) -> None:
    """Synchronise all ranks (no-op for one process)."""
    if info.distributed:
        dist.barrier()


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by ``seed + epoch``) that can skip ahead.

    Works without a process group when ``num_replicas`` and ``rank`` are given (the
    single-process case uses ``num_replicas=1, rank=0``).

    Args:
        dataset: the data set.
        num_replicas: number of ranks.
        rank: this rank.
        seed: shuffling seed.
        drop_last: drop the tail so that every rank gets the same number of samples.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int = 0,
                 drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of this rank's share of the current epoch."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
