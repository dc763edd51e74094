"""Model complexity (supplement Table S2): GMACs and parameters per model part.

Usage::

    python benchmarks/model_complexity.py [--size 384] [--models NAME,NAME] [--json PATH]

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

JSON output: a list of rows ``{"model", "part", "gflops", "mparams"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from gpcis.clicks import Click, ClickBatch
from gpcis.models import create_model
from gpcis.models.registry import FULL_SIZE_MODELS

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
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if not names:
        parser.error("--models is empty")
    rows: list[dict[str, object]] = []
    for name in tqdm(names, desc="models", file=sys.stderr):
        rows.extend(measure(name, args.size))
    print(format_table(rows, args.size))
    if args.json is not None:  # with the input size and the machine (the report reads both)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from click_latency import run_metadata

        from gpcis.atomic import atomic_write_text

        data = {**run_metadata("model_complexity", torch.device("cpu")), "size": args.size, "rows": rows}
        atomic_write_text(args.json, json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
