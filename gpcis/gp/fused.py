r"""The GP head's mean path over many test points in one GPU kernel (Triton).

At inference the segmentation head needs, at every pixel ``x`` (supplement Eq. S15 with
``w = mu_w`` and ``f_n = m_xi``),

.. math:: f(x) = \sum_{r=1}^{l} w_r \cos(\theta_r^\top x + \tau_r)
                + \sum_{n=1}^{N} \alpha_n\, \eta_0 \exp\big(-\tfrac12 \lVert x - z_n \rVert_\eta^2\big),

where ``w`` already carries Phi's scale ``a sqrt(2/l)`` and ``alpha = (K_nn + eps^2 I)^{-1}
(m_xi - Phi(Z) w)``. Eagerly that is a ``(M, D) x (D, l)`` GEMM whose ``(M, l)`` result
(150 MB at 384^2) is written, read by ``cos``, written and read again by the product with
``w``, then the same for ``K_{*n}``: seven passes over large arrays and about 0.4 ms of
kernels on an H200. :func:`fused_mean_path` reads ``x`` once and writes ``f`` once: per block
of rows it forms the projections in registers (``tl.dot``), takes the cosine, reduces
against ``w``, and does the same for the kernel columns.

Only the float32 mean path of a 2-D ``Theta`` (unbatched kernel) is fused; everything else
(samples, variances, autograd, the CPU) stays on the PyTorch path of
:mod:`gpcis.gp.pathwise`, which is also the reference the tests compare this with.

Numerics: ``tl.dot`` runs with ``input_precision="tf32x3"`` on the GPU (three TF32
products per term: about float32 accuracy, ``~2^-21`` relative per product), the cosine
argument is reduced to ``[-pi, pi]`` in float32 and the cosine is the hardware one
(``__cosf``: absolute error <= 2^-21.4 there), and the kernel distances are centred at the
clicks' mean as in :class:`~gpcis.gp.kernels.ARDRBFKernel`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gpcis.gp.kernels import centred_clicks, click_exponents

try:  # Triton ships with PyTorch's CUDA wheels on Linux; without it the fused path is off
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - depends on the installation
    triton = None
    tl = None
    libdevice = None

__all__ = ["usable", "fused_mean_path"]

#: rows per program, basis functions per ``tl.dot`` (>= 16), warps per program: the fastest
#: configuration of a sweep on an H200 (384^2 x 51 features, l = 256, 24 clicks, tf32x3,
#: hardware cosine: 128 / 64 / 4 179 us; 64 / 64 / 4 252 us, 128 / 32 / 8 251 us)
_BLOCK_ROWS = 128
_BLOCK_FEATURES = 64
_NUM_WARPS = 4


def usable(x: Tensor) -> bool:
    """Whether :func:`fused_mean_path` runs for inputs like ``x``: Triton present and ``x`` a
    float32 CUDA tensor (the tests also run the kernel on the CPU in Triton's interpreter)."""
    return triton is not None and x.is_cuda and x.dtype == torch.float32


if triton is not None:

    @triton.jit
    def _mean_path_kernel(
        x_ptr, stride_xb, stride_xm, stride_xd,
        theta_ptr, tau_ptr, w_ptr,
        zt_ptr, e_ptr, alpha_ptr, centre_ptr, eta_ptr, log_eta0_ptr,
        out_ptr,
        M, D, L, N,
        HAS_PRIOR: tl.constexpr, HAS_UPDATE: tl.constexpr,
        BM: tl.constexpr, DP: tl.constexpr, BL: tl.constexpr, NP: tl.constexpr,
        PRECISION: tl.constexpr, FAST_COS: tl.constexpr,
    ):
        b = tl.program_id(1)
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        dims = tl.arange(0, DP)
        rmask = rows < M
        dmask = dims < D
        xmask = rmask[:, None] & dmask[None, :]
        x = tl.load(x_ptr + b * stride_xb + rows[:, None] * stride_xm + dims[None, :] * stride_xd,
                    mask=xmask, other=0.0)
        acc = tl.zeros([BM], dtype=tl.float32)
        if HAS_PRIOR:
            for l0 in range(0, L, BL):
                cols = l0 + tl.arange(0, BL)
                cmask = cols < L
                theta = tl.load(theta_ptr + dims[:, None] * L + cols[None, :],
                                mask=dmask[:, None] & cmask[None, :], other=0.0)
                tau = tl.load(tau_ptr + cols, mask=cmask, other=0.0)
                w = tl.load(w_ptr + b * L + cols, mask=cmask, other=0.0)
                arg = tl.dot(x, theta, input_precision=PRECISION) + tau[None, :]
                # to [-pi, pi] first, where the hardware cosine (FAST_COS, the GPU) has an
                # absolute error <= 2^-21.4 (CUDA programming guide, __cosf)
                arg = arg - 6.283185307179586 * tl.floor(arg * 0.15915494309189535 + 0.5)
                if FAST_COS:
                    cos = libdevice.fast_cosf(arg)
                else:  # Triton's interpreter (tests on the CPU) has no libdevice
                    cos = tl.cos(arg)
                acc += tl.sum(cos * w[None, :], axis=1)
        if HAS_UPDATE:
            ns = tl.arange(0, NP)
            nmask = ns < N
            centre = tl.load(centre_ptr + b * D + dims, mask=dmask, other=0.0)
            eta = tl.load(eta_ptr + dims, mask=dmask, other=0.0)
            a = tl.where(xmask, x - centre[None, :], 0.0)
            half_sq = 0.5 * tl.sum(a * a * eta[None, :], axis=1)
            zt = tl.load(zt_ptr + b * D * N + dims[:, None] * N + ns[None, :],
                         mask=dmask[:, None] & nmask[None, :], other=0.0)
            e = tl.load(e_ptr + b * N + ns, mask=nmask, other=0.0)
            alpha = tl.load(alpha_ptr + b * N + ns, mask=nmask, other=0.0)
            log_eta0 = tl.load(log_eta0_ptr)  # a device scalar: no host read of eta0
            # -|a - b|^2_eta / 2 + log eta0 = a.(eta b) - |a|^2_eta / 2 + e, at most log eta0
            expo = tl.dot(a, zt, input_precision=PRECISION) - half_sq[:, None] + e[None, :]
            k = tl.exp(tl.minimum(expo, log_eta0))
            acc += tl.sum(k * alpha[None, :], axis=1)
        tl.store(out_ptr + b * M + rows, acc, mask=rmask)


def fused_mean_path(
    x: Tensor,
    theta: Tensor,
    tau: Tensor,
    w: Tensor,
    z: Tensor,
    precision: Tensor,
    outputscale: Tensor,
    alpha: Tensor,
    input_precision: str = "tf32x3",
    block_rows: int = _BLOCK_ROWS,
    block_features: int = _BLOCK_FEATURES,
    num_warps: int = _NUM_WARPS,
) -> Tensor:
    r"""``f(x) = cos(x Theta + tau) w + K(x, Z) alpha`` at every row of ``x``, fused.

    Args:
        x: ``(B, M, D)`` float32 test inputs, any strides (e.g. a channel-major feature
            map seen as ``(B, HW, D)``).
        theta: ``(D, l)`` frequencies (``FourierFeatureKernel.frequencies()``).
        tau: ``(l,)`` phases.
        w: ``(B, l)`` weights, Phi's scale ``a sqrt(2/l)`` included; ``l = 0`` (or a
            ``(B, 0)`` tensor) leaves out the prior path.
        z: ``(B, N, D)`` click inputs (padding included; give it ``alpha = 0``); ``N = 0``
            leaves out the update.
        precision: ``(D,)`` ARD precisions ``eta_t``.
        outputscale: scalar ``eta0``.
        alpha: ``(B, N)`` update weights ``(K_nn + eps^2 I)^{-1} r`` (0 at padding).
        input_precision: of ``tl.dot``: ``"tf32x3"`` (default) or ``"ieee"``.
        block_rows, block_features, num_warps: launch configuration (rows per program,
            basis functions per ``tl.dot``, warps per program).

    Returns:
        ``(B, M)`` float32.
    """
    if triton is None:
        raise RuntimeError("fused_mean_path needs Triton (pip install triton)")
    b, m, d = x.shape
    n, lf = z.shape[1], w.shape[-1]
    f32 = torch.float32
    x = x.to(f32)
    # kernel-side constants, centred at the clicks' mean as in ARDRBFKernel (centred_clicks)
    eta = precision.reshape(d).to(f32).contiguous()
    log_eta0 = outputscale.reshape(1).log().to(f32)
    if n:
        centre, root, bz = centred_clicks(z.to(f32), eta)  # (B, 1, D), (D,), (z - c) sqrt(eta)
        zt = (bz * root).transpose(1, 2).contiguous()  # (B, D, N): eta (z - c)
        e = click_exponents(bz, log_eta0).contiguous()  # (B, N): ln eta0 - |z - c|^2_eta / 2
        alpha = alpha.to(f32).contiguous()
        centre = centre[:, 0].contiguous()
    else:
        centre = zt = e = alpha = x.new_zeros(1)
    theta = theta.to(f32).contiguous()
    tau = tau.to(f32).contiguous()
    w = w.to(f32).expand(b, lf).contiguous()
    out = x.new_empty(b, m)
    if m == 0 or b == 0:
        return out
    dp = max(16, triton.next_power_of_2(d))
    np_ = max(16, triton.next_power_of_2(max(n, 1)))
    grid = (triton.cdiv(m, block_rows), b)
    _mean_path_kernel[grid](
        x, x.stride(0), x.stride(1), x.stride(2),
        theta, tau, w, zt, e, alpha, centre, eta, log_eta0, out,
        m, d, lf, n,
        HAS_PRIOR=lf > 0, HAS_UPDATE=n > 0,
        BM=block_rows, DP=dp, BL=block_features, NP=np_, PRECISION=input_precision,
        FAST_COS=x.is_cuda, num_warps=num_warps,
    )
    return out
