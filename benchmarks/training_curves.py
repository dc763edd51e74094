"""Plot training curves of one or more `gpcis train` runs side by side.

Reads ``RUN/steps.csv`` (per step: loss, nfl, aux, elapsed_s) and ``RUN/metrics.csv``
(per epoch: images/s and validation NoC) of each run folder and writes one PNG with
the normalized focal loss against wall-clock time (moving average) and the validation
NoC@90 against wall-clock time, plus a JSON summary (steps, images/s, best validation NoC).

Usage::

    python benchmarks/training_curves.py RUN [RUN ...] [--labels a,b] [--out curves.png]

It reads logs only (no model runs), so it has no ``--device`` and no ``--quick``: it is as
fast as its input; the tests run it on the logs of a few-step training run.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ValueError(f"{path} not found: is {path.parent} a `gpcis train` output folder?")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def training_clock(steps: list[dict[str, str]]) -> np.ndarray:
    """Seconds of training at each step, summed over resumed runs.

    ``elapsed_s`` restarts at 0 in each process of a resumed run (files written before the
    trainer logged its cumulative clock); where it falls, the previous segment's last value
    is carried as an offset, so the axis is the time-budget clock (the gap between a stop
    and its resume is not training time and is not counted).
    """
    raw = np.array([float(r["elapsed_s"]) for r in steps], dtype=float)
    out = raw.copy()
    offset = 0.0
    for i in range(1, len(raw)):
        if raw[i] < raw[i - 1]:
            offset += raw[i - 1]
        out[i] = raw[i] + offset
    return out


def summarize_run(run: Path) -> dict:
    """Steps, training seconds, mean images/s and the validation NoC of the best epoch
    (lowest NoC@90, the one ``best.pt`` holds; its NoC@85 beside it)."""
    steps = read_csv(run / "steps.csv")
    epochs = read_csv(run / "metrics.csv")
    val = [(float(r["val_noc85"]), float(r["val_noc90"])) for r in epochs if r.get("val_noc90")]
    ips = [float(r["images_per_s"]) for r in epochs if r.get("images_per_s")]
    best = min(val, key=lambda v: v[1]) if val else None  # the first epoch reaching the lowest NoC@90
    return {
        "run": str(run),
        "steps": int(steps[-1]["step"]) if steps else 0,
        "seconds": float(training_clock(steps)[-1]) if steps else 0.0,
        "images_per_s": float(np.mean(ips)) if ips else float("nan"),
        "best_val_noc85": best[0] if best else None,
        "best_val_noc90": best[1] if best else None,
    }


def plot(runs: list[Path], labels: list[str], out: Path, window: int = 25) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for run, label in zip(runs, labels):
        steps = read_csv(run / "steps.csv")
        t = training_clock(steps) / 60
        nfl = np.array([float(r["nfl"]) for r in steps])
        k = min(window, len(nfl))
        smooth = np.convolve(nfl, np.ones(k) / k, mode="valid")
        ax1.plot(t[k - 1 :], smooth, label=f"{label} ({len(steps)} steps)")
        # validation points: an epoch's row is written after its last step
        by_step = {int(r["step"]): float(v) for r, v in zip(steps, t)}
        val = [(by_step.get(int(r["step"]), np.nan), float(r["val_noc90"])) for r in read_csv(run / "metrics.csv") if r.get("val_noc90")]
        if val:
            ax2.plot(*zip(*val), marker="o", label=label)
    ax1.set_xlabel("training wall clock [min]")
    ax1.set_ylabel(f"normalized focal loss (moving average, {window} steps)")
    ax2.set_xlabel("training wall clock [min]")
    ax2.set_ylabel("validation NoC@90 (held-out images)")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--labels", default="")
    p.add_argument("--out", type=Path, default=Path("training_curves.png"))
    args = p.parse_args(argv)
    labels = [s for s in args.labels.split(",") if s] or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"--labels has {len(labels)} names for {len(args.runs)} runs")
    try:
        summary = [summarize_run(r) for r in args.runs]
        plot(args.runs, labels, args.out)
    except ValueError as err:
        p.error(str(err))
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    for s, label in zip(summary, labels):
        print(f"{label:20s} steps {s['steps']:5d}  {s['seconds'] / 60:6.1f} min  {s['images_per_s']:6.2f} img/s  "
              f"best val NoC@85/90 {s['best_val_noc85']} / {s['best_val_noc90']}")
    print(f"wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
