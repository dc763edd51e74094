"""Kernels against closed forms written independently in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from linear_operator.operators import LinearOperator

from gpcis.gp import ARDRBFKernel, FourierFeatureKernel


def _rbf_reference(x1: np.ndarray, x2: np.ndarray, eta0: float, eta: np.ndarray) -> np.ndarray:
    out = np.empty((x1.shape[0], x2.shape[0]))
    for i in range(x1.shape[0]):
        for j in range(x2.shape[0]):
            out[i, j] = eta0 * math.exp(-0.5 * float(np.sum(eta * (x1[i] - x2[j]) ** 2)))
    return out


def test_ard_rbf_initialisation_is_the_papers():
    k = ARDRBFKernel(ard_num_dims=4)
    assert torch.allclose(k.raw_outputscale, torch.tensor(0.0))
    assert torch.allclose(k.raw_precision, torch.full((1, 4), -1.0))
    assert torch.allclose(k.outputscale, torch.tensor(1.0))
    assert torch.allclose(k.precision, torch.full((1, 4), math.exp(-1.0)))


def test_ard_rbf_matches_brute_force_float64():
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(7, 3, generator=g, dtype=torch.float64)
    x2 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    k = ARDRBFKernel(3).double()
    k.outputscale = 1.7
    k.precision = torch.tensor([0.3, 2.0, 5.0], dtype=torch.float64)
    ref = _rbf_reference(x1.numpy(), x2.numpy(), 1.7, np.array([0.3, 2.0, 5.0]))
    got = k(x1, x2).to_dense().detach().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    diag = k(x1, x1, diag=True).detach().numpy()
    np.testing.assert_allclose(diag, np.full(7, 1.7), rtol=1e-12)


@pytest.mark.parametrize("batch", [(), (2,)])
def test_ard_rbf_fused_rectangular_path_matches_brute_force_and_gpytorch(batch):
    """Blocks with n1 >= FUSED_MIN_ROWS use the fused distance. float64: equal to the brute
    force to 1e-12. float32: the expansion |a|^2 + |b|^2 - 2ab loses about
    eps32 * (|a|^2 + |b|^2) ~ 1e-7 * 60 in the exponent for these inputs (|x| ~ 5 after
    centring), i.e. a relative error ~ 6e-6 in k; GPyTorch's covar_dist has the same order.
    Gradients (also with a click exactly on a test point, where the centred row is 0) equal
    those of the covar_dist path."""
    g = torch.Generator().manual_seed(3)
    n1 = ARDRBFKernel.FUSED_MIN_ROWS + 5
    x1 = torch.randn(*batch, n1, 6, generator=g, dtype=torch.float64) + 2.0
    x2 = torch.randn(*batch, 9, 6, generator=g, dtype=torch.float64) + 2.0
    x2[..., 0, :] = x1[..., 0, :]  # a click on a test point
    eta = torch.tensor([0.3, 2.0, 5.0, 0.5, 1.0, 0.1], dtype=torch.float64)
    k = ARDRBFKernel(6).double()
    k.outputscale, k.precision = 1.7, eta
    ref = 1.7 * torch.exp(-0.5 * (((x1[..., :, None, :] - x2[..., None, :, :]) ** 2) * eta).sum(-1))
    torch.testing.assert_close(k(x1, x2).to_dense(), ref, rtol=1e-12, atol=1e-14)
    k32 = ARDRBFKernel(6)
    k32.outputscale, k32.precision = 1.7, eta.float()
    torch.testing.assert_close(k32(x1.float(), x2.float()).to_dense().double(), ref, rtol=0, atol=1.7 * 6e-6)

    def grads(min_rows):
        x1g, x2g = x1.clone().requires_grad_(True), x2.clone().requires_grad_(True)
        k.FUSED_MIN_ROWS = min_rows
        k.zero_grad()
        w = torch.linspace(-1, 1, n1 * 9, dtype=torch.float64).reshape(n1, 9)
        (k(x1g, x2g).to_dense() * w).sum().backward()
        return [x1g.grad, x2g.grad, k.raw_outputscale.grad, k.raw_precision.grad]

    fused, plain = grads(ARDRBFKernel.FUSED_MIN_ROWS), grads(10**9)
    del k.FUSED_MIN_ROWS  # back to the class attribute
    for a, b in zip(fused, plain):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("channel_major", [False, True])
@pytest.mark.parametrize("n2", [1, 6])
@pytest.mark.parametrize(("x1_batch", "x2_batch", "kernel_batch"), [((), (), ()), ((2,), (2,), ()), ((2,), (), ()), ((), (), (3,))])
def test_ard_rbf_blocked_inference_path_matches_brute_force(x1_batch, x2_batch, kernel_batch, n2, channel_major):
    """Without autograd, blocks of n1 >= FUSED_MIN_ROWS are filled BLOCK_ROWS rows at a time
    (a last, partial block here) with the arithmetic of the fused distance, exp(-d^2/2) as
    exp2, and from TRANSPOSED_MIN_COLS columns on stored transposed (n2 = 1 and 6 cover both
    code paths); a channel-major x1 is scaled in (D, rows) blocks (both input layouts tested). float64: the brute force to 1e-12, and the values of the autograd path up to
    GEMM blocking and the exp/exp2 rounding (1e-13); broadcast batch shapes of x1, x2 and the
    kernel give the same shapes."""
    assert 1 < ARDRBFKernel.TRANSPOSED_MIN_COLS <= 6
    g = torch.Generator().manual_seed(4)
    n1 = ARDRBFKernel.FUSED_MIN_ROWS + 7
    x1 = torch.randn(*x1_batch, n1, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(*x2_batch, n2, 5, generator=g, dtype=torch.float64)
    if channel_major:  # a (..., D, n1) feature map seen as (..., n1, D), as the segmentation head passes it
        x1 = x1.mT.contiguous().mT
        assert x1.stride(-2) == 1
    k = ARDRBFKernel(5, batch_shape=torch.Size(kernel_batch)).double()
    k.BLOCK_ROWS = 1000
    with torch.no_grad():
        k.raw_outputscale.copy_(torch.linspace(-0.5, 0.5, k.raw_outputscale.numel()).reshape(kernel_batch))
        k.raw_precision.copy_(torch.linspace(-1.5, 1.0, 5).expand_as(k.raw_precision))
        got = k(x1, x2).to_dense()
    eta0 = k.outputscale.detach()[..., None, None]
    eta = k.precision.detach()  # (*kernel_batch, 1, 5)
    ref = eta0 * torch.exp(-0.5 * (((x1[..., :, None, :] - x2[..., None, :, :]) ** 2) * eta[..., None, :]).sum(-1))
    assert got.shape == ref.shape
    if n2 > 1:  # (one column is the same array in both layouts)
        assert got.mT.is_contiguous() == (n2 >= ARDRBFKernel.TRANSPOSED_MIN_COLS)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    with_grad = k(x1.requires_grad_(True), x2).to_dense()  # the autograd path
    torch.testing.assert_close(got, with_grad.detach(), rtol=1e-13, atol=1e-15)
    # float32: the exponent v = c |a|^2 + (a.b + e) / ln 2 (c = -1/(2 ln 2), e = ln eta0 - |b|^2/2)
    # is a (D + 1)-term GEMM plus two additions, so |dv| <= (D + 4) u S / ln 2 with S the sum of
    # the magnitudes of its terms, S <= (|a| + |b|)^2 + 2 |ln eta0| (a, b centred and scaled);
    # k = 2^v then has relative error <= ln 2 |dv| + 2 u (exp2 and its rounding).
    k32 = ARDRBFKernel(5, batch_shape=torch.Size(kernel_batch))
    k32.load_state_dict(k.state_dict())
    with torch.no_grad():
        got32 = k32(x1.detach().float(), x2.float()).to_dense().double()
        centre = x2.mean(-2, keepdim=True)
        root = eta.sqrt()
        a_norm = ((x1.detach() - centre) * root).norm(dim=-1).unsqueeze(-1)  # (..., n1, 1)
        b_norm = ((x2 - centre) * root).norm(dim=-1).unsqueeze(-2)  # (..., 1, n2)
    u = 2.0**-24
    s_terms = (a_norm + b_norm) ** 2 + 2 * eta0.log().abs()
    bound = ref * ((5 + 4) * u * s_terms + 2 * u)
    assert ((got32 - ref).abs() <= bound).all()


@pytest.mark.parametrize("channel_major", [False, True])
@pytest.mark.parametrize("n2,s", [(1, 1), (6, 1), (6, 3)])
@pytest.mark.parametrize(("x1_batch", "x2_batch", "w_batch"), [((), (), ()), ((2,), (2,), (2,)), ((2,), (), ())])
def test_ard_rbf_weighted_sum_reduces_each_block_to_the_sum_of_the_kernel_values(x1_batch, x2_batch, w_batch, n2, s,
                                                                                  channel_major):
    """weights @ k(x2, x1) block by block (rows in BLOCK_ROWS blocks, a last partial one; both
    column layouts; both input layouts; broadcast batches): float64 equal to the brute-force
    sum to 1e-12; float32 within its derived bound of the float64 sum: each kernel value
    within the blocked path's bound (see the test above), the n2-term sum adds
    gamma_n2 = n2 u / (1 - n2 u) of sum |w k| (Higham, Thm 3.1), the result's rounding u."""
    g = torch.Generator().manual_seed(5)
    n1, d = ARDRBFKernel.FUSED_MIN_ROWS + 11, 5
    x1 = torch.randn(*x1_batch, n1, d, generator=g, dtype=torch.float64)
    x2 = torch.randn(*x2_batch, n2, d, generator=g, dtype=torch.float64)
    w = torch.randn(*w_batch, s, n2, generator=g, dtype=torch.float64).float().double()  # float32 numbers
    if channel_major:
        x1 = x1.mT.contiguous().mT
    k = ARDRBFKernel(d).double()
    k.BLOCK_ROWS = 1000
    with torch.no_grad():
        k.raw_outputscale.fill_(0.3)
        k.raw_precision.copy_(torch.linspace(-1.5, 1.0, d).expand_as(k.raw_precision))
        got = k.weighted_sum(x1, x2, w)
        kk = k.outputscale * torch.exp(-0.5 * (((x1[..., :, None, :] - x2[..., None, :, :]) ** 2) * k.precision).sum(-1))
        ref = torch.matmul(w, kk.mT)  # (..., s, n1)
    assert got.shape == ref.shape == (*torch.broadcast_shapes(x1_batch, x2_batch, w_batch), s, n1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    with torch.enable_grad():  # the autograd path is the product with the whole matrix: gradients
        xg, wg = x1.clone().requires_grad_(True), w.clone().requires_grad_(True)
        with_grad = k.weighted_sum(xg, x2, wg)
        with_grad.square().sum().backward()
        xd, wd = x1.clone().requires_grad_(True), w.clone().requires_grad_(True)
        dense = torch.matmul(wd, k(xd, x2).to_dense().mT)
        grads = torch.autograd.grad(dense.square().sum(), [xd, wd, k.raw_precision])
    torch.testing.assert_close(with_grad.detach(), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(xg.grad, grads[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(wg.grad, grads[1], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(k.raw_precision.grad, grads[2], rtol=1e-12, atol=1e-14)
    k.zero_grad()
    k.BLOCK_ROWS = 10**9  # one block (a GPU's layout) gives the same sums
    with torch.no_grad():
        torch.testing.assert_close(k.weighted_sum(x1, x2, w), ref, rtol=1e-12, atol=1e-14)
    k.BLOCK_ROWS = 1000
    k32 = ARDRBFKernel(d)
    k32.load_state_dict(k.state_dict())
    k32.BLOCK_ROWS = 1000
    with torch.no_grad():
        got32 = k32.weighted_sum(x1.float(), x2.float(), w.float()).double()
        centre = x2.mean(-2, keepdim=True)
        root = k.precision.sqrt()
        a_norm = ((x1 - centre) * root).norm(dim=-1).unsqueeze(-1)
        b_norm = ((x2 - centre) * root).norm(dim=-1).unsqueeze(-2)
        u = 2.0**-24
        k_err = kk * ((d + 4) * u * ((a_norm + b_norm) ** 2 + 2 * abs(math.log(float(k.outputscale)))) + 2 * u)
        gamma = n2 * u / (1 - n2 * u)
        bound = torch.matmul(w.abs(), k_err.mT) + gamma * torch.matmul(w.abs(), (kk + k_err).mT) + u * ref.abs()
    assert bound.max() < 1e-4 * ref.abs().max()  # a meaningful bound
    assert ((got32 - ref).abs() <= bound).all()


def test_update_path_reduces_against_alpha_as_the_whole_matrix_would():
    """update_path without a precomputed K_{*n} (the blocked weighted sum, for a large test
    set) equals its product with the whole K_{*n} up to the order of the n-term sums:
    within 2 gamma_n sum |alpha k| (both sums within gamma_n of the exact one)."""
    g = torch.Generator().manual_seed(6)
    b, m, n, d = 2, ARDRBFKernel.FUSED_MIN_ROWS + 100, 9, 4
    x_test, x_click = torch.randn(b, m, d, generator=g), torch.randn(b, n, d, generator=g)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[1, 6:] = False
    k = ARDRBFKernel(d)
    from gpcis.gp.pathwise import click_gram_cholesky, update_path, update_weights

    for residual in (torch.randn(b, n, generator=g), torch.randn(3, b, n, generator=g)):
        with torch.no_grad():
            chol = click_gram_cholesky(k, x_click, valid, 0.01)
            k_star_n = k(x_test, x_click).to_dense()
            got = update_path(k, x_test, x_click, residual, valid, 0.01, chol)
            whole = update_path(k, x_test, x_click, residual, valid, 0.01, chol, k_star_n=k_star_n)
            alpha = update_weights(chol, residual, valid, x_test.dtype)
            a = alpha.unsqueeze(-2) if alpha.dim() == 2 else alpha.transpose(0, 1)
            scale = torch.matmul(a.abs(), k_star_n.abs().mT)
            scale = scale.squeeze(-2) if alpha.dim() == 2 else scale.transpose(0, 1)
        u = 2.0**-24
        assert got.shape == whole.shape == residual.shape[:-1] + (m,)
        assert ((got - whole).abs() <= 2 * n * u / (1 - n * u) * scale).all()


def test_ard_rbf_diagonal_of_a_set_with_itself_is_the_amplitude():
    """k(x, x) = eta0 for a stationary kernel: returned without touching x, with the batch
    shapes of x and of the kernel, and it still carries the amplitude's gradient."""
    k = ARDRBFKernel(3, batch_shape=torch.Size([2]))
    k.outputscale = torch.tensor([0.5, 3.0])
    x = torch.randn(4, 2, 7, 3)
    d = k(x, diag=True)
    assert d.shape == (4, 2, 7)
    torch.testing.assert_close(d, torch.tensor([0.5, 3.0])[:, None].expand(4, 2, 7))
    d.sum().backward()
    assert k.raw_outputscale.grad is not None and (k.raw_outputscale.grad != 0).all()
    x2 = x.clone()  # a different set of the same values: the general path, same result
    torch.testing.assert_close(k(x, x2, diag=True), d.detach())


def test_ard_rbf_batch_shapes():
    k = ARDRBFKernel(2, batch_shape=torch.Size([3]))
    x = torch.randn(3, 6, 2)
    assert k(x).to_dense().shape == (3, 6, 6)
    assert k(x, diag=True).shape == (3, 6)
    k2 = ARDRBFKernel(2)
    assert k2(torch.randn(4, 5, 2), torch.randn(4, 3, 2)).to_dense().shape == (4, 5, 3)


@pytest.mark.parametrize("value", [1e-3, 0.37, 1.0, 42.0])
def test_log_space_parameters_round_trip(value):
    k = ARDRBFKernel(3)
    k.outputscale = value
    assert k.outputscale.item() == pytest.approx(value, rel=1e-6)
    assert k.raw_outputscale.item() == pytest.approx(math.log(value), rel=1e-6, abs=1e-7)
    k.precision = torch.tensor([value, 2 * value, 3 * value])
    np.testing.assert_allclose(k.precision.detach().numpy().ravel(), [value, 2 * value, 3 * value], rtol=1e-6)
    np.testing.assert_allclose(
        k.raw_precision.detach().numpy().ravel(), np.log([value, 2 * value, 3 * value]), rtol=1e-6, atol=1e-7
    )


def test_rff_forward_is_low_rank_operator_and_matches_features():
    rff = FourierFeatureKernel(16, 3, mode="learned", generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 3)
    y = torch.randn(4, 3)
    kxx = rff(x).evaluate_kernel() if hasattr(rff(x), "evaluate_kernel") else rff(x)
    assert isinstance(kxx, LinearOperator)
    phi_x, phi_y = rff.features(x), rff.features(y)
    assert phi_x.shape == (5, 16)
    torch.testing.assert_close(rff(x, y).to_dense(), phi_x @ phi_y.T)
    torch.testing.assert_close(rff(x, diag=True), (phi_x**2).sum(-1))
    # learned mode: Phi = sqrt(2/l) cos(x Theta + tau) with Theta, tau parameters
    torch.testing.assert_close(phi_x, math.sqrt(2 / 16) * torch.cos(x @ rff.theta + rff.tau))
    names = {n for n, _ in rff.named_parameters()}
    assert names == {"theta", "tau"}


def test_spectral_rff_frequencies_are_buffers_tied_to_the_base_kernel():
    base = ARDRBFKernel(2)
    rff = FourierFeatureKernel(8, 2, mode="spectral", base_kernel=base)
    own_buffers = {n for n, _ in rff.named_buffers() if not n.startswith("base_kernel.")}
    assert own_buffers == {"theta", "tau"}
    assert not any(n.startswith(("theta", "tau")) for n, _ in rff.named_parameters())
    base.precision = torch.tensor([4.0, 9.0])
    base.outputscale = 2.0
    x = torch.randn(3, 2)
    expected = math.sqrt(2.0) * math.sqrt(2 / 8) * torch.cos(x @ (torch.tensor([[2.0], [3.0]]) * rff.theta) + rff.tau)
    torch.testing.assert_close(rff.features(x), expected)


def test_spectral_rff_error_matches_closed_form_and_decays_as_inverse_sqrt_l():
    """E[(Phi Phi^T - K)_ij^2] = eta0^2 (1 - rho^2 + rho^4 / 2) / l with rho = K_ij / eta0.

    Derivation: one feature pair contributes 2 eta0 cos(a) cos(b) = eta0 [cos(a-b) + cos(a+b)],
    a-b = w^T (x-x'), a+b = w^T (x+x') + 2 tau. With tau ~ U(0, 2 pi) the second term has mean
    0, variance 1/2 and no covariance with the first; the first has mean rho and variance
    (1 + E cos(2 w^T d))/2 - rho^2 = (1 + rho^4)/2 - rho^2. The l features are i.i.d., so
    the variance of the average is that over l. We estimate the mean squared error over
    R = 40 independent draws (the entries of one draw are dependent: only the draws count as
    independent samples) and accept it within 4 standard errors of the draws' mean (the
    standard error estimated from the draws; it must be below 10% of the mean, so that the
    test keeps its power). The slope of log RMSE against log l, -1/2 in theory, is accepted
    within 4 of its standard error, propagated from the four estimates (delta method:
    SE(log RMSE) = SE(MSE) / (2 MSE); least squares over the four log l).
    """
    torch.manual_seed(0)
    x = torch.randn(8, 3, dtype=torch.float64)
    base = ARDRBFKernel(3).double()
    base.outputscale = 1.5
    base.precision = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    k = base(x).to_dense().detach()
    rho = k / 1.5
    theory_per_l = (1.5**2 * (1 - rho**2 + rho**4 / 2)).mean().item()
    sizes = np.array([64, 256, 1024, 4096])
    rmse, log_se = [], []
    for l in sizes:
        errs = []
        for r in range(40):
            rff = FourierFeatureKernel(
                int(l), 3, mode="spectral", base_kernel=base, generator=torch.Generator().manual_seed(1000 * int(l) + r)
            ).double()
            errs.append(((rff(x).to_dense() - k) ** 2).mean().item())
        mse = float(np.mean(errs))
        se = float(np.std(errs, ddof=1)) / math.sqrt(len(errs))
        assert se < 0.1 * mse
        assert abs(mse - theory_per_l / l) <= 4 * se
        rmse.append(math.sqrt(mse))
        log_se.append(se / (2 * mse))
    t = np.log(sizes) - np.log(sizes).mean()
    slope = np.polyfit(np.log(sizes), np.log(rmse), 1)[0]
    slope_se = math.sqrt(float((t**2 * np.square(log_se)).sum())) / float((t**2).sum())
    assert abs(slope + 0.5) <= 4 * slope_se


def test_unknown_rff_mode_and_missing_base_kernel_are_errors():
    with pytest.raises(ValueError, match="mode"):
        FourierFeatureKernel(4, 2, mode="bogus")
    with pytest.raises(ValueError, match="base_kernel"):
        FourierFeatureKernel(4, 2, mode="spectral")


def test_block_rows_blocks_on_the_cpu_and_takes_everything_at_once_elsewhere():
    from gpcis.gp.kernels import block_rows

    cpu, gpu = torch.device("cpu"), torch.device("meta")  # any non-CPU device type
    assert block_rows(10**6, 8192, cpu) == 8192 and block_rows(100, 8192, cpu) == 100
    assert block_rows(10**6, 8192, gpu) == 10**6
    assert block_rows(0, 8192, cpu) == 1 and block_rows(0, 8192, gpu) == 1  # a valid range() step


def test_weighted_sum_applies_active_dims_in_its_blocked_path():
    """With active_dims the blocked path (>= FUSED_MIN_ROWS rows) uses the same dimensions
    as GPyTorch's call (it skipped them and failed on the size)."""
    k = ARDRBFKernel(2, active_dims=torch.tensor([0, 2])).double()
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(1, ARDRBFKernel.FUSED_MIN_ROWS + 5, 3, generator=g, dtype=torch.float64)
    x2 = torch.randn(1, 4, 3, generator=g, dtype=torch.float64)
    w = torch.randn(1, 1, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = k.weighted_sum(x1, x2, w)
        ref = w @ k(x1, x2).to_dense().mT
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
