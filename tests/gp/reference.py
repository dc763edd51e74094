"""An exact GP posterior written independently in float64 numpy (the tests' reference), and
the float64 mean path with the error bound of its float32 one-pass evaluation."""

from __future__ import annotations

import numpy as np
import torch


def rbf(x1: np.ndarray, x2: np.ndarray, eta0: float, eta: np.ndarray) -> np.ndarray:
    d = (x1[:, None, :] - x2[None, :, :]) ** 2
    return eta0 * np.exp(-0.5 * (d * eta).sum(-1))


def exact_posterior(
    xs: np.ndarray,
    xn: np.ndarray,
    fn_mean: np.ndarray,
    eta0: float,
    eta: np.ndarray,
    noise: float,
    click_variance: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of f_* = g_* + K_*n A^-1 (f_n - g_n), g ~ GP(0, k), f_n ~ N(m, s^2 I).

    A = K_nn + noise I. With s^2 = noise this is the textbook posterior (Eqs. S4/S5):
    mu = K_*n A^-1 m, Sigma = K_** - K_*n A^-1 K_n*. In general
    Sigma = K_** - 2 K_*n A^-1 K_n* + K_*n A^-1 (K_nn + s^2 I) A^-1 K_n*.
    """
    s2 = noise if click_variance is None else click_variance
    kss = rbf(xs, xs, eta0, eta)
    ksn = rbf(xs, xn, eta0, eta)
    knn = rbf(xn, xn, eta0, eta)
    a = knn + noise * np.eye(len(xn))
    g = np.linalg.solve(a, ksn.T).T  # K_*n A^-1
    mu = g @ fn_mean
    cov = kss - 2 * g @ ksn.T + g @ (knn + s2 * np.eye(len(xn))) @ g.T
    return mu, cov


def kernel_relative_error(x, z, eta, eta0, u=2.0**-24):
    """``(B, M, N)`` bound on the relative error of the one-pass kernel values ``k(x_m, z_n)``
    (:func:`gpcis.gp.pathwise.blocked_mean_path`; the derivation is the click part of
    :func:`mean_path_exact_and_bound`'s): the exponent's error plus 2 u for ``exp2``
    (underflow comes on top, as an absolute term)."""
    xd, zd, ed, e0 = (t.double() for t in (x, z, eta, eta0))
    d = xd.shape[-1]
    c = zd.mean(1, keepdim=True)
    a, bz = xd - c, zd - c
    t = (a.abs()[:, :, None] * bz.abs()[:, None] * ed).sum(-1) + ((xd.abs() + c.abs()) ** 2 * ed).sum(-1)[..., None] \
        + (bz**2 * ed).sum(-1)[:, None]
    err_e = 2 * ((d + 9) * u * t + (d + 5) * u * abs(float(np.log(float(e0)))))
    return err_e + 2 * u


def mean_path_exact_and_bound(x, theta, tau, w, z, eta, eta0, alpha, u=2.0**-24):
    """float64 value of ``f`` and a bound on :func:`gpcis.gp.pathwise.blocked_mean_path`'s error at each point,
    counted for its operations in a precision of unit roundoff ``u`` (gamma_k ~ k u):

    * projection r: ``x_t - c_t`` (c the clicks' mean) rounds by u |x_t - c_t|; the bias
      ``c.theta_r + tau_r`` (D + 1 terms) by gamma_{D+1} (sum |c_t theta_tr| + |tau_r|); the
      GEMM row (D + 1 terms, the bias one of them) by gamma_{D+1} times the sum of its |terms|.
      With S'_r = sum_t (|x_t| + |c_t|) |theta_tr| + |tau_r| bounding each of those sums,
      the argument's error is <= (3 D + 6) u S'_r; the cosine's range reduction adds
      4 u (|arg| + pi) and an accurate cosine u.
    * click n: the exponent (in natural-log units; base 2 inside, the base change adds
      rounding relative to the exponent's size) is ``-|u|^2_eta / 2 + u.(eta b) + e`` with
      ``b = z_n - c``, ``e = ln eta0 - |b|^2_eta / 2``: |u|^2_eta by squares and a D-term sum,
      eta b and e by a few roundings per entry, the GEMM row by gamma_{D+1}, the final
      addition and the scaling by 1 / ln 2 by u relative each. With
      T = sum_t eta_t (|u_t| |b_t| + u_t^2 + b_t^2), |u_t| <= |x_t| + |c_t|, the error is
      <= (D + 9) u T + (D + 5) u |ln eta0| (``e``, one of the GEMM row's D + 1 terms, carries
      ``ln eta0``), doubled here for the per-entry roundings not counted one by one; exp2
      adds 2 u relative.
    * the product with ``[w, alpha]`` (l + N terms): (l + N + 1) u sum of |terms|; 2 u |f|
      for the output.
    * underflow: a kernel value or product below the smallest normal number (2^-126 in
      float32, 2^-1022 in float64) may be off by up to that number (a subnormal's lost
      digits, or flushed to zero), so each point also gets ``tiny (1 + sum_n |alpha_n|) +
      (l + N) tiny``.
    """
    xd, thd, tad, wd, zd, ed, e0, ad = (t.double() for t in (x, theta, tau, w, z, eta, eta0, alpha))
    b, m, d = xd.shape
    wd = wd.expand(b, thd.shape[1])
    c = zd.mean(1, keepdim=True) if zd.shape[1] else torch.zeros(b, 1, d, dtype=torch.float64)
    arg = xd @ thd + tad
    s = (xd.abs() + c.abs()) @ thd.abs() + tad.abs()
    err_arg = (3 * d + 6) * u * s + 4 * u * (arg.abs() + np.pi) + u
    terms = (torch.cos(arg) * wd[:, None]).abs()
    f = (torch.cos(arg) * wd[:, None]).sum(-1)
    err = (err_arg * wd[:, None].abs()).sum(-1)
    count = thd.shape[1]
    if zd.shape[1]:
        sq = ((xd[:, :, None] - zd[:, None]) ** 2 * ed).sum(-1)
        k = e0 * torch.exp(-0.5 * sq)
        f = f + (k * ad[:, None]).sum(-1)
        err = err + (kernel_relative_error(x, z, eta, eta0, u) * k * ad[:, None].abs()).sum(-1)
        terms = torch.cat([terms, (k * ad[:, None]).abs()], dim=-1)
        count += zd.shape[1]
    err = err + (count + 1) * u * terms.sum(-1)
    tiny = 2.0**-126 if u >= 2.0**-24 else 2.0**-1022
    err = err + tiny * (1 + ad.abs().sum(-1, keepdim=True) + count)
    return f, err + 2 * u * f.abs()


def mean_path_problem(b=2, m=257, d=11, lf=40, n=6, seed=0, device="cpu", channel_major=True):
    """Operands ``(x, theta, tau, w, z, eta, eta0, alpha)`` of a mean path
    (:func:`gpcis.gp.fused.fused_mean_path`, :func:`gpcis.gp.pathwise.blocked_mean_path`):
    ``x`` channel-major (a ``(B, D, M)`` array seen as ``(B, M, D)``) or row-major, clicks
    near test points, batch item 1 with its last two clicks padded (``alpha = 0``; they
    still count in the clicks' mean)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, m, generator=g).transpose(1, 2) if channel_major else torch.randn(b, m, d, generator=g)
    theta = torch.randn(d, lf, generator=g)
    tau = torch.rand(lf, generator=g) * 2 * np.pi
    w = torch.randn(b, lf, generator=g) * 0.2
    z = x[:, :n].clone() + 0.3 * torch.randn(b, n, d, generator=g)
    eta = torch.rand(d, generator=g) * 0.5 + 0.05
    eta0 = torch.tensor(1.3)
    alpha = torch.randn(b, n, generator=g)
    alpha[1, n - 2:] = 0.0
    return [t.to(device) for t in (x, theta, tau, w, z, eta, eta0, alpha)]
