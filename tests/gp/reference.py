"""An exact GP posterior written independently in float64 numpy (the tests' reference)."""

from __future__ import annotations

import numpy as np


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
