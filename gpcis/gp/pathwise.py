r"""Pathwise (Matheron) posterior sampling, decoupled into a prior path and an update path.

Supplement Eq. S15 (Alg. S2 line 10, whose ``K_{m,n} + eps^2 I`` is a typo for
``K_{n,n} + eps^2 I``):

.. math::
    f_* = \underbrace{\Phi(X_*) w}_{\text{prior path}}
        + \underbrace{K_{*n} (K_{nn} + \varepsilon^2 I)^{-1} (f_n - \Phi(X_n) w)}_{\text{update path}}

All functions are batched over a leading batch dimension ``B`` (images) with ``N``
click points per item, some of which may be padding (``valid == False``). Padding has
exactly no effect: padded rows/columns of ``K_nn + eps^2 I`` are replaced by those of the
identity, padded residuals and cross-covariances are zeroed, so the solve is
block-diagonal and each item's result equals the unpadded computation.

The ``N x N`` system is factorised by Cholesky (with jitter escalation through
``linear_operator``'s ``psd_safe_cholesky``) in ``solve_dtype`` (float64 by default: the
system is tiny, and a small evaluation noise makes it ill-conditioned in float32);
no explicit inverse is ever formed.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
from gpytorch.kernels import Kernel
from linear_operator.utils.cholesky import psd_safe_cholesky
from linear_operator.utils.warnings import NumericalWarning
from torch import Tensor

from gpcis.gp.kernels import FourierFeatureKernel, block_rows, centred_clicks, click_exponents

__all__ = [
    "click_gram_cholesky",
    "click_gram_cholesky_ex",
    "solve_clicks",
    "update_weights",
    "prior_path",
    "update_path",
    "blocked_mean_path",
    "click_l_inv",
    "pathwise_posterior",
    "predictive_variance",
]

#: jitter escalation: first try adds this (relative to the largest diagonal entry), then x10 ...
DEFAULT_JITTER = 1e-8
DEFAULT_MAX_TRIES = 8
#: rows per block of the inference-time prior path on the CPU (one block on a GPU)
_ROW_BLOCK = 8192
#: test points per block of :func:`blocked_mean_path` on the CPU (the block's projections,
#: (l + N) x rows, stay in cache)
_MEAN_BLOCK = 4096
#: test points per block of the predictive variance on the CPU (one block on a GPU): the
#: (N, block) products stay in cache (512^2 x 20 clicks, 1 thread: 6.3 -> 4.4 ms)
_VAR_BLOCK = 16384


def _dense(k) -> Tensor:
    return k.to_dense() if hasattr(k, "to_dense") else k


def _click_system(kernel: Kernel, x_click: Tensor, valid: Tensor, noise: float, solve_dtype: torch.dtype) -> Tensor:
    """``K_nn + noise I`` with the rows and columns of padded clicks replaced by the identity's."""
    v = valid.to(solve_dtype)
    k_nn = _dense(kernel(x_click)).to(solve_dtype)
    k_nn = k_nn * v.unsqueeze(-1) * v.unsqueeze(-2)
    return k_nn + torch.diag_embed(noise * v + (1.0 - v))


def click_gram_cholesky(
    kernel: Kernel,
    x_click: Tensor,
    valid: Tensor,
    noise: float,
    solve_dtype: torch.dtype = torch.float64,
    jitter: float = DEFAULT_JITTER,
    max_tries: int = DEFAULT_MAX_TRIES,
) -> Tensor:
    """Lower Cholesky factor of the padded system ``K_nn + noise I`` (identity at padding).

    Args:
        kernel: a GPyTorch kernel (e.g. :class:`~gpcis.gp.kernels.ARDRBFKernel`).
        x_click: ``(B, N, D)`` click inputs.
        valid: ``(B, N)`` bool mask.
        noise: ``eps^2`` added to the diagonal at valid clicks.
        solve_dtype: dtype of the factorisation.
        jitter: first jitter (relative to the largest diagonal entry) if the matrix is
            not numerically positive definite; escalated x10 up to ``max_tries`` times.
        max_tries: number of escalations.

    Returns:
        ``(B, N, N)`` lower-triangular factor in ``solve_dtype``.
    """
    if x_click.shape[-2] == 0 or x_click.shape[0] == 0:  # no clicks, or an empty batch
        return x_click.new_zeros(*valid.shape, valid.shape[-1], dtype=solve_dtype)
    a = _click_system(kernel, x_click, valid, noise, solve_dtype)
    scale = a.diagonal(dim1=-2, dim2=-1).amax().clamp_min(1.0).item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        return psd_safe_cholesky(a, jitter=jitter * scale, max_tries=max_tries)


def click_gram_cholesky_ex(
    kernel: Kernel,
    x_click: Tensor,
    valid: Tensor,
    noise: float,
    solve_dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    """:func:`click_gram_cholesky` without host synchronisation (e.g. inside a CUDA graph).

    The first try of :func:`click_gram_cholesky` (no jitter) and nothing else: the factor
    equals that function's whenever it needs no jitter, and ``info`` says whether it did.
    The factorisation runs per batch item (``torch.linalg.cholesky_ex`` of one matrix goes
    to cuSOLVER on a GPU; batched calls may go to MAGMA, which is not graph-safe).

    Returns:
        ``(chol, info)``: the ``(B, N, N)`` factor in ``solve_dtype`` and ``(B,)`` int
        ``info`` from ``torch.linalg.cholesky_ex`` (0: success; ``i > 0``: the leading
        minor of order ``i`` is not positive definite, and ``chol`` is not usable).
    """
    if x_click.shape[-2] == 0:
        return (x_click.new_zeros(*valid.shape, 0, dtype=solve_dtype),
                torch.zeros(valid.shape[0], dtype=torch.int32, device=valid.device))
    a = _click_system(kernel, x_click, valid, noise, solve_dtype)
    factors = [torch.linalg.cholesky_ex(a[i]) for i in range(a.shape[0])]
    return torch.stack([f.L for f in factors]), torch.stack([f.info for f in factors])


def solve_clicks(chol: Tensor, rhs: Tensor) -> Tensor:
    """``(K_nn + eps^2 I)^{-1} rhs`` from the Cholesky factor: two triangular solves
    (``L^{-T} L^{-1} rhs``; the steps of ``torch.cholesky_solve``, which on a GPU may go
    to MAGMA and cannot be captured in a CUDA graph).

    Args:
        chol: ``(B, N, N)`` factor from :func:`click_gram_cholesky`.
        rhs: ``(B, N)`` or ``(S, B, N)`` right-hand sides (any float dtype).

    Returns:
        Same shape as ``rhs``, in ``chol``'s dtype.
    """
    squeeze = rhs.dim() == 2
    r = rhs.unsqueeze(0) if squeeze else rhs  # (S, B, N)
    r = r.to(chol.dtype).permute(1, 2, 0)  # (B, N, S)
    y = torch.linalg.solve_triangular(chol, r, upper=False)
    sol = torch.linalg.solve_triangular(chol.mT, y, upper=True).permute(2, 0, 1)  # (S, B, N)
    return sol.squeeze(0) if squeeze else sol


class _CosFeatureMatmul(torch.autograd.Function):
    """``cos(x Theta + tau) @ w`` with a hand-written backward.

    The ``(B, M, l)`` feature array is the largest tensor of the GP layer (M = every
    pixel); autograd's generic backward passes over it five times (sin, neg, mul and two
    layout copies). This backward passes over it three times and never forms Phi's
    transpose. Inputs: ``x (B, M, D)``, ``theta (D, l)``, ``tau (l,)``, ``w (B, l, S)``;
    output ``(B, M, S)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, theta: Tensor, tau: Tensor, w: Tensor) -> Tensor:  # type: ignore[override]
        b, m, d = x.shape
        proj = torch.addmm(tau, x.reshape(b * m, d), theta).view(b, m, theta.shape[-1])
        cos = torch.cos(proj)
        ctx.save_for_backward(x, theta, w, proj, cos)
        return torch.bmm(cos, w)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, theta, w, proj, cos = ctx.saved_tensors
        grad_x = grad_theta = grad_tau = grad_w = None
        if ctx.needs_input_grad[3]:
            grad_w = torch.bmm(cos.transpose(1, 2), grad)
        if any(ctx.needs_input_grad[:3]):
            # d/dproj = -sin(proj) * (grad @ w^T); the minus sign goes on the small results.
            g = torch.sin(proj).mul_(torch.bmm(grad, w.transpose(1, 2)))  # (B, M, l)
            b, m, l = g.shape
            if ctx.needs_input_grad[0]:
                grad_x = -(g @ theta.T)
            if ctx.needs_input_grad[1]:
                grad_theta = -(x.reshape(b * m, -1).T @ g.view(b * m, l))
            if ctx.needs_input_grad[2]:
                grad_tau = -g.sum(dim=(0, 1))
        return grad_x, grad_theta, grad_tau, grad_w


def prior_path(rff: FourierFeatureKernel, x: Tensor, w: Tensor) -> Tensor:
    """Prior path ``Phi(x) w`` (Eq. S13).

    The scale of Phi is folded into ``w`` (``Phi w = cos(x Theta + tau) (a sqrt(2/l) w)``),
    so the ``(M, l)`` feature array is formed once, and its backward is fused
    (:class:`_CosFeatureMatmul`).

    Args:
        rff: the feature map.
        x: ``(B, M, D)`` inputs.
        w: ``(S, B, l)`` weights (one draw per sample and batch item).

    Returns:
        ``(S, B, M)``.
    """
    scale = rff.feature_scale()
    if scale.dim() > 0:  # batched spectral kernel: one amplitude per batch item
        scale = scale.unsqueeze(-1)
    w_bls = (w * scale).permute(1, 2, 0)  # (B, l, S)
    theta = rff.frequencies()
    if theta.dim() != 2:
        return torch.einsum("bml,sbl->sbm", rff.cos_features(x), w * scale)
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (x, theta, rff.tau, w_bls)):
        # Inference on the CPU: in row blocks, so the (M, l) features are never held at once
        # (a fresh multi-hundred-MB buffer per call costs more in page faults than the
        # matmul). On a GPU one block: each block costs kernel launches, and a 384^2 image
        # in 8192-row blocks spent more time launching than computing.
        b, m, _ = x.shape
        rows = block_rows(m, _ROW_BLOCK, x.device)
        out = x.new_empty(b, m, w_bls.shape[-1])
        for i in range(0, m, rows):
            out[:, i : i + rows] = torch.bmm(rff.cos_features(x[:, i : i + rows]), w_bls)
    else:
        out = _CosFeatureMatmul.apply(x, theta, rff.tau, w_bls)
    return out.permute(2, 0, 1)


def update_weights(chol: Tensor, residual: Tensor, valid: Tensor, dtype: torch.dtype) -> Tensor:
    """``alpha = (K_nn + eps^2 I)^{-1} r`` of the update path, 0 at padded clicks.

    Args:
        chol: ``(B, N, N)`` factor from :func:`click_gram_cholesky`.
        residual: ``(B, N)`` or ``(S, B, N)`` ``r = f_n - Phi(X_n) w``; padded entries ignored.
        valid: ``(B, N)`` bool.
        dtype: of the result.

    Returns:
        Same shape as ``residual``.
    """
    alpha = solve_clicks(chol, residual * valid.to(residual.dtype)).to(dtype)
    return alpha * valid.to(dtype)


def update_path(
    kernel: Kernel,
    x_test: Tensor,
    x_click: Tensor,
    residual: Tensor,
    valid: Tensor,
    noise: float,
    chol: Optional[Tensor] = None,
    k_star_n: Optional[Tensor] = None,
) -> Tensor:
    r"""Update path ``K_{*n} (K_nn + eps^2 I)^{-1} r`` (the second term of Eq. S15).

    With ``r = y - m(X_n)`` and a prior mean ``m``, ``m(X_*) + update_path(...)`` is the
    exact GP posterior mean (Eq. S4).

    Args:
        kernel: GPyTorch kernel k.
        x_test: ``(B, M, D)``.
        x_click: ``(B, N, D)``.
        residual: ``(B, N)`` or ``(S, B, N)``; padded entries are ignored.
        valid: ``(B, N)`` bool.
        noise: ``eps^2``.
        chol: optional precomputed :func:`click_gram_cholesky` factor.
        k_star_n: optional precomputed cross-covariance ``k(x_test, x_click)``, ``(B, M, N)``.

    Returns:
        ``(B, M)`` or ``(S, B, M)`` in ``x_test``'s dtype.
    """
    if x_click.shape[-2] == 0:
        shape = (*residual.shape[:-1], x_test.shape[-2])
        return x_test.new_zeros(shape)
    if chol is None:
        chol = click_gram_cholesky(kernel, x_click, valid, noise)
    alpha = update_weights(chol, residual, valid, x_test.dtype)
    if k_star_n is None and hasattr(kernel, "weighted_sum"):
        # ARDRBFKernel: K_{*n} alpha without forming K_{*n} where it is large (inference)
        if alpha.dim() == 2:
            return kernel.weighted_sum(x_test, x_click, alpha.unsqueeze(-2)).squeeze(-2)
        return kernel.weighted_sum(x_test, x_click, alpha.transpose(0, 1)).transpose(0, 1)  # (B, S, M) -> (S, B, M)
    if k_star_n is None:
        k_star_n = _dense(kernel(x_test, x_click))  # (B, M, N)
    # alpha^T k_{n*}: rows of alpha against k_{n*} = k_{*n}^T, a wide (S, N) x (N, M) product;
    # it reads k_{*n} in either memory layout (ARDRBFKernel may store it transposed) without a
    # copy, where k_{*n} @ alpha with several columns and a transposed k_{*n} does not.
    k_n_star = k_star_n.mT
    if alpha.dim() == 2:
        return torch.matmul(alpha.unsqueeze(-2), k_n_star).squeeze(-2)
    return torch.matmul(alpha.transpose(0, 1), k_n_star).transpose(0, 1)  # (B, S, M) -> (S, B, M)


def blocked_mean_path(
    x: Tensor,
    theta: Tensor,
    tau: Tensor,
    w: Tensor,
    z: Tensor,
    precision: Tensor,
    outputscale: Tensor,
    alpha: Tensor,
    rows: int = _MEAN_BLOCK,
    l_inv: Optional[Tensor] = None,
    variance_correction: float = 0.0,
) -> tuple[Tensor, Optional[Tensor]]:
    r"""The mean path at inference, ``prior_path + update_path`` (Eq. S15 with ``w = mu_w``),
    and optionally the marginal variance (Eq. S5, :func:`predictive_variance`), in one pass
    over ``x``:

    .. math:: f(x) = \sum_{r=1}^{l} w_r \cos(\theta_r^\top x + \tau_r)
                    + \sum_{n=1}^{N} \alpha_n\, \eta_0 \exp\big(-\tfrac12 \lVert x - z_n \rVert_\eta^2\big)

    (the CPU counterpart of :func:`gpcis.gp.fused.fused_mean_path`, same operands). Per block
    of rows, ``u = x - c`` (``c`` the clicks' mean, the centring of
    :class:`~gpcis.gp.kernels.ARDRBFKernel`) with a column of ones goes through one GEMM
    against the stacked rows ``[Theta^T, c Theta + tau]`` (the projections ``x Theta + tau``)
    and ``-2 k [eta (z_n - c), e_n]`` (the clicks' part of the exponent in base 2,
    ``k = -1 / (2 ln 2)``, ``e_n = ln eta0 - |z_n - c|^2_eta / 2``), so ``x`` is read once and the
    clicks cost ``N`` more rows of a GEMM that is ``l`` rows tall anyway; as separate products
    the ``N``-row GEMM ran at a quarter of the tall one's speed. Then the cosines, the
    exponents completed by ``k |u|^2_eta``, clamped at ``log2 eta0`` (distances >= 0) and
    ``exp2``, and one product with ``[w, alpha]``. 384^2 pixels, 102 dimensions, l = 256, two
    threads of the project's CPU: 68 / 71 ms at 1 / 20 clicks against 72 / 78 ms for
    :func:`prior_path` plus :func:`update_path` (docs/gp_layer.md). With ``l_inv`` the
    block's kernel values also give the variance ``eta0 - |L^{-1} k_{n*}|^2 (+ (s^2 - eps^2)
    |L^{-T} L^{-1} k_{n*}|^2)`` while in cache, so ``K_{*n}`` is never formed whole.

    Args:
        x: ``(B, M, D)`` test inputs, any strides (e.g. a channel-major feature map seen as
            ``(B, HW, D)``).
        theta: ``(D, l)`` frequencies; ``l = 0`` leaves out the prior path.
        tau: ``(l,)`` phases.
        w: ``(B, l)`` or ``(l,)`` weights, Phi's scale ``a sqrt(2/l)`` included.
        z: ``(B, N, D)`` (or ``(1, N, D)``) clicks (padding included, with ``alpha = 0`` and finite
            rows, e.g. :func:`~gpcis.gp.head.neutral_padding`'s);
            ``N = 0`` leaves out the update.
        precision: ``eta``, ``D`` entries.
        outputscale: ``eta0``, one entry.
        alpha: ``(B, N)`` update weights ``(K_nn + eps^2 I)^{-1} r`` (:func:`update_weights`).
        rows: rows per block on the CPU (one block on other devices).
        l_inv: ``(B, N, N)`` :func:`click_l_inv` (zero columns at padding) to also return
            the variance, products in its dtype cast to ``x``'s; ``None``: mean only.
        variance_correction: ``s^2 - eps^2`` of :func:`predictive_variance` (0: the exact
            GP posterior's variance).

    Returns:
        ``(mean, variance)``: ``(B, M)`` each in ``x``'s dtype; ``variance`` is ``None``
        without ``l_inv`` (clamped at 0 like :func:`predictive_variance`'s).

    Raises:
        RuntimeError: an operand requires grad (it writes into reused buffers: inference
            only; :func:`prior_path` and :func:`update_path` are differentiable).
    """
    operands = (x, theta, tau, w, z, precision, outputscale, alpha) + ((l_inv,) if l_inv is not None else ())
    if torch.is_grad_enabled() and any(t.requires_grad for t in operands):
        raise RuntimeError("blocked_mean_path is for inference (no autograd): call it under torch.no_grad(), "
                           "or use prior_path + update_path")
    b, m, d = x.shape
    n, l = z.shape[-2], theta.shape[-1]
    z = z.expand(b, n, d)
    dtype = x.dtype
    k = -0.5 / math.log(2.0)
    eta = precision.reshape(d).to(dtype)
    log_eta0 = outputscale.reshape(()).to(dtype).log()
    if n:
        centre, root, bz = centred_clicks(z.to(dtype), eta)  # (B, 1, D), (D,), (z - c) sqrt(eta)
        e = click_exponents(bz, log_eta0)  # (B, N)
        click_rows = torch.cat([bz * root, e.unsqueeze(-1)], dim=-1) * (-2.0 * k)  # (B, N, D + 1)
        alpha = alpha.to(dtype).expand(b, n)
    else:
        centre = x.new_zeros(b, 1, d)
        click_rows, alpha = x.new_zeros(b, 0, d + 1), x.new_zeros(b, 0)
    theta, tau = theta.to(dtype), tau.to(dtype)
    proj_rows = torch.cat([theta.mT.expand(b, l, d), (centre @ theta + tau).mT], dim=-1)  # (B, l, D + 1)
    lhs = torch.cat([proj_rows, click_rows], dim=-2)  # (B, l + N, D + 1)
    weights = torch.cat([w.to(dtype).expand(b, l), alpha], dim=-1).unsqueeze(-2)  # (B, 1, l + N)
    eta_k = (eta * k).unsqueeze(0)  # (1, D)
    log2_eta0 = log_eta0 / math.log(2.0)
    rows = block_rows(m, rows, x.device)
    # a channel-major x (the segmentation head's feature map) is read in (D, rows) blocks,
    # a row-major one in (rows, D) blocks: each read along its contiguous dimension
    channel_major = m > 1 and x.stride(-2) == 1 and x.stride(-1) != 1
    u = x.new_empty(d + 1, rows) if channel_major else x.new_empty(rows, d + 1)  # [x - c; 1]
    (u[d] if channel_major else u[:, d]).fill_(1.0)
    sq = x.new_empty(u.shape)
    asq = x.new_empty(1, rows)
    g = x.new_empty(l + n, rows)
    out = x.new_empty(b, m)
    var = None
    if l_inv is not None:
        l_inv = l_inv.to(dtype).expand(b, n, n)
        eta0 = outputscale.reshape(()).to(dtype)  # k(x, x), as predictive_variance's (not exp(ln eta0))
        var = x.new_empty(b, m)
        if not n:
            var.copy_(eta0.expand(b, m))
        lz = x.new_empty(n, rows)  # L^{-1} k_{n*} of a block
        az = x.new_empty(n, rows) if variance_correction else None  # L^{-T} L^{-1} k_{n*}
    for i in range(b):
        for s in range(0, m, rows):
            r = min(rows, m - s)
            if channel_major:
                ub = torch.sub(x[i, s : s + r].mT, centre[i].mT, out=u[:d, :r])  # (D, r)
                torch.mm(eta_k, torch.mul(ub, ub, out=sq[:d, :r]), out=asq[:, :r])  # k |u|^2_eta
                rhs = u[:, :r]
            else:
                ub = torch.sub(x[i, s : s + r], centre[i], out=u[:r, :d])  # (r, D)
                torch.mm(eta_k, torch.mul(ub, ub, out=sq[:r, :d]).mT, out=asq[:, :r])
                rhs = u[:r].mT
            block = torch.mm(lhs[i], rhs, out=g[:, :r])  # (l + N, r)
            block[:l].cos_()
            if n:
                upd = block[l:].add_(asq[:, :r])  # log2 k(x, z_n)
                torch.minimum(upd, log2_eta0, out=upd).exp2_()  # minimum keeps NaN
            torch.mm(weights[i], block, out=out[i : i + 1, s : s + r])
            if var is not None and n:
                zb = torch.mm(l_inv[i], block[l:], out=lz[:, :r])
                vb = var[i, s : s + r]
                if az is not None:
                    ab = torch.mm(l_inv[i].mT, zb, out=az[:, :r])
                    torch.sub(eta0, zb.square_().sum(0), out=vb).add_(ab.square_().sum(0), alpha=variance_correction)
                else:
                    torch.sub(eta0, zb.square_().sum(0), out=vb)
    if var is not None:
        var.clamp_min_(0.0)
    return out, var


def pathwise_posterior(
    kernel: Kernel,
    rff: FourierFeatureKernel,
    x_test: Tensor,
    x_click: Tensor,
    f_click: Tensor,
    w: Tensor,
    valid: Tensor,
    noise: float,
    chol: Optional[Tensor] = None,
) -> Tensor:
    r"""Pathwise posterior ``f_* = Phi(X_*) w + K_{*n}(K_nn + eps^2 I)^{-1}(f_n - Phi(X_n) w)`` (Eq. S15).

    Args:
        kernel: kernel k_eta of the update.
        rff: feature map Phi of the prior.
        x_test: ``(B, M, D)``.
        x_click: ``(B, N, D)``.
        f_click: ``(S, B, N)`` values at the clicks (draws of q(f_n), or its mean).
        w: ``(S, B, l)`` prior weights (draws of the weight prior, or its mean).
        valid: ``(B, N)`` bool.
        noise: ``eps^2``.
        chol: optional precomputed Cholesky factor.

    Returns:
        ``(S, B, M)`` function values at the test points.
    """
    prior_test = prior_path(rff, x_test, w)
    if x_click.shape[-2] == 0:
        return prior_test
    prior_click = prior_path(rff, x_click, w)
    return prior_test + update_path(kernel, x_test, x_click, f_click - prior_click, valid, noise, chol)


def click_l_inv(chol: Tensor, valid: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """``L^{-1}`` of the click system's factor ``L L^T = K_nn + eps^2 I``, by a triangular
    solve of the ``(N, N)`` identity in the factor's dtype (never a general inverse), with
    zero columns at padded clicks (their rows of ``L`` are the identity's, so they drop out
    entirely); then cast to ``dtype``. The variance of Eq. S5 is
    ``k(x, x) - |L^{-1} k_{n*}|^2``.

    Args:
        chol: ``(B, N, N)`` from :func:`click_gram_cholesky`.
        valid: ``(B, N)`` bool.
        dtype: of the result (``None``: the factor's).

    Returns:
        ``(B, N, N)`` lower triangular.
    """
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
    l_inv = torch.linalg.solve_triangular(chol, eye, upper=False) * valid.to(chol.dtype).unsqueeze(-2)
    return l_inv.to(dtype or chol.dtype)


def predictive_variance(
    kernel: Kernel,
    x_test: Tensor,
    x_click: Tensor,
    valid: Tensor,
    noise: float,
    click_variance: Optional[float] = None,
    chol: Optional[Tensor] = None,
    k_star_n: Optional[Tensor] = None,
    solve_dtype: Optional[torch.dtype] = None,
) -> Tensor:
    r"""Marginal posterior variance at each test point (Eq. S5), diagonal only.

    .. math:: \sigma_*^2 = k(x_*, x_*) - k_{*n} A^{-1} k_{n*}
              + (s^2 - \varepsilon^2)\, \lVert A^{-1} k_{n*} \rVert^2,
              \quad A = K_{nn} + \varepsilon^2 I

    The last term is the correction for click values drawn from ``q(f_n) = N(m, s^2 I)``
    instead of observed with noise ``eps^2`` (it vanishes for ``click_variance=None``,
    i.e. ``s^2 = eps^2``, the exact GP posterior). It equals the variance of the
    pathwise samples of Eq. S15 when the prior path has covariance k (``"spectral"``
    features in the limit l -> infinity). Memory ``O(M N)``, time ``O(M N^2)``: the
    ``(N, M)`` triangular solve ``L^{-1} k_{n*}`` is done as a GEMM with ``L^{-1}``
    (itself an ``(N, N)`` triangular solve, never a general inverse), 3x faster at
    ``M = 512^2, N = 20`` on one CPU core; on the CPU in blocks of ``_VAR_BLOCK`` test
    points, so the ``(N, block)`` products stay in cache.

    Args:
        kernel: GPyTorch kernel.
        x_test: ``(B, M, D)``.
        x_click: ``(B, N, D)``.
        valid: ``(B, N)`` bool.
        noise: ``eps^2``.
        click_variance: ``s^2`` of ``q(f_n)``; ``None`` means ``eps^2``.
        chol: optional precomputed Cholesky factor.
        k_star_n: optional precomputed ``k(x_test, x_click)``, ``(B, M, N)`` (shared with
            :func:`update_path`).
        solve_dtype: dtype of the ``(M, N) x (N, N)`` products with ``L^{-1}`` (``None``:
            the factor's, float64); ``L^{-1}`` itself is a triangular solve in the
            factor's dtype. float32 is several times faster for large ``M N^2``; its
            rounding error is about ``N * |k_{*n}| |L^{-1}| * 1.2e-7``, of order
            ``1e-4 eta0`` in the variance for a badly conditioned click set.

    Returns:
        ``(B, M)`` variances (clamped at 0), in ``x_test``'s dtype.
    """
    prior_var = _dense(kernel(x_test, diag=True))  # (B, M) or (M,)
    prior_var = prior_var.expand(x_test.shape[:-1])
    if x_click.shape[-2] == 0:
        return prior_var.clone()
    if chol is None:
        chol = click_gram_cholesky(kernel, x_click, valid, noise)
    if k_star_n is None:
        k_star_n = _dense(kernel(x_test, x_click))
    dtype = solve_dtype or chol.dtype
    l_inv = click_l_inv(chol, valid, dtype)
    correct = click_variance is not None and click_variance != noise
    k_n_star = k_star_n.mT  # (B, N, M), a view in either memory layout
    m = x_test.shape[-2]
    var = prior_var.to(dtype).clone()
    cols = block_rows(m, _VAR_BLOCK, x_test.device)
    for i in range(0, m, cols):
        # columns of z are L^{-1} k_{n*}: one (N, N) x (N, cols) GEMM instead of an (N, cols) solve
        z = torch.matmul(l_inv, k_n_star[..., i : i + cols].to(dtype))
        if correct:  # columns: A^{-1} k_{n*} = L^{-T} L^{-1} k_{n*}
            a_inv_k = torch.matmul(l_inv.mT, z)
            var[..., i : i + cols] += (click_variance - noise) * a_inv_k.square().sum(-2)
        # out of place with autograd: the product above saved z for its backward
        var[..., i : i + cols] -= (z.square() if z.requires_grad else z.square_()).sum(-2)
    return var.clamp_min(0.0).to(x_test.dtype)
