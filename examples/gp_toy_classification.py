"""2-D toy classification: deep kernel learning with :class:`gpcis.gp.GPHead` vs GPyTorch's variational GP.

Usage::

    python examples/gp_toy_classification.py [--dataset moons|circles] [--out DIR] [--steps N] [--seed S]

Data: generated two-moons or two-circles points (numpy; no scikit-learn needed).

* **gpcis**: a small feature MLP ``R^2 -> R^k`` followed by :class:`gpcis.gp.GPHead`,
  trained end to end (deep kernel learning). At every step, for each of a few random
  splits of the training set, a random subset of points plays the "clicks"
  ``(x_click, labels)`` and the remaining points are the test points; the loss is
  ``BCE(logits, y) + alpha * L_VI`` (supplement Eq. S1). At test time the head is
  conditioned on the whole training set (eval mode, small evaluation noise).
* **GPyTorch**: ``ApproximateGP`` + ``VariationalStrategy`` (learned inducing points,
  Cholesky variational distribution) + ``BernoulliLikelihood``, ScaleKernel(RBF), trained
  with ``VariationalELBO`` on the raw 2-D inputs.

Prints test accuracy and training time side by side and writes ``DIR/gp_toy_<dataset>.png``:
both decision surfaces (probability of class 1) and the gpcis predictive std of the
latent function (Eq. S5).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from gpcis.gp import GPHead, GPHeadConfig

DATASETS = ("moons", "circles")


def make_moons(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles.

    Args:
        n: number of points (``n // 2`` in class 0, the rest in class 1).
        noise: std of the Gaussian noise added to the coordinates.
        rng: numpy random generator.

    Returns:
        ``x (n, 2)`` float32 and ``y (n,)`` int64 in {0, 1}, shuffled.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    n0 = n // 2
    t0 = rng.uniform(0.0, math.pi, n0)
    t1 = rng.uniform(0.0, math.pi, n - n0)
    x0 = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    x1 = np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    x = np.concatenate([x0, x1]) + rng.normal(0.0, noise, (n, 2))
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n - n0, np.int64)])
    perm = rng.permutation(n)
    return x[perm].astype(np.float32), y[perm]


def make_circles(
    n: int, noise: float, rng: np.random.Generator, factor: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """A small circle (class 1) inside a large one (class 0).

    Args:
        n: number of points (``n // 2`` on the outer circle).
        noise: std of the Gaussian noise added to the coordinates.
        rng: numpy random generator.
        factor: radius of the inner circle (outer radius 1), in (0, 1).

    Returns:
        ``x (n, 2)`` float32 and ``y (n,)`` int64 in {0, 1}, shuffled.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor must be in (0, 1), got {factor}")
    n0 = n // 2
    t = rng.uniform(0.0, 2 * math.pi, n)
    r = np.where(np.arange(n) < n0, 1.0, factor)
    x = np.stack([r * np.cos(t), r * np.sin(t)], axis=1) + rng.normal(0.0, noise, (n, 2))
    y = (np.arange(n) >= n0).astype(np.int64)
    perm = rng.permutation(n)
    return x[perm].astype(np.float32), y[perm]


@dataclass
class ToyConfig:
    """Settings of the toy experiment.

    Attributes:
        dataset: ``"moons"`` or ``"circles"``.
        n_train: training points.
        n_test: test points.
        noise: coordinate noise of the generator (None: 0.15 moons, 0.08 circles).
        steps: optimisation steps (both methods).
        clicks: context ("click") points per split and step (gpcis).
        splits: random context/target splits per step (the GP head's batch size B).
        feature_dim: output width k of the feature MLP.
        hidden: hidden width of the feature MLP.
        num_features: random features l of the GP head.
        alpha: weight of L_VI in the gpcis loss.
        vi_kernel_grad: ``GPHeadConfig.vi_kernel_grad`` (``False``: L_VI treats the kernel
            as a constant, as the paper's released code).
        lr: Adam learning rate of gpcis.
        vgp_inducing: inducing points of the GPyTorch variational GP.
        vgp_lr: Adam learning rate of the GPyTorch variational GP.
        grid: resolution of the plotted surfaces (``grid x grid``).
        seed: seed of the data, the initialisation and the splits.
    """

    dataset: Literal["moons", "circles"] = "moons"
    n_train: int = 300
    n_test: int = 1000
    noise: Optional[float] = None
    steps: int = 300
    clicks: int = 32
    splits: int = 4
    feature_dim: int = 8
    hidden: int = 64
    num_features: int = 64
    alpha: float = 0.01
    vi_kernel_grad: bool = True
    lr: float = 0.01
    vgp_inducing: int = 32
    vgp_lr: float = 0.05
    grid: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 1 <= self.clicks < self.n_train:
            raise ValueError(f"clicks must be in [1, n_train), got {self.clicks} with n_train={self.n_train}")
        if self.n_test < 1 or self.splits < 1 or self.grid < 2:
            raise ValueError("n_test, splits must be >= 1 and grid >= 2")
        if not 1 <= self.vgp_inducing <= self.n_train:
            raise ValueError(f"vgp_inducing must be in [1, n_train], got {self.vgp_inducing}")

    @property
    def data_noise(self) -> float:
        """The generator's noise (the default depends on the data set)."""
        if self.noise is not None:
            return self.noise
        return 0.15 if self.dataset == "moons" else 0.08


@dataclass
class ToyResult:
    """Outcome of :func:`run`.

    Attributes:
        gpcis_accuracy: test accuracy of the MLP + GPHead.
        gpytorch_accuracy: test accuracy of GPyTorch's variational GP classifier.
        gpcis_seconds: wall-clock training time of gpcis.
        gpytorch_seconds: wall-clock training time of the GPyTorch model.
        png: path of the figure, or None when no output folder was given.
    """

    gpcis_accuracy: float
    gpytorch_accuracy: float
    gpcis_seconds: float
    gpytorch_seconds: float
    png: Optional[Path] = None


def make_data(cfg: ToyConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train (n,2), y_train (n,), x_test, y_test)``; labels float in {0, 1}."""
    rng = np.random.default_rng(cfg.seed)
    gen = make_moons if cfg.dataset == "moons" else make_circles
    x, y = gen(cfg.n_train + cfg.n_test, cfg.data_noise, rng)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y).float()
    return x_t[: cfg.n_train], y_t[: cfg.n_train], x_t[cfg.n_train :], y_t[cfg.n_train :]


class DeepKernelClassifier(nn.Module):
    """Feature MLP ``(.., 2) -> (.., k)`` followed by :class:`GPHead` (deep kernel learning).

    Args:
        cfg: :class:`ToyConfig`.
    """

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Linear(2, cfg.hidden),
            nn.Tanh(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.Tanh(),
            nn.Linear(cfg.hidden, cfg.feature_dim),
        )
        self.head = GPHead(cfg.feature_dim, GPHeadConfig(num_features=cfg.num_features, seed=cfg.seed,
                                                         vi_kernel_grad=cfg.vi_kernel_grad))

    def forward(
        self, x_test: Tensor, x_click: Tensor, y_click: Tensor, return_variance: bool = False
    ):
        """Classify ``x_test (B, M, 2)`` from labelled points ``x_click (B, N, 2)``, ``y_click (B, N)`` in {0,1}.

        Returns:
            :class:`gpcis.gp.GPHeadOutput` (``mean`` = logits ``(B, M)``).
        """
        valid = torch.ones(y_click.shape, dtype=torch.bool, device=y_click.device)
        return self.head(
            self.features(x_test), self.features(x_click), y_click * 2 - 1, valid, return_variance=return_variance
        )


def train_gpcis(
    cfg: ToyConfig, x: Tensor, y: Tensor, progress: bool = True
) -> tuple[DeepKernelClassifier, float]:
    """Train the deep-kernel GP head on random click/target splits; returns (model in eval mode, seconds)."""
    torch.manual_seed(cfg.seed)
    model = DeepKernelClassifier(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n = x.shape[0]
    model.train()
    t0 = time.perf_counter()
    for _ in tqdm(range(cfg.steps), desc="gpcis", disable=not progress):
        perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(cfg.splits)])  # (B, n)
        ci, ti = perms[:, : cfg.clicks], perms[:, cfg.clicks :]
        out = model(x[ti], x[ci], y[ci])
        loss = F.binary_cross_entropy_with_logits(out.mean, y[ti]) + cfg.alpha * out.vi_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    return model.eval(), seconds


@torch.no_grad()
def predict_gpcis(model: DeepKernelClassifier, x_train: Tensor, y_train: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Probability of class 1 and latent std at ``x (M, 2)``, conditioned on the training set."""
    out = model(x[None], x_train[None], y_train[None], return_variance=True)
    return torch.sigmoid(out.mean[0]), out.variance[0].sqrt()


def _make_vgp(inducing: Tensor):
    import gpytorch

    class VariationalGPClassifier(gpytorch.models.ApproximateGP):
        def __init__(self, z: Tensor) -> None:
            dist = gpytorch.variational.CholeskyVariationalDistribution(z.shape[0])
            strategy = gpytorch.variational.VariationalStrategy(self, z, dist, learn_inducing_locations=True)
            super().__init__(strategy)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

        def forward(self, x: Tensor):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))

    return VariationalGPClassifier(inducing)


def train_gpytorch(cfg: ToyConfig, x: Tensor, y: Tensor, progress: bool = True):
    """Train GPyTorch's variational GP classifier (VariationalELBO); returns (model, likelihood, seconds)."""
    import gpytorch

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    inducing = x[torch.randperm(x.shape[0], generator=gen)[: cfg.vgp_inducing]].clone()
    model = _make_vgp(inducing)
    likelihood = gpytorch.likelihoods.BernoulliLikelihood()
    mll = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=x.shape[0])
    opt = torch.optim.Adam(list(model.parameters()) + list(likelihood.parameters()), lr=cfg.vgp_lr)
    model.train()
    likelihood.train()
    t0 = time.perf_counter()
    for _ in tqdm(range(cfg.steps), desc="gpytorch", disable=not progress):
        loss = -mll(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    return model.eval(), likelihood.eval(), seconds


@torch.no_grad()
def predict_gpytorch(model, likelihood, x: Tensor) -> Tensor:
    """Probability of class 1 at ``x (M, 2)``."""
    return likelihood(model(x)).mean


def _save_png(
    path: Path,
    cfg: ToyConfig,
    x_train: Tensor,
    y_train: Tensor,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    p_gpcis: np.ndarray,
    p_vgp: np.ndarray,
    std: np.ndarray,
    acc: tuple[float, float],
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ValueError("writing the PNG needs matplotlib (pip install 'gpcis[bench]')") from e
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    xs, ys = x_train.numpy(), y_train.numpy()
    panels = (
        (p_gpcis, f"gpcis MLP + GPHead: p(y=1), acc {acc[0]:.3f}", "RdBu_r", (0, 1)),
        (p_vgp, f"GPyTorch variational GP: p(y=1), acc {acc[1]:.3f}", "RdBu_r", (0, 1)),
        (std, "gpcis predictive std of f (Eq. S5)", "viridis", (None, None)),
    )
    for ax, (z, title, cmap, (lo, hi)) in zip(axes, panels):
        cs = ax.contourf(grid_x, grid_y, z, levels=20, cmap=cmap, vmin=lo, vmax=hi)
        fig.colorbar(cs, ax=ax)
        if lo is not None:
            ax.contour(grid_x, grid_y, z, levels=[0.5], colors="k", linewidths=1.5)
        ax.scatter(xs[:, 0], xs[:, 1], c=ys, cmap="coolwarm", s=8, edgecolors="k", linewidths=0.3)
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
    fig.suptitle(f"{cfg.dataset}: {cfg.n_train} training points, {cfg.steps} steps")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def run(cfg: ToyConfig, out_dir: Optional[Path] = None, progress: bool = True) -> ToyResult:
    """Train both classifiers, evaluate them on the test set and optionally plot.

    Args:
        cfg: :class:`ToyConfig`.
        out_dir: folder of the PNG (``gp_toy_<dataset>.png``); None: no figure.
        progress: show tqdm progress bars.

    Returns:
        :class:`ToyResult`.
    """
    x_tr, y_tr, x_te, y_te = make_data(cfg)
    model, t_gpcis = train_gpcis(cfg, x_tr, y_tr, progress)
    p_gpcis, _ = predict_gpcis(model, x_tr, y_tr, x_te)
    acc_gpcis = ((p_gpcis > 0.5).float() == y_te).float().mean().item()

    vgp, lik, t_vgp = train_gpytorch(cfg, x_tr, y_tr, progress)
    acc_vgp = ((predict_gpytorch(vgp, lik, x_te) > 0.5).float() == y_te).float().mean().item()

    png = None
    if out_dir is not None:
        lo = x_tr.min(0).values - 0.5
        hi = x_tr.max(0).values + 0.5
        gx, gy = np.meshgrid(
            np.linspace(lo[0].item(), hi[0].item(), cfg.grid), np.linspace(lo[1].item(), hi[1].item(), cfg.grid)
        )
        pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32))
        pg, std = predict_gpcis(model, x_tr, y_tr, pts)
        pv = predict_gpytorch(vgp, lik, pts)
        shape = gx.shape
        png = Path(out_dir) / f"gp_toy_{cfg.dataset}.png"
        _save_png(
            png, cfg, x_tr, y_tr, gx, gy,
            pg.reshape(shape).numpy(), pv.reshape(shape).numpy(), std.reshape(shape).numpy(),
            (acc_gpcis, acc_vgp),
        )  # fmt: skip
    return ToyResult(acc_gpcis, acc_vgp, t_gpcis, t_vgp, png)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="moons", choices=DATASETS)
    p.add_argument("--out", type=Path, default=Path("gp_toy_out"), help="folder of the PNG")
    p.add_argument("--steps", type=int, default=ToyConfig.steps)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-vi-kernel-grad", dest="vi_kernel_grad", action="store_false",
                   help="L_VI treats the kernel as a constant (the paper's released code; GPHeadConfig.vi_kernel_grad)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> ToyResult:
    """Command-line entry point: prints both methods side by side and returns the result."""
    args = build_parser().parse_args(argv)
    cfg = ToyConfig(dataset=args.dataset, steps=args.steps, seed=args.seed, vi_kernel_grad=args.vi_kernel_grad)
    res = run(cfg, args.out)
    print(f"{'method':<34} {'test accuracy':>13} {'train time (s)':>15}")
    print(f"{'gpcis MLP + GPHead (DKL)':<34} {res.gpcis_accuracy:>13.3f} {res.gpcis_seconds:>15.2f}")
    print(f"{'GPyTorch variational GP (ELBO)':<34} {res.gpytorch_accuracy:>13.3f} {res.gpytorch_seconds:>15.2f}")
    if res.png is not None:
        print(f"figure: {res.png}")
    return res


if __name__ == "__main__":
    main()
