"""Kernels of the GPCIS GP layer, as GPyTorch kernels.

* :class:`ARDRBFKernel` -- the kernel k_eta of the paper (supplement Eq. S2):
  ``k(x, x') = eta0 * exp(-1/2 * sum_t eta_t (x_t - x'_t)^2)`` with the amplitude
  ``eta0`` and the per-dimension precisions ``eta_t`` learned in log space.
* :class:`FourierFeatureKernel` -- the random-Fourier-feature (RFF) prior of the
  decoupled sampler (Eq. S13-S14): ``Phi(x) = sqrt(2/l) * cos(Theta^T x + tau)``; its
  ``forward`` is the low-rank operator ``Phi(x1) Phi(x2)^T``.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from gpytorch.constraints import Positive
from gpytorch.kernels import Kernel
from linear_operator.operators import LinearOperator, LowRankRootLinearOperator, MatmulLinearOperator
from torch import Tensor

__all__ = ["LogPositive", "ARDRBFKernel", "FourierFeatureKernel", "block_rows", "centred_clicks", "click_exponents"]


def LogPositive() -> Positive:
    """A GPyTorch ``Positive`` constraint whose raw value is the log of the value.

    ``Positive(transform=torch.exp)`` alone would keep GPyTorch's default softplus
    inverse, so setting a value would not read back the same value; both directions are
    given here.
    """
    return Positive(transform=torch.exp, inv_transform=torch.log)


def centred_clicks(x2: Tensor, precision: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The small set of an ARD RBF cross-covariance, centred and scaled.

    Distances ``|x1 - x2|^2_eta`` are expanded as ``|a|^2 + |b|^2 - 2 a.b`` with
    ``a = (x1 - c) sqrt(eta)``, ``b = (x2 - c) sqrt(eta)`` and ``c`` the mean of ``x2`` (the
    clicks), so that the cancellation error scales with the distances, not with ``|x|^2``.

    Args:
        x2: ``(..., n2, D)`` the small set.
        precision: ``eta``, broadcastable to ``(..., 1, D)``.

    Returns:
        ``(c, sqrt(eta), b)``: ``(..., 1, D)``, ``precision.sqrt()``, ``(..., n2, D)``.
    """
    root = precision.sqrt()
    centre = x2.mean(-2, keepdim=True)
    return centre, root, (x2 - centre) * root


def click_exponents(b: Tensor, log_outputscale: Tensor) -> Tensor:
    """``ln eta0 - |b|^2 / 2`` per row of ``b`` (``(..., n2, D) -> (..., n2)``): the part of
    ``ln k(a, b) = ln eta0 - |a|^2/2 - |b|^2/2 + a.b`` that depends on the small set only."""
    return log_outputscale - 0.5 * b.square().sum(-1)


def block_rows(n: int, cpu_rows: int, device: torch.device) -> int:
    """Rows per block of a blocked no-grad loop over ``n`` rows: ``cpu_rows`` on the CPU
    (the block's temporaries stay in cache), all ``n`` (at least 1) in one block elsewhere
    (on a GPU each block costs kernel launches, which outweigh the arithmetic)."""
    return max(min(cpu_rows, n) if device.type == "cpu" else n, 1)


class ARDRBFKernel(Kernel):
    r"""ARD squared-exponential kernel with amplitude and precisions in log space.

    .. math:: k_\eta(x, x') = \eta_0 \exp\big(-\tfrac12 \sum_{t=1}^D \eta_t (x_t - x'_t)^2\big)

    (GPCIS supplement Eq. S2.) Parameters are ``raw_outputscale = log eta0`` (shape
    ``batch_shape``) and ``raw_precision = log eta_t`` (shape ``(*batch_shape, 1, D)``),
    initialised at ``log eta0 = 0`` and ``log eta_t = -1`` as in the paper.

    Args:
        ard_num_dims: input dimension D.
        batch_shape: kernel batch shape (independent hyperparameters per batch entry).
        init_log_outputscale: initial ``log eta0``.
        init_log_precision: initial ``log eta_t`` (all t).
    """

    has_lengthscale = False

    def __init__(
        self,
        ard_num_dims: int,
        batch_shape: Optional[torch.Size] = None,
        init_log_outputscale: float = 0.0,
        init_log_precision: float = -1.0,
        **kwargs,
    ) -> None:
        if ard_num_dims < 1:
            raise ValueError(f"ard_num_dims must be >= 1, got {ard_num_dims}")
        super().__init__(ard_num_dims=ard_num_dims, batch_shape=batch_shape or torch.Size([]), **kwargs)
        self.register_parameter(
            "raw_outputscale",
            torch.nn.Parameter(torch.full(self.batch_shape, float(init_log_outputscale))),
        )
        self.register_constraint("raw_outputscale", LogPositive())
        self.register_parameter(
            "raw_precision",
            torch.nn.Parameter(torch.full((*self.batch_shape, 1, ard_num_dims), float(init_log_precision))),
        )
        self.register_constraint("raw_precision", LogPositive())

    @property
    def outputscale(self) -> Tensor:
        """Amplitude eta0, shape ``batch_shape``."""
        return self.raw_outputscale_constraint.transform(self.raw_outputscale)

    @outputscale.setter
    def outputscale(self, value: Tensor | float) -> None:
        value = torch.as_tensor(value, dtype=self.raw_outputscale.dtype, device=self.raw_outputscale.device)
        self.initialize(raw_outputscale=self.raw_outputscale_constraint.inverse_transform(value))

    @property
    def precision(self) -> Tensor:
        """Precisions eta_t (inverse squared lengthscales), shape ``(*batch_shape, 1, D)``."""
        return self.raw_precision_constraint.transform(self.raw_precision)

    @precision.setter
    def precision(self, value: Tensor | float) -> None:
        value = torch.as_tensor(value, dtype=self.raw_precision.dtype, device=self.raw_precision.device)
        value = value.expand_as(self.raw_precision)
        self.initialize(raw_precision=self.raw_precision_constraint.inverse_transform(value))

    def scale_inputs(self, x: Tensor) -> Tensor:
        """``x * sqrt(eta)``: the inputs in which the kernel is isotropic with unit precision."""
        return x * self.precision.sqrt()

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params) -> Tensor:
        """Kernel matrix ``(..., n1, n2)``, or its diagonal ``(..., n1)`` when ``diag``.

        Large rectangular blocks without autograd (``n1 >= FUSED_MIN_ROWS``, e.g. every
        pixel against the clicks) use :meth:`_rect_blocked`; everything else the centred
        expansion :meth:`_sq_dist_rect` (with an exact zero diagonal when ``x1 is x2``).
        No path synchronises with the device: GPyTorch's ``covar_dist`` compares ``x1`` and
        ``x2`` with ``torch.equal``, a host round trip on a GPU that a CUDA graph cannot
        capture, so it is not used.
        """
        scale = self.outputscale
        if diag:
            if x1 is x2:  # stationary: k(x, x) = eta0 at every point
                scale = scale.unsqueeze(-1)
                return scale.expand(*torch.broadcast_shapes(scale.shape[:-1], x1.shape[:-2]), x1.shape[-2])
            sq = self.scale_inputs(x1 - x2).square().sum(-1)
            return scale.unsqueeze(-1) * torch.exp(-0.5 * sq)
        scale = scale.unsqueeze(-1).unsqueeze(-1)
        if self._blocked_applies(x1, x2):
            return self._rect_blocked(x1, x2)
        sq = self._sq_dist_rect(x1, x2)
        if x1 is x2:  # d(x, x) = 0 exactly, not the expansion's rounding error
            n = x1.shape[-2]
            sq = sq.masked_fill(torch.eye(n, dtype=torch.bool, device=sq.device), 0.0)
        return scale * torch.exp(-0.5 * sq)

    #: ``n1`` from which :meth:`forward` uses :meth:`_sq_dist_rect` / :meth:`_rect_blocked`.
    FUSED_MIN_ROWS = 4096
    #: rows per block of :meth:`_rect_blocked` on the CPU (block temporaries stay in cache;
    #: at 512^2 x 20 clicks, 1 thread: 256 rows 32 ms, 1024 22 ms, 4096 18.5 ms, 16384 17.6 ms,
    #: but 16384 is slower for 100 clicks). On a GPU the whole matrix is one block.
    BLOCK_ROWS = 4096
    #: ``n2`` from which :meth:`_rect_blocked` stores the matrix transposed, ``(n2, n1)`` in
    #: memory (returned as a transposed view): the GEMM then writes wide ``n2 x rows`` blocks
    #: instead of skinny ``rows x n2`` ones (1 thread, 384^2 x 51 channel-major: 2 clicks
    #: 22.8 -> 7.5 ms, 3 clicks 23.4 -> 8.2 ms; 512^2: 5 clicks 13.0 -> 6.4 ms, 20 clicks
    #: 12.2 -> 10.8 ms; one click 6.8 -> 7.2 ms, hence the threshold).
    TRANSPOSED_MIN_COLS = 2

    def weighted_sum(self, x1: Tensor, x2: Tensor, weights: Tensor) -> Tensor:
        r"""``weights @ k(x2, x1)``: per row of ``weights``, ``sum_n weights_n k(x1_m, x2_n)``
        at every ``x1_m`` -- the update path's product ``K_{*n} alpha`` (Eq. S15).

        Where :meth:`forward` takes :meth:`_rect_blocked` (a large ``x1`` without autograd),
        the ``(n1, n2)`` matrix is never formed: each block of rows is reduced against
        ``weights`` while it is in cache (the arithmetic of each kernel value is
        :meth:`_rect_blocked`'s; only the order of the final sums can differ from a product
        with the whole matrix). Otherwise it is that product.

        Args:
            x1: ``(..., n1, D)`` the large set (e.g. every pixel).
            x2: ``(..., n2, D)`` the small set (the clicks).
            weights: ``(..., S, n2)``, broadcastable against the batch of ``x1`` / ``x2``.

        Returns:
            ``(..., S, n1)``.
        """
        if self._blocked_applies(x1, x2, weights):
            if self.active_dims is not None:  # what GPyTorch's __call__ does before forward
                x1, x2 = x1.index_select(-1, self.active_dims), x2.index_select(-1, self.active_dims)
            return self._rect_blocked(x1, x2, weights=weights)
        k = self(x1, x2).to_dense()  # GPyTorch's call, as the update path's product always did
        return torch.matmul(weights, k.mT)

    def _blocked_applies(self, x1: Tensor, x2: Tensor, *others: Tensor) -> bool:
        """Whether :meth:`_rect_blocked` serves ``k(x1, x2)``: a large ``x1`` (at least
        :attr:`FUSED_MIN_ROWS` rows, not ``x2`` itself) and no autograd through any input
        (``others`` included) or parameter."""
        if x1.shape[-2] < self.FUSED_MIN_ROWS or x1 is x2:
            return False
        return not (torch.is_grad_enabled()
                    and any(t.requires_grad for t in (x1, x2, *others, *self.parameters())))

    def _rect_blocked(self, x1: Tensor, x2: Tensor, weights: Optional[Tensor] = None) -> Tensor:
        r"""Kernel matrix ``(..., n1, n2)`` without autograd, ``BLOCK_ROWS`` rows at a time.

        The same arithmetic as ``eta0 * exp(-1/2 * _sq_dist_rect(x1, x2))`` (centring,
        ``|a|^2 + |b|^2 - 2 a.b``, clamp at 0), but each block's scaled inputs and values
        are formed in reused buffers that stay in cache and the block is written once into
        the output: the full-size temporaries of the plain expression (scaled ``x1``, the
        broadcast norms, the clamp, the exp and the scale, each a fresh ``n1 x n2`` array)
        cost more than the GEMM itself for n2 = 20 clicks against every pixel.
        ``eta0 exp(-d^2/2)`` is evaluated as ``exp2(-d^2 log2(e)/2 + log2(eta0))`` (``exp2``
        is 3.5x faster than ``exp`` on one AVX-512 core; the base change adds one rounding,
        6e-8 relative, to ``d^2``, whose own rounding error is larger), with every term but
        ``|a|^2`` inside the GEMM (see the code), so a block costs the GEMM, a clamp and
        the ``exp2``. For ``n2 >= TRANSPOSED_MIN_COLS``
        the result is a transposed view of an ``(..., n2, n1)`` array (see there);
        consumers should not assume it is contiguous.

        With ``weights`` (``(..., S, n2)``, see :meth:`weighted_sum`) each block is written
        into one reused buffer and reduced against ``weights`` at once; the result is then
        ``(..., S, n1)``: at 384^2 x 20 clicks the ``(n2, n1)`` array is 11.8 MB that is
        otherwise written, paged in and read again.
        """
        shift, root, b = self._centred_scaling(x2)
        scale = self.outputscale  # kbatch
        batch = torch.broadcast_shapes(x1.shape[:-2], b.shape[:-2], scale.shape,
                                       weights.shape[:-2] if weights is not None else ())
        n1, n2, d = x1.shape[-2], x2.shape[-2], x1.shape[-1]
        shift = shift.expand(*batch, 1, d).reshape(-1, 1, d)
        root_f = root.expand(*batch, 1, d).reshape(-1, 1, d)
        b = b.expand(*batch, n2, d).reshape(-1, n2, d)
        # In base 2 with c = -1/(2 ln 2): k = 2^v, v = c (|a|^2 + |b|^2 - 2 a.b) + log2(eta0).
        # The GEMM with alpha = -2c adds the b-only terms through an extra input column:
        # a_aug = [a, 1], b_aug = [b, e], e = -|b|^2 / 2 + ln(eta0), so that
        # v = c |a|^2 + alpha * (a_aug . b_aug); the block is then clamp (d^2 >= 0, i.e.
        # v <= log2 eta0) and exp2, two passes instead of four (clamp, scale, exp, scale).
        c = -0.5 / math.log(2.0)
        log_scale = scale.log().expand(batch).reshape(-1, 1, 1)
        b_aug = torch.cat([b, click_exponents(b, log_scale[..., 0]).unsqueeze(-1)], dim=-1)  # (Bf, n2, d+1)
        log2_scale = log_scale / math.log(2.0)
        x1_f = x1.expand(*batch, n1, d).reshape(-1, n1, d)  # a view unless x1 is broadcast
        bf = x1_f.shape[0]
        transposed = n2 >= self.TRANSPOSED_MIN_COLS
        rows = block_rows(n1, self.BLOCK_ROWS, x1.device)
        if weights is not None:  # blocks in one reused buffer, each reduced against the weights
            s_w = weights.shape[-2]
            w_f = weights.to(x1.dtype).expand(*batch, s_w, n2).reshape(-1, s_w, n2)
            res = x1.new_empty(bf, s_w, n1)
            scratch = x1.new_empty(bf, n2, rows) if transposed else x1.new_empty(bf, rows, n2)
        if transposed:
            out_t = x1.new_empty(bf, n2, n1) if weights is None else None
        else:
            out = x1.new_empty(bf, n1, n2) if weights is None else None
            b_aug = b_aug.mT.contiguous()  # (Bf, d+1, n2)
        # Channel-major x1 (a feature map (B, D, H, W) seen as (B, HW, D), as the segmentation
        # head passes it) is scaled in (D, rows) blocks: reading it row by row is 4x slower
        # (384^2 x 51, one thread: 16.6 vs 3.8 ms at one click).
        channel_major = n1 > 1 and x1_f.stride(-2) == 1 and x1_f.stride(-1) != 1
        if channel_major:
            a_buf = x1.new_empty(bf, d + 1, rows)  # columns [a; 1]
            a_buf[:, d].fill_(1.0)
            sq_tmp = x1.new_empty(bf, d, rows)
            sq_buf = x1.new_empty(bf, 1, rows)
            shift_t, root_t = shift.mT, root_f.mT  # (Bf, d, 1)
        else:
            a_buf = x1.new_empty(bf, rows, d + 1)  # rows [a, 1]
            a_buf[..., d].fill_(1.0)
            sq_buf = x1.new_empty(bf, rows, 1)
        for i in range(0, n1, rows):
            r = min(rows, n1 - i)
            if channel_major:
                a = torch.addcmul(shift_t, x1_f[:, i : i + r].mT, root_t, out=a_buf[:, :d, :r])  # (Bf, d, r)
                a_sq = torch.sum(torch.mul(a, a, out=sq_tmp[:, :, :r]), dim=-2, keepdim=True, out=sq_buf[:, :, :r])
                ca_sq, a_aug = a_sq.mul_(c).mT, a_buf[:, :, :r].mT  # (Bf, r, 1), (Bf, r, d+1) views
            else:
                a = torch.addcmul(shift, x1_f[:, i : i + r], root_f, out=a_buf[:, :r, :d])  # (x1 - c) sqrt(eta)
                ca_sq = torch.linalg.vector_norm(a, dim=-1, keepdim=True, out=sq_buf[:, :r]).square_().mul_(c)
                a_aug = a_buf[:, :r]
            if transposed:
                dst = out_t[:, :, i : i + r] if weights is None else scratch[:, :, :r]
                block = torch.baddbmm(ca_sq.mT, b_aug, a_aug.mT, alpha=-2.0 * c, out=dst)
            else:
                dst = out[:, i : i + r] if weights is None else scratch[:, :r]
                block = torch.baddbmm(ca_sq, a_aug, b_aug, alpha=-2.0 * c, out=dst)
            torch.minimum(block, log2_scale, out=block).exp2_()
            if weights is not None:
                torch.bmm(w_f, block if transposed else block.mT, out=res[:, :, i : i + r])
        if weights is not None:
            return res.reshape(*batch, res.shape[-2], n1)
        if transposed:
            out = out_t.mT
        return out.reshape(*batch, n1, n2)

    def _centred_scaling(self, x2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(shift, root, b)`` with ``x1 * root + shift = (x1 - c) sqrt(eta)`` and
        ``b = (x2 - c) sqrt(eta)``, centred at the mean ``c`` of the small set ``x2``."""
        centre, root, b = centred_clicks(x2, self.precision)
        return -centre * root, root, b

    def _sq_dist_rect(self, x1: Tensor, x2: Tensor) -> Tensor:
        r"""Scaled squared distances ``sum_t eta_t (x1_t - x2_t)^2``, ``(..., n1, n2)``.

        Centred at the mean of ``x2`` (the small set) before the expansion
        ``|a|^2 + |b|^2 - 2 a.b``, as GPyTorch centres at the mean of ``x1``, so that the
        cancellation error stays of order ``eps * |a - b|``-scale quantities rather than
        ``eps * |x|^2``; clamped at 0.
        """
        shift, root, b = self._centred_scaling(x2)
        a = torch.addcmul(shift, x1, root)  # (x1 - centre) sqrt(eta): one pass over x1
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])  # e.g. batched x1, one x2
        a, b = a.expand(*batch, *a.shape[-2:]), b.expand(*batch, *b.shape[-2:])
        a_sq = torch.linalg.vector_norm(a, dim=-1, keepdim=True).square()  # (..., n1, 1), no n1 x D temp
        b_sq = b.square().sum(-1).unsqueeze(-2)  # (..., 1, n2)
        return torch.baddbmm((a_sq + b_sq).reshape(-1, *a_sq.shape[-2:-1], b_sq.shape[-1]),
                             a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]).mT,
                             alpha=-2.0).reshape(*a.shape[:-1], b.shape[-2]).clamp_min(0.0)


class FourierFeatureKernel(Kernel):
    r"""Random-Fourier-feature kernel ``k(x, x') = Phi(x)^T Phi(x')`` (supplement Eq. S13-S14).

    .. math:: \Phi(x) = a\,\sqrt{2/l}\,\cos(\Theta^\top x + \tau), \quad
              \Theta \in \mathbb{R}^{D\times l},\ \tau \in [0, 2\pi)^l

    Two modes:

    * ``"learned"`` (the paper): ``Theta`` and ``tau`` are trainable parameters,
      initialised ``theta_r ~ N(0, I_D)`` and ``tau_r ~ U(0, 2 pi)``; ``a = 1``.
    * ``"spectral"`` (Wilson et al., 2020): ``Theta = diag(sqrt(eta)) E`` with
      ``E ~ N(0, I)`` drawn once and kept as a buffer, ``a = sqrt(eta0)``, where eta
      are the current hyperparameters of ``base_kernel`` (an :class:`ARDRBFKernel`).
      Then ``E[Phi Phi^T] = k_eta`` and the pathwise sample is a sample of the same GP.

    Args:
        num_features: number of basis functions l.
        ard_num_dims: input dimension D.
        mode: ``"learned"`` or ``"spectral"``.
        base_kernel: the :class:`ARDRBFKernel` whose spectral density is sampled
            (required for ``"spectral"``, ignored otherwise).
        generator: random generator for the initial draws (reproducibility).
    """

    has_lengthscale = False

    def __init__(
        self,
        num_features: int,
        ard_num_dims: int,
        mode: Literal["learned", "spectral"] = "learned",
        base_kernel: Optional[ARDRBFKernel] = None,
        generator: Optional[torch.Generator] = None,
        **kwargs,
    ) -> None:
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        if mode not in ("learned", "spectral"):
            raise ValueError(f"mode must be 'learned' or 'spectral', got {mode!r}")
        super().__init__(ard_num_dims=ard_num_dims, **kwargs)
        self.num_features = int(num_features)
        self.mode = mode
        theta = torch.randn(ard_num_dims, num_features, generator=generator)
        tau = torch.rand(num_features, generator=generator) * (2 * math.pi)
        if mode == "learned":
            self.register_parameter("theta", torch.nn.Parameter(theta))
            self.register_parameter("tau", torch.nn.Parameter(tau))
            self.base_kernel = None
        else:
            if not isinstance(base_kernel, ARDRBFKernel):
                raise ValueError("mode='spectral' needs base_kernel, an ARDRBFKernel")
            if base_kernel.ard_num_dims != ard_num_dims:
                raise ValueError(
                    f"base_kernel has {base_kernel.ard_num_dims} input dims, expected {ard_num_dims}"
                )
            self.register_buffer("theta", theta)
            self.register_buffer("tau", tau)
            self.base_kernel = base_kernel

    def resample(self, generator: Optional[torch.Generator] = None) -> None:
        """Draw new frequencies and phases in place (a fresh random prior)."""
        with torch.no_grad():
            self.theta.copy_(torch.randn(self.theta.shape, generator=generator).to(self.theta))
            self.tau.copy_((torch.rand(self.tau.shape, generator=generator) * 2 * math.pi).to(self.tau))

    def frequencies(self) -> Tensor:
        """Effective frequencies Theta, ``(D, l)`` (``(*batch, D, l)`` for a batched base kernel)."""
        if self.mode == "learned":
            return self.theta
        return self.base_kernel.precision.sqrt().mT * self.theta

    def amplitude(self) -> Tensor:
        """Feature amplitude ``a`` (1 when learned, ``sqrt(eta0)`` when spectral)."""
        if self.mode == "learned":
            return torch.ones((), dtype=self.theta.dtype, device=self.theta.device)
        return self.base_kernel.outputscale.sqrt()

    def feature_scale(self) -> Tensor:
        """The constant factor ``a * sqrt(2/l)`` of Phi (scalar, or ``batch_shape`` when spectral)."""
        return self.amplitude() * math.sqrt(2.0 / self.num_features)

    def cos_features(self, x: Tensor) -> Tensor:
        """The unscaled feature map ``cos(x Theta + tau)``, ``(..., n, D) -> (..., n, l)``.

        ``Phi(x) = feature_scale() * cos_features(x)``; the prior path folds the scale into
        the weights, which saves one pass over the ``(n, l)`` array. Under
        ``torch.no_grad`` (inference) the cosine is taken in place.
        """
        theta = self.frequencies()
        if theta.dim() == 2:
            flat = torch.addmm(self.tau, x.reshape(-1, x.shape[-1]), theta)
            proj = flat.reshape(*x.shape[:-1], self.num_features)
        else:
            proj = x @ theta + self.tau
        if torch.is_grad_enabled() and (proj.requires_grad or x.requires_grad):
            return torch.cos(proj)
        return proj.cos_()

    def features(self, x: Tensor) -> Tensor:
        """The feature map Phi(x) (Eq. S14).

        Args:
            x: ``(..., n, D)`` inputs.

        Returns:
            ``(..., n, l)`` features ``a * sqrt(2/l) * cos(x Theta + tau)``.
        """
        scale = self.feature_scale()
        if scale.dim() > 0:
            scale = scale.unsqueeze(-1).unsqueeze(-1)
        return scale * self.cos_features(x)

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params) -> Tensor | LinearOperator:
        """``Phi(x1) Phi(x2)^T`` as a low-rank LinearOperator (its diagonal when ``diag``)."""
        phi1 = self.features(x1)
        if diag:
            phi2 = phi1 if x1 is x2 else self.features(x2)
            return (phi1 * phi2).sum(-1)
        if x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2)):
            return LowRankRootLinearOperator(phi1)
        return MatmulLinearOperator(phi1, self.features(x2).mT)
