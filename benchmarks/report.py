"""Collect the JSON of all benchmark runs into one markdown report (``docs/benchmarks.md``).

Looks under ``--runs`` (default ``runs/bench``) for the files the benchmark scripts write:

* ``**/gp_sampler.json``      -- ``benchmarks/gp_sampler.py`` (GP-layer timing)
* ``**/model_complexity.json`` -- ``benchmarks/model_complexity.py`` (Table S2)
* ``**/click_latency.json``   -- ``benchmarks/click_latency.py`` (Fig. S1)
* ``**/fused_sweep.json``     -- ``benchmarks/fused_sweep.py`` (GPU kernel launch configurations)
* ``**/ablations.json``       -- ``benchmarks/ablations.py``
* ``**/metrics.json``         -- ``gpcis evaluate`` runs (Table S1 layout)

and writes one section per benchmark (tables stating machine and date, the paper's
numbers beside ours where this project has them), copying each PNG next to the report.

Usage::

    python benchmarks/report.py [--runs runs/bench] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# Supplement Table S2 (ResNet50 pair, 384x384 input), as quoted in this project's issue.
PAPER_TABLE_S2 = {
    "ritm_resnet50": {"total": (98.87, 39.48), "backbone": (98.37, 39.43), "head": (0.50, 0.05)},
    "gpcis_resnet50": {"total": (99.81, 39.39), "backbone": (97.88, 39.37), "head": (1.93, 0.02)},
}


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read benchmark result {path}: {err}") from err


def _rows(data: Any) -> list[dict]:
    return data["rows"] if isinstance(data, dict) and "rows" in data else list(data)


def _meta(data: Any, path: Path) -> str:
    if isinstance(data, dict):
        bits = [f"{k}: {data[k]}" for k in ("machine", "device", "date") if k in data]
        if bits:
            return "; ".join(bits)
    mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).isoformat(timespec="seconds")
    # a bare list of rows (gp_sampler): the device.txt that benchmarks/gpu_checks.sh writes
    # beside its results names the machine
    for folder in (path.parent, path.parent.parent):
        device = folder / "device.txt"
        machine = device.read_text().strip() if device.is_file() else ""
        if machine:
            return f"machine: {machine}; file written {mtime}"
    return f"file {path.name}, written {mtime} (machine not recorded in the JSON)"


def _asset_name(path: Path, runs: Path, default: str) -> str:
    """PNG name in docs/benchmarks/: the result's folders below ``runs`` joined by '_' (so
    that the CPU and GPU runs of one script do not overwrite each other's picture)."""
    try:
        parts = path.relative_to(runs).parent.parts
    except ValueError:
        parts = ()
    return ("_".join(parts) or default) + ".png"


def _copy_png(src: Path, dest_dir: Path, name: str) -> str | None:
    if not src.exists():
        return None
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest_dir / name)
    return f"{dest_dir.name}/{name}"


def section_gp_sampler(path: Path, assets: Path, png_name: str = "gp_sampler.png") -> str:
    data = _load(path)
    rows = _rows(data)
    impls = sorted({r["impl"] for r in rows})
    lines = [f"## GP layer: pathwise sampler timing (`benchmarks/gp_sampler.py`)", "", _meta(data, path), ""]
    for m in sorted({r["m"] for r in rows}):
        ns = sorted({r["n"] for r in rows if r["m"] == m})
        lines.append(f"m = {m} test points; median ms")
        lines.append("")
        lines.append("| impl | " + " | ".join(f"n={n}" for n in ns) + " |")
        lines.append("|---|" + "---:|" * len(ns))
        for impl in impls:
            cells = []
            for n in ns:
                v = [r["ms"] for r in rows if r["m"] == m and r["n"] == n and r["impl"] == impl]
                cells.append(f"{v[0]:.1f}" if v else "")
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
        lines.append("")
    png = _copy_png(path.with_suffix(".png"), assets, png_name)
    if png:
        lines += [f"![GP sampler timing]({png})", ""]
    return "\n".join(lines)


def section_complexity(path: Path, assets: Path, png_name: str = "") -> str:
    data = _load(path)
    rows = _rows(data)
    size = data.get("size", 384) if isinstance(data, dict) else 384  # older files: the default 384
    lines = [f"## Model complexity at {size}x{size} (`benchmarks/model_complexity.py`; paper Table S2)", "",
             _meta(data, path), "", "| model | part | GFLOPs (ours) | M params (ours) | GFLOPs (paper) | M params (paper) |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        # the paper's numbers are at 384x384: beside ours only at that size
        paper = PAPER_TABLE_S2.get(r["model"], {}).get(r["part"]) if size == 384 else None
        pg, pp = (f"{paper[0]:.2f}", f"{paper[1]:.2f}") if paper else ("", "")
        lines.append(f"| {r['model']} | {r['part']} | {r['gflops']:.2f} | {r['mparams']:.2f} | {pg} | {pp} |")
    lines += ["", "Counting convention and every difference over 3% are explained in `docs/models.md`.", ""]
    png = _copy_png(path.with_suffix(".png"), assets, png_name or "model_complexity.png")
    if png:
        lines += [f"![model complexity]({png})", ""]
    return "\n".join(lines)


def section_click_latency(path: Path, assets: Path, png_name: str = "click_latency.png") -> str:
    data = _load(path)
    rows = _rows(data)
    clicks = sorted({r["click"] for r in rows})
    show = [c for c in clicks if c in (1, 5, 10, 20, 50, 100)] or clicks
    lines = ["## Per-click latency (`benchmarks/click_latency.py`; paper Fig. S1)", "",
             _meta(data, path) + f"; input {data.get('size', '?')}x{data.get('size', '?')}, image {data.get('image', '?')}"
             + ("; GP heads through CUDA graphs (`--cuda-graphs`; conv heads eager)" if data.get("cuda_graphs") else ""), "",
             "| model | " + " | ".join(f"click {c} (backbone + head ms)" for c in show) + " |",
             "|---|" + "---:|" * len(show)]
    for model in dict.fromkeys(r["model"] for r in rows):
        cells = []
        for c in show:
            r = next((r for r in rows if r["model"] == model and r["click"] == c), None)
            cells.append(f"{r['backbone_ms']:.1f} + {r['head_ms']:.1f}" if r else "")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines.append("")
    for s in data.get("summary", []):
        growth = s.get("gp_head_growth")
        ratio = s.get("gpcis_over_ritm")
        paired = ""
        if s.get("gp_head_growth_paired") is not None:
            q1, q3 = s["gp_head_growth_paired_iqr"]
            paired = (f", paired ({s['pairs']} pairs of calls back to back): {100 * s['gp_head_growth_paired']:+.1f}% "
                      f"(quartiles {100 * q1:+.1f} / {100 * q3:+.1f}%)")
        lines.append(
            f"- {s['backbone']}: GP-head time at the last click vs click 1: "
            f"{'n/a' if growth is None else f'{100 * growth:+.1f}%'} from the per-click medians{paired} "
            "(target within 10%); "
            f"GPCIS vs RITM mean total per click: {'n/a' if ratio is None else f'{100 * ratio:+.1f}%'} (target within 5%)"
        )
    lines.append("")
    lines.append("The paper's Fig. S1 is a plot; its values are not tabulated in this project, so no paper column is given.")
    png = _copy_png(path.with_suffix(".png"), assets, png_name)
    if png:
        lines += ["", f"![per-click latency]({png})"]
    lines.append("")
    return "\n".join(lines)


def section_fused_sweep(path: Path, assets: Path, png_name: str = "fused_sweep.png") -> str:
    data = _load(path)
    timing = "kernel device time (torch.profiler)" if data.get("device", "cpu") != "cpu" else \
        "Triton's interpreter on the CPU: a smoke run, not a timing"
    lines = ["## Fused GP kernels: launch configurations (`benchmarks/fused_sweep.py`)", "",
             _meta(data, path) + f"; {data.get('size', '?')}² test points, {timing}", "",
             "| D | l | rows / features / warps / stages | rows split once | µs per call | rel. diff to the first |",
             "|---:|---:|---|---|---:|---:|"]
    finite = lambda r: r["us"] if isinstance(r["us"], (int, float)) and r["us"] == r["us"] else float("inf")  # noqa: E731
    for r in sorted(data.get("mean", []), key=lambda r: (r["dim"], finite(r))):
        us = "failed" if r.get("error") else f"{r['us']:.1f}"
        lines.append(f"| {r['dim']} | {r['features']} | {r['rows']} / {r['block_features']} / {r['warps']} / "
                     f"{r['stages']} | {'yes' if r.get('split') else 'no'} | {us} | {r['rel_diff']:.1e} |")
    lines += ["", "| clicks | warps | forward substitution | µs per call | rel. diff to the first |",
              "|---:|---:|---|---:|---:|"]
    for r in sorted(data.get("solve", []), key=lambda r: (r["clicks"], r["us"])):
        lines.append(f"| {r['clicks']} | {r['warps']} | {'inside the factorisation' if r['fused_forward'] else 'after'} | "
                     f"{r['us']:.1f} | {r['rel_diff']:.1e} |")
    png = _copy_png(path.with_suffix(".png"), assets, png_name)
    if png:
        lines += ["", f"![fused kernel sweep]({png})"]
    lines.append("")
    return "\n".join(lines)


def section_ablations(path: Path, assets: Path, png_name: str = "ablations.png") -> str:
    data = _load(path)
    summary = data.get("summary", [])
    lines = ["## Ablations (`benchmarks/ablations.py`)", "",
             _meta(data, path) + f"; base {data.get('base')} (pretrained: {data.get('pretrained')}), {data.get('steps')} steps"
             + (f" of batch {data.get('batch_size')} at {data['crop']}x{data['crop']}" if data.get("crop") else "")
             + (f", lr {data['lr']:g}" if data.get("lr") else "")
             + (f", GP test-grid stride {data['gp_stride']}" if data.get("gp_stride") else "")
             + f", trained on {Path(str(data.get('train_data'))).name}, evaluated on {Path(str(data.get('eval_data'))).name}"
             + (f" ({data['eval_images']} images, {data.get('max_clicks')} clicks)" if data.get("eval_images") else ""),
             "",
             "| configuration | seeds | NoC@85 | NoC@90 | mIoU@1 | mIoU@5 | NoIC | train img/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(
            f"| {s['config']} | {s['seeds']} | {s['noc85']:.2f} ± {s['noc85_std']:.2f} | {s['noc90']:.2f} ± {s['noc90_std']:.2f} "
            f"| {s['miou1']:.3f} | {s['miou5']:.3f} | {s['noic']:.1f} | {s['images_per_s']:.2f} |"
        )
    png = _copy_png(path.with_suffix(".png"), assets, png_name)
    if png:
        lines += ["", f"![ablations]({png})"]
    lines.append("")
    return "\n".join(lines)


def section_evaluations(paths: list[Path]) -> str:
    lines = ["## Evaluations (`gpcis evaluate`; layout of the paper's Table S1)", "",
             "The paper's Table S1 rows are models trained on SBD (or COCO+LVIS) for hundreds of GPU "
             "epochs; nothing here is trained that way and this project holds no verified copy of "
             "those numbers, so no paper column is given: the rows compare methods run on this "
             "machine with the same protocol.", "",
             "| run | data set | NoC@85 | NoC@90 | NoF@90 | mIoU@1 | mIoU@5 | NoIC | s/click | images |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for path in paths:
        data = _load(path)
        for ds, m in data.items():
            if not isinstance(m, dict) or "noc90" not in m:
                continue
            miou = m.get("miou_at", [])
            lines.append(
                f"| {path.parent.name} | {ds} | {m['noc85']:.2f} | {m['noc90']:.2f} | {m.get('nof90', '')} "
                f"| {miou[0] if miou else float('nan'):.3f} | {miou[4] if len(miou) > 4 else float('nan'):.3f} "
                f"| {m.get('noic', '')} | {m.get('sec_per_click', float('nan')):.3f} | {m.get('num_images', '')} |"
            )
    lines.append("")
    return "\n".join(lines)


def build_report(runs: Path, out: Path) -> str:
    """Markdown for every benchmark result found under ``runs``; written to ``out``."""
    if not runs.is_dir():
        raise ValueError(f"no benchmark results folder: {runs} (run the scripts in benchmarks/ first)")
    assets = out.parent / "benchmarks"
    parts = ["# Benchmarks", "",
             f"Collected by `python benchmarks/report.py` from `{runs}` on "
             f"{datetime.now(timezone.utc).date().isoformat()}. Each table names the machine it ran on.", ""]
    makers = [
        ("gp_sampler.json", section_gp_sampler),
        ("model_complexity.json", section_complexity),
        ("click_latency.json", section_click_latency),
        ("fused_sweep.json", section_fused_sweep),
        ("ablations.json", section_ablations),
    ]
    found = 0
    for name, make in makers:
        for path in sorted(runs.rglob(name)):
            parts.append(make(path, assets, _asset_name(path, runs, Path(name).stem)))
            found += 1
    evals = sorted(runs.rglob("metrics.json"))
    if evals:
        parts.append(section_evaluations(evals))
        found += len(evals)
    if not found:
        raise ValueError(f"no benchmark JSON found under {runs}")
    text = "\n".join(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--out", default="docs/benchmarks.md")
    args = p.parse_args(argv)
    try:
        build_report(Path(args.runs), Path(args.out))
    except ValueError as err:
        p.error(str(err))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
