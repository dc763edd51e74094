"""Evaluation outputs: metrics.json, per-image CSV, a markdown table, the mIoU-vs-clicks plot.

All files are written atomically (temporary file in the same folder, then ``os.replace``).

``metrics.json`` layout: ``{dataset name: {noc85, noc90, nof85, nof90, noc100_90,
nof100_90, miou_at: [...], noic, sec_per_click, num_images}}`` (see
:func:`gpcis.evaluation.metrics.aggregate`).

The markdown table follows the layout of the GPCIS supplement's Table S1: one row per
method, one column group per data set with NoC@85, NoC@90, NoF@90, NoC100@90,
NoF100@90, IoU&1, IoU&5 (mIoU after 1 and 5 clicks), NoIC and seconds per click.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from gpcis.atomic import atomic_write_bytes, atomic_write_text
from gpcis.evaluation.metrics import noc
from gpcis.evaluation.protocol import EVAL_PROTOCOL, ObjectRecord

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "write_metrics_json",
    "write_records_csv",
    "markdown_table",
    "plot_miou_curves",
]


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def write_metrics_json(path: str | os.PathLike[str], metrics: Mapping[str, dict]) -> Path:
    """Write ``{dataset: metrics}`` as JSON (non-finite numbers become ``null``)."""
    return atomic_write_text(path, json.dumps(_jsonable(dict(metrics)), indent=2) + "\n")


def write_records_csv(
    path: str | os.PathLike[str],
    records: Mapping[str, Sequence[ObjectRecord]],
    max_clicks: int = 20,
    long_max_clicks: int | None = 100,
) -> Path:
    """Per-object CSV: data set, name, NoC@85/90, NoC100@90, clicks made, IoU after 1/5/last
    click, NoIC, seconds, the IoU sequence and the clicks (``r:c:+`` / ``r:c:-``)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "name", "noc85", "noc90", "noc100_90", "num_clicks", "iou_1", "iou_5",
                "final_iou", "noic", "seconds", "ious", "clicks"])
    for ds, recs in records.items():
        for r in recs:
            ious = r.ious or [0.0]
            w.writerow([
                ds, r.name, noc(ious, 0.85, max_clicks), noc(ious, 0.90, max_clicks),
                noc(ious, 0.90, long_max_clicks) if long_max_clicks else "",
                len(r.ious), f"{ious[0]:.4f}", f"{ious[min(5, len(ious)) - 1]:.4f}", f"{ious[-1]:.4f}",
                r.noic, f"{r.seconds:.4f}",
                ";".join(f"{v:.4f}" for v in r.ious),
                ";".join(f"{c.row}:{c.col}:{'+' if c.positive else '-'}" for c in r.clicks),
            ])
    return atomic_write_text(path, buf.getvalue())


def _fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def markdown_table(results: Mapping[str, Mapping[str, dict]]) -> str:
    """Markdown table of ``{method: {dataset: metrics}}`` (Table S1 layout, one row per method).

    Columns per data set: NoC@85, NoC@90, NoF@90, NoC100@90, NoF100@90, IoU&1, IoU&5,
    NoIC, s/click.
    """
    datasets: list[str] = []
    for per_ds in results.values():
        for ds in per_ds:
            if ds not in datasets:
                datasets.append(ds)
    cols = ["NoC@85", "NoC@90", "NoF@90", "NoC100@90", "NoF100@90", "IoU&1", "IoU&5", "NoIC", "s/click"]
    lines = []
    for ds in datasets:
        counts = {method: m[ds].get("num_images", "?") for method, m in results.items() if ds in m}
        mixed = len(set(counts.values())) > 1
        if mixed:  # e.g. runs with different --limit: not comparable, each row says its count
            lines.append(f"**{ds}** (the methods were evaluated on different numbers of objects: not comparable)\n")
        else:
            lines.append(f"**{ds}** ({next(iter(counts.values()), '?')} objects)\n")
        lines.append("| Method | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for method, per_ds in results.items():
            m = per_ds.get(ds)
            if m is None:
                continue
            name = f"{method} ({counts[method]} objects)" if mixed else method
            miou = m.get("miou_at") or []
            vals = [
                _fmt(m.get("noc85")), _fmt(m.get("noc90")), _fmt(m.get("nof90")),
                _fmt(m.get("noc100_90")), _fmt(m.get("nof100_90")),
                _fmt(miou[0] if len(miou) > 0 else None, 3), _fmt(miou[4] if len(miou) > 4 else None, 3),
                _fmt(m.get("noic")), _fmt(m.get("sec_per_click"), 3),
            ]
            lines.append(f"| {name} | " + " | ".join(vals) + " |")
        carried = [method for method, per_ds in results.items()
                   if ds in per_ds and per_ds[ds].get("miou_exact") is not True]
        older = [method for method, per_ds in results.items()
                 if ds in per_ds and per_ds[ds].get("protocol") != EVAL_PROTOCOL]
        if carried:
            lines.append("")
            lines.append(f"IoU&1 / IoU&5 of {', '.join(carried)}: objects that reached the target IoU stopped there "
                         "and carry their last IoU forward; RITM's IoU analysis clicks on to the "
                         "budget: `--all-clicks`.")
        if older:
            lines.append("")
            lines.append(f"{', '.join(older)}: measured with an earlier evaluation loop (before session 13 it fed "
                         "the thresholded mask back, not the probabilities): not comparable with the other rows.")
        lines.append("")
    return "\n".join(lines)


_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _plot_matplotlib(path: Path, curves: Mapping[str, Sequence[float]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, ys) in enumerate(curves.items()):
        r, g, b = _COLORS[i % len(_COLORS)]
        ax.plot(range(1, len(ys) + 1), ys, marker="o", markersize=3, label=name, color=(r / 255, g / 255, b / 255))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of clicks")
    ax.set_ylabel("mIoU")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _plot_opencv(curves: Mapping[str, Sequence[float]], title: str) -> bytes:
    w, h, m = 720, 480, 60
    img = np.full((h, w, 3), 255, np.uint8)
    n = max((len(v) for v in curves.values()), default=1)
    lo = min([min(v) for v in curves.values() if len(v)] + [1.0])
    lo = max(0.0, math.floor(lo * 10) / 10)

    def xy(k: int, y: float) -> tuple[int, int]:
        x = m + (k - 1) / max(n - 1, 1) * (w - 2 * m)
        yy = h - m - (y - lo) / max(1.0 - lo, 1e-6) * (h - 2 * m)
        return int(round(x)), int(round(yy))

    cv2.rectangle(img, (m, m), (w - m, h - m), (0, 0, 0), 1)
    for t in np.linspace(lo, 1.0, 6):
        p = xy(1, t)
        cv2.putText(img, f"{t:.2f}", (5, p[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for k in range(1, n + 1, max(1, n // 10)):
        p = xy(k, lo)
        cv2.putText(img, str(k), (p[0] - 5, h - m + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(img, title + " (mIoU vs clicks)", (m, m - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    for i, (name, ys) in enumerate(curves.items()):
        color = _COLORS[i % len(_COLORS)][::-1]
        pts = np.array([xy(k + 1, y) for k, y in enumerate(ys)], np.int32)
        cv2.polylines(img, [pts], False, color, 2)
        cv2.putText(img, name, (w - m - 200, h - m - 15 - 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)
    ok, png = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover
        raise RuntimeError("cv2.imencode failed")
    return png.tobytes()


def plot_miou_curves(path: str | os.PathLike[str], curves: Mapping[str, Sequence[float]], title: str = "") -> Path:
    """PNG of mIoU against the number of clicks, one line per method.

    Uses matplotlib when installed, else OpenCV drawing.

    Args:
        path: output PNG.
        curves: ``{method: [mIoU after 1, 2, ... clicks]}``.
        title: plot title (e.g. the data set name).
    """
    path = Path(path)
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    try:
        data = _plot_matplotlib(path, curves, title)
    except ImportError:
        data = _plot_opencv(curves, title)
    return atomic_write_bytes(path, data)
