"""The training loop: iterative click training of any registered model.

One training step (GPCIS supplement Alg. S1, after RITM):

1. a batch of augmented crops with clicks from :class:`gpcis.data.MultiPointSampler`;
2. ``k ~ U{0..max_num_next_clicks}`` no-grad passes (model in eval mode), each adding one
   click at the error region and feeding the probability back as the previous mask
   (:func:`gpcis.training.iterative.iterative_prev_mask`);
3. the training pass: ``loss = NFL(logits, target) + aux_loss``, where ``aux_loss`` is the
   model's ``alpha * L_VI`` for GP heads (0 for conv heads); Adam (0.9, 0.999), the
   backbone at ``lr * backbone_lr_mult``, a multi-step schedule (per epoch).

Around it: tqdm progress, ``metrics.csv`` (one row per epoch) and ``steps.csv`` (one row
per step) in ``out``, TensorBoard when installed, validation NoC@85/90 on a held-out
split with the RITM simulated user (:mod:`gpcis.evaluation`), ``last.pt`` after every
epoch (atomic, via :func:`gpcis.models.save_checkpoint`) and ``best.pt`` at the best
validation NoC@90, exact resumption (weights, optimizer, scheduler, AMP scaler, RNG
states, epoch, step), a checkpoint on Ctrl-C, mixed precision on CUDA only, and DDP
under ``torchrun``.

All randomness of the data (augmentation, click sampling) is drawn from generators
seeded by ``(seed, epoch, index)``, that of the iterative passes and of each step's GP
posterior sample by ``(seed, step, rank)``; the GP head's initial draws by ``seed``
(``GPHeadConfig.seed``), the rest of the model's initialisation by the torch RNG, which the
trainer seeds with ``seed`` and whose state (with NumPy's and Python's) is saved in
checkpoints.
"""

from __future__ import annotations

import bisect
import collections
import csv
import itertools
import dataclasses
import math
import numbers
import os
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gpcis.clicks import ClickBatch
from gpcis.devices import resolve_device
from gpcis.data.datasets import IMAGE_SUFFIXES, Sample, get_dataset
from gpcis.data.sampler import MultiPointSampler
from gpcis.data.synthetic import SyntheticConfig, SyntheticDataset
from gpcis.data.transforms import AugmentConfig, augment, resize_sample
from gpcis.models.heads import check_stride
from gpcis.models.model import ModelConfig
from gpcis.training.distributed import (
    DistInfo,
    ResumableDistributedSampler,
    all_reduce_mean,
    first_failed_rank,
    barrier,
    broadcast_from_main,
    init_distributed,
    wrap_ddp,
)
from gpcis.training.iterative import iterative_prev_mask
from gpcis.training.losses import normalized_focal_loss

__all__ = [
    "DataError",
    "TrainConfig",
    "Trainer",
    "TrainingSamples",
    "default_lr",
    "build_datasets",
    "collate",
]

#: The paper's learning rates per backbone (Sec. 4.1): 5e-3 for ResNet50 / SegFormer-B0,
#: 5e-4 for HRNet18s; the small CPU models use 5e-4.
_DEFAULT_LR = {"resnet50": 5e-3, "segformer_b0": 5e-3, "hrnet18s": 5e-4, "efflite0": 5e-4, "tiny": 5e-4}


def default_lr(model_name: str) -> float:
    """The default learning rate of a registered model (by its backbone)."""
    for backbone, lr in _DEFAULT_LR.items():
        if model_name.endswith("_" + backbone):
            return lr
    return 5e-4


class DataError(ValueError):
    """A training item could not be produced (an unreadable file, an empty target): raised
    by the data loader between two steps, so :meth:`Trainer.train` saves ``last.pt``."""


def _data_errors_named(batches: Iterator[Any]) -> Iterator[Any]:
    """The loader's batches; a ``ValueError`` it raises (in a worker or here) becomes a
    :class:`DataError`."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except ValueError as err:
            # from a worker, DataLoader's text carries the worker's traceback: keep its last line
            text = str(err)
            if "Original Traceback" in text:
                last = [line for line in text.strip().splitlines() if line.strip()][-1]
                text = last.split(": ", 1)[1] if last.startswith("ValueError: ") else last
            raise DataError(f"training data: {text}") from err
        yield batch


#: settings that define what a run trains on and how; a resume with other values continues
#: a different run (the length, device, output and logging settings may change)
_RUN_SETTINGS = ("data", "dataset_type", "split", "batch_size", "lr", "backbone_lr_mult", "milestones", "lr_gamma",
                 "weight_decay", "max_num_next_clicks", "max_num_points", "click_prob_gamma", "first_click_inner_prob",
                 "crop_size", "scale_range",
                 "synthetic_samples", "synthetic_size", "val_samples", "val_split", "train_items",
                 "merge_objects_prob", "min_object_area", "val_max_clicks", "val_max_size", "seed")


#: version of the training recipe (what a step does with the same settings): 2 since
#: session 13 (RITM's next-click rule, colour changes, first-click interior and erosion
#: fallback, centred padding, SBD's buggy-mask filter, and the evaluation loop of the
#: validation, which feeds probabilities back). A run saved by an earlier version resumes with a warning.
TRAINING_RECIPE = 2

#: the settings that live in the optimizer's and scheduler's saved state: a resume with other
#: values puts the new ones there (:meth:`Trainer._apply_optimizer_settings`)
_OPTIMIZER_SETTINGS = ("lr", "backbone_lr_mult", "milestones", "lr_gamma", "weight_decay")


#: settings whose default changed, ``None`` in :class:`TrainConfig`: ``(a new run's value,
#: the value runs used before the setting existed)``; a resumed run keeps its own
_RESOLVED_DEFAULTS: dict[str, tuple[Any, Any]] = {
    "val_split": ("image", "sample"),
    "train_items": ("image", "sample"),
    "merge_objects_prob": (0.15, 0.0),
    "min_object_area": (80, 1),
}


def _changed_settings(saved: dict, now: dict) -> list[str]:
    """``"name: saved -> now"`` for each of :data:`_RUN_SETTINGS` that differs (lists and
    tuples compare equal, as a checkpoint stores tuples as lists)."""
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    # settings older runs did not save: the values they trained with
    fields = TrainConfig.__dataclass_fields__
    saved = {**{k: before for k, (_, before) in _RESOLVED_DEFAULTS.items()},
             **{k: fields[k].default for k in ("click_prob_gamma", "first_click_inner_prob")}, **saved}
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in _RUN_SETTINGS
            if k in saved and norm(saved.get(k)) != norm(now.get(k))]


@dataclass
class TrainConfig:
    """Everything a training run needs (saved into every checkpoint).

    Attributes:
        model: registered model name (``gpcis.models.list_models()``).
        data: ``"synthetic"`` or a data-set folder.
        dataset_type: reader name for ``data`` (see ``gpcis.data.DATASET_NAMES``);
            ``None`` guesses from the folder name, then falls back to ``ImageFolder``.
        split: split for readers that have them (SBD, PascalVOC).
        epochs: number of epochs.
        batch_size: images per step (per rank).
        lr: head learning rate (``None``: :func:`default_lr`).
        backbone_lr_mult: the backbone's lr factor (0.1).
        milestones: epochs at which the lr is multiplied by ``lr_gamma``.
        lr_gamma: the multi-step factor.
        weight_decay: Adam weight decay.
        max_num_next_clicks: at most this many iterative no-grad passes per step (3).
        max_num_points: the click sampler's maximum clicks per sign (24).
        click_prob_gamma: the sampler's decay of ``P(n clicks)`` per extra click (RITM's 0.8;
            the GPCIS code base used 0.7).
        first_click_inner_prob: probability that the first positive click is in the
            object's interior (this project's 0.5; RITM's configurations 0, the GPCIS code
            base 1.0).
        crop_size: training crop ``(h, w)``; ``None``: 320x480 for real data, the
            synthetic image size for synthetic data.
        scale_range: random-scale range of the augmentation.
        synthetic_samples: length of the synthetic training set.
        synthetic_size: side of the synthetic images.
        steps_per_epoch: cap on steps per epoch (``None``: the whole data set).
        max_steps: stop (with a checkpoint) after this many steps in total.
        time_budget_s: stop (validate, checkpoint) after this many seconds of training.
        time_milestones: fractions of ``time_budget_s`` at which the learning rates are
            multiplied by ``lr_gamma`` (the wall-clock analogue of ``milestones``, for
            runs whose length is a time budget: e.g. ``(0.8,)`` anneals for the last 20%).
        val_samples: size of the held-out validation split (0 disables validation).
        val_split: ``"image"``: whole images are held out, with every object they have (a
            data set with several objects per image, e.g. COCO_MVal or SBD, then validates
            on images it never trained on; the split can exceed ``val_samples`` by an
            image's objects); ``"sample"``: single samples, as before session 11 (runs whose
            saved config has no ``val_split`` used this). ``None`` (default): ``"image"`` for
            a new run, the run's own split on resume.
        train_items: ``"image"``: one training item per image, whose target is a random one
            of its objects each time it is drawn (the others are "other object" negatives),
            as RITM trains on SBD and LVIS (an epoch is a pass over the images);
            ``"sample"``: one item per object, as before session 13 (runs whose saved config
            has no ``train_items`` used this). ``None`` (default): ``"image"`` for a new
            run, the run's own on resume.
        merge_objects_prob: probability that an image item's target is two of its objects
            merged (RITM's and GPCIS's 0.15; :meth:`gpcis.data.MultiPointSampler.choose_objects`).
            ``None`` (default): 0.15 for a new run, the run's own on resume (0 for runs saved
            before session 13).
        min_object_area: a training crop should show at least this many target pixels
            (:class:`TrainingSamples`; RITM's SBD configs 80). ``None`` (default): 80 for a
            new run, the run's own on resume (1 for runs saved before session 13).
        val_every: validate every this many epochs (and after the last).
        val_max_clicks: click budget of the validation NoC.
        val_max_size: validation images are resized so their longer side is at most this.
        seed: seed of everything random (the data, the clicks, the GP samples, the model's
            initialisation incl. the GP head's, via ``GPHeadConfig.seed``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: mixed precision (CUDA only; ignored on the CPU).
        out: output folder (checkpoints, CSV logs).
        num_workers: DataLoader worker processes.
        pretrained: backbone initialisation (``False``, ``True`` or a local file).
        gp_stride: the GP head's test-grid stride (``ModelConfig.gp_stride``; ``None``: the
            registered model's, 1). Parameter-free: a model trained at one stride can be
            evaluated at another (``gpcis evaluate --gp-stride``).
        resume: ``True`` continues from ``out/last.pt``; a path continues from that file.
        skip_bad: skip (and report) unreadable samples instead of failing.
        progress: show tqdm bars.
    """

    model: str = "gpcis_tiny"
    data: str = "synthetic"
    dataset_type: str | None = None
    split: str = "train"
    epochs: int = 10
    batch_size: int = 8
    lr: float | None = None
    backbone_lr_mult: float = 0.1
    milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    max_num_next_clicks: int = 3
    max_num_points: int = 24
    click_prob_gamma: float = 0.8
    first_click_inner_prob: float = 0.5
    crop_size: tuple[int, int] | None = None
    scale_range: tuple[float, float] = (0.75, 1.40)
    synthetic_samples: int = 2000
    synthetic_size: int = 96
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    time_budget_s: float | None = None
    time_milestones: tuple[float, ...] = ()
    val_samples: int = 20
    val_split: Optional[str] = None
    train_items: Optional[str] = None
    merge_objects_prob: Optional[float] = None
    min_object_area: Optional[int] = None
    val_every: int = 1
    val_max_clicks: int = 20
    val_max_size: int | None = 320
    seed: int = 0
    device: str = "cpu"
    amp: bool = True
    out: str = "runs/train"
    num_workers: int = 0
    pretrained: bool | str = False
    gp_stride: int | None = None
    resume: bool | str = False
    skip_bad: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        from gpcis.models import list_models

        if self.model not in list_models():
            raise ValueError(f"model: unknown name {self.model!r}; known: {', '.join(list_models())}")
        if self.val_split not in (None, "image", "sample"):
            raise ValueError(f"val_split must be 'image', 'sample' or None, got {self.val_split!r}")
        if self.merge_objects_prob is not None and not (isinstance(self.merge_objects_prob, (int, float))
                                                        and 0.0 <= self.merge_objects_prob <= 1.0):
            raise ValueError(f"merge_objects_prob must be in [0, 1] or None, got {self.merge_objects_prob!r}")
        if self.min_object_area is not None and (isinstance(self.min_object_area, bool)
                                                 or not isinstance(self.min_object_area, int)
                                                 or self.min_object_area < 1):
            raise ValueError(f"min_object_area must be an int >= 1 or None, got {self.min_object_area!r}")
        if self.train_items not in (None, "image", "sample"):
            raise ValueError(f"train_items must be 'image', 'sample' or None, got {self.train_items!r}")
        MultiPointSampler(max_num_points=self.max_num_points, prob_gamma=self.click_prob_gamma,
                          first_click_inner_prob=self.first_click_inner_prob)  # its checks, up front
        for name in ("epochs", "batch_size", "val_every", "val_max_clicks", "synthetic_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "max_steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {v}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        self.seed = int(self.seed)
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.time_budget_s is not None and not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise ValueError(f"time_budget_s must be > 0 (seconds) or None, got {self.time_budget_s}")
        if self.max_num_next_clicks < 0 or self.val_samples < 0 or self.num_workers < 0:
            raise ValueError("max_num_next_clicks, val_samples and num_workers must be >= 0")
        if self.synthetic_size < 16:
            raise ValueError(f"synthetic_size must be >= 16, got {self.synthetic_size}")
        self.milestones = tuple(int(m) for m in self.milestones)
        self.time_milestones = tuple(sorted(float(f) for f in self.time_milestones))
        if self.time_milestones:
            if self.time_budget_s is None:
                raise ValueError("time_milestones are fractions of time_budget_s; set time_budget_s")
            if not all(0.0 < f < 1.0 for f in self.time_milestones):
                raise ValueError(f"time_milestones must lie in (0, 1), got {self.time_milestones}")
        if self.crop_size is not None:
            self.crop_size = (int(self.crop_size[0]), int(self.crop_size[1]))
            if min(self.crop_size) < 8:
                raise ValueError(f"crop_size must be at least 8x8, got {self.crop_size}")
        self.scale_range = (float(self.scale_range[0]), float(self.scale_range[1]))
        if self.gp_stride is not None:
            if not self.model.startswith("gpcis_"):
                raise ValueError(f"gp_stride applies to GP-head models (gpcis_*), not {self.model!r}")
            check_stride(self.gp_stride, "gp_stride")  # the rule of ModelConfig.gp_stride
        if self.data != "synthetic" and not Path(self.data).is_dir():
            raise ValueError(f"data: folder not found: {self.data} (or use 'synthetic')")

    @property
    def effective_lr(self) -> float:
        """``lr``, or the model's default (:func:`default_lr`) when it is ``None``."""
        return self.lr if self.lr is not None else default_lr(self.model)

    @property
    def effective_crop(self) -> tuple[int, int]:
        """``crop_size``, or the default training crop when it is ``None``."""
        if self.crop_size is not None:
            return self.crop_size
        if self.data == "synthetic":
            return (self.synthetic_size, self.synthetic_size)
        return (320, 480)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (``dataclasses.asdict``), as stored in checkpoints."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- data
_GUESS = {"grabcut": "GrabCut", "berkeley": "Berkeley", "davis": "DAVIS", "sbd": "SBD",
          "coco_mval": "COCO_MVal", "voc": "PascalVOC", "pascal": "PascalVOC"}


#: COCO_MVal's mask names: ``<object>_<12-digit COCO image id>``
_COCO_STEM = re.compile(r".+_\d{12}$")


def _guess_type(folder: Path) -> str:
    """The reader of a data folder from its name, else from its layout. An ``img/`` + ``gt/``
    folder whose masks all carry a COCO image id is COCO_MVal whatever it is called (read as
    DAVIS, its copies of one image per object were split into training and validation)."""
    name = folder.name.lower()
    for key, value in _GUESS.items():
        if key in name:
            return value
    if (folder / "img").is_dir() and (folder / "gt").is_dir():
        # the mask images only (a stray Thumbs.db or README is not a mask); stop at the first
        # name without a COCO id
        masks = (Path(e.name) for e in os.scandir(folder / "gt")
                 if e.is_file() and not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
        seen = False
        for m in masks:
            if not _COCO_STEM.match(m.stem):
                return "DAVIS"
            seen = True
        if seen:
            return "COCO_MVal"
        return "DAVIS"
    return "ImageFolder"


class _Subset:
    def __init__(self, base: Any, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        return self.base[self.indices[i]]


class _ImageItems:
    """Training view with one item per image: the :class:`Sample` of its objects (the
    samples ``groups[i]`` of ``base``) with every object a target, from which
    :class:`TrainingSamples` picks one per draw. A data set with ``image_sample`` (the
    instance layouts) reads the image once; otherwise the objects' samples are merged."""

    def __init__(self, base: Any, groups: Sequence[Sequence[int]]) -> None:
        self.base, self.groups = base, [list(g) for g in groups]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> Sample:
        group = self.groups[i]
        if len(group) == 1:
            return self.base[group[0]]
        if hasattr(self.base, "image_sample"):
            return self.base.image_sample(group)
        samples = [self.base[j] for j in group]
        masks = [m for s in samples for m in s.masks]
        others = [o for s in samples for o in s.others if not any(np.array_equal(o, m) for m in masks)]
        ignore = np.logical_or.reduce([s.ignore for s in samples])
        return dataclasses.replace(samples[0], masks=masks, others=others, ignore=ignore)


class _Resized:
    """Validation view: samples resized so that the longer side is at most ``max_size``."""

    def __init__(self, base: Any, max_size: int | None) -> None:
        self.base, self.max_size = base, max_size

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Sample:
        s = self.base[i]
        h, w = s.image.shape[:2]
        if self.max_size is None or max(h, w) <= self.max_size:
            return s
        k = self.max_size / max(h, w)
        size = (max(1, round(w * k)), max(1, round(h * k)))
        def near(m: np.ndarray) -> np.ndarray:
            return cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)

        def shrink(m: np.ndarray) -> np.ndarray:
            # nearest neighbour, but an object it would erase (a few pixels wide) keeps every
            # output pixel that covers part of it: an empty target is refused by the evaluation
            out = near(m)
            if not out.any() and m.any():
                out = cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
            return out

        masks, ignore = [shrink(m) for m in s.masks], near(s.ignore)
        if masks and not (masks[0] & ~ignore).any():
            ignore &= ~masks[0]  # the target is scored where it is, even if the ignore band covered it
        return Sample(cv2.resize(s.image, size, interpolation=cv2.INTER_AREA), masks, ignore, s.name,
                      others=[shrink(m) for m in s.others])


def build_datasets(config: TrainConfig) -> tuple[Any, Any | None]:
    """The training set and the held-out validation split of a configuration.

    Synthetic data: two disjoint procedural sets (different seeds). A folder: a fixed
    random ``val_samples`` of its samples (by ``seed``) are held out.
    """
    if config.data == "synthetic":
        sc = SyntheticConfig(height=config.synthetic_size, width=config.synthetic_size)
        train = SyntheticDataset(config.synthetic_samples, sc, seed=config.seed)
        val = SyntheticDataset(config.val_samples, sc, seed=config.seed + 100_003) if config.val_samples else None
        return train, val
    kind = config.dataset_type or _guess_type(Path(config.data))
    kwargs: dict[str, Any] = {"skip_bad": config.skip_bad}
    if kind.lower() in ("sbd", "pascalvoc"):
        kwargs["split"] = config.split
    if kind.lower() == "sbd":
        kwargs["min_fill"] = 0.08  # RITM's SBD training reader drops "buggy" masks (recipe 2)
    full = get_dataset(kind, config.data, **kwargs)
    n = len(full)
    n_val = min(config.val_samples, max(0, n - config.batch_size))
    groups = _image_groups(full) if config.val_split in (None, "image") else [[i] for i in range(n)]
    perm = np.random.default_rng(config.seed).permutation(len(groups))  # one sample per image: as "sample"
    val_idx: list[int] = []
    for g in perm:
        if len(val_idx) >= n_val:
            break
        val_idx += groups[g]
    held = set(val_idx)
    train_idx = [i for i in range(n) if i not in held]
    if len(train_idx) < config.batch_size:
        raise ValueError(f"data: {config.data} has {n} samples; after holding out {len(val_idx)} for validation "
                         f"{len(train_idx)} remain, fewer than batch_size = {config.batch_size}")
    val = _Subset(full, sorted(val_idx)) if val_idx else None
    if config.train_items == "sample":
        return _Subset(full, train_idx), val
    training = set(train_idx)
    per_image = [[i for i in g if i in training] for g in _image_groups(full)]
    return _ImageItems(full, [g for g in per_image if g]), val


def _resume_checkpoint(config: TrainConfig) -> tuple[Optional[Path], Optional[dict]]:
    """The checkpoint ``config`` resumes from and its contents, read once (``(None, None)``
    without ``resume``; the contents ``None`` where the file cannot be read:
    :meth:`Trainer.load` reports that)."""
    if not config.resume:
        return None, None
    from gpcis.models import load_checkpoint

    path = Path(config.out) / "last.pt" if config.resume is True else Path(config.resume)
    try:
        return path, load_checkpoint(path, map_location="cpu")
    except Exception:  # noqa: BLE001 - reported by Trainer.load with its own message
        return path, None


def _saved_setting(data: Optional[dict], key: str, before: Any) -> Any:
    """A resumed run's setting ``key`` from its checkpoint contents (``before``, the value
    runs used before the setting existed, when it did not save one), or ``None`` without
    checkpoint contents (a new run)."""
    if data is None:
        return None
    saved = ((data.get("extra") or {}).get("train_config") or {})
    return saved[key] if saved.get(key) is not None else before


def _image_groups(dataset: Any) -> list[list[int]]:
    """Sample indices grouped by the image they show (``dataset.image_key``, in order of
    first appearance); a data set without image keys: one group per sample."""
    key = getattr(dataset, "image_key", None)
    if key is None:
        return [[i] for i in range(len(dataset))]
    groups: dict[str, list[int]] = {}
    for i in range(len(dataset)):
        groups.setdefault(key(i), []).append(i)
    return list(groups.values())


class TrainingSamples(Dataset):
    """Augmented crops with sampled clicks; item ``i`` of epoch ``e`` depends on ``(seed, e, i)``.

    The augmentation is drawn again (up to 10 times) while the target shows fewer than
    ``min_object_area`` pixels in the crop (RITM drops such objects after augmentation; a
    target that never shows that many keeps the crop that showed the most of it).

    Items are dicts: ``image`` ``(3, h, w)`` float in [0, 1], ``target`` ``(1, h, w)``
    float, ``ignore`` ``(1, h, w)`` bool, ``points`` ``(2 * max_num_points, 3)`` float
    (row, col, label), ``valid`` ``(2 * max_num_points,)`` bool.
    """

    def __init__(self, base: Any, augment_config: AugmentConfig, sampler: MultiPointSampler, seed: int,
                 min_object_area: int = 1) -> None:
        self.base = base
        self.augment_config = augment_config
        self.sampler = sampler
        self.seed = int(seed)
        self.min_object_area = int(min_object_area)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        sample = self.base[index]
        if len(sample.masks) > 1:  # several objects: the target is one (or a few merged), the rest negatives
            chosen = self.sampler.choose_objects(len(sample.masks), rng)
            sample = dataclasses.replace(
                sample, masks=[sample.masks[t] for t in chosen],
                others=[m for i, m in enumerate(sample.masks) if i not in chosen] + list(sample.others))
        crop, best = None, 0
        for _ in range(10):  # a crop whose target shows min_object_area pixels, else the most of it
            cand = augment(sample, rng, self.augment_config)
            area = int((_union(cand.masks) & ~cand.ignore).sum())
            if area > best:
                crop, best = cand, area
            if area >= self.min_object_area:
                break
        if crop is None:  # tiny object: resize the whole sample to the crop instead
            h, w = self.augment_config.crop_size
            crop = resize_sample(sample, h, w)
            if not (_union(crop.masks) & ~crop.ignore).any():
                raise ValueError(f"sample {sample.name!r}: the target has no visible pixel at {h}x{w}")
        target = _union(crop.masks)
        parts = crop.masks if len(crop.masks) > 1 else None
        clicks = self.sampler.sample(target, rng, crop.others, crop.ignore, parts=parts)
        p = 2 * self.sampler.max_num_points
        points = torch.zeros(p, 3)
        valid = torch.zeros(p, dtype=torch.bool)
        for j, c in enumerate(clicks[:p]):
            points[j] = torch.tensor([c.row, c.col, c.label], dtype=torch.float32)
            valid[j] = True
        return {
            "image": torch.from_numpy(np.ascontiguousarray(crop.image)).permute(2, 0, 1).float() / 255.0,
            "target": torch.from_numpy(target).float()[None],
            "ignore": torch.from_numpy(crop.ignore)[None],
            "points": points,
            "valid": valid,
        }


def _union(masks: Sequence[np.ndarray]) -> np.ndarray:
    """The union of one or more ``(H, W)`` bool masks (a merged target)."""
    return masks[0] if len(masks) == 1 else np.logical_or.reduce(masks)


def collate(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack items; the click padding is trimmed to the longest click list of the batch."""
    out = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    n = int(out["valid"].sum(1).max())
    out["points"], out["valid"] = out["points"][:, :n], out["valid"][:, :n]
    return out


def _batch_clicks(batch: dict[str, Tensor], device: torch.device) -> ClickBatch:
    pts = batch["points"].to(device)
    return ClickBatch(pts[..., :2].contiguous(), pts[..., 2].contiguous(), batch["valid"].to(device))


# ----------------------------------------------------------------------------- RNG state
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Trains one model according to a :class:`TrainConfig`.

    Args:
        config: the run's configuration.
        model: an already built model (default: ``create_model(config.model)``).
        train_set: a data set of :class:`~gpcis.data.Sample` (default: from ``config``).
        val_set: the validation split (default: from ``config``; ``None`` disables).
    """

    def __init__(self, config: TrainConfig, model: nn.Module | None = None, train_set: Any = None,
                 val_set: Any = None) -> None:
        from gpcis.models import create_model, model_config

        resume_path, resume_data = _resume_checkpoint(config)
        # settings whose default changed: a new run takes the new one, a resumed run its own
        # (the value before the setting existed when its checkpoint has none)
        for key, (new_run, before) in _RESOLVED_DEFAULTS.items():
            if getattr(config, key) is None:
                saved = _saved_setting(resume_data, key, before)
                config = dataclasses.replace(config, **{key: new_run if saved is None else saved})
        self.config = config
        self.device = self._resolve_device(config.device)  # a clear ValueError before torchrun's process group
        self.dist: DistInfo = init_distributed(config.device)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        random.seed(config.seed)
        if train_set is None:
            train_set, default_val = build_datasets(config)
            val_set = default_val if val_set is None else val_set
        self.train_set = train_set
        self.val_set = _Resized(val_set, config.val_max_size) if val_set is not None else None
        overrides: dict[str, Any] = {} if config.gp_stride is None else {"gp_stride": config.gp_stride}
        if model is None:
            base = model_config(config.model)
            if base.head == "gp":  # the GP head's initial draws (Theta, tau, mu_w, MLP) follow the run's seed
                overrides["gp"] = dataclasses.replace(base.gp, seed=config.seed)
        self.model = (model if model is not None
                      else create_model(config.model, pretrained=config.pretrained, **overrides))
        self.model.to(self.device).train()
        self.ddp_model = wrap_ddp(self.model, self.dist, self.device)
        self._make_optimizer()
        self.use_amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.samples = TrainingSamples(
            train_set,
            AugmentConfig(crop_size=config.effective_crop, scale_range=config.scale_range),
            MultiPointSampler(max_num_points=config.max_num_points, prob_gamma=config.click_prob_gamma,
                              first_click_inner_prob=config.first_click_inner_prob,
                              merge_objects_prob=config.merge_objects_prob),
            seed=config.seed,
            min_object_area=config.min_object_area,
        )
        self.sampler = ResumableDistributedSampler(self.samples, self.dist.world_size, self.dist.rank,
                                                   seed=config.seed, drop_last=True)
        full_steps = len(self.sampler) // config.batch_size
        if full_steps < 1:
            raise ValueError(f"batch_size {config.batch_size} x {self.dist.world_size} rank(s) exceeds the "
                             f"{len(self.samples)} training samples")
        self.steps_per_epoch = min(full_steps, config.steps_per_epoch or full_steps)
        self.out = Path(config.out)
        self.epoch = 0  # current epoch (0-based)
        self.step_in_epoch = 0  # steps done in the current epoch
        self.global_step = 0
        self.best_noc90 = math.inf
        self.history: list[dict[str, Any]] = []
        self._tb = None
        self._elapsed_before = 0.0  # training seconds of earlier (resumed) runs
        self._run_start: float | None = None
        self.time_drops = 0  # time_milestones applied so far
        if resume_path is not None:
            self.load(resume_path, resume_data)

    @staticmethod
    def _resolve_device(device: str) -> torch.device:
        dev = resolve_device(device)
        if dev.type == "cuda" and dev.index is None:  # one GPU per rank under torchrun
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return dev

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        """The training state stored in a checkpoint's ``extra``."""
        sched = self.scheduler.state_dict()
        sched["milestones"] = {int(k): int(v) for k, v in sched["milestones"].items()}
        return {
            "train_config": self.config.to_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "best_noc90": self.best_noc90 if math.isfinite(self.best_noc90) else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": sched,
            "scaler": self.scaler.state_dict() if self.use_amp else None,
            "rng": _rng_state(),
            "history": self.history,
            "elapsed_s": self.elapsed_s(),
            "time_drops": self.time_drops,
            "recipe": TRAINING_RECIPE,
        }

    def elapsed_s(self) -> float:
        """Training wall-clock seconds so far, summed over resumed runs (the time budget's clock)."""
        running = time.perf_counter() - self._run_start if self._run_start is not None else 0.0
        return self._elapsed_before + running

    def save(self, path: Path) -> None:
        """Write a checkpoint atomically (main process only)."""
        from gpcis.models import save_checkpoint

        if self.dist.is_main:
            save_checkpoint(path, self.model, extra=self.state())

    def load(self, path: Path, data: Optional[dict] = None) -> None:
        """Restore everything from a checkpoint written by :meth:`save` (``data``: its
        contents when already read)."""
        from gpcis.models import load_checkpoint
        from gpcis.models.checkpoint import load_model_weights

        path = Path(path)
        if data is None:
            if not path.is_file():
                raise ValueError(f"resume: checkpoint not found: {path}")
            data = load_checkpoint(path, map_location="cpu")
        extra = data.get("extra") or {}
        if "optimizer" not in extra:
            raise ValueError(f"resume: {path} holds no training state (not written by the trainer)")
        saved_model = extra["train_config"].get("model")
        if saved_model != self.config.model:
            raise ValueError(f"resume: {path} is a {saved_model!r} run, not {self.config.model!r}")
        changed = _changed_settings(extra["train_config"], self.config.to_dict())
        if changed:
            warnings.warn(f"resume: {path} was trained with other settings, continuing with the new ones: "
                          + "; ".join(changed), UserWarning, stacklevel=3)
        load_model_weights(self.model, data, source=str(path))
        saved_stride = int((data.get("config") or {}).get("gp_stride", 1))
        model_cfg = getattr(self.model, "config", None)
        if (self.config.gp_stride is None and getattr(model_cfg, "head", None) == "gp"
                and model_cfg.gp_stride != saved_stride):
            self.model.set_gp_stride(saved_stride)  # keep the run's stride unless told otherwise
        self.model.to(self.device)
        saved_scope = ModelConfig.from_dict(data["config"]).backbone_lr_scope if data.get("config") else None
        if (model_cfg is not None and saved_scope is not None
                and getattr(model_cfg, "backbone_lr_scope", saved_scope) != saved_scope):
            model_cfg.backbone_lr_scope = saved_scope  # the run's parameter groups, as saved
            self._make_optimizer()
        self.optimizer.load_state_dict(extra["optimizer"])
        sched = dict(extra["scheduler"])
        sched["milestones"] = collections.Counter({int(k): int(v) for k, v in sched["milestones"].items()})
        self.scheduler.load_state_dict(sched)
        self.time_drops = int(extra.get("time_drops") or 0)  # the optimizer's lrs already include them
        if any(c.split(":")[0] in _OPTIMIZER_SETTINGS for c in changed):
            self._apply_optimizer_settings()
        if self.use_amp and extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        self.epoch = int(extra["epoch"])
        self.step_in_epoch = int(extra["step_in_epoch"])
        self.global_step = int(extra["global_step"])
        self.best_noc90 = extra["best_noc90"] if extra.get("best_noc90") is not None else math.inf
        recipe = int(extra.get("recipe") or 1)
        if recipe != TRAINING_RECIPE:
            # its validation scores came from the earlier evaluation loop: not comparable
            warnings.warn(f"resume: {path} was trained with training recipe {recipe}, this code has "
                          f"{TRAINING_RECIPE} (docs/training.md): the run continues with the current one, "
                          "not exactly as it would have; its best validation score is forgotten, so the next "
                          "validation writes best.pt", UserWarning, stacklevel=3)
            self.best_noc90 = math.inf
        self.history = list(extra.get("history") or [])
        self._elapsed_before = float(extra.get("elapsed_s") or 0.0)
        _set_rng_state(extra["rng"])

    def _make_optimizer(self) -> None:
        """Adam over two groups (the model's reduced-rate parameters at ``lr *
        backbone_lr_mult``, the rest at ``lr``) and the multi-step schedule."""
        config = self.config
        lr = config.effective_lr
        self.optimizer = torch.optim.Adam(
            [
                {"params": list(self.model.backbone_parameters()), "lr": lr * config.backbone_lr_mult},
                {"params": list(self.model.head_parameters()), "lr": lr},
            ],
            lr=lr, betas=(0.9, 0.999), weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(config.milestones),
                                                              gamma=config.lr_gamma)

    def _apply_optimizer_settings(self) -> None:
        """Put this config's learning rates, weight decay and schedule into the optimizer and
        scheduler restored from a checkpoint (their saved state holds the old run's): each
        group's lr is its new base lr times ``lr_gamma`` once per epoch milestone already
        passed and once per time milestone already applied."""
        cfg = self.config
        lr = cfg.effective_lr
        bases = [lr * cfg.backbone_lr_mult, lr]
        passed = bisect.bisect_right(sorted(cfg.milestones), self.scheduler.last_epoch)
        factor = cfg.lr_gamma ** (passed + self.time_drops)
        for group, base in zip(self.optimizer.param_groups, bases):
            group["initial_lr"] = base
            group["lr"] = base * factor
            group["weight_decay"] = cfg.weight_decay
        self.scheduler.base_lrs = bases
        self.scheduler.milestones = collections.Counter(cfg.milestones)
        self.scheduler.gamma = cfg.lr_gamma
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def synced_elapsed_s(self) -> float:
        """:meth:`elapsed_s` of rank 0 on every rank (one broadcast), so that the time budget
        and its milestones make the same decision everywhere."""
        return broadcast_from_main(self.elapsed_s(), self.dist, self.device)

    def apply_time_milestones(self, elapsed: float | None = None) -> None:
        """Multiply every learning rate by ``lr_gamma`` once per ``time_milestones``
        fraction of the time budget that has elapsed (each applied once, across resumes).

        Args:
            elapsed: the training seconds to decide on, the same on every rank (default:
                :meth:`synced_elapsed_s`).
        """
        cfg = self.config
        if not cfg.time_milestones or cfg.time_budget_s is None:
            return
        if elapsed is None:
            elapsed = self.synced_elapsed_s()
        due = sum(elapsed >= f * cfg.time_budget_s for f in cfg.time_milestones)
        if due > self.time_drops:
            factor = cfg.lr_gamma ** (due - self.time_drops)
            for group in self.optimizer.param_groups:
                group["lr"] *= factor
            self.time_drops = due

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One iterative training step on a collated batch; returns the losses."""
        cfg = self.config
        dev = self.device
        image = batch["image"].to(dev, non_blocking=True)
        target = batch["target"].to(dev, non_blocking=True)
        ignore = batch["ignore"].to(dev, non_blocking=True)
        clicks = _batch_clicks(batch, dev)
        rng = np.random.default_rng([cfg.seed, self.global_step, self.dist.rank, 1])
        num_iters = int(rng.integers(0, cfg.max_num_next_clicks + 1))
        # the GP's posterior sample of this step (w and f_n): a generator of its own from (seed,
        # step, rank), a stream apart from the click draws above -- the same after a resume,
        # different on every rank (from the global RNG, seeded alike on every rank, all ranks
        # drew the same noise)
        gp_seed = np.random.default_rng([cfg.seed, self.global_step, self.dist.rank, 2]).integers(0, 2**63 - 1)
        gp_gen = torch.Generator(device=dev).manual_seed(int(gp_seed))
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=self.use_amp):
            clicks, prev = iterative_prev_mask(self.model, image, clicks, target, num_iters, rng, ignore)
            out = self.ddp_model(image, clicks, prev, generator=gp_gen)
            nfl = normalized_focal_loss(out.logits.float(), target, ignore).mean()
            aux = out.aux_loss.float()
            loss = nfl + aux
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {self.global_step}: nfl={nfl.item()} aux={aux.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": float(loss.detach()), "nfl": float(nfl.detach()), "aux": float(aux.detach()),
                "num_iters": num_iters}

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """NoC@85/90 of the current model on the validation split (RITM simulated user)."""
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        from gpcis.evaluation.protocol import EvalConfig, evaluate_dataset, summarize
        from gpcis.inference.predictor import Predictor

        ec = EvalConfig(max_clicks=self.config.val_max_clicks, long_max_clicks=None, target_iou=0.9,
                        progress=False)
        was_training = self.model.training
        rng = _rng_state()  # validation must not change the training's random stream
        try:
            predictor = Predictor(self.model, device=self.device, zoom_in=False, with_std=False)
            with torch.no_grad():
                records = evaluate_dataset(predictor, self.val_set, ec, desc="validate")
        finally:
            self.model.train(was_training)
            _set_rng_state(rng)
        s = summarize(records, ec)
        return {"val_noc85": s["noc85"], "val_noc90": s["noc90"], "val_miou1": s["miou_at"][0]}

    # ------------------------------------------------------------------ logging
    def _log_csv(self, name: str, row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        path = self.out / name
        new = not path.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def _tensorboard(self, row: dict[str, Any], step: int) -> None:
        if not self.dist.is_main:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV only
                self._tb = False
                return
            self._tb = SummaryWriter(str(self.out / "tb"))
        if self._tb:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    self._tb.add_scalar(k, v, step)

    # ------------------------------------------------------------------ loop
    def _agreed_batches(self, batches: Iterator[Any]) -> Iterator[Any]:
        """The loader's batches (:func:`_data_errors_named`); under DDP the ranks agree
        before each step whether all of them have their batch (one small collective per
        step), so an unreadable item on one rank stops every rank with a :class:`DataError`
        instead of leaving the others waiting in the gradient all-reduce."""
        named = _data_errors_named(batches)
        while True:
            err: Optional[DataError] = None
            try:
                batch = next(named)
            except StopIteration:  # every rank takes the same number of batches
                return
            except DataError as e:
                err = e
            failed = first_failed_rank(err is not None, self.dist, self.device)
            if err is not None:
                raise err
            if failed is not None:
                raise DataError(f"training data: an item on rank {failed} could not be used (its error is in "
                                "that rank's output)")
            yield batch

    def _loader(self) -> DataLoader:
        self.samples.epoch = self.epoch
        self.sampler.set_epoch(self.epoch)
        self.sampler.set_start(self.step_in_epoch * self.config.batch_size)
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.epoch)
        return DataLoader(self.samples, batch_size=self.config.batch_size, sampler=self.sampler,
                          num_workers=self.config.num_workers, collate_fn=collate, drop_last=True,
                          pin_memory=self.device.type == "cuda", generator=g)

    def train(self) -> dict[str, Any]:
        """Run (or continue) training; returns the last epoch's metrics row.

        A ``KeyboardInterrupt`` saves ``last.pt`` (resumable mid-epoch) and is re-raised; so
        does a :class:`DataError` (a training item that cannot be read or has no target).
        """
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        self._run_start = time.perf_counter()
        last_row: dict[str, Any] = {}
        timed = cfg.time_budget_s is not None
        # a resumed run that had reached max_steps or its time budget takes no further step:
        # with its last row logged there is nothing to do; one stopped inside that final
        # bookkeeping (validation, checkpoint) runs it again, without a step
        finished = (self.epoch >= cfg.epochs or (cfg.max_steps is not None and self.global_step >= cfg.max_steps)
                    or (timed and self.synced_elapsed_s() >= cfg.time_budget_s))
        if finished and self.history and self.history[-1].get("step") == self.global_step:
            return dict(self.history[-1])
        try:
            while self.epoch < cfg.epochs or finished:  # finished: the bookkeeping once, no step
                sums = collections.defaultdict(float)
                n_steps, images, t_epoch = 0, 0, time.perf_counter()
                bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch,
                           desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and self.dist.is_main))
                stop = finished
                elapsed = self.synced_elapsed_s() if timed else 0.0  # then one broadcast per step, after it
                # only the batches this epoch still takes: an item after its step cap is never read
                remaining = 0 if finished else max(self.steps_per_epoch - self.step_in_epoch, 0)
                for batch in self._agreed_batches(iter(itertools.islice(self._loader(), remaining))):
                    if self.step_in_epoch >= self.steps_per_epoch:
                        break
                    if timed:
                        self.apply_time_milestones(elapsed)
                    losses = self.train_step(batch)
                    self.step_in_epoch += 1
                    self.global_step += 1
                    n_steps += 1
                    images += batch["image"].shape[0] * self.dist.world_size
                    for k, v in losses.items():
                        sums[k] += v
                    self._log_csv("steps.csv", {"step": self.global_step, "epoch": self.epoch + 1,
                                                "loss": losses["loss"], "nfl": losses["nfl"], "aux": losses["aux"],
                                                "lr": self.optimizer.param_groups[1]["lr"],
                                                "elapsed_s": round(self.elapsed_s(), 3)})
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses['loss']:.4f}")
                    if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                        stop = True
                    if timed:
                        elapsed = self.synced_elapsed_s()
                        stop = stop or elapsed >= cfg.time_budget_s
                    if stop:
                        break
                bar.close()
                epoch_done = self.step_in_epoch >= self.steps_per_epoch
                row: dict[str, Any] = {
                    "epoch": self.epoch + 1, "step": self.global_step, "loss": "", "nfl": "", "aux": "",
                    "lr": self.optimizer.param_groups[1]["lr"], "images_per_s": "", "epoch_complete": int(epoch_done),
                }
                if n_steps:  # the same on every rank (they step together)
                    t = torch.tensor([sums["loss"], sums["nfl"], sums["aux"]]) / n_steps
                    t = all_reduce_mean(t, self.dist)
                    row.update(loss=float(t[0]), nfl=float(t[1]), aux=float(t[2]),
                               images_per_s=images / max(time.perf_counter() - t_epoch, 1e-9))
                elif self.step_in_epoch == 0 and self.epoch > 0:
                    # the final bookkeeping of a resumed run, at the end of the epoch it closed
                    row.update(epoch=self.epoch, epoch_complete=1)
                if epoch_done:
                    self.scheduler.step()
                    self.epoch += 1
                    self.step_in_epoch = 0
                final = self.epoch >= cfg.epochs or stop
                if self.val_set is not None and (final or (epoch_done and self.epoch % cfg.val_every == 0)):
                    if self.dist.is_main:
                        row.update(self.validate())
                    barrier(self.dist)
                row.setdefault("val_noc85", "")
                row.setdefault("val_noc90", "")
                row.setdefault("val_miou1", "")
                self.history.append(row)
                self._log_csv("metrics.csv", row)
                self._tensorboard(row, self.global_step)
                if row["val_noc90"] != "" and row["val_noc90"] < self.best_noc90:
                    # best.pt first, then last.pt with the same score (a resumed run compares
                    # with it); a crash or Ctrl-C while best.pt is written keeps the previous
                    # score, so the next validation writes best.pt again
                    previous, self.best_noc90 = self.best_noc90, row["val_noc90"]
                    try:
                        self.save(self.out / "best.pt")
                    except BaseException:
                        self.best_noc90 = previous
                        raise
                self.save(self.out / "last.pt")
                barrier(self.dist)
                last_row = row
                if stop:
                    break
        except KeyboardInterrupt:
            self.save(self.out / "last.pt")
            if self.dist.is_main:
                tqdm.write(f"interrupted: saved {self.out / 'last.pt'} (resume with --resume)")
            raise
        except DataError as err:  # between two steps, on every rank (_agreed_batches): the state is consistent
            self.save(self.out / "last.pt")
            barrier(self.dist)  # the other ranks wait for rank 0's checkpoint (torchrun ends them all at the first exit)
            raise DataError(f"{err}; saved {self.out / 'last.pt'} at step {self.global_step}: fix or remove the "
                            "item (or train with --skip-bad, which drops unreadable items and empty targets "
                            "up front) and continue with --resume") from err.__cause__
        finally:
            if self._tb:
                self._tb.close()
        return last_row
