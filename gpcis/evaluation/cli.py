"""``gpcis evaluate``: the NoC protocol on standard data sets, for a model or a baseline.

Writes, under ``--out``: ``metrics.json`` (keyed by data set), ``per_image.csv``,
``table.md`` (Table S1 layout), ``miou_<dataset>.png`` (mIoU against clicks, one line per
method: this run plus any ``--compare`` runs) and ``run.json`` (the settings and label).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from gpcis.argtypes import non_negative_int, positive_int
from gpcis.evaluation.protocol import EvalConfig, evaluate_dataset, summarize
from gpcis.evaluation.report import (
    atomic_write_text,
    markdown_table,
    plot_miou_curves,
    write_metrics_json,
    write_records_csv,
)

__all__ = ["add_parser", "run", "default_data_root", "resolve_datasets"]


def default_data_root() -> Optional[Path]:
    """``../shared/datasets`` beside the repository checkout, if that folder exists."""
    repo = Path(__file__).resolve().parents[2]
    cand = repo.parent / "shared" / "datasets"
    return cand if cand.is_dir() else None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``gpcis evaluate`` on an ``argparse`` subparsers object and set ``func``."""
    from gpcis.baselines import list_methods

    root = default_data_root()
    p = subparsers.add_parser(
        "evaluate",
        help="NoC evaluation of a model or a baseline on standard data sets",
        description="Run the NoC protocol (RITM's simulated user) and write metrics.json, "
        "per_image.csv, table.md and an mIoU-vs-clicks PNG per data set.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--method", choices=list_methods(), help="a training-free method")
    who.add_argument("--checkpoint", type=Path, metavar="PATH", help="a trained gpcis checkpoint")
    p.add_argument("--model", metavar="NAME", default=None,
                   help="registry name of the model (checked against the checkpoint; optional)")
    p.add_argument("--gp-stride", type=positive_int, default=None, metavar="N",
                   help="evaluate a GP-head checkpoint with this test-grid stride (default: the checkpoint's)")
    p.add_argument("--datasets", default="GrabCut",
                   help="comma-separated data set names (GrabCut, Berkeley, DAVIS, SBD, COCO_MVal, ...); "
                   "each is read from DATA_ROOT/NAME")
    p.add_argument("--data-root", type=Path, default=root, required=root is None, metavar="DIR",
                   help="folder holding one sub-folder per data set")
    p.add_argument("--max-clicks", type=positive_int, default=20, help="click budget of NoC / mIoU")
    p.add_argument("--noc100-clicks", type=non_negative_int, default=100,
                   help="click budget of NoC100@90 / NoF100@90 (objects below the target after "
                   "--max-clicks continue up to this); 0 disables")
    p.add_argument("--target-iou", type=float, default=0.9, help="stop an object once this IoU is reached (>= 0.9, the highest threshold reported)")
    p.add_argument("--thresh", type=float, default=0.5, help="foreground iff probability > thresh (RITM: 0.49)")
    p.add_argument("--zoom-in", action=argparse.BooleanOptionalAction, default=True,
                   help="target crop around the object from the second click on (models only)")
    p.add_argument("--zoom-size", type=positive_int, default=None, metavar="PX",
                   help="longer side of the zoom-in crop fed to the model (default: 400, RITM's)")
    p.add_argument("--whole-image-size", type=positive_int, default=None, metavar="PX",
                   help="downscale the whole image to this longer side for the predictions that are "
                   "not zoomed (the first click; with --no-zoom-in every click; default: the image's "
                   "own size, RITM's)")
    p.add_argument("--refine", action="store_true",
                   help="post-process a model's decision with GrabCut seeded from it (gp-pixel's "
                   "refinement, gpcis.baselines.refine; models only)")
    p.add_argument("--flip", action="store_true",
                   help="test-time horizontal flip, averaged (RITM's with_flip; twice the work; models only)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="run the model's head through CUDA graphs (gpcis.models.cuda_graph; CUDA devices only)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="first N images of each data set")
    p.add_argument("--out", type=Path, default=Path("eval_out"), metavar="DIR", help="output folder")
    p.add_argument("--device", default=None, help="torch device for models (default: cuda if available, else cpu)")
    p.add_argument("--all-clicks", action="store_true",
                   help="run all --max-clicks clicks on every object (full mIoU curve) instead of stopping at the target")
    p.add_argument("--compare", type=Path, nargs="*", default=[], metavar="DIR",
                   help="other `gpcis evaluate` output folders to include in table.md and the plots")
    p.add_argument("--label", default=None, help="method name in the table and plot (default: method / checkpoint stem)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def resolve_datasets(names: str, data_root: Optional[Path]) -> list[tuple[str, Path]]:
    """Check data set names and folders before any work.

    Returns:
        ``[(canonical name, folder)]``.

    Raises:
        ValueError: no data root, an unknown name, or a missing folder.
    """
    from gpcis.data import DATASET_NAMES

    if data_root is None:
        raise ValueError("--data-root is required (../shared/datasets was not found)")
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise ValueError(f"--data-root {data_root} is not a folder")
    canon = {n.lower(): n for n in DATASET_NAMES}
    out = []
    for raw in [s.strip() for s in names.split(",") if s.strip()]:
        name = canon.get(raw.lower())
        if name is None:
            raise ValueError(f"unknown data set {raw!r}; known: {', '.join(DATASET_NAMES)}")
        folder = next((data_root / c for c in (raw, name) if (data_root / c).is_dir()), None)
        if folder is None:
            raise ValueError(f"data set folder {data_root / name} does not exist")
        out.append((name, folder))
    if not out:
        raise ValueError("--datasets is empty")
    return out


def _build_method(args: argparse.Namespace):
    if args.method is not None:
        if (args.gp_stride is not None or args.zoom_size is not None or args.whole_image_size is not None
                or args.refine or args.flip or args.cuda_graphs):
            raise ValueError("--gp-stride, --zoom-size, --whole-image-size, --refine, --flip and --cuda-graphs "
                             "apply to a --checkpoint, not to --method")
        from gpcis.baselines import create_method

        return create_method(args.method), args.label or args.method
    from gpcis.devices import resolve_device
    from gpcis.inference.predictor import Predictor
    from gpcis.models import create_model

    device = resolve_device(args.device)  # before the model is loaded: a clear error, not a traceback
    model = create_model(args.model, checkpoint=args.checkpoint)
    if args.gp_stride is not None:
        model.set_gp_stride(args.gp_stride)
    from gpcis.inference.zoom import ZoomConfig

    sizes = {"target_size": args.zoom_size} if args.zoom_size is not None else {}
    zoom = ZoomConfig(whole_image_size=args.whole_image_size, **sizes)
    from gpcis.baselines.refine import GrabCutRefineConfig

    refine = GrabCutRefineConfig() if args.refine else None
    pred = Predictor(model, device=device, zoom_in=args.zoom_in, thresh=args.thresh, zoom=zoom, with_std=False,
                     refine=refine, flip=args.flip, cuda_graphs=args.cuda_graphs)
    return pred, args.label or (args.model or Path(args.checkpoint).stem)


def _load_compare(folder: Path) -> tuple[str, dict]:
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise ValueError(f"--compare {folder}: no metrics.json there")
    label = folder.name
    run_path = folder / "run.json"
    if run_path.is_file():
        label = json.loads(run_path.read_text()).get("label", label)
    return label, json.loads(metrics_path.read_text())


def run(args: argparse.Namespace) -> int:
    """Execute ``gpcis evaluate`` (returns the exit status; errors go to stderr with status 2)."""
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"gpcis evaluate: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from gpcis.data import get_dataset

    long = args.noc100_clicks if args.noc100_clicks and args.noc100_clicks > args.max_clicks else None
    config = EvalConfig(
        max_clicks=args.max_clicks, long_max_clicks=long, target_iou=args.target_iou,
        thresh=args.thresh, all_clicks=args.all_clicks, limit=args.limit, progress=not args.quiet,
    )
    datasets = resolve_datasets(args.datasets, args.data_root)
    compare = [_load_compare(Path(d)) for d in args.compare]
    readers = []
    for name, folder in datasets:
        # the instance sets are evaluated on their validation split, as RITM's (SBD's reader
        # defaults to its training split, the one the paper's recipe trains on)
        kwargs = {"split": "val"} if name.lower() in ("sbd", "pascalvoc") else {}
        ds = get_dataset(name, folder, **kwargs)
        if len(ds) == 0:
            raise ValueError(f"data set {name} at {folder} is empty")
        readers.append((name, ds))
    method, label = _build_method(args)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, dict] = {}
    records = {}
    for name, ds in readers:
        recs = evaluate_dataset(method, ds, config, desc=f"{label} {name}")
        records[name] = recs
        metrics[name] = summarize(recs, config)
        m = metrics[name]
        print(f"{label} {name}: NoC@85 {m['noc85']:.2f}  NoC@90 {m['noc90']:.2f}  NoF@90 {m['nof90']}  "
              f"NoIC {m['noic']}  {m['sec_per_click']:.3f} s/click  ({m['num_images']} objects)")
        # write after every data set, so a long run leaves usable results behind
        write_metrics_json(out / "metrics.json", metrics)
        write_records_csv(out / "per_image.csv", records, config.max_clicks, long)

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    settings["compare"] = [str(c) for c in args.compare]
    atomic_write_text(out / "run.json", json.dumps({"label": label, "settings": settings}, indent=2) + "\n")
    table = {label: metrics}
    for folder, (other_label, other) in zip(args.compare, compare):
        shown, k = other_label, 1
        while shown in table:  # e.g. two runs' best.pt: both labelled "best" by default
            k += 1
            where = Path(folder).resolve().name  # "." has no name of its own
            shown = f"{other_label} ({where})" if k == 2 else f"{other_label} ({where} #{k})"
        if shown != other_label:
            print(f"note: --compare {folder}: label {other_label!r} is taken, shown as {shown!r}", file=sys.stderr)
        table[shown] = other
    atomic_write_text(out / "table.md", markdown_table(table))
    for name in metrics:
        curves = {lab: per_ds[name]["miou_at"] for lab, per_ds in table.items() if name in per_ds}
        plot_miou_curves(out / f"miou_{name}.png", curves, title=name)
    print(f"wrote {out / 'metrics.json'}, per_image.csv, table.md, miou_*.png")
    return 0
