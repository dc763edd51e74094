"""Launch-configuration sweep of the GP head's fused GPU kernels (``gpcis.gp.fused``).

Times, per input width ``D`` (51 for the resnet50 / hrnet18s / efflite0 models, 99 for
segformer_b0), the mean-path kernel under a list of launch configurations (rows per program,
basis functions per ``tl.dot``, warps, pipeline stages), and, per click count, the click
solve's variants (warps; the forward substitution inside the factorisation's loop or after
it). Every configuration's output is compared with the default's (a configuration that
disagrees beyond rounding is marked and never chosen). Prints a table, writes JSON and a
PNG; ``python benchmarks/report.py`` puts the tables in docs/benchmarks.md. The fastest
configurations are what ``gpcis.gp.fused`` hard-codes per padded width (measured on an H200);
on another GPU, ``GPCIS_FUSED_MEAN_CONFIG=rows,features,warps[,stages[,split]]`` applies this
script's choice (the "best mean" lines print it in that form).

On a GPU the time is the kernel's device time (``torch.profiler``). Without CUDA the kernels
run in Triton's interpreter: a smoke run of the script (``--quick``, tested), not a timing.

Usage::

    python benchmarks/fused_sweep.py --device cuda [--size 384] [--dims 51,99]
        [--features 256,128] [--clicks 8,20,64] [--out runs/bench/fused_sweep]
    python benchmarks/fused_sweep.py --quick            # CPU, interpreter, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

if not torch.cuda.is_available():  # the kernels can only run in Triton's interpreter here
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_meta import run_metadata  # noqa: E402

from gpcis.gp import fused  # noqa: E402

#: mean-path configurations (rows, features, warps, pipeline stages), each with the rows split
#: into TF32 parts once per program and with Triton's tf32x3 (``MeanPathConfig.split``)
_BASE_CONFIGS = [
    (128, 32, 4, 2), (128, 32, 4, 3), (128, 64, 4, 4), (128, 64, 4, 1), (128, 64, 4, 2), (128, 64, 4, 3),
    (128, 128, 8, 2), (256, 64, 8, 2), (256, 32, 8, 2), (64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 2, 2),
    (64, 16, 4, 2), (32, 32, 2, 2), (32, 16, 2, 2), (32, 32, 4, 2), (128, 16, 4, 2),
]
MEAN_CONFIGS = [fused.MeanPathConfig(*c, split) for split in (False, True) for c in _BASE_CONFIGS]
QUICK_MEAN_CONFIGS = [fused.MeanPathConfig(128, 32, 4, 2, False), fused.MeanPathConfig(64, 16, 2, 1, True)]
#: click-solve variants (warps, forward substitution inside the factorisation)
SOLVE_VARIANTS = [(w, f) for f in (True, False) for w in (1, 2, 4)]


def _timer(device: torch.device, kernel: str, reps: int) -> Callable[[Callable[[], object]], float]:
    """``time(fn)`` -> microseconds per call of ``fn``: on CUDA the device time of the kernels
    whose name starts with ``kernel`` (profiler), on the CPU the median wall time."""
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        def time_cuda(fn):
            fn()
            torch.cuda.synchronize(device)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(reps):
                    fn()
                torch.cuda.synchronize(device)
            total = sum(e.device_time_total for e in prof.key_averages() if e.key.startswith(kernel))
            return total / reps

        return time_cuda

    def time_cpu(fn):
        fn()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1e6

    return time_cpu


def mean_problem(size: int, d: int, lf: int, n: int, device: torch.device, seed: int = 0):
    """A channel-major ``(1, size^2, d)`` input (a feature map), frequencies, phases, weights
    and clicks as the segmentation head hands them to the kernels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, d, size * size, generator=g).transpose(1, 2)
    theta = torch.randn(d, lf, generator=g) * 0.5
    tau = torch.rand(lf, generator=g) * 2 * math.pi
    w = torch.randn(1, lf, generator=g) * math.sqrt(2.0 / max(lf, 1))
    z = x[:, torch.randperm(size * size, generator=g)[:n]].clone()
    eta = torch.rand(d, generator=g) * 0.3 + 0.02
    alpha = torch.randn(1, n, generator=g)
    return [t.to(device) for t in (x, theta, tau, w, z, eta, torch.tensor(1.0), alpha)]


def sweep_mean(size: int, dims: list[int], features: list[int], n: int, configs: list[tuple], device: torch.device,
               reps: int) -> list[dict]:
    rows = []
    timer = _timer(device, "_mean_path_kernel", reps)
    for d, lf in zip(dims, features):
        prob = mean_problem(size, d, lf, n, device)
        ref = fused.fused_mean_path(*prob, config=configs[0])
        scale = float(ref.abs().max())
        for cfg in configs:
            def run():
                return fused.fused_mean_path(*prob, config=cfg)

            try:
                diff = float((run() - ref).abs().max()) / max(scale, 1e-30)
                us = timer(run)
                error = None
            except Exception as err:  # a configuration that does not compile or fit on this GPU
                diff, us, error = float("nan"), float("nan"), f"{type(err).__name__}: {str(err)[:120]}"
            rows.append({"kernel": "mean_path", "dim": d, "features": lf, "clicks": n, "rows": cfg.rows,
                         "block_features": cfg.features, "warps": cfg.warps, "stages": cfg.stages,
                         "split": cfg.split, "us": us, "rel_diff": diff, "error": error})
    return rows


def solve_problem(n: int, d: int, lf: int, device: torch.device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    hidden = 32
    return dict(
        source=torch.randn(1, n, d, generator=g).to(device),
        labels=torch.where(torch.rand(1, n, generator=g) < 0.5, -1.0, 1.0).to(device),
        valid=torch.ones(1, n, dtype=torch.bool, device=device),
        theta=torch.randn(d, lf, generator=g).to(device), tau=(torch.rand(lf, generator=g) * 6).to(device),
        w=(torch.randn(lf, generator=g) * 0.5).to(device), w_scale=math.sqrt(2.0 / lf),
        precision=(torch.rand(d, generator=g) * 0.3 + 0.05).to(device), log_outputscale=torch.zeros((), device=device),
        noise=1e-4, mlp=tuple(t.to(device) for t in (torch.randn(hidden, d, generator=g), torch.randn(hidden, generator=g),
                                                     torch.randn(1, hidden, generator=g), torch.randn(1, generator=g))),
    )


def sweep_solve(clicks: list[int], d: int, lf: int, variants: list[tuple], device: torch.device, reps: int) -> list[dict]:
    rows = []
    timer = _timer(device, "_click_solve_kernel", reps)
    for n in clicks:
        prob = solve_problem(n, d, lf, device)
        ref = fused.click_system(**prob, solve_warps=variants[0][0], fused_forward=variants[0][1])
        for warps, forward in variants:
            def run():
                return fused.click_system(**prob, solve_warps=warps, fused_forward=forward)

            out = run()
            diff = float((out.alpha - ref.alpha).abs().max() / ref.alpha.abs().max().clamp_min(1e-30))
            rows.append({"kernel": "click_solve", "clicks": n, "warps": warps, "fused_forward": forward,
                         "us": timer(run), "rel_diff": diff, "info": int(out.info.max())})
    return rows


def best(rows: list[dict], key: str, tol: float) -> dict:
    """Per value of ``key``, the fastest row whose output agrees with the reference within ``tol``."""
    out = {}
    for r in rows:
        ok = r.get("error") is None and math.isfinite(r["us"]) and r["rel_diff"] <= tol and not r.get("info")
        if ok and (r[key] not in out or r["us"] < out[r[key]]["us"]):
            out[r[key]] = r
    return out


def format_table(result: dict) -> str:
    lines = ["mean-path kernel (us per call)", f"{'D':>4s} {'l':>4s} {'rows':>5s} {'feat':>5s} {'warps':>5s} "
             f"{'stages':>6s} {'split':>5s} {'us':>9s} {'rel diff':>9s}"]
    for r in sorted(result["mean"], key=lambda r: (r["dim"], r["us"] if math.isfinite(r["us"]) else math.inf)):
        stages = "-" if r["stages"] is None else str(r["stages"])
        us = "failed" if r.get("error") else f"{r['us']:.1f}"
        lines.append(f"{r['dim']:4d} {r['features']:4d} {r['rows']:5d} {r['block_features']:5d} {r['warps']:5d} "
                     f"{stages:>6s} {'yes' if r.get('split') else 'no':>5s} {us:>9s} {r['rel_diff']:9.1e}")
    lines += ["click solve (us per call)", f"{'N':>4s} {'warps':>5s} {'forward':>8s} {'us':>9s} {'rel diff':>9s}"]
    for r in sorted(result["solve"], key=lambda r: (r["clicks"], r["us"])):
        lines.append(f"{r['clicks']:4d} {r['warps']:5d} {'inside' if r['fused_forward'] else 'after':>8s} "
                     f"{r['us']:9.1f} {r['rel_diff']:9.1e}")
    for name, b in (("mean", result["best_mean"]), ("solve", result["best_solve"])):
        for k, r in b.items():
            cfg = (f"{r['rows']},{r['block_features']},{r['warps']},{r['stages']},{int(bool(r.get('split')))}"
                   if name == "mean" else f"{r['warps']} warps, forward {'inside' if r['fused_forward'] else 'after'}")
            lines.append(f"best {name} for {'D' if name == 'mean' else 'N'} = {k}: {cfg} ({r['us']:.1f} us)")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for d in sorted({r["dim"] for r in result["mean"]}):
        rs = [r for r in result["mean"] if r["dim"] == d]
        axes[0].plot(range(len(rs)), [r["us"] for r in rs], "o-", label=f"D = {d}")
        axes[0].set_xticks(range(len(rs)))
        axes[0].set_xticklabels([f"{r['rows']}/{r['block_features']}/{r['warps']}/{r['stages'] or '-'}"
                                 + ("/s" if r.get("split") else "") for r in rs], rotation=70, fontsize=5)
    axes[0].set_ylabel("us per call")
    axes[0].set_title("mean-path kernel: rows/features/warps/stages (/s: rows split once)", fontsize=9)
    axes[0].legend(fontsize=7)
    for warps, forward in sorted({(r["warps"], r["fused_forward"]) for r in result["solve"]}):
        rs = sorted((r for r in result["solve"] if (r["warps"], r["fused_forward"]) == (warps, forward)),
                    key=lambda r: r["clicks"])
        axes[1].plot([r["clicks"] for r in rs], [r["us"] for r in rs], "o-",
                     label=f"{warps} warps, forward {'inside' if forward else 'after'}")
    axes[1].set_xlabel("clicks")
    axes[1].set_ylabel("us per call")
    axes[1].set_title("click solve", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"fused GP kernels, {result['machine']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: Optional[list[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU smoke run: 16x16 input, 2 configurations, tiny sizes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=384, help="square input size: size^2 test points")
    p.add_argument("--dims", default="51,99", help="input widths D (51: resnet50/hrnet18s/efflite0, 99: segformer_b0)")
    p.add_argument("--features", default="256,128", help="basis functions l per width")
    p.add_argument("--mean-clicks", type=int, default=24, help="clicks of the mean-path problem")
    p.add_argument("--clicks", default="8,20,64", help="click counts of the click-solve sweep")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--tol", type=float, default=1e-5, help="largest relative difference to the default accepted")
    p.add_argument("--out", default="runs/bench/fused_sweep")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available")
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        p.error("--device cpu runs the kernels in Triton's interpreter: set TRITON_INTERPRET=1 before starting")
    if fused.triton is None:
        p.error("Triton is not installed")
    configs, dims, features, clicks = MEAN_CONFIGS, _ints(args.dims), _ints(args.features), _ints(args.clicks)
    size, reps, mean_clicks = args.size, args.reps, args.mean_clicks
    if args.quick:
        configs, dims, features, clicks, size, reps, mean_clicks = QUICK_MEAN_CONFIGS, [11], [16], [3, 20], 16, 1, 5
    if len(dims) != len(features):
        p.error(f"--dims and --features need as many entries, got {dims} and {features}")
    result = run_metadata("fused_sweep", device)
    result.update(device=device.type, size=size, mean_clicks=mean_clicks, reps=reps, tol=args.tol,
                  mean=sweep_mean(size, dims, features, mean_clicks, configs, device, reps),
                  solve=sweep_solve(clicks, dims[0], features[0], SOLVE_VARIANTS, device, reps))
    result["best_mean"] = best(result["mean"], "dim", args.tol)
    result["best_solve"] = best(result["solve"], "clicks", args.tol)
    print(format_table(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fused_sweep.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "fused_sweep.png")
    print(f"wrote {out / 'fused_sweep.json'} and {out / 'fused_sweep.png'}")
    return result


if __name__ == "__main__":
    main()
