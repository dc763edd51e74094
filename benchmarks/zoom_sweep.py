"""Choose the evaluation zoom-in crop size on a run's held-out validation split (not the test set).

The RITM protocol feeds the model, from the second click on, a crop around the object
resized so its longer side is ``target_size`` (400 px in RITM). A model trained on small
crops (the CPU recipes: 128-160 px crops of images scaled 0.4-0.8x) may see objects at
another scale there. This script evaluates checkpoints with several target sizes on the
**validation split of their own training run** (the ``val_samples`` images the trainer held
out, at full resolution, standard protocol: 20 clicks, NoC@85/90), so the size used on
GrabCut is chosen without looking at GrabCut.

Usage::

    python benchmarks/zoom_sweep.py --checkpoints runs/a/best.pt runs/b/best.pt \\
        [--sizes 160 240 320 400] [--whole-sizes 240 320] [--flip] [--no-zoom] [--limit N]
        [--out runs/bench/zoom_sweep] [--quick]

``--whole-sizes A B ...`` also tries downscaling the whole image for the predictions that
are not zoomed (the first click) to a longer side of at most A, B, ... px
(``ZoomConfig.whole_image_size``); ``--flip`` also evaluates every setting with the
test-time flip. Writes ``OUT/zoom_sweep.json`` (rows ``{"checkpoint", "model", "zoom",
"whole", "flip", "noc85", "noc90", "miou1", "sec_per_click"}`` and per checkpoint the
``best`` ``{"zoom", "whole", "flip"}`` by NoC@90, ties by NoC@85), ``OUT/zoom_sweep.png``
and prints a table. ``--quick``: a freshly initialised ``gpcis_tiny`` on 2 synthetic
images, 3 clicks (a smoke run for CI).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from ablations import evaluate  # noqa: E402
from bench_meta import run_metadata  # noqa: E402

from gpcis.inference import Predictor  # noqa: E402
from gpcis.inference.zoom import ZoomConfig  # noqa: E402
from gpcis.models import create_model, load_checkpoint  # noqa: E402
from gpcis.training import TrainConfig, build_datasets  # noqa: E402


def validation_split(checkpoint: Path) -> Any:
    """The held-out validation samples of the run that wrote ``checkpoint`` (full resolution)."""
    extra = load_checkpoint(checkpoint).get("extra") or {}
    tc = extra.get("train_config")
    if not tc:
        raise ValueError(f"{checkpoint}: no training config inside (not written by the trainer)")
    tc = {"val_split": "sample", **tc}  # runs before val_split held out single samples
    cfg = TrainConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in tc.items()
                         if k in TrainConfig.__dataclass_fields__ and k != "resume"})
    _, val = build_datasets(cfg)
    if val is None:
        raise ValueError(f"{checkpoint}: its run held out no validation samples")
    return val


def sweep(model: torch.nn.Module, dataset: Any, sizes: list[Optional[int]], max_clicks: int,
          device: str, whole_sizes: Sequence[Optional[int]] = (None,),
          flips: Sequence[bool] = (False,)) -> list[dict[str, Any]]:
    """Evaluate one model at each zoom size (``None`` = no zoom-in), each size of the
    unzoomed whole-image view (``ZoomConfig.whole_image_size``; ``None`` = native size) and
    with / without the test-time flip (``Predictor(flip=...)``)."""
    rows = []
    for flip in flips:
        for size in sizes:
            for whole in (whole_sizes if size is not None else [None]):
                zoom = ZoomConfig(target_size=size, whole_image_size=whole) if size else None
                pred = Predictor(model, device=device, zoom_in=size is not None, zoom=zoom, with_std=False,
                                 flip=flip)
                m = evaluate(pred, dataset, max_clicks)
                rows.append({"zoom": size, "whole": whole, "flip": flip,
                             **{k: m[k] for k in ("noc85", "noc90", "miou1", "sec_per_click")}})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, whole, flip in dict.fromkeys((r["checkpoint"], r.get("whole"), r.get("flip")) for r in rows):
        rs = [r for r in rows if r["checkpoint"] == name and r.get("whole") == whole and r.get("flip") == flip
              and r["zoom"] is not None]
        label = name + ("" if whole is None else f", whole image <= {whole} px") + (", flip" if flip else "")
        ax.plot([r["zoom"] for r in rs], [r["noc90"] for r in rs], "o-", label=label)
    ax.set_xlabel("zoom-in crop size (px)")
    ax.set_ylabel("validation NoC@90")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", type=Path, nargs="*", default=[])
    p.add_argument("--sizes", type=int, nargs="+", default=[160, 240, 320, 400])
    p.add_argument("--no-zoom", action="store_true", help="also evaluate without zoom-in")
    p.add_argument("--whole-sizes", type=int, nargs="*", default=[],
                   help="also try resizing the unzoomed whole image to at most these sizes "
                        "(ZoomConfig.whole_image_size; the native size is always tried)")
    p.add_argument("--flip", action="store_true", help="also try the test-time flip (Predictor(flip=True))")
    p.add_argument("--max-clicks", type=int, default=20)
    p.add_argument("--limit", type=int, default=None, help="first N validation images")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("runs/bench/zoom_sweep"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if any(s < 8 for s in args.sizes + args.whole_sizes):
        p.error("--sizes and --whole-sizes must be >= 8")
    whole_sizes: list[Optional[int]] = [None] + list(args.whole_sizes)
    sizes: list[Optional[int]] = list(args.sizes) + ([None] if args.no_zoom else [])
    jobs: list[tuple[str, torch.nn.Module, Any]] = []
    if args.quick:
        from gpcis.data import SyntheticConfig, SyntheticDataset

        torch.manual_seed(0)
        data = SyntheticDataset(2, SyntheticConfig(height=48, width=48), seed=3)
        jobs.append(("gpcis_tiny (untrained)", create_model("gpcis_tiny").eval(), data))
        sizes, args.max_clicks, whole_sizes = [32, 64], 3, [None, 40]
    else:
        if not args.checkpoints:
            p.error("give --checkpoints (or --quick)")
        for ckpt in args.checkpoints:
            try:
                val = validation_split(ckpt)
                model = create_model(checkpoint=ckpt)
            except (ValueError, FileNotFoundError) as err:
                p.error(str(err))
            if args.limit:
                val = [val[i] for i in range(min(args.limit, len(val)))]
            jobs.append((str(ckpt), model, val))
    rows: list[dict] = []
    best: dict[str, Any] = {}
    print(f"{'checkpoint':45s} {'zoom':>5s} {'whole':>5s} {'flip':>5s} {'NoC@85':>7s} {'NoC@90':>7s} {'mIoU@1':>7s} {'s/click':>8s}")
    for name, model, data in jobs:
        these = [{"checkpoint": name, "model": model.config.name, **r}
                 for r in sweep(model, data, sizes, args.max_clicks, args.device, whole_sizes,
                                (False, True) if args.flip else (False,))]
        for r in these:
            print(f"{name[-45:]:45s} {str(r['zoom']):>5s} {str(r['whole']):>5s} {str(r['flip']):>5s} {r['noc85']:7.2f} {r['noc90']:7.2f} "
                  f"{r['miou1']:7.3f} {r['sec_per_click']:8.3f}")
        top = min(these, key=lambda r: (r["noc90"], r["noc85"]))
        best[name] = {"zoom": top["zoom"], "whole": top["whole"], "flip": top["flip"]}
        rows += these
    args.out.mkdir(parents=True, exist_ok=True)
    result = {**run_metadata("zoom_sweep", torch.device(args.device)), "rows": rows, "best": best,
              "num_images": {n: len(d) for n, _, d in jobs}}
    (args.out / "zoom_sweep.json").write_text(json.dumps(result, indent=1))
    plot(rows, args.out / "zoom_sweep.png")
    print("best zoom size per checkpoint (by validation NoC@90):", best)
    return result


if __name__ == "__main__":
    main()
