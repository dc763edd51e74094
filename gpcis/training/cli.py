"""``gpcis train`` and the argument parser shared with ``examples/train_*.py``.

Examples::

    gpcis train                                   # gpcis_tiny on synthetic data, CPU
    gpcis train --model ritm_tiny --data ../shared/datasets/COCO_MVal --dataset-type COCO_MVal \\
        --crop-size 256 256 --time-budget 1200 --out runs/ritm_tiny_coco
    torchrun --nproc_per_node=4 -m gpcis train --model gpcis_resnet50 --data SBD/dataset \\
        --dataset-type SBD --device cuda --pretrained
    gpcis train ... --out runs/x --resume         # the run's own command plus --resume: continue
                                                  # where runs/x stopped (other settings: a warning)
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # imported lazily at run time (torch)
    from gpcis.training.trainer import TrainConfig

__all__ = ["add_parser", "add_arguments", "config_from_args", "run", "main"]


def _pretrained(value: str) -> bool | str:
    low = value.lower()
    if low in ("true", "1", "yes", "imagenet"):
        return True
    if low in ("false", "0", "no", "none"):
        return False
    return value


def add_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """Add the training options to ``parser`` (``defaults`` overrides ``TrainConfig``'s)."""
    from gpcis.training.trainer import TrainConfig

    d = {f: getattr(TrainConfig, f, None) for f in TrainConfig.__dataclass_fields__}
    d.update({"model": "gpcis_tiny"})
    d.update(defaults or {})
    g = parser.add_argument_group("what to train")
    g.add_argument("--model", default=d["model"], help="registered model name (default: %(default)s)")
    g.add_argument("--data", default=d["data"], help="'synthetic' or a data-set folder (default: %(default)s)")
    g.add_argument("--dataset-type", default=d["dataset_type"],
                   help="reader: GrabCut, Berkeley, DAVIS, SBD, COCO_MVal, PascalVOC, ImageFolder "
                        "(default: guessed from the folder)")
    g.add_argument("--split", default=d["split"], help="split for SBD / PascalVOC (default: %(default)s)")
    g.add_argument("--pretrained", type=_pretrained, default=d["pretrained"], nargs="?", const=True,
                   help="ImageNet backbone weights (flag) or a local backbone weight file")
    g.add_argument("--skip-bad", action="store_true", default=d["skip_bad"],
                   help="skip and report unreadable samples instead of failing")
    g.add_argument("--synthetic-samples", type=int, default=d["synthetic_samples"],
                   help="synthetic training-set length (default: %(default)s)")
    g.add_argument("--synthetic-size", type=int, default=d["synthetic_size"],
                   help="synthetic image side in pixels (default: %(default)s)")
    g.add_argument("--gp-stride", type=int, default=d["gp_stride"], metavar="N",
                   help="GP head test grid N times coarser than the crop (gpcis_* only; default: 1, the paper)")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d["epochs"], help="(default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help="per process (default: %(default)s)")
    g.add_argument("--lr", type=float, default=d["lr"],
                   help="head learning rate (default: 5e-3 ResNet50/SegFormer, 5e-4 HRNet18s and others)")
    g.add_argument("--backbone-lr-mult", type=float, default=d["backbone_lr_mult"], help="(default: %(default)s)")
    g.add_argument("--milestones", type=int, nargs="*", default=list(d["milestones"] or ()),
                   help="epochs at which the lr drops by --lr-gamma")
    g.add_argument("--lr-gamma", type=float, default=d["lr_gamma"], help="(default: %(default)s)")
    g.add_argument("--max-num-next-clicks", type=int, default=d["max_num_next_clicks"],
                   help="iterative no-grad passes per step, 0..N (default: %(default)s)")
    g.add_argument("--max-num-points", type=int, default=d["max_num_points"],
                   help="click sampler: at most this many positive (and negative) clicks (default: %(default)s)")
    g.add_argument("--click-prob-gamma", type=float, default=d["click_prob_gamma"],
                   help="click sampler: P(n clicks) decays by this per click (RITM 0.8, the GPCIS code 0.7; "
                   "default: %(default)s)")
    g.add_argument("--first-click-inner-prob", type=float, default=d["first_click_inner_prob"],
                   help="click sampler: probability of an interior first click (RITM 0.5, the GPCIS code 1.0; "
                   "default: %(default)s)")
    g.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"), default=d["crop_size"],
                   help="training crop (default: 320 480 for real data, the image size for synthetic)")
    g.add_argument("--scale-range", type=float, nargs=2, metavar=("LO", "HI"), default=list(d["scale_range"]),
                   help="random rescale range before cropping (default: %(default)s)")
    g.add_argument("--steps-per-epoch", type=int, default=d["steps_per_epoch"], help="cap on steps per epoch")
    g.add_argument("--max-steps", type=int, default=d["max_steps"], help="stop after this many steps")
    g.add_argument("--time-budget", type=float, default=d["time_budget_s"], dest="time_budget_s",
                   help="stop after this many seconds of training (validates and saves)")
    g.add_argument("--time-milestones", type=float, nargs="*", default=list(d["time_milestones"] or ()),
                   metavar="F", help="fractions of --time-budget at which the lr is multiplied by --lr-gamma")
    g = parser.add_argument_group("run")
    g.add_argument("--device", default=d["device"], help="cpu | cuda | cuda:N (default: %(default)s)")
    g.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    g.add_argument("--out", default=d["out"], help="output folder (default: %(default)s)")
    g.add_argument("--resume", nargs="?", const=True, default=False,
                   help="continue from OUT/last.pt, or from the given checkpoint")
    g.add_argument("--seed", type=int, default=d["seed"], help="(default: %(default)s)")
    g.add_argument("--num-workers", type=int, default=d["num_workers"], help="(default: %(default)s)")
    g.add_argument("--val-samples", type=int, default=d["val_samples"],
                   help="held-out validation samples, 0 = none (default: %(default)s)")
    g.add_argument("--val-split", choices=("image", "sample"), default=None,
                   help="hold out whole images with all their objects, or single samples (runs before "
                   "session 11) (default: image for a new run, the run's own split with --resume)")
    g.add_argument("--train-items", choices=("image", "sample"), default=None,
                   help="one training item per image (a random object of it the target each time, as RITM) "
                   "or per object (runs before session 13) (default: image for a new run, the run's own "
                   "with --resume)")
    g.add_argument("--merge-objects-prob", type=float, default=None,
                   help="probability that an image's target is two of its objects merged (RITM: 0.15) "
                   "(default: 0.15 for a new run, the run's own with --resume)")
    g.add_argument("--min-object-area", type=int, default=None,
                   help="a training crop should show at least this many target pixels (RITM's SBD configs: 80) "
                   "(default: 80 for a new run, the run's own with --resume)")
    g.add_argument("--val-every", type=int, default=d["val_every"], help="epochs (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`~gpcis.training.TrainConfig` of parsed arguments."""
    from gpcis.training.trainer import TrainConfig

    return TrainConfig(
        model=args.model, data=args.data, dataset_type=args.dataset_type, split=args.split,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, backbone_lr_mult=args.backbone_lr_mult,
        milestones=tuple(args.milestones), lr_gamma=args.lr_gamma, max_num_next_clicks=args.max_num_next_clicks,
        max_num_points=args.max_num_points, click_prob_gamma=args.click_prob_gamma,
        first_click_inner_prob=args.first_click_inner_prob,
        crop_size=tuple(args.crop_size) if args.crop_size else None, scale_range=tuple(args.scale_range), synthetic_samples=args.synthetic_samples,
        synthetic_size=args.synthetic_size, steps_per_epoch=args.steps_per_epoch, max_steps=args.max_steps,
        time_budget_s=args.time_budget_s, time_milestones=tuple(args.time_milestones), val_samples=args.val_samples, val_split=args.val_split, train_items=args.train_items, merge_objects_prob=args.merge_objects_prob, min_object_area=args.min_object_area, val_every=args.val_every,
        seed=args.seed, device=args.device, amp=not args.no_amp, out=args.out, num_workers=args.num_workers,
        pretrained=args.pretrained, gp_stride=args.gp_stride, resume=args.resume, skip_bad=args.skip_bad, progress=not args.no_progress,
    )


def run(args: argparse.Namespace) -> int:
    """Train from parsed arguments; prints the final validation NoC. Returns the exit code."""
    from gpcis.training.distributed import cleanup_distributed
    from gpcis.training.trainer import DataError, Trainer

    try:
        config = config_from_args(args)
        trainer = Trainer(config)
    except ValueError as err:
        print(f"gpcis train: error: {err}", file=sys.stderr)
        return 2
    try:
        row = trainer.train()
    except KeyboardInterrupt:
        return 130
    except DataError as err:
        print(f"gpcis train: error: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup_distributed()
    if trainer.dist.is_main:
        loss = row.get("loss", "")  # "" for a resumed run's final bookkeeping without a step
        msg = f"trained {config.model}: {trainer.global_step} steps"
        if loss != "":
            msg += f", last loss {loss:.4f}"
        if row.get("val_noc90", "") != "":
            msg += (f"; validation ({len(trainer.val_set)} samples) NoC@85 = {row['val_noc85']:.2f}, "
                    f"NoC@90 = {row['val_noc90']:.2f}")
        print(msg)
        print(f"checkpoints: {trainer.out / 'last.pt'}, {trainer.out / 'best.pt'}; logs: {trainer.out / 'metrics.csv'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``gpcis train`` on the main CLI's subparsers."""
    parser = subparsers.add_parser("train", help="train a model (iterative click training)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None, prog: str | None = None) -> int:
    """Stand-alone entry point (used by ``examples/train_gpcis.py`` / ``train_ritm.py``)."""
    parser = argparse.ArgumentParser(prog=prog, description="Train a gpcis model.")
    add_arguments(parser, defaults)
    return run(parser.parse_args(argv))
