"""Per-click latency of GPCIS vs RITM, split into backbone and head (supplement Fig. S1).

For each model pair (``gpcis_<backbone>`` vs ``ritm_<backbone>``) a simulated session on
one real image (GrabCut's first image when ``../shared/datasets`` exists, else
scikit-image's astronaut with a thresholded mask) runs clicks 1..K at a fixed input size
and records each click's inputs; then every click of both models is timed ``--repeats``
times in rounds of seeded random order after a warm-up, and the median is kept. Time is
split into *backbone* (click maps + Conv1S + backbone) and *head* (GP head or 1x1 conv
head, mean path, as at evaluation). On CUDA, CUDA events with synchronisation are used;
``--cuda-graphs`` runs the GP heads through CUDA graphs (:mod:`gpcis.models.cuda_graph`),
each click's graph captured during the warm-up; RITM's conv head stays eager, its fastest
form (a 1x1 convolution and an upsampling: on an H200 0.1 ms eagerly, 0.2 ms as a graph
replay with its input copies).

Usage::

    python benchmarks/click_latency.py [--quick] [--device cpu|cuda] [--size 384]
        [--clicks 20] [--repeats 3] [--backbones resnet50,hrnet18s,segformer_b0,efflite0]
        [--pairs 15] [--cuda-graphs] [--out runs/bench/click_latency]

The GP head's growth over the clicks is given twice: from the per-click medians, and from
``--pairs`` pairs of head calls at the first and the last click timed back to back
(:func:`paired_head_ratios`; a machine's speed drifts cancel in each pair's ratio).

Writes ``OUT/click_latency.json`` (rows ``{"model", "backbone", "click", "backbone_ms",
"head_ms", "total_ms"}``, ``paired_head_ratios`` per GP model, and a ``summary``) and
``OUT/click_latency.png`` (log-scale time axis like Fig. S1), and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_meta import run_metadata  # noqa: E402
from gpcis.atomic import atomic_write_text  # noqa: E402
from gpcis.clicks import Click, ClickBatch  # noqa: E402
from gpcis.evaluation.clicker import next_click  # noqa: E402
from gpcis.models import create_model  # noqa: E402
from gpcis.models.heads import GPSegHead, normalize_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


@dataclass
class ClickTiming:
    model: str
    backbone: str
    click: int
    backbone_ms: float
    head_ms: float

    @property
    def total_ms(self) -> float:
        return self.backbone_ms + self.head_ms


def load_image(size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A real image and its object mask, resized to ``size x size``."""
    grabcut = SHARED / "GrabCut"
    if grabcut.is_dir():
        from gpcis.data import get_dataset

        sample = get_dataset("GrabCut", grabcut)[0]
        image, mask, name = sample.image, sample.masks[0], f"GrabCut/{sample.name}"
    else:
        from skimage import data

        image = data.astronaut()
        mask = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) > 120
        name = "skimage/astronaut"
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return image, mask, name


def _timer(device: torch.device) -> Callable[[Callable[[], object]], tuple[object, float]]:
    """``timed(fn) -> (result, milliseconds)``, synchronised on CUDA."""
    if device.type == "cuda":

        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize(device)
            return out, start.elapsed_time(end)

        return timed

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return out, (time.perf_counter() - t) * 1000.0

    return timed


@dataclass
class _Session:
    """A model and the recorded inputs of each click of its simulated session."""

    name: str
    model: torch.nn.Module
    steps: list[tuple[ClickBatch, torch.Tensor]]  # (clicks so far, previous mask) per click


@torch.no_grad()
def record_session(name: str, image: torch.Tensor, gt: np.ndarray, num_clicks: int,
                   device: torch.device) -> _Session:
    """Run clicks 1..num_clicks once (RITM's simulated user, previous mask = the last
    prediction) and keep each click's inputs, so the timing can replay them in any order."""
    model = create_model(name).to(device).eval()
    size = tuple(image.shape[-2:])
    pred = np.zeros_like(gt)
    prev = torch.zeros(1, 1, *size, device=device)
    clicks: list[Click] = []
    steps = []
    for _ in range(num_clicks):
        clicks.append(next_click(gt, pred, None, clicks))
        batch = ClickBatch.from_lists([list(clicks)], device=device)
        steps.append((batch, prev))
        maps = model.encode_clicks(batch, prev, size)
        feats = model.backbone(normalize_image(image), model.click_encoder(maps))
        prev = torch.sigmoid(model.head(feats, image, batch, num_samples=0, return_std=False).logits)
        pred = (prev[0, 0] > 0.5).cpu().numpy()
    return _Session(name, model, steps)


@torch.no_grad()
def time_sessions(
    names: Sequence[str],
    image: np.ndarray,
    gt: np.ndarray,
    num_clicks: int,
    repeats: int,
    device: torch.device,
    warmup: int = 1,
    profile_to: dict[str, Path] | None = None,
    cuda_graphs: bool = False,
    pairs: int = 0,
) -> tuple[list[ClickTiming], dict[str, list[float]]]:
    """Median backbone / head time of clicks 1..num_clicks of each model's session, and
    the GP heads' paired growth ratios.

    The sessions are recorded first (:func:`record_session`); then ``repeats`` rounds each
    time every click of every model once, in a new seeded random order per round, so a slow
    phase of a shared machine (host load on a GPU machine too) spreads over all clicks and
    both models of a pair instead of landing on one click of one model, and no drift within
    a round can be tied to the click number. (The backbone time of either model grows a
    little with the clicks, as it includes drawing the click maps, one disk per click.)

    Args:
        names: registry names, e.g. ``("ritm_resnet50", "gpcis_resnet50")``.
        warmup: untimed backbone + head calls of each model before timing (allocator,
            kernels, GPU clocks).
        profile_to: model name -> text file: the head at the last click is run once more
            under ``torch.profiler`` and its operator table (sorted by device or CPU time)
            is written there.
        cuda_graphs: run the GP heads through CUDA graphs (``model.enable_cuda_graphs()``;
            conv heads stay eager); the warm-up then also runs every click
            ``capture_after`` times, so that each click's graph is captured before the timing.
        pairs: after the rounds, the head of each GP model is timed ``pairs`` times at the
            first and at the last click back to back (:func:`paired_head_ratios`).

    Returns:
        The per-click rows, and per GP model the ``pairs`` ratios head time at the last
        click / head time at click 1 (empty without ``pairs``).
    """
    timed = _timer(device)
    img = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(device)
    size = tuple(img.shape[-2:])
    sessions = [record_session(n, img, gt, num_clicks, device) for n in names]
    if cuda_graphs:  # GP heads only: the conv head is two kernels, which a graph replay does not beat
        for sess in sessions:
            if isinstance(sess.model.head, GPSegHead):
                sess.model.enable_cuda_graphs()

    def run_backbone(model, batch, prev):
        maps = model.encode_clicks(batch, prev, size)
        return model.backbone(normalize_image(img), model.click_encoder(maps))

    def run_head(model, feats, batch):
        return model.run_head(feats, img, batch, num_samples=0, return_std=False)

    for sess in sessions:
        batch, prev = sess.steps[0]
        for _ in range(warmup):
            run_head(sess.model, run_backbone(sess.model, batch, prev), batch)
        graphs = sess.model.cuda_graphs
        if graphs is not None:  # capture each click's graph (one per padded click count) before timing
            for batch, prev in sess.steps:
                feats = run_backbone(sess.model, batch, prev)
                for _ in range(graphs.capture_after):
                    run_head(sess.model, feats, batch)
    times = {(sess.name, k): ([], []) for sess in sessions for k in range(num_clicks)}
    calls = [(sess, k) for sess in sessions for k in range(num_clicks)]
    order = random.Random(0)
    for _ in range(repeats):
        order.shuffle(calls)  # a new order each round: a drift within a round is not tied to a click
        for sess, k in calls:
            batch, prev = sess.steps[k]
            feats, t_bb = timed(lambda: run_backbone(sess.model, batch, prev))
            _, t_hd = timed(lambda: run_head(sess.model, feats, batch))
            times[(sess.name, k)][0].append(t_bb)
            times[(sess.name, k)][1].append(t_hd)
    paired = {}
    for sess in sessions:
        if pairs and isinstance(sess.model.head, GPSegHead):
            first, last = sess.steps[0], sess.steps[-1]
            paired[sess.name] = paired_head_ratios(
                lambda step, feats: run_head(sess.model, feats, step[0]),
                [(first, run_backbone(sess.model, *first)), (last, run_backbone(sess.model, *last))],
                pairs, timed)
    rows = []
    for sess in sessions:
        for k in range(num_clicks):
            bb, hd = times[(sess.name, k)]
            rows.append(ClickTiming(sess.name, sess.model.config.backbone, k + 1,
                                    statistics.median(bb), statistics.median(hd)))
        if profile_to and sess.name in profile_to:
            batch, prev = sess.steps[-1]
            feats = run_backbone(sess.model, batch, prev)
            profile_head(lambda: run_head(sess.model, feats, batch), device, profile_to[sess.name])
    return rows, paired


def paired_head_ratios(run: Callable[[object, object], object], inputs: Sequence[tuple[object, object]],
                       pairs: int, timed: Callable) -> list[float]:
    """Ratios head time at the last click / at the first, each from two calls back to back.

    The per-click medians of :func:`time_sessions` compare calls minutes apart; on a shared
    machine whose speed drifts (this project's CPU VM switches between two speeds for
    seconds at a time, 5-10% apart) the last click's median and the first's can come from
    different speeds. Timing the two heads back to back, ``pairs`` times, the first one first
    in even pairs and the last one first in odd pairs (so neither always runs after the
    other), and keeping each pair's ratio, cancels such drifts: what is left is the head's
    dependence on the click count (the features' content does not change the head's work).

    Args:
        run: ``run(step, features)`` runs the head once.
        inputs: ``[(first_step, first_features), (last_step, last_features)]``.
        pairs: number of pairs.
        timed: the timer of :func:`_timer`.

    Returns:
        ``pairs`` ratios (last / first).
    """
    (a, fa), (b, fb) = inputs
    ratios = []
    for i in range(pairs):
        if i % 2 == 0:
            t_a = timed(lambda: run(a, fa))[1]
            t_b = timed(lambda: run(b, fb))[1]
        else:
            t_b = timed(lambda: run(b, fb))[1]
            t_a = timed(lambda: run(a, fa))[1]
        ratios.append(t_b / t_a)
    return ratios


def profile_head(fn: Callable[[], object], device: torch.device, path: Path) -> None:
    """Write ``torch.profiler``'s operator table of one call of ``fn`` to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.key_averages().table(sort_by=sort, row_limit=25))


def summarize(rows: list[ClickTiming], paired: dict[str, list[float]] | None = None) -> list[dict]:
    """Per backbone: head time at the last click vs click 1 (from the per-click medians and,
    where ``paired`` has the GP model, the median and quartiles of its paired ratios minus 1),
    and GPCIS vs RITM total time."""
    out = []
    for bb in sorted({r.backbone for r in rows}):
        by = {m: [r for r in rows if r.backbone == bb and r.model == m] for m in {r.model for r in rows if r.backbone == bb}}
        gp = next((v for m, v in by.items() if m.startswith("gpcis_")), None)
        conv = next((v for m, v in by.items() if m.startswith("ritm_")), None)
        row: dict = {"backbone": bb}
        if gp:
            row["gp_head_ms_click1"] = gp[0].head_ms
            row["gp_head_ms_last"] = gp[-1].head_ms
            row["gp_head_growth"] = gp[-1].head_ms / gp[0].head_ms - 1.0
            ratios = (paired or {}).get(gp[0].model)
            if ratios:
                q1, med, q3 = np.quantile(ratios, [0.25, 0.5, 0.75]) - 1.0
                row["gp_head_growth_paired"] = float(med)
                row["gp_head_growth_paired_iqr"] = [float(q1), float(q3)]
                row["pairs"] = len(ratios)
            row["gpcis_total_ms_mean"] = float(np.mean([r.total_ms for r in gp]))
        if conv:
            row["ritm_total_ms_mean"] = float(np.mean([r.total_ms for r in conv]))
        if gp and conv:
            row["gpcis_over_ritm"] = row["gpcis_total_ms_mean"] / row["ritm_total_ms_mean"] - 1.0
        out.append(row)
    return out


def plot(rows: list[ClickTiming], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    backbones = sorted({r.backbone for r in rows})
    color = {bb: f"C{i % 10}" for i, bb in enumerate(backbones)}  # one colour per backbone
    for model in sorted({r.model for r in rows}):
        rs = [r for r in rows if r.model == model]
        style = "-" if model.startswith("gpcis_") else "--"
        c = color[rs[0].backbone]
        ax.plot([r.click for r in rs], [r.total_ms for r in rs], style, color=c, marker="o", ms=3, label=f"{model} total")
        if model.startswith("gpcis_"):
            ax.plot([r.click for r in rs], [r.head_ms for r in rs], ":", color=c, label=f"{model} GP head")
    ax.set_yscale("log")
    ax.set_xlabel("click")
    ax.set_ylabel("time per click [ms] (log)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny models, 96x96, 4 clicks, 1 repeat, at most 3 pairs (CI smoke run)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=384, help="square input size (the paper's evaluation input)")
    p.add_argument("--clicks", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before click 1")
    p.add_argument("--pairs", type=int, default=15,
                   help="GP head timed this many times at the first and last click back to back "
                   "(paired growth ratio, robust to a machine's speed drifts; 0: off)")
    p.add_argument("--profile", action="store_true", help="write the GP head's profiler table at the last click")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="run the GP heads through CUDA graphs (gpcis.models.cuda_graph; conv heads stay "
                   "eager, their fastest form; --device cuda only)")
    p.add_argument("--backbones", default="resnet50,hrnet18s,segformer_b0,efflite0")
    p.add_argument("--out", default="runs/bench/click_latency")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.clicks, args.repeats, args.backbones = 96, 4, 1, "tiny"
        args.pairs = min(args.pairs, 3)
    if args.pairs < 0:
        p.error(f"--pairs must be >= 0, got {args.pairs}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available")
    if args.cuda_graphs and device.type != "cuda":
        p.error("--cuda-graphs needs --device cuda")
    image, gt, image_name = load_image(args.size)
    out = Path(args.out)
    rows: list[ClickTiming] = []
    paired: dict[str, list[float]] = {}
    for bb in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        names = (f"ritm_{bb}", f"gpcis_{bb}")
        prof = {names[1]: out / f"profile_{names[1]}.txt"} if args.profile else None
        new_rows, new_paired = time_sessions(names, image, gt, args.clicks, args.repeats, device, args.warmup,
                                             prof, cuda_graphs=args.cuda_graphs, pairs=args.pairs)
        rows += new_rows
        paired.update(new_paired)
    summary = summarize(rows, paired)
    header = f"{'model':22s} {'click':>5s} {'backbone ms':>12s} {'head ms':>9s} {'total ms':>9s}"
    print(header)
    for r in rows:
        if r.click in (1, 5, 10, args.clicks) or args.clicks <= 5:
            print(f"{r.model:22s} {r.click:5d} {r.backbone_ms:12.1f} {r.head_ms:9.1f} {r.total_ms:9.1f}")
    for s in summary:
        paired_txt = ""
        if "gp_head_growth_paired" in s:
            q1, q3 = s["gp_head_growth_paired_iqr"]
            paired_txt = (f" (medians); paired, {s['pairs']} pairs: {100 * s['gp_head_growth_paired']:+.1f}% "
                          f"[{100 * q1:+.1f}, {100 * q3:+.1f}]")
        print(
            f"{s['backbone']}: GP head click {args.clicks} vs 1: {100 * s.get('gp_head_growth', float('nan')):+.1f}%"
            + paired_txt
            + f"; GPCIS vs RITM total: {100 * s.get('gpcis_over_ritm', float('nan')):+.1f}%"
        )
    out.mkdir(parents=True, exist_ok=True)
    result = {
        **run_metadata("click_latency", device),
        "device": str(device),
        "size": args.size,
        "image": image_name,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "pairs": args.pairs,
        "cuda_graphs": bool(args.cuda_graphs),
        "rows": [dict(r.__dict__, total_ms=r.total_ms) for r in rows],
        "paired_head_ratios": paired,
        "summary": summary,
    }
    atomic_write_text(out / "click_latency.json", json.dumps(result, indent=1))
    plot(rows, out / "click_latency.png", f"per-click latency, {args.size}x{args.size}, {result['machine']}")
    print(f"wrote {out / 'click_latency.json'} and {out / 'click_latency.png'}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
