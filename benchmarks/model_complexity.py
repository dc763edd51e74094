"""Model complexity (supplement Table S2): GMACs and parameters per model part.

Usage::

    python benchmarks/model_complexity.py [--quick] [--size 384] [--models NAME,NAME]
        [--out runs/bench/model_complexity] [--json PATH]

Counts do not depend on the machine, so there is no ``--device``: they are taken on the
CPU's PyTorch path (on a GPU the GP head runs fused Triton kernels, which the FLOP counter
does not see). ``--quick``: the tiny twins at 64x64 (a CI smoke run). ``--out`` writes
``model_complexity.json`` and ``model_complexity.png`` (GMACs per part and model) there.

Counts, for one ``size x size`` image with one positive click, at inference (eval mode,
mean path, no std):

* **GFLOPs column = G multiply-adds (MACs)**, the paper's convention.
  ``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs = 2 x MACs for
  convolutions and matrix products; we divide by 2. Element-wise ops (activations,
  normalization, the cosine of the random features, interpolation) and small dense
  solvers (the N x N Cholesky of the click Gram matrix) are not counted, as in the usual
  MAC counters.
* parts: ``backbone`` = backbone + Conv1S click encoder (everything before the head),
  ``head`` = the segmentation head (GP inference or the 1x1 conv classifier),
  ``total`` = the whole forward pass.

JSON output: ``{benchmark, date, machine, size, rows}``, rows ``{"model", "part", "gflops", "mparams"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_meta import run_metadata  # noqa: E402
from gpcis.atomic import atomic_write_text  # noqa: E402
from gpcis.clicks import Click, ClickBatch  # noqa: E402
from gpcis.models import create_model  # noqa: E402
from gpcis.models.registry import FULL_SIZE_MODELS  # noqa: E402

# Supplement Table S2 (384 x 384): (GFLOPs total, backbone, head), (M params total, backbone, head).
PAPER_TABLE_S2 = {
    "ritm_resnet50": ((98.87, 98.37, 0.50), (39.48, 39.43, 0.05)),
    "gpcis_resnet50": ((99.81, 97.88, 1.93), (39.39, 39.37, 0.02)),
}
PARTS = ("total", "backbone", "head")


def measure(name: str, size: int = 384) -> list[dict[str, object]]:
    """GMACs and M parameters of one registered model, per part.

    Args:
        name: a registered model name.
        size: input side (square ``size x size`` image).

    Returns:
        Three rows ``{"model", "part", "gflops", "mparams"}`` (part = total, backbone, head);
        ``gflops`` holds G multiply-adds.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    model = create_model(name).eval()
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen)
    clicks = ClickBatch.from_lists([[Click(size // 2, size // 2, True)]])
    with torch.no_grad(), FlopCounterMode(display=False, depth=None) as counter:
        model(image, clicks)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    total = sum(counts.get("Global", {}).values())
    head = sum(counts.get(f"{root}.head", {}).values())
    macs = {"total": total / 2, "head": head / 2, "backbone": (total - head) / 2}
    head_params = sum(p.numel() for p in model.head.parameters())
    all_params = sum(p.numel() for p in model.parameters())
    params = {"total": all_params, "head": head_params, "backbone": all_params - head_params}
    return [
        {"model": name, "part": part, "gflops": macs[part] / 1e9, "mparams": params[part] / 1e6}
        for part in PARTS
    ]


def format_table(rows: list[dict[str, object]], size: int) -> str:
    """A plain-text table of ``rows`` with the paper's Table S2 beside the ResNet50 pair."""
    by_model: dict[str, dict[str, dict[str, object]]] = {}
    for row in rows:
        by_model.setdefault(str(row["model"]), {})[str(row["part"])] = row
    head = (
        f"{'model':<20} {'GMACs total':>12} {'backbone':>9} {'head':>7} | "
        f"{'M params':>9} {'backbone':>9} {'head':>7}"
    )
    lines = [f"input {size}x{size}, 1 click; GFLOPs counted as multiply-adds (MACs)", head, "-" * len(head)]
    for model, parts in by_model.items():
        g = [float(parts[p]["gflops"]) for p in PARTS]
        m = [float(parts[p]["mparams"]) for p in PARTS]
        lines.append(
            f"{model:<20} {g[0]:12.2f} {g[1]:9.2f} {g[2]:7.3f} | {m[0]:9.3f} {m[1]:9.3f} {m[2]:7.4f}"
        )
        if model in PAPER_TABLE_S2 and size == 384:
            pg, pm = PAPER_TABLE_S2[model]
            lines.append(
                f"{'  paper Table S2':<20} {pg[0]:12.2f} {pg[1]:9.2f} {pg[2]:7.3f} | "
                f"{pm[0]:9.3f} {pm[1]:9.3f} {pm[2]:7.4f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384, help="square input side (default 384)")
    parser.add_argument(
        "--models",
        default=",".join(FULL_SIZE_MODELS),
        help="comma-separated registered names (default: every full-size model)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for model_complexity.json and model_complexity.png")
    parser.add_argument("--quick", action="store_true", help="gpcis_tiny and ritm_tiny at 64x64 (CI smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.size = "gpcis_tiny,ritm_tiny", 64
    if args.out is not None and args.json is None:
        args.json = args.out / "model_complexity.json"
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        parser.error("--models is empty")
    rows: list[dict[str, object]] = []
    for name in tqdm(names, desc="models", file=sys.stderr):
        rows.extend(measure(name, args.size))
    print(format_table(rows, args.size))
    if args.json is not None:  # with the input size and the machine (the report reads both)
        data = {**run_metadata("model_complexity", torch.device("cpu")), "size": args.size, "rows": rows}
        atomic_write_text(args.json, json.dumps(data, indent=2) + "\n")
    if args.out is not None:
        plot(rows, args.size, args.out / "model_complexity.png")
    return 0


def plot(rows: list[dict[str, object]], size: int, path: Path) -> None:
    """GMACs of each model's backbone and head, stacked (log scale), with the paper's totals
    (Table S2) as markers where it has the model and the size is 384."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    get = {(r["model"], r["part"]): float(r["gflops"]) for r in rows}
    x = np.arange(len(models))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(models) + 2), 4))
    bb = [get.get((m, "backbone"), 0.0) for m in models]
    hd = [get.get((m, "head"), 0.0) for m in models]
    ax.bar(x, bb, label="backbone + Conv1S")
    ax.bar(x, hd, bottom=bb, label="head")
    if size == 384:
        paper = [(i, PAPER_TABLE_S2[m][0][0]) for i, m in enumerate(models) if m in PAPER_TABLE_S2]
        if paper:
            ax.scatter([i for i, _ in paper], [v for _, v in paper], color="k", marker="_", s=400, zorder=3,
                       label="paper total (Table S2)")
    ax.set_xticks(x, models, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("GMACs")
    ax.set_title(f"model complexity at {size}x{size}, one click", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
