"""The GP head: GP classification of test points from labelled click points (supplement Alg. S2).

Works on any features: a segmentation model passes per-pixel features, a deep-kernel
user passes the output of any feature extractor.

Example:
    >>> head = GPHead(in_dim=2)
    >>> out = head(x_test, x_click, labels, valid)      # x_test (B, M, 2), x_click (B, N, 2)
    >>> prob = torch.sigmoid(out.mean)                  # (B, M)
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor, nn

from gpcis.gp import fused
from gpcis.gp.kernels import ARDRBFKernel, FourierFeatureKernel
from gpcis.gp.losses import vi_loss
from gpcis.gp.pathwise import (
    blocked_mean_path,
    click_gram_cholesky,
    click_gram_cholesky_ex,
    click_l_inv,
    predictive_variance,
    prior_path,
    update_path,
    update_weights,
)
from gpcis.gp.variational import AmortizedClickPosterior
from gpcis.gp.weights import WeightPrior

__all__ = ["GPHeadConfig", "GPHeadOutput", "GPHead", "check_gp_inputs", "check_num_samples", "neutral_padding"]


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _upcast(x: Tensor) -> Tensor:
    """float16 / bfloat16 -> float32; other dtypes unchanged."""
    return x.float() if x.dtype in _LOW_PRECISION else x


@dataclass
class GPHeadConfig:
    """Configuration of :class:`GPHead`.

    Attributes:
        num_features: number of random Fourier features l (256 for ResNet50/HRNet18s,
            128 for SegFormer-B0 in the paper).
        prior: ``"learned"`` (paper: learned Theta, tau, mu_w, sigma_w) or
            ``"spectral"`` (Wilson et al. 2020: frequencies from k_eta's spectral density).
        learn_weight_prior: learn ``mu_w, sigma_w`` (default: True for ``"learned"``,
            False -- i.e. ``w ~ N(0, I)`` -- for ``"spectral"``).
        mlp_hidden: hidden width of the amortisation MLP of ``m_xi``.
        click_variance: ``sigma^2`` of ``q(f_n)`` (0.01).
        train_noise: ``eps^2`` in training (0.01).
        eval_noise: ``eps^2`` at evaluation; small, so that the posterior mean
            interpolates the click values (``sign f(x_c) = y_c``).
        use_prior_path: include ``Phi(X) w`` (ablation: function-space update only).
        use_update_path: include the update term (ablation: weight-space prior only).
        variance_with_click_noise: ``False`` (default): the marginal variance of Eq. S5,
            ``k** - k*n (K + eps^2 I)^-1 kn*``, the posterior given the click values; ``True``:
            add the term for click values drawn from ``q(f_n)`` (the variance of the pathwise
            samples), which costs a second ``O(M N^2)`` solve.
        vi_reduction: see :func:`gpcis.gp.losses.vi_loss`.
        vi_quad_scale: see :func:`gpcis.gp.losses.vi_loss`.
        vi_kernel_grad: let L_VI's quadratic term ``m^T (K_nn + eps^2 I)^-1 m`` send gradient
            into the kernel (its hyper-parameters, and the click features through
            ``K_nn``): ``True`` (default; every documented run, the released model's
            included). ``False`` treats ``K_nn + eps^2 I`` as a constant there, as the
            paper's released code (which detaches the inverse): the term is the part of
            ``KL(q(f_n) || p(f_n))`` that depends on ``m_xi``, and without the KL's
            ``log det`` its gradient in ``K`` pushes the amplitude up. On the toy problem
            (examples/gp_toy_classification.py, 3 seeds x 2 data sets) ``False`` lowered
            the test accuracy from 0.97-1.00 to 0.65-0.96 (docs/gp_layer.md).
        init_log_outputscale: initial ``log eta0`` (0).
        init_log_precision: initial ``log eta_t`` (-1, the paper's, for L2-normalised
            features; for unnormalised features of dimension ``D`` about ``-log D``, else
            the kernel vanishes: docs/gp_layer.md).
        seed: seed of every initial random draw of the head (Theta, tau, mu_w, the
            amortisation MLP): two heads of one config start equal.
    """

    num_features: int = 256
    prior: Literal["learned", "spectral"] = "learned"
    learn_weight_prior: Optional[bool] = None
    mlp_hidden: int = 32
    click_variance: float = 0.01
    train_noise: float = 0.01
    eval_noise: float = 1e-4
    use_prior_path: bool = True
    use_update_path: bool = True
    variance_with_click_noise: bool = False
    vi_reduction: Literal["sum_clicks", "mean_clicks"] = "sum_clicks"
    vi_quad_scale: float = 0.5
    vi_kernel_grad: bool = True
    init_log_outputscale: float = 0.0
    init_log_precision: float = -1.0
    seed: int = 0

    def __post_init__(self) -> None:
        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"GPHeadConfig.{name} must be a finite number, got {value!r}")
            setattr(self, name, float(value))  # numpy scalars as plain floats (checkpoint-safe)
            return float(value)

        def count(name: str, least: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"GPHeadConfig.{name} must be an integer >= {least}, got {value!r}")
            setattr(self, name, int(value))

        count("num_features", 0)
        count("mlp_hidden", 1)
        count("seed", 0)
        for name in ("click_variance", "train_noise", "eval_noise"):
            if not number(name) > 0:
                raise ValueError(f"GPHeadConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if number("vi_quad_scale") < 0:
            raise ValueError(f"GPHeadConfig.vi_quad_scale must be >= 0, got {self.vi_quad_scale!r}")
        number("init_log_outputscale")
        number("init_log_precision")
        if self.prior not in ("learned", "spectral"):
            raise ValueError(f"GPHeadConfig.prior must be 'learned' or 'spectral', got {self.prior!r}")
        if self.vi_reduction not in ("sum_clicks", "mean_clicks"):
            raise ValueError(f"GPHeadConfig.vi_reduction must be 'sum_clicks' or 'mean_clicks', got "
                             f"{self.vi_reduction!r}")
        if not isinstance(self.vi_kernel_grad, bool):
            raise ValueError(f"GPHeadConfig.vi_kernel_grad must be True or False, got {self.vi_kernel_grad!r}")
        if self.learn_weight_prior not in (None, True, False):
            raise ValueError(f"GPHeadConfig.learn_weight_prior must be None, True or False, got "
                             f"{self.learn_weight_prior!r}")


@dataclass
class GPHeadOutput:
    """Result of :meth:`GPHead.forward`.

    Attributes:
        mean: ``(B, M)`` latent function on the mean path (``w = mu_w``, ``f_n = m_xi``):
            logits of the foreground probability.
        samples: ``(S, B, M)`` joint pathwise samples, or ``None`` when ``num_samples=0``.
        variance: ``(B, M)`` marginal posterior variance (Eq. S5), or ``None``.
        vi_loss: scalar L_VI (Eq. S1), or ``None`` when not computed (inference: eval
            mode under ``torch.no_grad``, or ``compute_vi_loss=False``).
        click_mean: ``(B, N)`` ``m_xi`` at the clicks (0 at padding).
        cholesky_info: ``(B,)`` int ``info`` of the click system's Cholesky factorisation
            (0: success) from a ``sync_free`` call, else ``None``.
    """

    mean: Tensor
    samples: Optional[Tensor]
    variance: Optional[Tensor]
    vi_loss: Optional[Tensor]
    click_mean: Tensor
    cholesky_info: Optional[Tensor] = None


def check_gp_inputs(
    x_test: Tensor,
    x_click: Optional[Tensor],
    labels: Tensor,
    valid: Tensor,
    in_dim: Optional[int] = None,
    check_values: bool = True,
) -> Tensor:
    """Validate the GP head's inputs; return labels mapped to {-1, +1} (0 at padding).

    Args:
        x_click: ``(B, N, D)``, or ``None`` where the click inputs are rows of ``x_test``
            (:meth:`GPHead.fused_mean` with click coordinates).
        check_values: also check the values (finite inputs, labels in {-1, +1} or {0, 1});
            this reads one result back from the device. ``False`` checks shapes and dtypes
            only and takes the labels to be +-1 already (a ``sync_free`` call).

    Raises:
        ValueError: naming the offending argument (shape, dtype, non-finite values, values
            so large that their squared norm overflows, labels outside {-1, +1} / {0, 1}).
    """
    for name, t in (("x_test", x_test), ("x_click", x_click)):
        if t is None and name == "x_click":
            continue
        if not isinstance(t, Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a (B, M, D) tensor, got {getattr(t, 'shape', type(t))}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    for name, t in (("labels", labels), ("valid", valid)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    b, _, d = x_test.shape
    if in_dim is not None and d != in_dim:
        raise ValueError(f"x_test has feature dimension {d}, the head expects in_dim={in_dim}")
    if x_click is not None and (x_click.shape[0] != b or x_click.shape[2] != d):
        raise ValueError(
            f"x_click must have shape ({b}, N, {d}) to match x_test {tuple(x_test.shape)}, "
            f"got {tuple(x_click.shape)}"
        )
    if x_click is None and not (isinstance(labels, Tensor) and labels.dim() == 2 and labels.shape[0] == b):
        raise ValueError(f"labels must have shape ({b}, N), got {tuple(getattr(labels, 'shape', ()))}")
    n = x_click.shape[1] if x_click is not None else labels.shape[1]
    if not isinstance(valid, Tensor) or valid.shape != (b, n):
        raise ValueError(f"valid must have shape ({b}, {n}), got {tuple(getattr(valid, 'shape', ()))}")
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor, got {valid.dtype}")
    if not isinstance(labels, Tensor) or labels.shape != (b, n):
        raise ValueError(f"labels must have shape ({b}, {n}), got {tuple(getattr(labels, 'shape', ()))}")
    if x_click is not None and x_click.dtype != x_test.dtype:
        raise ValueError(f"x_test and x_click must have one dtype, got {x_test.dtype} and {x_click.dtype}")
    zero = torch.zeros((), dtype=x_test.dtype, device=labels.device)
    if not check_values:  # where, not a product: a NaN label at padding stays out (NaN * 0 is NaN)
        return torch.where(valid, labels.to(x_test.dtype), zero)
    lab = torch.where(valid, labels.to(x_test.dtype), 1.0)  # padded clicks: a neutral label
    # every value check in one device-to-host transfer (one GPU sync instead of five); a norm
    # is finite iff every entry is finite and the squares' sum does not overflow: the entries
    # are then checked one by one to tell the two apart
    acc = torch.promote_types(x_test.dtype, torch.float32)  # half inputs: no false overflow

    def norm_finite(t: Optional[Tensor]) -> Tensor:
        if t is None:
            return lab.new_ones((), dtype=torch.bool)
        return torch.isfinite(torch.linalg.vector_norm(t, dtype=acc))

    if x_click is not None:  # padded rows are never used (neutral_padding): any values pass
        x_click = torch.where(valid.unsqueeze(-1), x_click, 0.0)
    finite_test, finite_click, finite_lab, signed, binary = torch.stack([
        norm_finite(x_test), norm_finite(x_click), torch.isfinite(lab).all(),
        ((lab == -1) | (lab == 1)).all(), ((lab == 0) | (lab == 1)).all(),
    ]).tolist()
    for name, t, finite in (("x_test", x_test, finite_test), ("x_click", x_click, finite_click)):
        if not finite and t is not None:
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or Inf values")
            # squared distances of such inputs overflow, and the random features' phases
            # theta^T x lost every digit long before (one float32 ulp is 1 rad at |x| ~ 1e7)
            raise ValueError(
                f"{name} is too large for the GP in {acc}: its squared norm overflows (largest |value| "
                f"{t.abs().max().item():.3g}); rescale the features (e.g. normalise them)"
            )
    if not finite_lab:
        raise ValueError("labels contain NaN or Inf values")
    if not signed:
        if not binary:
            raise ValueError("labels must be in {-1, +1} (or {0, 1}) at valid clicks")
        labels = labels.to(x_test.dtype) * 2 - 1  # {0, 1} -> {-1, +1}
    return torch.where(valid, labels.to(x_test.dtype), zero)


def check_num_samples(num_samples: object, allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``num_samples`` is an int >= 0 (not a bool; ``None`` too
    where ``allow_none``): the one check of the GP head, the segmentation head and the model."""
    if num_samples is None and allow_none:
        return
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
        what = "None or an int >= 0" if allow_none else "an int >= 0"
        raise ValueError(f"num_samples must be {what}, got {num_samples!r}")


def neutral_padding(x_click: Tensor, valid: Tensor) -> Tensor:
    """``x_click`` with its padded rows replaced by the mean of the item's valid rows.

    Padded clicks drop out of the GP exactly in exact arithmetic (zero weight, identity rows
    of the Cholesky factor), but in floating point they still enter two things: the centre
    of the kernel's distance expansion (:func:`~gpcis.gp.kernels.centred_clicks`, the mean
    of all rows) and the products with their zero weights (``inf * 0`` is NaN). With their
    rows at the valid clicks' mean the centre is the valid clicks' mean and every product
    is finite, so padding has no effect whatever its values (a padded value of 1e3 changed
    a float32 mean by 1e-2 before).

    Args:
        x_click: ``(B, N, D)`` click inputs.
        valid: ``(B, N)`` bool.

    Returns:
        ``(B, N, D)``; items without a valid click get zero rows.
    """
    keep = valid.unsqueeze(-1)
    rows = torch.where(keep, x_click, 0.0)
    centre = rows.sum(-2, keepdim=True) / keep.sum(-2, keepdim=True).clamp_min(1).to(x_click.dtype)
    return torch.where(keep, x_click, centre)


class GPHead(nn.Module):
    """GP classification head with an amortized click posterior and a pathwise sampler.

    Parts (all GPyTorch / linear_operator objects where they exist):

    * ``kernel`` -- :class:`ARDRBFKernel` k_eta (Eq. S2), eta in log space;
    * ``rff`` -- :class:`FourierFeatureKernel` Phi (Eq. S14) of the prior path;
    * ``weight_prior`` -- :class:`WeightPrior` w ~ N(mu_w, sigma_w^2 I) (Eq. S13);
    * ``posterior`` -- :class:`AmortizedClickPosterior` q(f_n) (Eq. S10-S11).

    ``forward`` returns the mean path, optional joint samples (Eq. S15), the marginal
    variance (Eq. S5) and L_VI (Eq. S1). In ``train()`` mode the update uses
    ``eps^2 = train_noise``, in ``eval()`` mode ``eval_noise``. At inference on a GPU
    without samples the mean path runs in one fused kernel
    (:func:`gpcis.gp.fused.fused_mean_path`; the PyTorch path elsewhere).

    Args:
        in_dim: feature dimension D.
        config: :class:`GPHeadConfig`.
    """

    def __init__(self, in_dim: int, config: Optional[GPHeadConfig] = None) -> None:
        super().__init__()
        self.config = config = config or GPHeadConfig()
        self.in_dim = int(in_dim)
        gen = torch.Generator().manual_seed(config.seed)
        self.kernel = ARDRBFKernel(
            ard_num_dims=in_dim,
            init_log_outputscale=config.init_log_outputscale,
            init_log_precision=config.init_log_precision,
        )
        self.rff = FourierFeatureKernel(
            config.num_features,
            in_dim,
            mode=config.prior,
            base_kernel=self.kernel if config.prior == "spectral" else None,
            generator=gen,
        )
        learn_w = config.learn_weight_prior
        if learn_w is None:
            learn_w = config.prior == "learned"
        self.weight_prior = WeightPrior(config.num_features, learnable=learn_w, generator=gen)
        self.posterior = AmortizedClickPosterior(in_dim, config.mlp_hidden, config.click_variance, generator=gen)
        #: why the fused GPU kernel (gpcis.gp.fused) failed on this head, if it did (then not retried)
        self._fused_error: Optional[str] = None

    @property
    def noise(self) -> float:
        """``eps^2`` in use: ``train_noise`` in training mode, ``eval_noise`` in eval mode."""
        return self.config.train_noise if self.training else self.config.eval_noise

    def forward(
        self,
        x_test: Tensor,
        x_click: Tensor,
        labels: Tensor,
        valid: Tensor,
        num_samples: int = 0,
        return_variance: bool = False,
        generator: Optional[torch.Generator] = None,
        compute_vi_loss: Optional[bool] = None,
        sync_free: bool = False,
    ) -> GPHeadOutput:
        """Classify test points from clicks.

        Args:
            x_test: ``(B, M, D)`` test inputs.
            x_click: ``(B, N, D)`` click inputs (``N`` may be 0).
            labels: ``(B, N)`` click labels in {-1, +1} (or {0, 1}).
            valid: ``(B, N)`` bool; padded clicks have no effect, whatever their values
                (:func:`neutral_padding`).
            num_samples: ``S``; 0 returns the mean path only.
            return_variance: also return the marginal variance (Eq. S5).
            generator: random generator for the draws of ``w`` and ``f_n``.
            compute_vi_loss: compute L_VI. ``None`` (default): when it can be trained
                on, i.e. in training mode or with gradients enabled; skipped at inference
                (eval mode under ``torch.no_grad``), where it would cost ~120 small tensor
                operations, a fifth of the head's kernel launches on a GPU.
            sync_free: never read a result back to the host, so that the call can be captured
                in a CUDA graph: the input values are not checked (labels must be +-1 at
                valid clicks), the click system is factorised without the jitter escalation
                (:func:`~gpcis.gp.pathwise.click_gram_cholesky_ex`) and the output's
                ``cholesky_info`` says whether that worked; where it did, the result equals
                the default call's. Not with ``compute_vi_loss``.

        Returns:
            :class:`GPHeadOutput` in float32 for float16/bfloat16 inputs, else in the
            inputs' dtype.

        Mixed precision: the GP algebra (``cos`` of the projections, the Cholesky factor
        and its solves) always runs in at least float32 -- half-precision inputs are
        upcast and autocast is switched off inside the head, so the head trains under
        ``torch.autocast`` with the backbone in float16/bfloat16.
        """
        if compute_vi_loss is None:
            compute_vi_loss = self.training or torch.is_grad_enabled()
        check_num_samples(num_samples)  # before the dispatch below reads it
        for name, t in (("x_test", x_test), ("x_click", x_click)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor, got "
                                 f"{getattr(t, 'dtype', type(t).__name__)}")
        if x_test.dim() == 3 and (x_test.shape[0] == 0 or x_test.shape[1] == 0):
            raise ValueError(f"x_test must hold at least one batch item and one test point, got shape "
                             f"{tuple(x_test.shape)}")
        own = self.kernel.raw_outputscale.dtype
        given = torch.float32 if x_test.dtype in _LOW_PRECISION else x_test.dtype  # half inputs run in float32
        if given != own:
            raise ValueError(f"the inputs are {x_test.dtype}, the head's parameters {own}: convert one of them "
                             f"(head.double() / head.float(), or x.to({own}))")
        device_type = x_test.device.type
        if torch.is_autocast_enabled(device_type) or x_test.dtype in _LOW_PRECISION or x_click.dtype in _LOW_PRECISION:
            with torch.autocast(device_type, enabled=False):
                return self._forward(_upcast(x_test), _upcast(x_click), labels, valid, num_samples,
                                     return_variance, generator, compute_vi_loss, sync_free)
        return self._forward(x_test, x_click, labels, valid, num_samples, return_variance, generator,
                             compute_vi_loss, sync_free)

    def fused_mean(
        self,
        x_test: Tensor,
        labels: Tensor,
        valid: Tensor,
        x_click: Optional[Tensor] = None,
        coords: Optional[Tensor] = None,
        size: Optional[tuple[int, int]] = None,
        sync_free: bool = False,
    ) -> Optional[GPHeadOutput]:
        """The mean path at inference in three GPU kernels, or ``None`` where they do not apply.

        :func:`gpcis.gp.fused.click_system` computes the click side (``m_xi``, the prior at
        the clicks, the Cholesky factor of ``K_nn + eps^2 I`` and ``alpha``, in float64) and
        :func:`gpcis.gp.fused.mean_path_from_clicks` the mean path at every test point; the
        PyTorch path takes ~70 small operations and a cuSOLVER call for the first.
        :meth:`forward` uses it by itself where it applies; a segmentation head can give the
        clicks as pixel coordinates of ``x_test`` instead of their rows.

        Applies to float32 CUDA inputs in eval mode under ``torch.no_grad``, with an
        unbatched kernel, the update path on and at most
        :data:`gpcis.gp.fused.MAX_CLICKS` clicks. Without ``sync_free`` the Cholesky
        factorisation's ``info`` is read back, and where it failed (the system needs
        jitter) ``None`` is returned, so that :meth:`forward`'s jitter escalation runs.

        Args:
            x_test: ``(B, M, D)`` test inputs.
            labels, valid: ``(B, N)`` as :meth:`forward`.
            x_click: ``(B, N, D)`` click inputs; or
            coords, size: ``(B, N, 2)`` clicked ``(row, col)`` pixels of the row-major
                ``size = (H, W)`` grid of ``x_test``'s rows (rounded and clamped as
                :func:`gpcis.models.heads.gather_at_clicks`).
            sync_free: as :meth:`forward` (no host reads; ``cholesky_info`` returned).

        Returns:
            :class:`GPHeadOutput` (mean and ``click_mean``) or ``None``.
        """
        cfg = self.config
        if (x_click is None) == (coords is None):
            raise ValueError("fused_mean needs either x_click or coords (with size)")
        if (self.training or torch.is_grad_enabled() or self._fused_error is not None
                or not isinstance(x_test, Tensor) or not fused.usable(x_test)
                or (x_click is not None and (not isinstance(x_click, Tensor) or x_click.dtype != torch.float32))
                or not isinstance(valid, Tensor) or valid.dim() != 2 or not 0 < valid.shape[1] <= fused.MAX_CLICKS
                or not cfg.use_update_path):
            return None
        prior = self._prior_operands()
        if prior is None:
            return None
        theta, tau, w, scale = prior
        labels = check_gp_inputs(x_test, x_click, labels, valid, self.in_dim, check_values=not sync_free)
        if x_click is not None:
            x_click = neutral_padding(x_click, valid)
        if coords is not None and (coords.shape != (*valid.shape, 2) or size is None
                                   or int(size[0]) * int(size[1]) != x_test.shape[1]):
            raise ValueError(f"coords must have shape {(*valid.shape, 2)} and size (H, W) with H * W = "
                             f"{x_test.shape[1]}, got {tuple(coords.shape)} and {size}")
        eta = self.kernel.precision
        constraint = self.kernel.raw_outputscale_constraint
        log_eta0 = (self.kernel.raw_outputscale if getattr(constraint, "_transform", None) is torch.exp
                    else self.kernel.outputscale.log())  # ln eta0 without an exp and a log where it can
        linear1, linear2 = self.posterior.mlp[0], self.posterior.mlp[2]
        try:
            system = fused.click_system(
                x_test if coords is not None else x_click, labels, valid, theta, tau, w, scale, eta, log_eta0,
                self.noise, (linear1.weight, linear1.bias, linear2.weight, linear2.bias), coords=coords, size=size,
            )
            if not sync_free and bool((system.info != 0).any()):
                return None  # the system needs jitter: the PyTorch path's escalation
            mean = fused.mean_path_from_clicks(x_test, theta, tau, w, scale, system, eta, log_eta0)
        except Exception as err:  # e.g. no compiler for Triton's launcher: the PyTorch path instead
            self.fused_failed(err, stacklevel=3)
            return None
        return GPHeadOutput(mean=mean, samples=None, variance=None, vi_loss=None, click_mean=system.click_mean,
                            cholesky_info=system.info if sync_free else None)

    def _prior_operands(self) -> Optional[tuple[Tensor, Tensor, Tensor, float]]:
        """``(Theta, tau, w, scale)`` of the prior path for the fused kernels, ``w = mu_w``:
        Phi's scale ``sqrt(2/l)`` as a Python number for learned features (no extra kernel),
        folded into ``w`` (and ``scale = 1``) for spectral ones; no basis functions
        (``l = 0``) when the prior path is switched off. ``None`` where the kernels do not
        apply: a batched kernel (or batched frequencies)."""
        theta, tau, w = self.rff.frequencies(), self.rff.tau, self.weight_prior.mean
        if theta.dim() != 2 or self.kernel.batch_shape != torch.Size([]):
            return None
        if not self.config.use_prior_path:
            return theta[:, :0], tau[:0], w[:0], 1.0
        if self.rff.mode == "learned":
            return theta, tau, w, math.sqrt(2.0 / self.config.num_features)
        return theta, tau, w * self.rff.feature_scale(), 1.0

    def fused_failed(self, err: Exception, stacklevel: int = 2) -> None:
        """Switch the fused kernels off on this head after ``err`` (e.g. no compiler for
        Triton's launcher): a warning says why, and the PyTorch path runs from then on."""
        self._fused_error = f"{type(err).__name__}: {err}"
        warnings.warn(f"fused GP mean path unavailable, using the PyTorch path: {self._fused_error}",
                      RuntimeWarning, stacklevel=stacklevel + 1)

    def _one_pass_operands(
        self, x_test: Tensor, x_click: Tensor, residual: Tensor, valid: Tensor, chol: Optional[Tensor]
    ) -> Optional[tuple[Tensor, ...]]:
        """The operands ``(x, Theta, tau, w, z, eta, eta0, alpha)`` of the one-pass mean path
        ``Phi(X) w + K_{*n} alpha`` (``w = mu_w`` with Phi's scale, ``alpha`` the update
        weights of ``residual = m_xi - Phi(X_n) w``); ``None`` for a batched kernel or
        frequencies."""
        prior = self._prior_operands()
        if prior is None:
            return None
        theta, tau, w, scale = prior
        n = valid.shape[1]
        if self.config.use_update_path and n:
            alpha = update_weights(chol, residual, valid, x_test.dtype)
        else:
            alpha, x_click = residual[:, :0], x_click[:, :0]
        w = (w * scale if scale != 1.0 else w).expand(valid.shape[0], -1)  # (B, l), scaled
        return (x_test, theta, tau, w, x_click, self.kernel.precision.reshape(-1), self.kernel.outputscale, alpha)

    def _fused_mean_path(
        self, x_test: Tensor, x_click: Tensor, residual: Tensor, valid: Tensor, chol: Optional[Tensor]
    ) -> Optional[Tensor]:
        """The mean path through :func:`gpcis.gp.fused.fused_mean_path` (a GPU).

        Args:
            residual: ``(B, N)`` ``m_xi - Phi(X_n) w``.

        Returns:
            ``(1, B, M)``, or ``None`` where the fused kernel does not apply (a batched
            kernel or frequencies) or cannot run here (then it is not tried again on this
            head, and a warning says why).
        """
        operands = self._one_pass_operands(x_test, x_click, residual, valid, chol)
        if operands is None:
            return None
        try:
            out = fused.fused_mean_path(*operands)
        except Exception as err:  # e.g. no compiler for Triton's launcher: the PyTorch path instead
            self.fused_failed(err, stacklevel=4)
            return None
        return out[None]

    def _blocked_mean_path(
        self, x_test: Tensor, x_click: Tensor, residual: Tensor, valid: Tensor, chol: Optional[Tensor],
        return_variance: bool,
    ) -> Optional[tuple[Tensor, Optional[Tensor]]]:
        """The mean path and, if asked for, the variance through
        :func:`~gpcis.gp.pathwise.blocked_mean_path` (the CPU): ``((1, B, M), (B, M) or
        None)``, or ``None`` for a batched kernel or frequencies. The variance is computed
        in the same pass where the update path is on (with it off, the mean has no click
        terms while the variance still conditions on the clicks: then ``None``, and the
        caller's :func:`~gpcis.gp.pathwise.predictive_variance` forms ``K_{*n}``)."""
        operands = self._one_pass_operands(x_test, x_click, residual, valid, chol)
        if operands is None:
            return None
        l_inv, correction = None, 0.0
        n = valid.shape[1]
        if return_variance and (self.config.use_update_path or not n):
            if n:
                l_inv = click_l_inv(chol, valid, x_test.dtype)  # products in the input dtype, as predictive_variance's
            else:
                l_inv = x_test.new_zeros(valid.shape[0], 0, 0)
            s2 = self.posterior.variance if self.config.variance_with_click_noise else self.noise
            correction = float(s2 - self.noise)
        mean, variance = blocked_mean_path(*operands, l_inv=l_inv, variance_correction=correction)
        return mean[None], variance

    def _forward(
        self,
        x_test: Tensor,
        x_click: Tensor,
        labels: Tensor,
        valid: Tensor,
        num_samples: int,
        return_variance: bool,
        generator: Optional[torch.Generator],
        compute_vi_loss: bool,
        sync_free: bool,
    ) -> GPHeadOutput:
        if num_samples == 0 and not return_variance and not compute_vi_loss:
            out = self.fused_mean(x_test, labels, valid, x_click=x_click, sync_free=sync_free)
            if out is not None:
                return out
        labels = check_gp_inputs(x_test, x_click, labels, valid, self.in_dim, check_values=not sync_free)
        x_click = neutral_padding(x_click, valid)
        if sync_free and compute_vi_loss:
            raise ValueError("sync_free=True is for inference: it cannot compute L_VI (compute_vi_loss=False)")
        cfg = self.config
        b, m, _ = x_test.shape
        n = x_click.shape[1]
        noise = self.noise
        dtype = x_test.dtype
        vmask = valid.to(dtype)

        click_mean = self.posterior.mean(x_click, labels, valid)  # (B, N)
        # Weights and click values: index 0 is the mean path, 1..S the samples.
        w_mean = self.weight_prior.mean.to(dtype).expand(1, b, -1)
        f_mean = click_mean.unsqueeze(0)
        if num_samples > 0:
            w = torch.cat([w_mean, self.weight_prior.sample(num_samples, torch.Size([b]), generator).to(dtype)])
            device = generator.device if generator is not None else x_test.device
            eps = torch.randn((num_samples, b, n), generator=generator, device=device, dtype=dtype).to(x_test.device)
            f_draw = click_mean + (self.posterior.variance**0.5) * eps * vmask
            f_click = torch.cat([f_mean, f_draw])
        else:
            w, f_click = w_mean, f_mean

        prior_click = x_click.new_zeros(w.shape[0], b, n)
        if cfg.use_prior_path and n:
            prior_click = prior_path(self.rff, x_click, w)
        chol, info = None, None
        if sync_free:  # also for N = 0: info is then (B,) zeros
            chol, info = click_gram_cholesky_ex(self.kernel, x_click, valid, noise)
        elif n:
            chol = click_gram_cholesky(self.kernel, x_click, valid, noise)
        out, k_star_n, variance = None, None, None
        # the mean path at inference in one pass over the test points, the (M, l) features
        # never formed whole: a fused kernel on a GPU (the variance, if asked for, forms
        # K_{*n} itself); blocked_mean_path on the CPU, with the variance in the same pass
        inference = num_samples == 0 and not compute_vi_loss and not torch.is_grad_enabled()
        residual = f_click[0] - prior_click[0]  # of the mean path
        if inference and fused.usable(x_test) and self._fused_error is None:
            out = self._fused_mean_path(x_test, x_click, residual, valid, chol)
        if out is None and inference and x_test.device.type == "cpu":
            one_pass = self._blocked_mean_path(x_test, x_click, residual, valid, chol, return_variance)
            if one_pass is not None:
                out, variance = one_pass
        if out is None:
            out = prior_path(self.rff, x_test, w) if cfg.use_prior_path else x_test.new_zeros(w.shape[0], b, m)
            # K_{*n} is formed for the variance; the update path alone reduces it block by block
            k_star_n = self.kernel(x_test, x_click).to_dense() if n and return_variance else None
            if cfg.use_update_path and n:
                out = out + update_path(
                    self.kernel, x_test, x_click, f_click - prior_click, valid, noise, chol, k_star_n
                )

        if return_variance and variance is None:
            variance = predictive_variance(
                self.kernel, x_test, x_click, valid, noise,
                click_variance=self.posterior.variance if cfg.variance_with_click_noise else None, chol=chol,
                k_star_n=k_star_n, solve_dtype=x_test.dtype,  # (M, N) x (N, N) products in the input dtype: fast maps
            )
        loss = None
        if compute_vi_loss and n:
            bce_f = f_click[1:] if num_samples > 0 else f_click
            vi_chol = chol if cfg.vi_kernel_grad else chol.detach()  # GPHeadConfig.vi_kernel_grad
            loss = vi_loss(click_mean, bce_f, labels, valid, vi_chol, cfg.vi_reduction, cfg.vi_quad_scale)
        elif compute_vi_loss:
            loss = x_test.new_zeros(()) + 0.0 * click_mean.sum()
        return GPHeadOutput(
            mean=out[0],
            samples=out[1:] if num_samples > 0 else None,
            variance=variance,
            vi_loss=loss,
            click_mean=click_mean,
            cholesky_info=info,
        )
