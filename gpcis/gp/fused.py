r"""The GP head's inference on a GPU in a few kernels (Triton).

At inference the segmentation head needs, at every pixel ``x`` (supplement Eq. S15 with
``w = mu_w`` and ``f_n = m_xi``),

.. math:: f(x) = \sum_{r=1}^{l} w_r \cos(\theta_r^\top x + \tau_r)
                + \sum_{n=1}^{N} \alpha_n\, \eta_0 \exp\big(-\tfrac12 \lVert x - z_n \rVert_\eta^2\big),

where ``w`` already carries Phi's scale ``a sqrt(2/l)`` and ``alpha = (K_nn + eps^2 I)^{-1}
(m_xi - Phi(Z) w)``. The PyTorch path (:mod:`gpcis.gp.pathwise`) takes a few hundred small kernels
for it; on a GPU at interactive sizes their launches, not their arithmetic, set the time.
Here it takes five Triton kernels:

* :func:`pixel_features` -- the inputs ``X = [upsample(normalize(features)), image]`` of
  every pixel (Alg. S2 line 3), one buffer written once (plus a tiny kernel for the
  feature norms);
* :func:`click_system` -- everything on the click side in float64: per click (one program
  each) its row of ``K_nn + eps^2 I``, ``m_xi = softplus(MLP(z)) y`` (Eq. S11) and
  ``m_xi - Phi(z) w``; then (one program per image) the Cholesky factor and ``alpha`` by
  forward and back substitution, with ``info`` as ``torch.linalg.cholesky_ex`` reports it;
* :func:`mean_path_from_clicks` / :func:`fused_mean_path` -- ``f`` at every pixel: per block
  of rows the projections in registers (``tl.dot``), the cosine, the reduction against ``w``,
  and the same for the kernel columns; ``x`` read once, ``f`` written once (eagerly the
  ``(M, l)`` features, 150 MB at 384^2, are written and read several times).

H200, 384^2, 20 clicks: 20 + 2 us, 15-18 + 21-25 us and 113 us (51 input dimensions; 168 us
for 99, launch configurations per width: :func:`mean_path_config`); with the head's few
remaining small operations about 0.21 ms of kernels per click, against ~0.55 ms for the
PyTorch path.

Only the float32 mean path of a 2-D ``Theta`` (unbatched kernel) is fused, with up to
:data:`MAX_CLICKS` clicks; everything else (samples, variances, autograd, the CPU) stays on
the PyTorch path of :mod:`gpcis.gp.pathwise`, which is also the reference the tests compare
this with (in Triton's interpreter on the CPU, compiled on a GPU).

Numerics: the projections are three TF32 products per term on the GPU (``tl.dot``'s
``input_precision="tf32x3"``, or the same products with the rows split into TF32 parts once
per program: :class:`MeanPathConfig`'s ``split``; about float32 accuracy, ``~2^-21``
relative per product), the cosine
argument is reduced to ``[-pi, pi]`` in float32 and the cosine is the hardware one
(``__cosf``: absolute error <= 2^-21.4 there), and the kernel distances are centred at the
clicks' mean as in :class:`~gpcis.gp.kernels.ARDRBFKernel`. The click side runs in float64
from the float32 inputs (the PyTorch path factorises in float64 too, but forms ``K_nn``,
``m_xi`` and ``Phi(z) w`` in float32), so ``alpha`` is float64-accurate before its final
rounding to float32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
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

__all__ = [
    "usable", "fused_mean_path", "ClickSystem", "MAX_CLICKS", "click_system", "mean_path_from_clicks",
    "pixel_features", "mean_path_config", "MeanPathConfig", "padded_width", "LAUNCH_ENV",
]

class MeanPathConfig(NamedTuple):
    """Launch configuration of the mean-path kernel.

    Attributes:
        rows: rows (pixels) per program.
        features: basis functions per ``tl.dot`` (>= 16).
        warps: warps per program.
        stages: software-pipeline stages (``None``: Triton's default).
        split: the three-TF32-product evaluation of the projections with each row's split
            into TF32 high and low parts done once per program (``True``), or Triton's
            ``tf32x3``, which splits both operands at every ``tl.dot`` (``False``); the
            same products and error bound either way (see the module's numerics).
    """

    rows: int
    features: int
    warps: int
    stages: Optional[int]
    split: bool = False


#: per padded input width (a power of two >= 16; D = 51 -> 64, 99 -> 128), the fastest
#: configuration of an H200 sweep (``benchmarks/fused_sweep.py``, session 10: 34 configurations
#: per width, 384^2 rows, 24 clicks; docs/benchmarks.md); other widths take
#: :data:`_DEFAULT_MEAN_CONFIG`. D = 51, l = 256: 128 / 32 / 4 / 2 split 113 us (tf32x3 117;
#: rows split once is 3-5% faster in most configurations); D = 99, l = 128: 64 / 32 / 4 / 2
#: split 168 us, where session 9's 128-row programs took 357 us (the 128 x 128 row tile does
#: not fit in registers)
_MEAN_CONFIGS: dict[int, MeanPathConfig] = {
    64: MeanPathConfig(128, 32, 4, 2, True),
    128: MeanPathConfig(64, 32, 4, 2, True),
}
_DEFAULT_MEAN_CONFIG = MeanPathConfig(128, 32, 4, 2, True)
#: environment variable overriding that launch configuration of the mean path (e.g. for another
#: GPU), for every width: "rows,features,warps[,stages[,split]]" (split 0 or 1, default 1), e.g.
#: "128,64,4,3" or "64,32,4,2,0"
LAUNCH_ENV = "GPCIS_FUSED_MEAN_CONFIG"


def padded_width(d: int) -> int:
    """A kernel block's size along ``d`` entries (input width, clicks, hidden units,
    channels): the next power of two, at least 16 (``tl.dot``'s smallest)."""
    return max(16, 1 << max(int(d) - 1, 0).bit_length())


def mean_path_config(width: Optional[int] = None) -> MeanPathConfig:
    """The mean-path kernel's launch configuration for inputs of ``width`` dimensions: the
    table above (by padded width), or :data:`LAUNCH_ENV` where set.

    Raises:
        ValueError: a malformed :data:`LAUNCH_ENV` (naming it).
    """
    text = os.environ.get(LAUNCH_ENV, "").strip()
    if not text:
        if width is None:
            return _DEFAULT_MEAN_CONFIG
        return _MEAN_CONFIGS.get(padded_width(width), _DEFAULT_MEAN_CONFIG)
    try:
        parts = [int(v) for v in text.split(",")]
        if (len(parts) not in (3, 4, 5) or any(v < 1 for v in parts[:4]) or parts[1] < 16
                or (len(parts) == 5 and parts[4] not in (0, 1))):
            raise ValueError
    except ValueError:
        raise ValueError(f"{LAUNCH_ENV} must be 'rows,features,warps[,stages[,split]]' (positive integers, "
                         f"features >= 16, split 0 or 1), got {text!r}") from None
    return MeanPathConfig(parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else None,
                          bool(parts[4]) if len(parts) > 4 else _DEFAULT_MEAN_CONFIG.split)


def _f32(value: float) -> float:
    """``value`` rounded to float32: a compiled kernel receives a Python float as float32,
    Triton's interpreter as float64; rounded first, both compute with the same number."""
    return float(np.float32(value))


def usable(x: Tensor) -> bool:
    """Whether the library runs these kernels for inputs like ``x``: Triton present and ``x`` a
    float32 CUDA tensor (the tests also run them on the CPU in Triton's interpreter)."""
    return triton is not None and x.is_cuda and x.dtype == torch.float32


if triton is not None:

    @triton.jit
    def _tf32(v):
        """``v`` rounded to TF32 (10 mantissa bits; to nearest, ties away from zero, as
        ``cvt.rna.tf32.f32``): a value the tensor cores take exactly. NaN stays NaN (the
        rounding's carry would turn some NaN payloads, e.g. CUDA's 0x7FFFFFFF, into zeros or
        infinities); finite values within half a TF32 step of the float32 maximum round to inf."""
        bits = v.to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)
        return tl.where(v == v, rounded, v)

    @triton.jit
    def _dot3(a_hi, a_lo, b):
        """``a @ b`` from three TF32 products (``a = a_hi + a_lo`` split by the caller): what
        ``input_precision="tf32x3"`` computes, the small products first."""
        b_hi = _tf32(b)
        b_lo = _tf32(b - b_hi)
        out = tl.dot(a_lo, b_hi, input_precision="tf32")
        out = tl.dot(a_hi, b_lo, out, input_precision="tf32")
        return tl.dot(a_hi, b_hi, out, input_precision="tf32")

    @triton.jit
    def _mean_path_kernel(
        x_ptr, stride_xb, stride_xm, stride_xd,
        theta_ptr, tau_ptr, w_ptr, stride_wb, w_scale,
        zt_ptr, e_ptr, alpha_ptr, centre_ptr, eta_ptr, log_eta0_ptr,
        out_ptr,
        M, D, L, N,
        HAS_PRIOR: tl.constexpr, HAS_UPDATE: tl.constexpr,
        BM: tl.constexpr, DP: tl.constexpr, BL: tl.constexpr, NP: tl.constexpr,
        PRECISION: tl.constexpr, SPLIT: tl.constexpr, FAST_COS: tl.constexpr,
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
        if SPLIT:  # the rows' TF32 parts, once (tf32x3 splits them again at every tl.dot)
            x_hi = _tf32(x)
            x_lo = _tf32(x - x_hi)
        if HAS_PRIOR:
            for l0 in range(0, L, BL):
                cols = l0 + tl.arange(0, BL)
                cmask = cols < L
                theta = tl.load(theta_ptr + dims[:, None] * L + cols[None, :],
                                mask=dmask[:, None] & cmask[None, :], other=0.0)
                tau = tl.load(tau_ptr + cols, mask=cmask, other=0.0)
                w = tl.load(w_ptr + b * stride_wb + cols, mask=cmask, other=0.0) * w_scale
                if SPLIT:
                    arg = _dot3(x_hi, x_lo, theta) + tau[None, :]
                else:
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
            if SPLIT:
                a_hi = _tf32(a)
                proj = _dot3(a_hi, _tf32(a - a_hi), zt)
            else:
                proj = tl.dot(a, zt, input_precision=PRECISION)
            expo = proj - half_sq[:, None] + e[None, :]
            k = tl.exp(tl.minimum(expo, log_eta0, propagate_nan=tl.PropagateNan.ALL))  # NaN input: NaN out
            acc += tl.sum(k * alpha[None, :], axis=1)
        tl.store(out_ptr + b * M + rows, acc, mask=rmask)


    @triton.jit
    def _round_half_even(v):
        """``torch.round``: to the nearest integer, ties to even."""
        r = tl.floor(v + 0.5)
        odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
        return tl.where(((r - v) == 0.5) & odd, r - 1.0, r)

    @triton.jit
    def _click_rows(coords_ptr, b, ns, nmask, N, height, width, GATHER: tl.constexpr):
        """Row of every click in the source: the clicked pixel (rounded and clamped as
        gather_at_clicks) with GATHER, else the click's own index."""
        if GATHER:
            r = _round_half_even(tl.load(coords_ptr + (b * N + ns) * 2, mask=nmask, other=0.0))
            c = _round_half_even(tl.load(coords_ptr + (b * N + ns) * 2 + 1, mask=nmask, other=0.0))
            r = tl.minimum(tl.maximum(r, 0.0), height - 1.0)
            c = tl.minimum(tl.maximum(c, 0.0), width - 1.0)
            rows = r.to(tl.int64) * width + c.to(tl.int64)
        else:
            rows = ns.to(tl.int64)
        return rows

    @triton.jit
    def _click_rows_kernel(
        src_ptr, stride_sb, stride_sn, stride_sd,
        coords_ptr, height, width,
        labels_ptr, valid_ptr,
        theta_ptr, tau_ptr, w_ptr, w_scale,
        eta_ptr, log_eta0_ptr, noise,
        w1_ptr, b1_ptr, w2_ptr, b2_ptr,
        a_ptr, r_ptr, centre_ptr, zt_ptr, e_ptr, mean_ptr,
        N, D, L, H,
        GATHER: tl.constexpr, NP: tl.constexpr, DP: tl.constexpr, BL: tl.constexpr, HP: tl.constexpr,
        LIBDEVICE: tl.constexpr,
    ):
        """One program per click n (and batch item b), in float64: row n of K_nn + eps^2 I,
        the residual r_n = m_xi - Phi(z_n) w, m_xi, and the centred click for the mean path."""
        n = tl.program_id(0)
        b = tl.program_id(1)
        ns = tl.arange(0, NP)
        nmask = ns < N
        dims = tl.arange(0, DP)
        dmask = dims < D
        rows = _click_rows(coords_ptr, b, ns, nmask, N, height, width, GATHER)
        z = tl.load(src_ptr + b.to(tl.int64) * stride_sb + rows[:, None] * stride_sn + dims[None, :] * stride_sd,
                    mask=nmask[:, None] & dmask[None, :], other=0.0).to(tl.float64)  # (NP, DP) all clicks
        v = tl.load(valid_ptr + b * N + ns, mask=nmask, other=0).to(tl.float64)
        zn = tl.sum(tl.where(ns[:, None] == n, z, 0.0), axis=0)  # (DP,) this click
        vn = tl.sum(tl.where(ns == n, v, 0.0), axis=0)
        eta = tl.load(eta_ptr + dims, mask=dmask, other=0.0).to(tl.float64)
        log_eta0 = tl.load(log_eta0_ptr).to(tl.float64)
        # centred at the valid clicks' mean (padding, e.g. pixels gathered at padded coordinates,
        # left out: gpcis.gp.head.neutral_padding), rounded to float32 first: the mean-path
        # kernel centres x at the stored value
        # (a select, not a product: NaN * 0 is NaN, and unchecked pixels may sit at padded coordinates)
        centre = (tl.sum(tl.where(v[:, None] != 0.0, z, 0.0), axis=0)
                  / tl.maximum(tl.sum(v, axis=0), 1.0)).to(tl.float32).to(tl.float64)
        bz = tl.where(dmask, zn - centre, 0.0)
        tl.store(centre_ptr + b * D + dims, centre.to(tl.float32), mask=dmask & (n == 0))
        tl.store(zt_ptr + (b * D + dims) * N + n, (eta * bz).to(tl.float32), mask=dmask)
        tl.store(e_ptr + b * N + n, (log_eta0 - 0.5 * tl.sum(eta * bz * bz, axis=0)).to(tl.float32))
        # row n of K_nn + eps^2 I, identity rows and columns at padding (pathwise._click_system)
        diff = z - zn[None, :]
        sq = tl.sum(eta[None, :] * diff * diff, axis=1)
        if LIBDEVICE:
            krow = libdevice.exp(log_eta0 - 0.5 * sq)
        else:
            krow = tl.exp(log_eta0 - 0.5 * sq)
        krow = krow * vn * v + tl.where(ns == n, noise * vn + 1.0 - vn, 0.0)
        tl.store(a_ptr + (b * NP + n) * NP + ns, krow)
        # m_xi = softplus(MLP(z_n)) y_n (Eq. S11; softplus with torch's threshold 20)
        hs = tl.arange(0, HP)
        hmask = hs < H
        w1 = tl.load(w1_ptr + hs[:, None] * D + dims[None, :], mask=hmask[:, None] & dmask[None, :],
                     other=0.0).to(tl.float64)
        hid = tl.sum(w1 * zn[None, :], axis=1) + tl.load(b1_ptr + hs, mask=hmask, other=0.0).to(tl.float64)
        hid = tl.maximum(hid, 0.0)
        o = tl.sum(hid * tl.load(w2_ptr + hs, mask=hmask, other=0.0).to(tl.float64), axis=0)
        o += tl.load(b2_ptr).to(tl.float64)
        if LIBDEVICE:
            soft = libdevice.log1p(libdevice.exp(tl.minimum(o, 20.0)))
        else:
            soft = tl.log(1.0 + tl.exp(tl.minimum(o, 20.0)))
        lab = tl.load(labels_ptr + b * N + n).to(tl.float64)
        m_xi = tl.where(o > 20.0, o, soft) * lab * vn
        tl.store(mean_ptr + b * N + n, m_xi.to(tl.float32))
        # the prior path at the click, Phi(z_n) w (Eq. S13-S14)
        prior = tl.sum(tl.zeros([BL], dtype=tl.float64), axis=0)  # a float64 scalar (loop-carried type)
        for l0 in range(0, L, BL):
            ls = l0 + tl.arange(0, BL)
            lmask = ls < L
            th = tl.load(theta_ptr + dims[:, None] * L + ls[None, :], mask=dmask[:, None] & lmask[None, :],
                         other=0.0).to(tl.float64)
            proj = tl.sum(zn[:, None] * th, axis=0) + tl.load(tau_ptr + ls, mask=lmask, other=0.0).to(tl.float64)
            if LIBDEVICE:
                cos = libdevice.cos(proj)
            else:
                cos = tl.cos(proj)
            wl = tl.load(w_ptr + ls, mask=lmask, other=0.0).to(tl.float64) * w_scale
            prior += tl.sum(cos * wl, axis=0)
        tl.store(r_ptr + b * NP + n, (m_xi - prior) * vn)

    @triton.jit
    def _click_solve_kernel(
        a_ptr, r_ptr, valid_ptr, alpha_ptr, info_ptr, N,
        NP: tl.constexpr, FUSED_FORWARD: tl.constexpr, LIBDEVICE: tl.constexpr,
    ):
        """One program per batch item, in float64: the Cholesky factor of the click system
        (in place, column by column) and alpha = L^-T L^-1 r by two substitutions (with
        FUSED_FORWARD the forward one inside the factorisation's loop: r is eliminated as an
        extra column of the system)."""
        b = tl.program_id(0)
        ns = tl.arange(0, NP)
        nmask = ns < N
        ri = ns[:, None]
        ci = ns[None, :]
        inside = (ri < N) & (ci < N)
        a = tl.load(a_ptr + (b * NP + ri) * NP + ci, mask=inside, other=0.0)
        a = tl.where(inside | (ri != ci), a, 1.0)  # identity beyond the N clicks
        y = tl.load(r_ptr + b * NP + ns, mask=nmask, other=0.0)
        bad = ns < 0
        for j in range(0, N):
            col = tl.sum(tl.where(ci == j, a, 0.0), axis=1)
            piv = tl.sum(tl.where(ns == j, col, 0.0), axis=0)
            ok = piv > 0.0  # false for NaN too
            bad = bad | ((ns == j) & (tl.where(ok, 0, 1) == 1))
            if LIBDEVICE:
                inv_root = 1.0 / libdevice.sqrt(tl.where(ok, piv, 1.0))
            else:
                inv_root = 1.0 / tl.sqrt(tl.where(ok, piv, 1.0))
            lj = tl.where(ns >= j, col * inv_root, 0.0)
            # column j becomes L's; the trailing columns get the rank-one update (lj is 0 above j)
            a = tl.where(ci == j, lj[:, None], a - lj[:, None] * lj[None, :])
            if FUSED_FORWARD:  # L y = r, step j
                yj = tl.sum(tl.where(ns == j, y, 0.0), axis=0) * inv_root
                y = tl.where(ns == j, yj, y - tl.where(ns > j, lj * yj, 0.0))
        info = tl.min(tl.where(bad, ns + 1, NP + 1), axis=0)
        tl.store(info_ptr + b, tl.where(info > NP, 0, info).to(tl.int32))
        if not FUSED_FORWARD:
            for j in range(0, N):  # L y = r
                lj = tl.sum(tl.where(ci == j, a, 0.0), axis=1)
                yj = tl.sum(tl.where(ns == j, y, 0.0), axis=0) / tl.sum(tl.where(ns == j, lj, 0.0), axis=0)
                y = tl.where(ns == j, yj, y - tl.where(ns > j, lj * yj, 0.0))
        for jj in range(0, N):  # L^T alpha = y; row j of L is a[j, :j + 1]
            j = N - 1 - jj
            row = tl.sum(tl.where(ri == j, a, 0.0), axis=0)
            xj = tl.sum(tl.where(ns == j, y, 0.0), axis=0) / tl.sum(tl.where(ns == j, row, 0.0), axis=0)
            y = tl.where(ns == j, xj, y - tl.where(ns < j, row * xj, 0.0))
        v = tl.load(valid_ptr + b * N + ns, mask=nmask, other=0).to(tl.float64)
        tl.store(alpha_ptr + b * N + ns, (y * v).to(tl.float32), mask=nmask)

    @triton.jit
    def _inverse_norm_kernel(f_ptr, stride_fb, stride_fc, stride_fh, stride_fw, out_ptr, C, h, w,
                             BP: tl.constexpr, CP: tl.constexpr):
        """1 / max(|f|, 1e-12) per feature vector (F.normalize's divisor), (B, h * w)."""
        b = tl.program_id(1).to(tl.int64)
        pix = tl.program_id(0) * BP + tl.arange(0, BP)
        pmask = pix < h * w
        cs = tl.arange(0, CP)
        v = tl.load(f_ptr + b * stride_fb + cs[None, :] * stride_fc + ((pix // w) * stride_fh + (pix % w) * stride_fw)[:, None],
                    mask=pmask[:, None] & (cs < C)[None, :], other=0.0)
        tl.store(out_ptr + b * h * w + pix, 1.0 / tl.maximum(tl.sqrt(tl.sum(v * v, axis=1)), 1e-12), mask=pmask)

    @triton.jit
    def _pixel_features_kernel(
        f_ptr, stride_fb, stride_fc, stride_fh, stride_fw,
        inv_ptr,
        img_ptr, stride_ib, stride_ic, stride_ih, stride_iw,
        out_ptr,
        C, h, w, H, W, scale_h, scale_w,
        m0, m1, m2, s0, s1, s2,
        HAS_IMAGE: tl.constexpr, BP: tl.constexpr, CP: tl.constexpr,
    ):
        b = tl.program_id(1).to(tl.int64)
        pix = tl.program_id(0) * BP + tl.arange(0, BP)
        pmask = pix < H * W
        oy = pix // W
        ox = pix % W
        # source coordinates of F.interpolate(mode="bilinear", align_corners=False)
        sy = tl.maximum(scale_h * (oy.to(tl.float32) + 0.5) - 0.5, 0.0)
        sx = tl.maximum(scale_w * (ox.to(tl.float32) + 0.5) - 0.5, 0.0)
        y0 = sy.to(tl.int32)
        x0 = sx.to(tl.int32)
        y1 = tl.where(y0 < h - 1, y0 + 1, y0)
        x1 = tl.where(x0 < w - 1, x0 + 1, x0)
        ly1 = sy - y0.to(tl.float32)
        lx1 = sx - x0.to(tl.float32)
        ly0 = 1.0 - ly1
        lx0 = 1.0 - lx1
        cs = tl.arange(0, CP)
        cmask = cs < C
        mask = pmask[:, None] & cmask[None, :]
        fb = f_ptr + b * stride_fb + cs[None, :] * stride_fc
        ib = inv_ptr + b * h * w
        # each corner L2-normalised (F.normalize) before the bilinear weights
        acc = (ly0 * lx0 * tl.load(ib + y0 * w + x0, mask=pmask, other=0.0))[:, None] \
            * tl.load(fb + (y0 * stride_fh + x0 * stride_fw)[:, None], mask=mask, other=0.0)
        acc += (ly0 * lx1 * tl.load(ib + y0 * w + x1, mask=pmask, other=0.0))[:, None] \
            * tl.load(fb + (y0 * stride_fh + x1 * stride_fw)[:, None], mask=mask, other=0.0)
        acc += (ly1 * lx0 * tl.load(ib + y1 * w + x0, mask=pmask, other=0.0))[:, None] \
            * tl.load(fb + (y1 * stride_fh + x0 * stride_fw)[:, None], mask=mask, other=0.0)
        acc += (ly1 * lx1 * tl.load(ib + y1 * w + x1, mask=pmask, other=0.0))[:, None] \
            * tl.load(fb + (y1 * stride_fh + x1 * stride_fw)[:, None], mask=mask, other=0.0)
        dst = out_ptr + b * (C + 3 * HAS_IMAGE) * H * W
        tl.store(dst + cs[None, :] * H * W + pix[:, None], acc, mask=mask)
        if HAS_IMAGE:  # ImageNet normalisation, (image - mean_c) / std_c
            src = img_ptr + b * stride_ib + oy * stride_ih + ox * stride_iw
            tl.store(dst + C * H * W + pix, (tl.load(src, mask=pmask, other=0.0) - m0) / s0, mask=pmask)
            tl.store(dst + (C + 1) * H * W + pix,
                     (tl.load(src + stride_ic, mask=pmask, other=0.0) - m1) / s1, mask=pmask)
            tl.store(dst + (C + 2) * H * W + pix,
                     (tl.load(src + 2 * stride_ic, mask=pmask, other=0.0) - m2) / s2, mask=pmask)


def _launch_mean_path(
    x: Tensor, theta: Tensor, tau: Tensor, w: Tensor, zt: Tensor, e: Tensor, alpha: Tensor, centre: Tensor,
    eta: Tensor, log_eta0: Tensor, n: int, input_precision: str, config: MeanPathConfig, w_scale: float = 1.0,
) -> Tensor:
    """Launch :func:`_mean_path_kernel`; ``w`` is ``(l,)`` or ``(B, l)``, the click operands
    as :func:`click_system` returns them. ``config.split`` applies with ``"tf32x3"``."""
    b, m, d = x.shape
    lf = theta.shape[1]
    out = x.new_empty(b, m)
    if m == 0 or b == 0:
        return out
    w = w.to(torch.float32)
    if w.dim() == 2 and w.shape[0] == 1:
        w = w[0]
    w = w.contiguous()
    stride_wb = w.stride(0) if w.dim() == 2 else 0  # (l,): the same weights for every item
    dp = padded_width(d)
    np_ = padded_width(n)
    split = bool(config.split) and input_precision == "tf32x3"
    grid = (triton.cdiv(m, config.rows), b)
    _mean_path_kernel[grid](
        x, x.stride(0), x.stride(1), x.stride(2),
        theta, tau, w, stride_wb, _f32(w_scale), zt, e, alpha, centre, eta, log_eta0, out,
        m, d, lf, n,
        HAS_PRIOR=lf > 0, HAS_UPDATE=n > 0,
        BM=config.rows, DP=dp, BL=config.features, NP=np_, PRECISION=input_precision, SPLIT=split,
        FAST_COS=x.is_cuda, num_warps=config.warps,
        **({} if config.stages is None else {"num_stages": config.stages}),
    )
    return out


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
    config: Optional[MeanPathConfig] = None,
) -> Tensor:
    r"""``f(x) = cos(x Theta + tau) w + K(x, Z) alpha`` at every row of ``x``, fused.

    Args:
        x: ``(B, M, D)`` float32 test inputs, any strides (e.g. a channel-major feature
            map seen as ``(B, HW, D)``).
        theta: ``(D, l)`` frequencies (``FourierFeatureKernel.frequencies()``).
        tau: ``(l,)`` phases.
        w: ``(B, l)`` (or ``(l,)``) weights, Phi's scale ``a sqrt(2/l)`` included; ``l = 0``
            leaves out the prior path.
        z: ``(B, N, D)`` click inputs (padding included; give it ``alpha = 0`` and finite rows,
            e.g. :func:`~gpcis.gp.head.neutral_padding`'s); ``N = 0``
            leaves out the update.
        precision: ``(D,)`` ARD precisions ``eta_t``.
        outputscale: scalar ``eta0``.
        alpha: ``(B, N)`` update weights ``(K_nn + eps^2 I)^{-1} r`` (0 at padding).
        input_precision: of ``tl.dot``: ``"tf32x3"`` (default) or ``"ieee"``.
        config: launch configuration; ``None``: :func:`mean_path_config`'s for this width.

    Returns:
        ``(B, M)`` float32.
    """
    if triton is None:
        raise RuntimeError("fused_mean_path needs Triton (pip install triton)")
    b, m, d = x.shape
    n = z.shape[1]
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
    return _launch_mean_path(x, theta.to(f32).contiguous(), tau.to(f32).contiguous(), w, zt, e, alpha, centre,
                             eta, log_eta0, n, input_precision, config or mean_path_config(d))


@dataclass
class ClickSystem:
    """What :func:`click_system` computes per batch item (float32 unless noted).

    Attributes:
        alpha: ``(B, N)`` update weights ``(K_nn + eps^2 I)^{-1} (m_xi - Phi(Z) w)``, 0 at padding.
        click_mean: ``(B, N)`` ``m_xi`` (Eq. S11), 0 at padding.
        centre: ``(B, D)`` the valid clicks' mean ``c`` (padding left out, as
            :func:`~gpcis.gp.head.neutral_padding` arranges for
            :func:`~gpcis.gp.kernels.centred_clicks`).
        zt: ``(B, D, N)`` ``eta (z - c)``.
        e: ``(B, N)`` ``ln eta0 - |z - c|^2_eta / 2``.
        info: ``(B,)`` int32, 0 where the Cholesky factorisation of the click system
            succeeded, else ``j + 1`` for the first pivot ``j`` that was not positive (as
            ``torch.linalg.cholesky_ex``; ``alpha`` is then not usable).
    """

    alpha: Tensor
    click_mean: Tensor
    centre: Tensor
    zt: Tensor
    e: Tensor
    info: Tensor


#: click counts up to which :func:`click_system` runs (one program holds N x N float64 tiles)
MAX_CLICKS = 64
#: the click solve's launch: warps per padded click count, the forward substitution inside
#: the factorisation's loop (True) or after it. H200 sweep (session 9; 8 / 20 / 64 clicks):
#: fused 1 warp 6.1 / 26.4 / 534 us, 4 warps 7.9 / 20.4 / 103 us; separate 9 / 31 / 183 us at best
_SOLVE_WARPS = {16: 1, 32: 4, 64: 4}
_SOLVE_FUSED_FORWARD = True


def click_system(
    source: Tensor,
    labels: Tensor,
    valid: Tensor,
    theta: Tensor,
    tau: Tensor,
    w: Tensor,
    w_scale: float,
    precision: Tensor,
    log_outputscale: Tensor,
    noise: float,
    mlp: tuple[Tensor, Tensor, Tensor, Tensor],
    coords: Optional[Tensor] = None,
    size: Optional[tuple[int, int]] = None,
    solve_warps: Optional[int] = None,
    fused_forward: Optional[bool] = None,
) -> ClickSystem:
    r"""The click side of the mean path in two kernel launches (one program per click, then
    one per batch item).

    In float64, from the clicks' inputs ``Z``: ``m_xi = softplus(MLP(Z)) y`` (Eq. S11), the
    prior path at the clicks ``Phi(Z) w`` (Eq. S13), ``K_nn + eps^2 I`` (Eq. S2, padding as
    the identity), its Cholesky factor and ``alpha = (K_nn + eps^2 I)^{-1} (m_xi - Phi(Z) w)``
    by two triangular solves (Eq. S15), plus the centred clicks the mean-path kernel reads.
    This is what :class:`~gpcis.gp.GPHead` computes with ~70 small operations and a
    cuSOLVER call; no jitter is added (``info`` says whether it was needed).

    Args:
        source: ``(B, N, D)`` click inputs ``Z``; with ``coords``, ``(B, M, D)`` pixel inputs
            (any strides) whose rows at the clicked pixels are ``Z``.
        labels: ``(B, N)`` labels, +-1 at valid clicks.
        valid: ``(B, N)`` bool.
        theta, tau: ``(D, l)`` frequencies and ``(l,)`` phases (``l = 0``: no prior path).
        w: ``(l,)`` weight-prior mean; Phi's scale is ``w_scale`` (a Python float).
        precision: ``(D,)`` (or ``(1, D)``) ``eta_t``; log_outputscale: scalar ``ln eta0``.
        noise: ``eps^2``.
        mlp: the amortisation MLP ``(W1 (H, D), b1 (H,), W2 (1, H), b2 (1,))``.
        coords: ``(B, N, 2)`` click ``(row, col)`` pixels of an ``size = (H, W)`` grid whose
            row-major pixels are ``source``'s rows (rounded and clamped as
            :func:`gpcis.models.heads.gather_at_clicks`).
        solve_warps, fused_forward: launch options of the factorisation (warps; the
            forward substitution inside its loop or after it); ``None``: the defaults
            (``_SOLVE_WARPS``, ``_SOLVE_FUSED_FORWARD``, from an H200 sweep,
            ``benchmarks/fused_sweep.py``). The result does not depend on them beyond rounding.

    Returns:
        :class:`ClickSystem`.
    """
    if triton is None:
        raise RuntimeError("click_system needs Triton (pip install triton)")
    b, n = valid.shape
    d = source.shape[-1]
    if n > MAX_CLICKS:
        raise ValueError(f"click_system handles up to {MAX_CLICKS} clicks, got {n}")
    lf = theta.shape[-1]
    hidden = mlp[0].shape[0]
    dev, f32 = source.device, torch.float32
    # the kernels index these densely (no-ops for the head's float32 parameters)
    theta, tau, w = theta.to(f32).contiguous(), tau.to(f32).contiguous(), w.to(f32).contiguous()
    precision, log_outputscale = precision.to(f32).contiguous(), log_outputscale.to(f32)
    mlp = tuple(t.to(f32).contiguous() for t in mlp)
    out = ClickSystem(
        alpha=torch.empty(b, n, device=dev, dtype=f32), click_mean=torch.empty(b, n, device=dev, dtype=f32),
        centre=torch.empty(b, d, device=dev, dtype=f32), zt=torch.empty(b, d, n, device=dev, dtype=f32),
        e=torch.empty(b, n, device=dev, dtype=f32), info=torch.empty(b, device=dev, dtype=torch.int32),
    )
    if b == 0 or n == 0:
        out.centre.zero_()
        out.info.zero_()
        return out
    gather = coords is not None
    labels, valid_u8 = labels.to(f32).contiguous(), valid.contiguous().view(torch.uint8)
    if not gather:
        height = width = 1
        coords = source  # unused
    else:
        if size is None:
            raise ValueError("click_system: coords need the pixel grid's size (H, W)")
        height, width = int(size[0]), int(size[1])
        coords = coords.to(f32).contiguous()
    np_ = padded_width(n)
    # float64 scratch: K_nn + eps^2 I and the residual r, written by one kernel, solved by the next
    a_mat = torch.empty(b, np_, np_, device=dev, dtype=torch.float64)
    resid = torch.empty(b, np_, device=dev, dtype=torch.float64)
    _click_rows_kernel[(n, b)](
        source, source.stride(0), source.stride(1), source.stride(2),
        coords, height, width,
        labels, valid_u8,
        theta, tau, w, _f32(w_scale),
        precision.reshape(d), log_outputscale.reshape(1), _f32(noise),
        mlp[0], mlp[1], mlp[2].reshape(-1), mlp[3].reshape(1),
        a_mat, resid, out.centre, out.zt, out.e, out.click_mean,
        n, d, lf, hidden,
        GATHER=gather, NP=np_, DP=padded_width(d), BL=64,
        HP=padded_width(hidden), LIBDEVICE=source.is_cuda, num_warps=4,
    )
    _click_solve_kernel[(b,)](
        a_mat, resid, valid_u8, out.alpha, out.info, n, NP=np_,
        FUSED_FORWARD=_SOLVE_FUSED_FORWARD if fused_forward is None else bool(fused_forward),
        LIBDEVICE=source.is_cuda, num_warps=solve_warps or _SOLVE_WARPS.get(np_, 4),
    )
    return out


def mean_path_from_clicks(
    x: Tensor,
    theta: Tensor,
    tau: Tensor,
    w: Tensor,
    w_scale: float,
    system: ClickSystem,
    precision: Tensor,
    log_outputscale: Tensor,
) -> Tensor:
    """The mean path ``cos(x Theta + tau) (w_scale w) + K(x, Z) alpha`` with the click side
    from :func:`click_system` (the kernel of :func:`fused_mean_path`).

    Args:
        x: ``(B, M, D)`` float32 test inputs, any strides.
        theta, tau, w, w_scale: as :func:`click_system` (``w`` ``(l,)``).
        system: :func:`click_system`'s result for these clicks.
        precision: ``(D,)`` ``eta_t``; log_outputscale: scalar ``ln eta0``.

    Returns:
        ``(B, M)`` float32.
    """
    d = x.shape[-1]
    n = system.alpha.shape[1]
    f32 = torch.float32
    theta, tau, precision = theta.to(f32).contiguous(), tau.to(f32).contiguous(), precision.to(f32).contiguous()
    return _launch_mean_path(x, theta, tau, w, system.zt, system.e, system.alpha, system.centre,
                             precision.reshape(d), log_outputscale.reshape(1).to(f32), n, "tf32x3",
                             mean_path_config(d), w_scale)


def pixel_features(
    features: Tensor,
    image: Optional[Tensor],
    size: tuple[int, int],
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Tensor:
    """``[upsample(normalize_L2(features)), (image - mean) / std]`` in one kernel.

    What :meth:`gpcis.models.heads.GPSegHead.pixel_features` builds with about ten
    operations: every feature vector L2-normalised (``F.normalize``), bilinearly upsampled
    to ``size`` (``F.interpolate(mode="bilinear", align_corners=False)``), and the image
    normalised per channel, written into one channel-major buffer.

    Args:
        features: ``(B, C, h, w)`` float32, any strides.
        image: ``(B, 3, H, W)`` float32 (``size == (H, W)``), or ``None``: features only.
        size: ``(H, W)``.
        mean, std: per-channel image normalisation.

    Returns:
        ``(B, C + 3, H, W)`` (``(B, C, H, W)`` without the image) float32, contiguous.
    """
    if triton is None:
        raise RuntimeError("pixel_features needs Triton (pip install triton)")
    b, c, h, w = features.shape
    big_h, big_w = int(size[0]), int(size[1])
    has_image = image is not None
    out = features.new_empty(b, c + 3 * has_image, big_h, big_w)
    if out.numel() == 0:
        return out
    img = image if has_image else features
    cp = padded_width(c)
    inverse_norm = features.new_empty(b, h * w)
    _inverse_norm_kernel[(triton.cdiv(h * w, 64), b)](features, *features.stride(), inverse_norm, c, h, w,
                                                      BP=64, CP=cp, num_warps=4)
    block = 64
    grid = (triton.cdiv(big_h * big_w, block), b)
    _pixel_features_kernel[grid](
        features, *features.stride(),
        inverse_norm,
        img, *img.stride(),
        out,
        c, h, w, big_h, big_w, _f32(h / big_h), _f32(w / big_w),
        *(_f32(v) for v in mean), *(_f32(v) for v in std),
        HAS_IMAGE=has_image, BP=block, CP=cp, num_warps=4,
    )
    return out
