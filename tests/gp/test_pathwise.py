"""Pathwise sampler vs the exact GP posterior (float64 reference in tests/gp/reference.py)."""

from __future__ import annotations

import copy
import numpy as np
import pytest
import torch

from gpcis.gp import (
    ARDRBFKernel,
    FourierFeatureKernel,
    GPHead,
    GPHeadConfig,
    blocked_mean_path,
    click_gram_cholesky,
    click_l_inv,
    pathwise_posterior,
    predictive_variance,
    prior_path,
    update_path,
)
from tests.gp.reference import (
    exact_posterior,
    kernel_relative_error,
    mean_path_exact_and_bound,
    mean_path_problem,
    rbf,
)

ETA0, ETA = 1.3, np.array([2.0, 0.5])


def _kernel(dtype=torch.float64) -> ARDRBFKernel:
    k = ARDRBFKernel(2).to(dtype)
    k.outputscale = ETA0
    k.precision = torch.tensor(ETA, dtype=dtype)
    return k


def _problem(n=5, m=6, seed=0):
    rng = np.random.default_rng(seed)
    xn = rng.normal(size=(n, 2))
    xs = np.concatenate([xn[:2] + 0.05, rng.normal(size=(m - 2, 2))])
    fn = rng.normal(size=n)
    return xs, xn, fn


def test_update_path_is_the_exact_posterior_mean_float64():
    xs, xn, fn = _problem()
    k = _kernel()
    valid = torch.ones(1, 5, dtype=torch.bool)
    got = update_path(k, torch.tensor(xs)[None], torch.tensor(xn)[None], torch.tensor(fn)[None], valid, 0.01)
    mu, _ = exact_posterior(xs, xn, fn, ETA0, ETA, 0.01)
    np.testing.assert_allclose(got[0].detach().numpy(), mu, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("click_variance", [None, 0.01, 0.2])
def test_predictive_variance_is_the_exact_diagonal_float64(click_variance):
    xs, xn, fn = _problem()
    k = _kernel()
    valid = torch.ones(1, 5, dtype=torch.bool)
    var = predictive_variance(
        k, torch.tensor(xs)[None], torch.tensor(xn)[None], valid, 1e-3, click_variance=click_variance
    )
    _, cov = exact_posterior(xs, xn, fn, ETA0, ETA, 1e-3, click_variance)
    np.testing.assert_allclose(var[0].detach().numpy(), np.diag(cov), rtol=1e-8, atol=1e-10)


def test_mean_path_equals_closed_form_float64():
    """Mean path Phi(X*) mu_w + K*n A^-1 (m - Phi(Xn) mu_w), the closed form in float64."""
    xs, xn, _ = _problem()
    head = GPHead(2, GPHeadConfig(num_features=64)).double()
    head.kernel.outputscale = ETA0
    head.kernel.precision = torch.tensor(ETA)
    labels = torch.tensor([[1.0, -1.0, 1.0, 1.0, -1.0]], dtype=torch.float64)
    valid = torch.ones(1, 5, dtype=torch.bool)
    out = head(torch.tensor(xs)[None], torch.tensor(xn)[None], labels, valid)
    m = out.click_mean[0].detach().numpy()
    mu_w = head.weight_prior.mean.detach().numpy()
    theta, tau = head.rff.theta.detach().numpy(), head.rff.tau.detach().numpy()
    phi = lambda x: np.sqrt(2 / 64) * np.cos(x @ theta + tau)  # noqa: E731
    a = rbf(xn, xn, ETA0, ETA) + 0.01 * np.eye(5)
    ref = phi(xs) @ mu_w + rbf(xs, xn, ETA0, ETA) @ np.linalg.solve(a, m - phi(xn) @ mu_w)
    np.testing.assert_allclose(out.mean[0].detach().numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("eval_mode", [False, True])
def test_spectral_pathwise_samples_match_exact_posterior_moments(eval_mode):
    """4,000 samples (40 prior draws Theta x 100 samples) vs N(mu, Sigma) of Eqs. S4/S5.

    Given Theta, f_* is Gaussian with mean mu (independent of Theta: the prior path has mean
    0 under w ~ N(0, I)) and a covariance that is linear in the RFF Gram matrix, whose
    expectation over Theta is K. So the pooled samples of independent Theta draws have mean
    mu and covariance Sigma exactly: the only error is Monte Carlo. Its standard error is
    estimated by batch means over the 40 independent groups, and every entry must lie within
    5 standard errors (two-sided p ~ 6e-7 per entry under normality of group means); the
    test also checks that the standard errors are small (< 6% of max diag Sigma), so it has
    power. Train mode: noise = click variance = 0.01; eval mode: noise 1e-3 < s^2 = 0.01.
    """
    xs, xn, _ = _problem()
    cfg = GPHeadConfig(num_features=256, prior="spectral", train_noise=0.01, eval_noise=1e-3, click_variance=0.01)
    head = GPHead(2, cfg).double()
    head.kernel.outputscale = ETA0
    head.kernel.precision = torch.tensor(ETA)
    head.train(not eval_mode)
    labels = torch.tensor([[1.0, -1.0, 1.0, 1.0, -1.0]], dtype=torch.float64)
    valid = torch.ones(1, 5, dtype=torch.bool)
    x_test, x_click = torch.tensor(xs)[None], torch.tensor(xn)[None]
    groups_mean, groups_cov = [], []
    with torch.no_grad():
        for g in range(40):
            head.rff.resample(torch.Generator().manual_seed(10_000 + g))
            out = head(x_test, x_click, labels, valid, num_samples=100, generator=torch.Generator().manual_seed(g))
            s = out.samples[:, 0].numpy()  # (100, 6)
            groups_mean.append(s.mean(0))
            groups_cov.append(np.cov(s.T))
        m = out.click_mean[0].numpy()
        var_fn = out.variance
    noise = 1e-3 if eval_mode else 0.01
    mu, sigma = exact_posterior(xs, xn, m, ETA0, ETA, noise, click_variance=0.01)
    gm, gc = np.array(groups_mean), np.array(groups_cov)
    se_mean = gm.std(0, ddof=1) / np.sqrt(40)
    se_cov = gc.std(0, ddof=1) / np.sqrt(40)
    assert se_cov.max() < 0.06 * np.diag(sigma).max()
    assert np.all(np.abs(gm.mean(0) - mu) <= 5 * se_mean + 1e-12)
    assert np.all(np.abs(gc.mean(0) - sigma) <= 5 * se_cov + 1e-12)
    assert var_fn is None


def _padded_problem(seed=0, d=3):
    g = torch.Generator().manual_seed(seed)
    counts = [0, 2, 5]
    x_test = torch.randn(3, 40, d, generator=g, dtype=torch.float64)
    x_click = torch.randn(3, 5, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (3, 5), generator=g).double() * 2 - 1
    valid = torch.zeros(3, 5, dtype=torch.bool)
    for i, c in enumerate(counts):
        valid[i, :c] = True
    # garbage in the padding must not matter
    x_click = torch.where(valid[..., None], x_click, torch.full_like(x_click, 7.0))
    labels = torch.where(valid, labels, torch.full_like(labels, -1.0))
    return x_test, x_click, labels, valid, counts


@pytest.mark.parametrize("training", [True, False])
def test_batch_with_padding_equals_per_item_loop(training):
    x_test, x_click, labels, valid, counts = _padded_problem()
    head = GPHead(3, GPHeadConfig(num_features=32)).double().train(training)
    out = head(x_test, x_click, labels, valid, return_variance=True)
    vis = []
    for i, c in enumerate(counts):
        o = head(x_test[i : i + 1], x_click[i : i + 1, :c], labels[i : i + 1, :c], valid[i : i + 1, :c], return_variance=True)
        torch.testing.assert_close(out.mean[i], o.mean[0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out.variance[i], o.variance[0], rtol=1e-10, atol=1e-10)
        vis.append(o.vi_loss)
    torch.testing.assert_close(out.vi_loss, torch.stack(vis).mean(), rtol=1e-10, atol=1e-10)


def test_pathwise_samples_batch_with_padding_equals_loop():
    x_test, x_click, labels, valid, counts = _padded_problem(1)
    k = _kernel_d(3)
    rff = FourierFeatureKernel(16, 3, generator=torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4, 3, 16, generator=g, dtype=torch.float64)
    f = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    out = pathwise_posterior(k, rff, x_test, x_click, f, w, valid, 0.01)
    for i, c in enumerate(counts):
        o = pathwise_posterior(
            k, rff, x_test[i : i + 1], x_click[i : i + 1, :c], f[:, i : i + 1, :c], w[:, i : i + 1], valid[i : i + 1, :c], 0.01
        )
        torch.testing.assert_close(out[:, i], o[:, 0], rtol=1e-10, atol=1e-10)


def _kernel_d(d):
    k = ARDRBFKernel(d).double()
    k.precision = torch.full((d,), 0.8, dtype=torch.float64)
    return k


def test_zero_clicks_returns_the_prior():
    head = GPHead(3, GPHeadConfig(num_features=32)).eval()
    x = torch.randn(2, 10, 3)
    empty = torch.zeros(2, 0, 3)
    out = head(x, empty, torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool), num_samples=2, return_variance=True)
    torch.testing.assert_close(out.mean, head.rff.features(x) @ head.weight_prior.mean)
    torch.testing.assert_close(out.variance, torch.full((2, 10), head.kernel.outputscale.item()))
    assert out.samples.shape == (2, 2, 10)
    assert out.vi_loss.item() == 0.0
    # the samples are prior paths Phi(x) w, w ~ N(mu_w, sigma_w^2 I): with S draws each
    # point's sample mean lies within 4 standard errors sigma_m / sqrt(S) of Phi mu_w
    # (sigma_m^2 = sigma_w^2 |Phi(x_m)|^2), and its sample variance within 4 of its relative
    # standard error sqrt(2 / (S - 1)) of sigma_m^2 (20 points: a false alarm ~ 20 x 6e-5)
    s = 4000
    draws = head(x, empty, torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool), num_samples=s,
                 generator=torch.Generator().manual_seed(0)).samples.double()
    with torch.no_grad():
        phi = head.rff.features(x).double()
        sigma2 = head.weight_prior.variance.double() * phi.square().sum(-1)
        mean = phi @ head.weight_prior.mean.double()
    assert ((draws.mean(0) - mean).abs() <= 4 * (sigma2 / s).sqrt()).all()
    assert ((draws.var(0) / sigma2 - 1).abs() <= 4 * (2 / (s - 1)) ** 0.5).all()


@pytest.mark.parametrize("num_clicks", [1, 5, 100])
def test_eval_noise_interpolates_the_click_labels(num_clicks):
    g = torch.Generator().manual_seed(num_clicks)
    head = GPHead(8, GPHeadConfig(num_features=64)).eval()
    x_click = torch.randn(2, num_clicks, 8, generator=g)
    labels = torch.randint(0, 2, (2, num_clicks), generator=g).float() * 2 - 1
    valid = torch.ones(2, num_clicks, dtype=torch.bool)
    with torch.no_grad():
        out = head(x_click, x_click, labels, valid, return_variance=True)
    assert torch.isfinite(out.mean).all()
    assert torch.equal(torch.sign(out.mean), labels)  # float32, as used
    # In closed form, at the clicks (A = K_nn + eps^2 I, r = m_xi - Phi(X_n) mu_w):
    #   mean - m_xi = (K_nn A^-1 - I) r = -eps^2 A^-1 r, so |mean - m_xi| <= eps^2 |r|_2 / lambda_min(A);
    #   variance_i = eps^2 (1 - eps^2 [A^-1]_ii) <= eps^2.
    # Checked in float64 (rounding ~ cond(A) 2^-53 |r|, far below) with the head's own quantities.
    h64 = copy.deepcopy(head).double()
    x64, lab64 = x_click.double(), labels.double()
    with torch.no_grad():
        o64 = h64(x64, x64, lab64, valid, return_variance=True)
        a = h64.kernel(x64).to_dense() + h64.noise * torch.eye(num_clicks, dtype=torch.float64)
        r = o64.click_mean - h64.rff.features(x64) @ h64.weight_prior.mean
    eps2 = h64.noise
    lam_min = torch.linalg.eigvalsh(a)[..., 0]
    slack = 1e-9 * r.abs().amax(-1, keepdim=True)
    assert ((o64.mean - o64.click_mean).abs() <= eps2 * r.norm(dim=-1, keepdim=True) / lam_min[:, None] + slack).all()
    assert (o64.variance <= eps2 * (1 + 1e-9)).all() and (o64.variance >= 0).all()


def test_duplicate_and_near_identical_clicks_give_finite_results():
    head = GPHead(4, GPHeadConfig(num_features=32)).eval()
    base = torch.randn(1, 1, 4)
    x_click = torch.cat([base, base, base + 1e-7, torch.randn(1, 2, 4)], dim=1)
    labels = torch.tensor([[1.0, 1.0, 1.0, -1.0, 1.0]])
    valid = torch.ones(1, 5, dtype=torch.bool)
    out = head(torch.randn(1, 50, 4), x_click, labels, valid, num_samples=3, return_variance=True)
    for t in (out.mean, out.samples, out.variance, out.vi_loss):
        assert torch.isfinite(t).all()
    # same place with opposite labels: no interpolant exists, but nothing blows up
    labels2 = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0]])
    out2 = head(x_click, x_click, labels2, valid, return_variance=True)
    assert torch.isfinite(out2.mean).all() and torch.isfinite(out2.vi_loss)
    # and every click, duplicated or not, is still classified as its label (the mean at a
    # click is the noisy interpolant of m_xi = softplus(.) * y; held for 200 of 200 seeds)
    at_clicks = head(x_click, x_click, labels, valid).mean
    assert torch.equal(torch.sign(at_clicks[0]), labels[0])


def test_cholesky_has_identity_at_padding():
    k = _kernel_d(2)
    x = torch.randn(1, 3, 2, dtype=torch.float64)
    valid = torch.tensor([[True, False, True]])
    chol = click_gram_cholesky(k, x, valid, 0.01)
    a = chol @ chol.mT
    assert a[0, 1, 1].item() == pytest.approx(1.0)
    assert a[0, 0, 1].item() == 0.0 and a[0, 1, 2].item() == 0.0


@pytest.mark.gpu
def test_cuda_matches_cpu():
    x_test, x_click, labels, valid, _ = _padded_problem(3)
    head = GPHead(3, GPHeadConfig(num_features=32)).eval()
    cpu = head(x_test.float(), x_click.float(), labels.float(), valid, return_variance=True)
    head_cuda = head.to("cuda")
    gpu = head_cuda(x_test.float().cuda(), x_click.float().cuda(), labels.float().cuda(), valid.cuda(), return_variance=True)
    torch.testing.assert_close(gpu.mean.cpu(), cpu.mean, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu.variance.cpu(), cpu.variance, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["learned", "spectral"])
def test_prior_path_fused_backward_passes_gradcheck(mode):
    from gpcis.gp.pathwise import prior_path

    base = ARDRBFKernel(3).double()
    rff = FourierFeatureKernel(6, 3, mode=mode, base_kernel=base, generator=torch.Generator().manual_seed(0)).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 6, dtype=torch.float64, requires_grad=True)
    params = [p for p in (*rff.parameters(), *base.parameters())]

    def f(x, w, *ps):
        return prior_path(rff, x, w)

    assert torch.autograd.gradcheck(f, (x, w, *params))
    # and it equals the plain formula Phi(x) w
    torch.testing.assert_close(prior_path(rff, x, w), torch.einsum("bml,sbl->sbm", rff.features(x), w))


def test_inference_prior_path_in_row_blocks_equals_one_block(monkeypatch):
    import gpcis.gp.pathwise as pw

    rff = FourierFeatureKernel(8, 3, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 37, 3)
    w = torch.randn(3, 2, 8)
    with torch.no_grad():
        whole = pw.prior_path(rff, x, w)
        monkeypatch.setattr(pw, "_ROW_BLOCK", 5)
        blocked = pw.prior_path(rff, x, w)
    # same arithmetic, other BLAS blocking: float32 round-off of an l = 8 term dot product,
    # |error| <= l * eps32 * sum|terms| ~ 8 * 1.2e-7 * 10
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-5)
    torch.testing.assert_close(whole, torch.einsum("bml,sbl->sbm", rff.features(x), w), rtol=1e-5, atol=1e-6)


def test_float32_variance_products_stay_within_their_error_bound():
    """float32 products with L^{-1} vs float64: within a rounding bound derived here.

    The variance uses x = k_{*n} L^{-T} (rows) and y = x L^{-1}, with L^{-1} from a float64
    triangular solve rounded to float32 (relative error eps per entry) and float32 GEMMs
    (error <= N eps sum |terms|, eps = 2^-23). With r / c the largest row / column
    absolute sums of L^{-1} and |k| <= eta0 = 1:
      |dx_j| <= (N + 2) eps r = dx,  |dy_j| <= c dx + (N + 2) eps |x|_inf c = dy,
      |d var| <= 2 |x|_1 dx + N dx^2 + (s^2 - eps^2) (2 |y|_1 dy + N dy^2),
    |x|_1, |y|_1 taken from the float64 reference (worst test point).
    """
    g = torch.Generator().manual_seed(5)
    k = _kernel_d(4)
    x_test = torch.randn(2, 300, 4, generator=g, dtype=torch.float64)
    x_click = torch.randn(2, 20, 4, generator=g, dtype=torch.float64)
    valid = torch.ones(2, 20, dtype=torch.bool)
    exact = predictive_variance(k, x_test, x_click, valid, 0.01, click_variance=0.05)
    fast = predictive_variance(k, x_test, x_click, valid, 0.01, click_variance=0.05, solve_dtype=torch.float32)
    assert fast.dtype == torch.float64
    n, eps = 20, 2.0**-23
    chol = click_gram_cholesky(k, x_click, valid, 0.01)
    l_inv = torch.linalg.solve_triangular(chol, torch.eye(n, dtype=torch.float64).expand_as(chol), upper=False)
    r, c = l_inv.abs().sum(-1).max().item(), l_inv.abs().sum(-2).max().item()
    x = k(x_test, x_click).to_dense() @ l_inv.mT
    y = x @ l_inv
    dx = (n + 2) * eps * r
    dy = c * dx + (n + 2) * eps * x.abs().max().item() * c
    bound = (2 * x.abs().sum(-1).max().item() * dx + n * dx**2
             + (0.05 - 0.01) * (2 * y.abs().sum(-1).max().item() * dy + n * dy**2))
    assert bound < 1e-3  # the bound itself is small for this problem
    assert (fast - exact).abs().max().item() <= bound


@pytest.mark.parametrize("layout", ["rows", "transposed"])
def test_update_and_variance_read_k_star_n_in_either_layout_and_in_blocks(monkeypatch, layout):
    """ARDRBFKernel may return k_{*n} as a transposed view of an (N, M) array; the update
    path and the variance (here in blocks of 7 test points, a partial last one) must give the
    exact float64 posterior for both layouts, with several sample columns and padding."""
    import gpcis.gp.pathwise as pw

    xs, xn, fn = _problem(n=5, m=30, seed=3)
    k = _kernel()
    x_test = torch.tensor(xs)[None].repeat(2, 1, 1)
    x_click = torch.tensor(xn)[None].repeat(2, 1, 1)
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 3:] = False  # item 1: its first three clicks only
    resid = torch.tensor(fn)[None, None].repeat(3, 2, 1)  # (S=3, B=2, N)
    resid[1] *= -2.0
    ksn = k(x_test, x_click).to_dense()
    ksn = ksn.contiguous() if layout == "rows" else ksn.mT.contiguous().mT
    assert ksn.is_contiguous() == (layout == "rows")
    monkeypatch.setattr(pw, "_VAR_BLOCK", 7)
    with torch.no_grad():
        mean = update_path(k, x_test, x_click, resid, valid, 0.01, k_star_n=ksn)
        var = predictive_variance(k, x_test, x_click, valid, 0.01, click_variance=0.2, k_star_n=ksn)
    for b, n in ((0, 5), (1, 3)):
        for s, factor in ((0, 1.0), (1, -2.0), (2, 1.0)):
            mu, cov = exact_posterior(xs, xn[:n], factor * fn[:n], ETA0, ETA, 0.01, 0.2)
            np.testing.assert_allclose(mean[s, b].numpy(), mu, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(var[b].numpy(), np.diag(cov), rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------- blocked mean path
@pytest.mark.parametrize("lf,n,channel_major", [(40, 6, True), (40, 6, False), (0, 6, True), (40, 0, True),
                                                (70, 17, True)])
def test_blocked_mean_path_within_its_float32_bound(lf, n, channel_major):
    prob = mean_path_problem(lf=lf, n=n, channel_major=channel_major)
    exact, bound = mean_path_exact_and_bound(*prob)
    assert bound.max() < 1e-3  # a meaningful bound for this problem
    for rows in (64, 4096):  # 257 rows: four full blocks and one of a row; one block
        out, var = blocked_mean_path(*prob, rows=rows)
        assert out.shape == exact.shape and out.dtype == torch.float32 and var is None
        assert ((out.double() - exact).abs() <= bound).all()


@pytest.mark.parametrize("shift", [7.0, 9.0])
def test_blocked_mean_path_within_its_bound_where_the_kernel_underflows(shift):
    """Clicks far from every test point: kernel values down to subnormal numbers and zero
    (the bound's absolute underflow term; without it 68 / 514 points at shift 7 and all
    at 9 were outside the relative terms)."""
    x, theta, tau, w, z, eta, eta0, alpha = mean_path_problem(lf=0, n=6)
    z = z + shift
    exact, bound = mean_path_exact_and_bound(x, theta, tau, w, z, eta, eta0, alpha)
    assert (exact.abs() < 2.0**-126).any()  # the regime this is about: values below float32's normal range
    with torch.no_grad():
        out, _ = blocked_mean_path(x, theta, tau, w, z, eta, eta0, alpha, rows=64)
    assert ((out.double() - exact).abs() <= bound).all()


def test_blocked_mean_path_is_for_inference_and_broadcasts_clicks():
    x, theta, tau, w, z, eta, eta0, alpha = mean_path_problem(b=3, lf=8, n=4)
    theta.requires_grad_(True)
    with pytest.raises(RuntimeError, match="no autograd"):
        blocked_mean_path(x, theta, tau, w, z, eta, eta0, alpha)
    z_each = z[:1].expand(3, -1, -1).contiguous()
    with torch.no_grad():  # one set of clicks for every batch item, given once
        shared, _ = blocked_mean_path(x, theta, tau, w, z[:1], eta, eta0, alpha)
    exact, bound = mean_path_exact_and_bound(x, theta.detach(), tau, w, z_each, eta, eta0, alpha)
    assert ((shared.double() - exact).abs() <= bound).all()


def test_blocked_mean_path_is_prior_path_plus_update_path_float64():
    """In float64 the one-pass evaluation is the sum of the two paths (w = mu_w, alpha the
    update weights) within the float64 version of its bound: the same terms, the same scales."""
    x, theta, tau, w, z, eta, eta0, alpha = (t.double() for t in mean_path_problem(lf=24, n=5))
    rff = FourierFeatureKernel(24, x.shape[-1]).double()
    kernel = ARDRBFKernel(x.shape[-1]).double()
    with torch.no_grad():
        rff.theta.copy_(theta)
        rff.tau.copy_(tau)
    kernel.precision = eta
    kernel.outputscale = eta0
    valid = alpha != 0
    with torch.no_grad():
        scale = rff.feature_scale()
        chol = click_gram_cholesky(kernel, z, valid, 0.01)
        ref = prior_path(rff, x, (w / scale)[None])[0]
        # the update path's weights from a residual r: alpha = A^{-1} r, so r = A alpha
        k_nn = kernel(z, z).to_dense() + 0.01 * torch.eye(5, dtype=torch.float64)
        residual = (k_nn @ alpha.unsqueeze(-1)).squeeze(-1) * valid
        alpha_ref = torch.cholesky_solve(residual.unsqueeze(-1), chol).squeeze(-1) * valid
        ref = ref + update_path(kernel, x, z, residual, valid, 0.01, chol)
        out, _ = blocked_mean_path(x, theta, tau, w, z, eta, eta0, alpha_ref, rows=100)
    _, bound = mean_path_exact_and_bound(x, theta, tau, w, z, eta, eta0, alpha_ref, u=2.0**-53)
    assert out.dtype == torch.float64
    assert ((out - ref).abs() <= 2 * bound + 1e-12 * ref.abs().max()).all()


def test_blocked_mean_path_keeps_nan():
    """A non-finite test input gives a non-finite output at its row only (the clamp of the
    exponent keeps NaN), so the head's checks see it."""
    prob = list(mean_path_problem(lf=8, n=3))
    prob[0] = prob[0].clone()
    prob[0][0, 5, 2] = float("nan")
    out, _ = blocked_mean_path(*prob, rows=64)
    assert torch.isnan(out[0, 5]) and torch.isfinite(out[0, :5]).all() and torch.isfinite(out[1]).all()


def _click_factor(z, eta, eta0, valid, noise):
    """The float64 click system's L^{-1} (zero columns at padding) for (z, eta, eta0)."""
    kernel = ARDRBFKernel(z.shape[-1]).double()
    kernel.precision = eta.double()
    kernel.outputscale = eta0.double()
    chol = click_gram_cholesky(kernel, z.double(), valid, noise)
    return kernel, chol, click_l_inv(chol, valid)


@pytest.mark.parametrize("correction", [0.0, 0.04])
def test_blocked_variance_is_predictive_variance_float64(correction):
    """In float64 the variance of the one pass is Eq. S5 as predictive_variance computes it
    (with and without the click-noise correction), padded clicks included."""
    x, theta, tau, w, z, eta, eta0, alpha = (t.double() for t in mean_path_problem(lf=24, n=5))
    valid = alpha != 0
    kernel, chol, l_inv = _click_factor(z, eta, eta0, valid, 0.01)
    with torch.no_grad():
        ref = predictive_variance(kernel, x, z, valid, 0.01, click_variance=0.01 + correction if correction else None,
                                  chol=chol)
        _, var = blocked_mean_path(x, theta, tau, w, z, eta, eta0, alpha, rows=100, l_inv=l_inv,
                                   variance_correction=correction)
    assert var.dtype == torch.float64
    torch.testing.assert_close(var, ref, rtol=0, atol=1e-12 * float(eta0))
    # no clicks: the prior variance, eta0 itself (float64 and float32)
    for dtype in (torch.float64, torch.float32):
        scale = torch.tensor(10.976295, dtype=dtype)
        with torch.no_grad():
            _, prior = blocked_mean_path(x.to(dtype), theta, tau, w, z[:, :0], eta, scale, alpha[:, :0],
                                         l_inv=x.new_zeros(2, 0, 0))
        assert prior.dtype == dtype and (prior == scale).all()


@pytest.mark.parametrize("eta0", [1.3, 10.976295, 45.63])
def test_blocked_variance_float32_within_its_bound(eta0):
    """float32 one pass against the float64 variance, within a bound derived for it.

    With k_n the kernel values (relative error <= rho_n, from the exponent's bound of
    tests/gp/reference.py, plus tiny), L^{-1} rounded to float32 (u relative per entry) and
    the (N, N) x (N, rows) GEMM (gamma_N): per row j of L^{-1} k,
    |d y_j| <= sum_n |L^{-1}_jn| (rho_n k_n + tiny) + (N + 2) u sum_n |L^{-1}_jn| k_n; the
    variance eta0 - sum_j y_j^2 then has error <= sum_j (2 |y_j| dy_j + dy_j^2) +
    (N + 1) u sum_j y_j^2 + 2 u eta0 (squares, their sum and the subtraction; the clamp at 0
    only shrinks the error).
    """
    x, theta, tau, w, z, eta, _, alpha = mean_path_problem(lf=16, n=6)
    eta0 = torch.tensor(eta0)  # k(x, x) = eta0 itself (exp(ln eta0) in float32 was off by up to ~5 u)
    valid = alpha != 0
    kernel, chol, l_inv64 = _click_factor(z, eta, eta0, valid, 0.01)
    with torch.no_grad():
        exact = predictive_variance(kernel, x.double(), z.double(), valid, 0.01, chol=chol)
        _, var = blocked_mean_path(x, theta, tau, w, z, eta, eta0, alpha, rows=64, l_inv=l_inv64.float())
    u, tiny, n = 2.0**-24, 2.0**-126, z.shape[1]
    rho = kernel_relative_error(x, z, eta, eta0, u)  # (B, M, N)
    k = kernel(x.double(), z.double()).to_dense()  # (B, M, N)
    y = k @ l_inv64.mT  # (B, M, N): rows L^{-1} k_{n*}
    li = l_inv64.abs()
    dy = (rho * k + tiny) @ li.mT + (n + 2) * u * (k @ li.mT)
    bound = (2 * y.abs() * dy + dy**2).sum(-1) + (n + 1) * u * y.square().sum(-1) + 2 * u * float(eta0)
    assert bound.max() < 1e-4 * float(eta0)  # a meaningful bound here
    assert ((var.double() - exact).abs() <= bound).all()
