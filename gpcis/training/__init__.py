"""Training: the normalized focal loss, iterative click simulation, the trainer and DDP helpers."""

from gpcis.training.distributed import (
    DistInfo,
    ResumableDistributedSampler,
    cleanup_distributed,
    init_distributed,
)
from gpcis.training.iterative import add_error_clicks, error_click, iterative_prev_mask
from gpcis.training.losses import NormalizedFocalLoss, normalized_focal_loss
from gpcis.training.trainer import Trainer, TrainConfig, TrainingSamples, build_datasets, default_lr

__all__ = [
    "DistInfo",
    "ResumableDistributedSampler",
    "cleanup_distributed",
    "init_distributed",
    "add_error_clicks",
    "error_click",
    "iterative_prev_mask",
    "NormalizedFocalLoss",
    "normalized_focal_loss",
    "Trainer",
    "TrainConfig",
    "TrainingSamples",
    "build_datasets",
    "default_lr",
]
