"""GP sampler benchmark (issue 2): gpcis pathwise head vs BoTorch and GPyTorch exact inference.

Usage::

    python benchmarks/gp_sampler.py [--quick] [--out DIR | --json PATH --png PATH] [--device cpu|cuda]
                                    [--repeats R] [--sizes 64,128,256,512] [--clicks 1,5,10,20,50,100]

The problem: one image of ``m = side^2`` test points with ``d = 51`` features (48
L2-normalised backbone channels + 3 colour channels, as the segmentation head builds
them), ``n`` clicks taken at random test points, float32, ``l = 256`` random features.
Median milliseconds (wall-clock, or CPU time with ``--clock cpu``) (after warm-up) of

* ``gpcis-mean``: :class:`gpcis.gp.GPHead` mean path (eval mode, ``torch.no_grad``);
* ``gpcis-sample``: the head with one pathwise sample + the predictive variance (Eq. S5);
* ``botorch``: ``draw_matheron_paths`` (one path, ``num_features = l`` sin/cos features)
  drawn and evaluated at the test points, on a ``SingleTaskGP`` whose ScaleKernel(RBF-ARD)
  hyperparameters equal the gpcis kernel's, train inputs = the clicks, targets = the
  click labels, fixed noise = the head's evaluation noise;
* ``gpytorch-exact``: GPyTorch exact posterior mean + variance (``fast_pred_var`` off)
  on the same kernel, points and noise; the prediction cache is reset at every call
  (new clicks = new training data). GPyTorch 1.15's ``ExactGP.__call__`` evaluates the
  dense ``m x m`` test-test kernel (``evaluate_kernel()``) even when only the variance
  is read, so it needs ``O(m^2)`` memory and time; cases with ``m > max_exact_m``
  (default ``128^2``, a 1 GiB matrix) are skipped and shown as ``skip``;
* ``floor``: the smallest sequence of dense kernels any implementation of the mean path
  must run, here with stock PyTorch kernels into preallocated buffers (:class:`Floor`):
  one GEMM ``[X | 1] (m x (d+1)) @ [[Theta, eta X_n^T], [tau, -q_n/2]] ((d+1) x (l+n))``,
  an in-place cosine on the ``m x l`` block, the squared norms ``(X * X) eta`` and an
  in-place exponential on the ``m x n`` block, and one matrix-vector product with
  ``[w; alpha]``. The roofline (measured peak SGEMM GFLOP/s and cosine throughput) is
  printed in the header for reference.

All implementations run under ``torch.no_grad()``; their calls are interleaved
round-robin (fair under a fluctuating load). ``--clock cpu`` reports process CPU time
instead of wall-clock time: on a shared machine, run with ``OMP_NUM_THREADS=1`` and
``--clock cpu`` to estimate the single-thread time of an idle machine. JSON output: a list of rows
``{"impl", "m", "n", "ms"}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_meta import run_metadata  # noqa: E402
from gpcis.atomic import atomic_write_text  # noqa: E402
from gpcis.gp import GPHead, GPHeadConfig  # noqa: E402

IMPLS: tuple[str, ...] = ("gpcis-mean", "gpcis-sample", "botorch", "gpytorch-exact", "floor")
FULL_SIZES: tuple[int, ...] = (64, 128, 256, 512)
FULL_CLICKS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)


@dataclass
class BenchConfig:
    """Benchmark settings.

    Attributes:
        sizes: image sides; ``m = side^2`` test points each.
        clicks: numbers of clicks ``n``.
        dim: feature dimension ``d``.
        num_features: random features ``l`` (gpcis and BoTorch).
        repeats: timed calls per (impl, m, n); the median is reported.
        warmup: untimed calls before timing.
        device: ``"cpu"`` or ``"cuda"``.
        impls: implementations to run (subset of :data:`IMPLS`).
        seed: seed of the generated problem and of the samples.
        max_exact_m: largest ``m`` run with ``gpytorch-exact`` (dense ``m x m`` kernel).
        clock: ``"wall"`` (wall-clock) or ``"cpu"`` (process CPU time: on a shared, loaded
            machine with one thread this estimates the wall-clock time of an idle machine).
        min_time_s: time each (impl, m, n) at least this long in all (more than ``repeats``
            calls for fast cases, see :func:`time_interleaved`).
    """

    sizes: tuple[int, ...] = FULL_SIZES
    clicks: tuple[int, ...] = FULL_CLICKS
    dim: int = 51
    num_features: int = 256
    repeats: int = 7
    warmup: int = 1
    device: str = "cpu"
    impls: tuple[str, ...] = IMPLS
    seed: int = 0
    max_exact_m: int = 128 * 128
    clock: str = "wall"
    min_time_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ValueError(f"sizes must be positive integers, got {self.sizes}")
        if not self.clicks or any(c < 1 for c in self.clicks):
            raise ValueError(f"clicks must be positive integers, got {self.clicks}")
        if max(self.clicks) > min(self.sizes) ** 2:
            raise ValueError(f"clicks must not exceed the number of test points, got {self.clicks}")
        if self.dim < 4:
            raise ValueError(f"dim must be >= 4 (3 colour channels + features), got {self.dim}")
        if self.num_features < 2 or self.num_features % 2:
            raise ValueError(f"num_features must be even and >= 2 (BoTorch uses sin/cos pairs), got {self.num_features}")
        if self.min_time_s < 0:
            raise ValueError(f"min_time_s must be >= 0, got {self.min_time_s}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {self.repeats}, {self.warmup}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available")
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")
        if self.clock == "cpu" and self.device == "cuda":
            raise ValueError("clock='cpu' does not measure CUDA work; use clock='wall' with device='cuda'")
        bad = [i for i in self.impls if i not in IMPLS]
        if bad or not self.impls:
            raise ValueError(f"impls must be a non-empty subset of {IMPLS}, got {self.impls}")


@dataclass
class Problem:
    """One benchmark problem (batch of one image).

    Attributes:
        x_test: ``(1, m, d)`` test features.
        x_click: ``(1, n, d)`` click features (a random subset of the test points).
        labels: ``(1, n)`` click labels in {-1, +1}.
        valid: ``(1, n)`` all True.
    """

    x_test: Tensor
    x_click: Tensor
    labels: Tensor
    valid: Tensor


def make_problem(m: int, n: int, d: int, device: str, generator: torch.Generator) -> Problem:
    """Random features shaped like the segmentation head's: ``d - 3`` unit-norm channels + 3 colours.

    Args:
        m: number of test points.
        n: number of clicks (``n <= m``), placed at distinct random test points.
        d: feature dimension.
        device: device of the tensors.
        generator: CPU generator.

    Returns:
        :class:`Problem`.
    """
    feat = torch.randn(m, d - 3, generator=generator)
    feat = feat / feat.norm(dim=-1, keepdim=True)
    rgb = torch.rand(m, 3, generator=generator)
    x = torch.cat([feat, rgb], dim=-1).unsqueeze(0)
    idx = torch.randperm(m, generator=generator)[:n]
    labels = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).unsqueeze(0)
    labels[0, 0] = 1.0  # the first click is positive, as in the protocol
    valid = torch.ones(1, n, dtype=torch.bool)
    return Problem(x.to(device), x[:, idx].contiguous().to(device), labels.to(device), valid.to(device))


def make_head(cfg: BenchConfig) -> GPHead:
    """The gpcis head under test (default configuration, ``l = num_features``), in eval mode."""
    head = GPHead(cfg.dim, GPHeadConfig(num_features=cfg.num_features, seed=cfg.seed))
    return head.to(cfg.device).eval()


def make_reference_kernel(head: GPHead):
    """A GPyTorch ``ScaleKernel(RBFKernel(ARD))`` equal to the head's k_eta.

    ``k_eta(x, x') = eta0 exp(-1/2 sum_t eta_t (x_t - x'_t)^2)`` is the RBF kernel with
    lengthscales ``eta_t^{-1/2}`` and outputscale ``eta0``.
    """
    from gpytorch.kernels import RBFKernel, ScaleKernel

    d = head.in_dim
    kernel = ScaleKernel(RBFKernel(ard_num_dims=d))
    with torch.no_grad():
        kernel.base_kernel.lengthscale = head.kernel.precision.detach().rsqrt().reshape(1, d)
        kernel.outputscale = head.kernel.outputscale.detach().reshape(())
    return kernel.to(head.kernel.raw_precision.device)


def check_same_kernel(head: GPHead, kernel, x: Tensor, rtol: float = 1e-4) -> float:
    """Raise ``RuntimeError`` unless ``kernel`` and the head's kernel agree on ``x``.

    Args:
        head: the gpcis head.
        kernel: the reference GPyTorch kernel.
        x: ``(k, d)`` points.
        rtol: relative tolerance w.r.t. the amplitude eta0 (float32 arithmetic).

    Returns:
        The maximum absolute difference.
    """
    with torch.no_grad():
        a = head.kernel(x).to_dense()
        b = kernel(x).to_dense()
    err = (a - b).abs().max().item()
    if err > rtol * head.kernel.outputscale.item():
        raise RuntimeError(f"reference kernel differs from the gpcis kernel by {err:.3g}")
    return err


class _ExactGP:
    """GPyTorch ExactGP with zero mean and the reference kernel (built lazily)."""

    def __init__(self, kernel, x_click: Tensor, y: Tensor, noise: float) -> None:
        import gpytorch

        class Model(gpytorch.models.ExactGP):
            def __init__(self, tx, ty, lik, k):
                super().__init__(tx, ty, lik)
                self.mean_module = gpytorch.means.ZeroMean()
                self.covar_module = k

            def forward(self, x):
                return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

        lik = gpytorch.likelihoods.FixedNoiseGaussianLikelihood(noise=torch.full_like(y, noise))
        self.model = Model(x_click, y, lik, kernel).to(x_click.device).eval()
        self.x_click, self.y = x_click, y

    def __call__(self, x_test: Tensor) -> tuple[Tensor, Tensor]:
        import gpytorch

        self.model.set_train_data(self.x_click, self.y, strict=False)  # drop the prediction cache
        with gpytorch.settings.fast_pred_var(False), gpytorch.settings.debug(False):
            post = self.model(x_test)
            return post.mean, post.variance


def make_botorch_model(kernel, x_click: Tensor, y: Tensor, noise: float):
    """BoTorch ``SingleTaskGP`` on the clicks with the reference kernel and fixed noise."""
    from botorch.models import SingleTaskGP
    from gpytorch.means import ZeroMean

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BoTorch's InputDataWarning: inputs not in the unit cube
        model = SingleTaskGP(
            x_click,
            y.unsqueeze(-1),
            train_Yvar=torch.full_like(y, noise).unsqueeze(-1),
            covar_module=kernel,
            mean_module=ZeroMean(),
            outcome_transform=None,
        )
    return model.to(x_click.device).eval()


def botorch_draw_and_eval(model, x_test: Tensor, num_features: int) -> Tensor:
    """One Matheron path (``num_features`` RFF basis functions) drawn and evaluated: ``(1, m)``."""
    from botorch.sampling.pathwise import draw_kernel_feature_paths, draw_matheron_paths

    paths = draw_matheron_paths(
        model,
        sample_shape=torch.Size([1]),
        prior_sampler=partial(draw_kernel_feature_paths, num_features=num_features),
    )
    return paths(x_test)


class Floor:
    """The minimal dense-kernel sequence of the mean path (see the module docstring).

    The test features are laid out once, outside the timing, with a trailing constant-1
    channel, ``X1 = [X | 1]`` (a feature extractor can emit it for free), so the phases
    ``tau`` and the click constants ride in the GEMM's last row instead of a broadcast
    bias (``addmm`` copies a broadcast bias into its output first: one extra pass over
    ``m x l``). A call runs: one GEMM ``X1 @ [[Theta, eta * X_n^T], [tau, -q_n / 2]]``
    into a preallocated buffer, ``cos_`` on the ``m x l`` block, the norms
    ``q(x) = (X * X) eta``, ``sub_`` + ``exp_`` on the ``m x n`` block, one matvec with
    ``[a sqrt(2/l) mu_w ; eta0 alpha]``.
    """

    def __init__(self, head: GPHead, prob: Problem) -> None:
        with torch.no_grad():
            x = prob.x_test[0]
            xc = prob.x_click[0]
            eta = head.kernel.precision.detach().reshape(-1)
            self.x = x
            self.x1 = torch.cat([x, torch.ones_like(x[:, :1])], dim=1).contiguous()
            self.eta = eta
            l = head.rff.num_features
            n = xc.shape[0]
            self.l = l
            top = torch.cat([head.rff.frequencies().detach(), (xc * eta).mT], dim=1)
            bottom = torch.cat([head.rff.tau.detach(), -0.5 * (xc * xc) @ eta]).unsqueeze(0)
            self.rhs = torch.cat([top, bottom], dim=0).contiguous()  # (d + 1, l + n)
            w = head.weight_prior.mean.detach() * head.rff.feature_scale().detach()
            alpha = torch.randn(n, device=x.device) * head.kernel.outputscale.detach()
            self.vec = torch.cat([w, alpha])
            self.buf = torch.empty(x.shape[0], l + n, device=x.device, dtype=x.dtype)
            self.sq = torch.empty(x.shape[0], device=x.device, dtype=x.dtype)

    def __call__(self) -> Tensor:
        buf = torch.mm(self.x1, self.rhs, out=self.buf)
        buf[:, : self.l].cos_()
        torch.mv(self.x * self.x, self.eta, out=self.sq)
        buf[:, self.l :].sub_(0.5 * self.sq.unsqueeze(1)).exp_()
        return buf @ self.vec


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _clock(kind: str) -> Callable[[], float]:
    if kind == "wall":
        return time.perf_counter
    if kind == "cpu":
        return time.process_time
    raise ValueError(f"clock must be 'wall' or 'cpu', got {kind!r}")


def time_ms(fn: Callable[[], object], repeats: int, warmup: int, device: str, clock: str = "wall") -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    ``clock="wall"`` measures wall-clock time, ``"cpu"`` the process CPU time (all threads).
    """
    return time_interleaved({"fn": fn}, repeats, warmup, device, clock)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: str,
    clock: str = "wall",
    min_time_s: float = 0.0,
    max_repeats: int = 1000,
) -> dict[str, float]:
    """Median milliseconds of each function, calls interleaved round-robin.

    Interleaving (repeat 1 of every function, then repeat 2, ...) spreads slow phases of a
    shared machine evenly over the implementations being compared. Each function is timed
    ``repeats`` times, or more when that takes less than ``min_time_s`` in all (estimated
    from its first timed call; at most ``max_repeats``): a 4-ms call timed 7 times gives a
    median that moves by several percent between runs, 125 times much less. Functions that
    have their count sit out the remaining rounds.
    """
    now = _clock(clock)
    times: dict[str, list[float]] = {k: [] for k in fns}
    counts: dict[str, int] = {}
    with torch.no_grad():
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        _sync(device)
        while True:
            pending = [k for k in fns if len(times[k]) < counts.get(k, 1)]
            if not pending:
                break
            for k in pending:
                t0 = now()
                fns[k]()
                _sync(device)
                times[k].append((now() - t0) * 1e3)
                if k not in counts:
                    need = math.ceil(min_time_s * 1e3 / max(times[k][0], 1e-3))
                    counts[k] = max(repeats, min(max_repeats, need))
    return {k: statistics.median(v) for k, v in times.items()}


def roofline(device: str, size: int = 1024, repeats: int = 5, clock: str = "wall") -> dict[str, float]:
    """Measured peak SGEMM GFLOP/s and cosine throughput (G elements/s) on ``device``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device)
    b = torch.randn(size, size, generator=g).to(device)
    out = torch.empty(size, size, device=device)
    t_mm = time_ms(lambda: torch.mm(a, b, out=out), repeats, 1, device, clock)
    c = torch.randn(4 * size * size, generator=g).to(device)
    t_cos = time_ms(lambda: torch.cos(c, out=c), repeats, 1, device, clock)
    return {"gemm_gflops": 2 * size**3 / t_mm / 1e6, "cos_gelem_s": c.numel() / t_cos / 1e6}


def bench_case(cfg: BenchConfig, head: GPHead, ref_kernel, prob: Problem, gen_seed: int) -> dict[str, float]:
    """Median ms of every implementation in ``cfg.impls`` on one problem (calls interleaved)."""
    fns: dict[str, Callable[[], object]] = {}
    noise = head.config.eval_noise
    x_test, x_click, labels, valid = prob.x_test, prob.x_click, prob.labels, prob.valid
    for impl in cfg.impls:
        if impl == "gpytorch-exact" and x_test.shape[1] > cfg.max_exact_m:
            continue
        if impl == "gpcis-mean":
            fns[impl] = partial(head, x_test, x_click, labels, valid)
        elif impl == "gpcis-sample":
            g = torch.Generator(device=cfg.device).manual_seed(gen_seed)
            fns[impl] = partial(
                head, x_test, x_click, labels, valid, num_samples=1, return_variance=True, generator=g
            )
        elif impl == "botorch":
            model = make_botorch_model(ref_kernel, x_click[0], labels[0], noise)
            fns[impl] = partial(botorch_draw_and_eval, model, x_test[0], cfg.num_features)
        elif impl == "gpytorch-exact":
            fns[impl] = partial(_ExactGP(ref_kernel, x_click[0], labels[0], noise), x_test[0])
        else:
            fns[impl] = Floor(head, prob)
    return time_interleaved(fns, cfg.repeats, cfg.warmup, cfg.device, cfg.clock, cfg.min_time_s)


def run(cfg: BenchConfig, progress: bool = True) -> list[dict]:
    """Run the benchmark.

    Returns:
        Rows ``{"impl": str, "m": int, "n": int, "ms": float}``.
    """
    torch.manual_seed(cfg.seed)
    head = make_head(cfg)
    ref_kernel = make_reference_kernel(head)
    rows: list[dict] = []
    cases = [(s, n) for s in cfg.sizes for n in cfg.clicks]
    gen = torch.Generator().manual_seed(cfg.seed)
    checked = False
    for s, n in tqdm(cases, desc="gp_sampler", disable=not progress):
        prob = make_problem(s * s, n, cfg.dim, cfg.device, gen)
        if not checked:
            check_same_kernel(head, ref_kernel, prob.x_test[0, :64])
            checked = True
        for impl, ms in bench_case(cfg, head, ref_kernel, prob, cfg.seed).items():
            rows.append({"impl": impl, "m": s * s, "n": n, "ms": ms})
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A markdown table: one line per (m, impl), one column per n (median ms)."""
    ms = sorted({r["m"] for r in rows})
    ns = sorted({r["n"] for r in rows})
    impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
    lookup = {(r["impl"], r["m"], r["n"]): r["ms"] for r in rows}
    lines = ["| m | impl | " + " | ".join(f"n={n}" for n in ns) + " |"]
    lines.append("|---|---|" + "---:|" * len(ns))
    for m in ms:
        side = int(round(math.sqrt(m)))
        for impl in impls:
            cells = [f"{lookup[(impl, m, n)]:.1f}" if (impl, m, n) in lookup else "skip" for n in ns]
            lines.append(f"| {side}² | {impl} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: Sequence[dict]) -> list[str]:
    """Check the issue's targets: gpcis faster than BoTorch at every (m, n); t(n=20) <= 1.1 t(n=1)."""
    lookup = {(r["impl"], r["m"], r["n"]): r["ms"] for r in rows}
    lines = []
    for m in sorted({r["m"] for r in rows}):
        ns = sorted({r["n"] for r in rows if r["m"] == m})
        for impl in ("gpcis-mean", "gpcis-sample"):
            if all((impl, m, n) in lookup and ("botorch", m, n) in lookup for n in ns):
                ok = all(lookup[(impl, m, n)] < lookup[("botorch", m, n)] for n in ns)
                lines.append(f"m={m} {impl} faster than botorch at every n: {'yes' if ok else 'NO'}")
            if (impl, m, 1) in lookup and (impl, m, 20) in lookup:
                r = lookup[(impl, m, 20)] / lookup[(impl, m, 1)]
                lines.append(f"m={m} {impl} t(n=20)/t(n=1) = {r:.3f} ({'met' if r <= 1.1 else 'NOT met'}: <= 1.10)")
    return lines


def write_json(rows: Sequence[dict], path: Path, device: str = "cpu") -> None:
    """Write ``{benchmark, date, machine, device, rows}`` atomically (the machine recorded in
    the file itself: a ``device.txt`` beside it, the report's fallback for older files, is
    rewritten by every later call of benchmarks/gpu_checks.sh)."""
    data = {**run_metadata("gp_sampler", torch.device(device)), "device": device, "rows": list(rows)}
    atomic_write_text(path, json.dumps(data, indent=1))


def write_png(rows: Sequence[dict], path: Path) -> None:
    """Plot ms vs n, one panel per m, one line per implementation (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ValueError("--png needs matplotlib (pip install 'gpcis[bench]')") from e
    ms = sorted({r["m"] for r in rows})
    fig, axes = plt.subplots(1, len(ms), figsize=(4 * len(ms), 3.5), squeeze=False)
    colours = {impl: f"C{i}" for i, impl in enumerate(IMPLS)}  # same colour in every panel
    for ax, m in zip(axes[0], ms):
        for impl in IMPLS:
            pts = sorted((r["n"], r["ms"]) for r in rows if r["m"] == m and r["impl"] == impl)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl, color=colours[impl])
        side = int(round(math.sqrt(m)))
        ax.set(title=f"m = {side}x{side}", xlabel="clicks n", ylabel="median ms", xscale="log", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[i], marker="o", label=i) for i in IMPLS]
    axes[0][0].legend(handles=handles, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _int_list(text: str, name: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{name} must be comma-separated integers, got {text!r}") from e
    if not vals:
        raise argparse.ArgumentTypeError(f"{name} must not be empty")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="m = 256^2 only, 3 repeats (< 1 min on 2 cores)")
    p.add_argument("--json", type=Path, help="write the rows to this JSON file")
    p.add_argument("--png", type=Path, help="plot ms vs n to this PNG (matplotlib)")
    p.add_argument("--out", type=Path, help="folder for gp_sampler.json and gp_sampler.png (where --json / --png "
                   "are not given)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, help="timed calls per case (default 7, quick 3)")
    p.add_argument("--min-time", type=float, default=None, metavar="S",
                   help="time each case at least S seconds in all, with more calls than --repeats "
                   "when they are fast (default 0.5, quick 0)")
    p.add_argument("--sizes", type=partial(_int_list, name="--sizes"), help="image sides (m = side^2)")
    p.add_argument("--clicks", type=partial(_int_list, name="--clicks"), help="numbers of clicks n")
    p.add_argument("--impls", type=lambda s: tuple(s.split(",")), help=f"subset of {','.join(IMPLS)}")
    p.add_argument("--no-roofline", action="store_true", help="skip the roofline measurement")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="wall-clock or process CPU time")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    """Command-line entry point; returns the rows."""
    args = build_parser().parse_args(argv)
    if args.out is not None:
        args.json = args.json or args.out / "gp_sampler.json"
        args.png = args.png or args.out / "gp_sampler.png"
    sizes = args.sizes or ((256,) if args.quick else FULL_SIZES)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
    cfg = BenchConfig(
        sizes=sizes,
        clicks=args.clicks or FULL_CLICKS,
        repeats=repeats,
        device=args.device,
        impls=args.impls or IMPLS,
        seed=args.seed,
        clock=args.clock,
        min_time_s=args.min_time if args.min_time is not None else (0.0 if args.quick else 0.5),
    )
    print(
        f"gp_sampler: float32, d={cfg.dim}, l={cfg.num_features}, device={cfg.device}, "
        f"torch threads={torch.get_num_threads()}, repeats={cfg.repeats} (median, interleaved; "
        f"more for cases faster than {cfg.min_time_s:g} s in all), "
        f"clock={cfg.clock}, "
        f"load average={os.getloadavg()[0]:.2f}"
    )
    if not args.no_roofline:
        rf = roofline(cfg.device, clock=cfg.clock)
        print(f"roofline: SGEMM {rf['gemm_gflops']:.1f} GFLOP/s, cos {rf['cos_gelem_s']:.2f} G elements/s")
        for s in cfg.sizes:
            m = s * s
            t = 2 * m * cfg.dim * cfg.num_features / rf["gemm_gflops"] / 1e6 + m * cfg.num_features / rf["cos_gelem_s"] / 1e6
            print(f"  roofline floor m={s}^2 (GEMM X@Theta at peak + cos): {t:.1f} ms")
    with torch.no_grad():
        rows = run(cfg)
    print(format_table(rows))
    for line in targets(rows):
        print(line)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        write_json(rows, args.json, cfg.device)
    if args.png:
        write_png(rows, args.png)
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
