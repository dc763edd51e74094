"""GPHead: gradients, input validation, label conventions, L_VI against a direct formula."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from gpcis.gp import GPHead, GPHeadConfig, click_gram_cholesky, vi_loss
from tests.gp.reference import mean_path_exact_and_bound, rbf


def _inputs(b=2, m=30, n=4, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_test = torch.randn(b, m, d, generator=g)
    x_click = torch.randn(b, n, d, generator=g)
    labels = torch.tensor([[1.0, -1.0, 1.0, -1.0]] * b)[:, :n]
    valid = torch.ones(b, n, dtype=torch.bool)
    return x_test, x_click, labels, valid


@pytest.mark.parametrize("prior", ["learned", "spectral"])
def test_gradients_reach_every_parameter(prior):
    head = GPHead(5, GPHeadConfig(num_features=32, prior=prior, learn_weight_prior=True))
    x_test, x_click, labels, valid = _inputs()
    x_test.requires_grad_(True)
    out = head(x_test, x_click, labels, valid, num_samples=2, return_variance=True)
    (out.samples.sum() + out.mean.sum() + out.vi_loss + out.variance.sum()).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x_test.grad is not None and x_test.grad.abs().sum() > 0
    expected = {
        "kernel.raw_outputscale",
        "kernel.raw_precision",
        "weight_prior.mean",
        "weight_prior.raw_variance",
        "posterior.mlp.0.weight",
        "posterior.mlp.0.bias",
        "posterior.mlp.2.weight",
        "posterior.mlp.2.bias",
    }
    if prior == "learned":
        expected |= {"rff.theta", "rff.tau"}
    assert {n for n, _ in head.named_parameters()} == expected


@pytest.mark.parametrize("kernel_grad", [False, True])
def test_vi_quadratic_term_reaches_the_kernel_only_on_request(kernel_grad):
    """With vi_kernel_grad=False (the paper's released code, which detaches the inverse) L_VI's
    m^T (K + eps^2 I)^-1 m treats the kernel as a constant: its gradient w.r.t. the kernel's
    parameters is zero and w.r.t. m the closed form 2 A^-1 m times quad_scale, in float64;
    with True (the default) the kernel's gradient (-alpha^T (dA / d eta0) alpha for eta0) is
    there too, the same closed form in m."""
    cfg = GPHeadConfig(num_features=16, vi_kernel_grad=kernel_grad)
    head = GPHead(5, cfg).double()
    x_test, x_click, labels, valid = (t.double() if t.is_floating_point() else t for t in _inputs())
    out = head(x_test, x_click, labels, valid, num_samples=0)
    m = out.click_mean
    m.retain_grad()
    out.vi_loss.backward()
    grad_eta0 = head.kernel.raw_outputscale.grad
    # the closed forms, from the float64 Gram matrix: L_VI = mean_b [BCE + q m^T A^-1 m]
    with torch.no_grad():
        a = head.kernel(x_click).to_dense() + cfg.train_noise * torch.eye(x_click.shape[1], dtype=torch.float64)
        alpha = torch.linalg.solve(a, m.unsqueeze(-1)).squeeze(-1)
        b = m.shape[0]
        quad_grad_m = 2 * cfg.vi_quad_scale * alpha / b
        # d/d eta0 of m^T A^-1 m = -alpha^T (K / eta0) alpha; eta0 = exp(raw) (learned in log
        # space), so d eta0 / d raw = eta0
        k = head.kernel(x_click).to_dense()
        eta0 = head.kernel.outputscale
        d_eta0 = -(alpha.unsqueeze(-2) @ (k / eta0) @ alpha.unsqueeze(-1)).sum() * cfg.vi_quad_scale / b
        d_raw = d_eta0 * eta0
    # BCE (mean path: f_c = m) adds (sigmoid(m) - t) / b to each click's gradient
    bce_grad_m = (torch.sigmoid(m) - (labels > 0).double()) / m.shape[0]
    torch.testing.assert_close(m.grad, quad_grad_m + bce_grad_m, rtol=1e-10, atol=1e-12)
    if kernel_grad:
        torch.testing.assert_close(grad_eta0.reshape(()), d_raw.reshape(()), rtol=1e-8, atol=1e-12)
    else:
        assert grad_eta0 is None or torch.count_nonzero(grad_eta0) == 0
        assert head.kernel.raw_precision.grad is None or torch.count_nonzero(head.kernel.raw_precision.grad) == 0


def test_output_shapes_and_modes():
    head = GPHead(5, GPHeadConfig(num_features=16))
    x_test, x_click, labels, valid = _inputs()
    out = head(x_test, x_click, labels, valid)
    assert out.mean.shape == (2, 30) and out.samples is None and out.variance is None
    assert out.click_mean.shape == (2, 4) and out.vi_loss.shape == ()
    out = head(x_test, x_click, labels, valid, num_samples=3, return_variance=True)
    assert out.samples.shape == (3, 2, 30) and out.variance.shape == (2, 30)
    assert head.noise == head.config.train_noise
    head.eval()
    assert head.noise == head.config.eval_noise


def test_click_mean_sign_is_the_label_and_01_labels_are_accepted():
    head = GPHead(5, GPHeadConfig(num_features=16)).eval()
    x_test, x_click, labels, valid = _inputs()
    out = head(x_test, x_click, labels, valid)
    assert torch.equal(torch.sign(out.click_mean), labels)
    out01 = head(x_test, x_click, (labels + 1) / 2, valid)
    torch.testing.assert_close(out01.mean, out.mean)


def test_generator_makes_samples_reproducible():
    head = GPHead(5, GPHeadConfig(num_features=16))
    x_test, x_click, labels, valid = _inputs()
    a = head(x_test, x_click, labels, valid, num_samples=2, generator=torch.Generator().manual_seed(3))
    b = head(x_test, x_click, labels, valid, num_samples=2, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.samples, b.samples)


def test_vi_loss_matches_direct_formula():
    """sum_c BCE(y_c, f_c) + 1/2 m^T (K + eps^2 I)^-1 m, averaged over items; numpy float64."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    m = torch.randn(2, 4, generator=g, dtype=torch.float64)
    f = torch.randn(2, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([[1.0, -1.0, 1.0, 1.0], [-1.0, 1.0, 1.0, -1.0]], dtype=torch.float64)
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    head = GPHead(3).double()
    chol = click_gram_cholesky(head.kernel, x, valid, 0.01)
    got = vi_loss(m * valid, f, y, valid, chol).item()
    eta0 = head.kernel.outputscale.item()
    eta = head.kernel.precision.detach().numpy().ravel()
    samples = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)  # S = 3 draws of f at the clicks

    def reference(f_draws: np.ndarray, quad_scale: float, per_click: bool) -> float:
        per_item = []
        for i in range(2):
            idx = valid[i].numpy()
            xi, mi, yi = x[i].numpy()[idx], m[i].numpy()[idx], y[i].numpy()[idx]
            t = (yi + 1) / 2
            bce = 0.0
            for fs in f_draws:  # the BCE term averaged over the draws
                p = 1 / (1 + np.exp(-fs[i][idx]))
                bce += -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum() / len(f_draws)
            a = rbf(xi, xi, eta0, eta) + 0.01 * np.eye(len(xi))
            item = bce + quad_scale * mi @ np.linalg.solve(a, mi)
            per_item.append(item / idx.sum() if per_click else item)
        return float(np.mean(per_item))

    # float64 throughout: a few dozen operations of relative error 2^-53 each, cond(A) < 10
    assert got == pytest.approx(reference(f.numpy()[None], 0.5, False), rel=1e-10)
    mean_clicks = vi_loss(m * valid, f, y, valid, chol, reduction="mean_clicks", quad_scale=1.0).item()
    assert mean_clicks == pytest.approx(reference(f.numpy()[None], 1.0, True), rel=1e-10)
    drawn = vi_loss(m * valid, samples, y, valid, chol).item()
    assert drawn == pytest.approx(reference(samples.numpy(), 0.5, False), rel=1e-10)
    with pytest.raises(ValueError, match="reduction"):
        vi_loss(m, f, y, valid, chol, reduction="bogus")


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.update(x_test=a["x_test"][0]), "x_test"),
        (lambda a: a.update(x_test=a["x_test"][..., :4]), "in_dim"),
        (lambda a: a.update(x_click=a["x_click"][:1]), "x_click"),
        (lambda a: a.update(x_click=a["x_click"][..., :4]), "x_click"),
        (lambda a: a.update(x_test=a["x_test"].long()), "x_test"),
        (lambda a: a.update(x_test=a["x_test"].index_fill(1, torch.tensor([0]), float("nan"))), "x_test"),
        (lambda a: a.update(x_click=a["x_click"].index_fill(1, torch.tensor([0]), float("inf"))), "x_click"),
        (lambda a: a.update(labels=a["labels"] * 2), "labels"),
        (lambda a: a.update(labels=a["labels"][:, :2]), "labels"),
        (lambda a: a.update(valid=a["valid"][:, :2]), "valid"),
        (lambda a: a.update(valid=a["valid"].float()), "valid"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(mutate, match):
    head = GPHead(5, GPHeadConfig(num_features=8))
    x_test, x_click, labels, valid = _inputs()
    args = dict(x_test=x_test, x_click=x_click, labels=labels, valid=valid)
    mutate(args)
    with pytest.raises(ValueError, match=match):
        head(**args)


def test_negative_num_samples_is_an_error():
    head = GPHead(5, GPHeadConfig(num_features=8))
    with pytest.raises(ValueError, match="num_samples"):
        head(*_inputs(), num_samples=-1)


def test_ablation_switches_drop_their_path():
    x_test, x_click, labels, valid = _inputs()
    full = GPHead(5, GPHeadConfig(num_features=16)).eval()
    prior_only = GPHead(5, GPHeadConfig(num_features=16, use_update_path=False)).eval()
    update_only = GPHead(5, GPHeadConfig(num_features=16, use_prior_path=False)).eval()
    prior_only.load_state_dict(full.state_dict())
    update_only.load_state_dict(full.state_dict())
    a, b, c = (h(x_test, x_click, labels, valid).mean for h in (full, prior_only, update_only))
    torch.testing.assert_close(b, full.rff.features(x_test) @ full.weight_prior.mean)
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    # in float64 the update-only mean is the kernel interpolant of m_xi, K_*n (K_nn + eps^2 I)^-1 m_xi
    update_only = update_only.double()
    xt, xc, lab = x_test.double(), x_click.double(), labels.double()
    out = update_only(xt, xc, lab, valid)
    eta0 = update_only.kernel.outputscale.item()
    eta = update_only.kernel.precision.detach().numpy().ravel()
    eps2 = update_only.noise  # eval_noise, 1e-4
    for i in range(2):
        idx = valid[i].numpy()
        xn, m = xc[i].numpy()[idx], out.click_mean[i].detach().numpy()[idx]
        expected = rbf(xt[i].numpy(), xn, eta0, eta) @ np.linalg.solve(rbf(xn, xn, eta0, eta) + eps2 * np.eye(len(xn)), m)
        # float64, N = 4 clicks, cond(K + eps^2 I) <= 1 + N eta0 / eps^2 = 4e4: error ~ cond x 2^-53 ~ 1e-11
        np.testing.assert_allclose(out.mean[i].detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_large_finite_features_are_used_or_refused_by_their_squared_norm():
    """Large finite features whose squared norm stays finite are used as they are (the
    other rows unchanged bit for bit, the large ones finite: their kernel values underflow
    to 0); ones whose squared norm overflows are refused by name, not returned as NaN (3e38
    gave NaN rows before session 12)."""
    head = GPHead(5, GPHeadConfig(num_features=8)).eval()
    x_test, x_click, labels, valid = _inputs()
    ref = head(x_test, x_click, labels, valid).mean
    big = x_test.clone()
    big[0, :3] = 1e17  # squares 1e34: their sum (150 of them) stays below float32's 3.4e38
    out = head(big, x_click, labels, valid).mean
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 3:], ref[0, 3:]) and torch.equal(out[1], ref[1])
    for value in (3e38, 1e20):  # the sum overflows / only the squares' sum does
        big[0, :3] = value
        with pytest.raises(ValueError, match="x_test is too large for the GP"):
            head(big, x_click, labels, valid)
    with pytest.raises(ValueError, match="x_click is too large"):
        head(x_test, x_click * 1e20, labels, valid)
    # finite float16 values whose norm (~1e4 sqrt(150) ~ 1.2e5) exceeds float16's 65504: the
    # check computes the norm in float32 and accepts them
    half = (x_test.clamp(-2, 2) * 1e4).half()
    assert torch.isfinite(half).all() and not torch.isfinite(torch.linalg.vector_norm(half)).item()
    from gpcis.gp import check_gp_inputs

    check_gp_inputs(half, x_click.half(), labels, valid)  # the check itself, on the half inputs
    assert torch.isfinite(head(half, x_click.half(), labels, valid).mean).all()


def test_head_variance_is_eq_s5_or_the_sample_variance_on_request():
    from gpcis.gp import predictive_variance

    x_test, x_click, labels, valid = _inputs()
    x_test, x_click, labels = x_test.double(), x_click.double(), labels.double()
    for with_noise in (False, True):
        head = GPHead(5, GPHeadConfig(num_features=8, variance_with_click_noise=with_noise)).double().eval()
        out = head(x_test, x_click, labels, valid, return_variance=True)
        expected = predictive_variance(
            head.kernel, x_test, x_click, valid, head.noise, click_variance=0.01 if with_noise else None
        )
        # float64, the same quantities evaluated in another order: ~1e-13 relative (N = 4, cond <= 4e4)
        torch.testing.assert_close(out.variance, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_autocast_and_half_inputs_run_the_gp_in_float32(low):
    """Under ``torch.autocast`` (what AMP training does) the head switches autocast off and
    upcasts half inputs, so it returns exactly what the float32 head gives on the same
    (rounded) inputs, forward and backward; without that, the fused cos-feature backward
    mixed dtypes (found on CUDA AMP)."""
    head = GPHead(5, GPHeadConfig(num_features=16))
    x_test, x_click, labels, valid = _inputs()
    x_test, x_click = x_test.to(low).float(), x_click.to(low).float()  # values a half tensor holds

    def run(xt, xc, autocast):
        xt, xc = xt.detach().requires_grad_(True), xc.detach().requires_grad_(True)
        head.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = head(xt, xc, labels, valid, num_samples=2, return_variance=True,
                       generator=torch.Generator().manual_seed(3))
        (out.samples.sum() + out.mean.sum() + out.vi_loss + out.variance.sum()).backward()
        grads = [p.grad.clone() for p in head.parameters()]
        return out, grads, xt.grad, xc.grad

    ref = run(x_test, x_click, autocast=False)
    for got in (run(x_test, x_click, autocast=True), run(x_test.to(low), x_click.to(low), autocast=True),
                run(x_test.to(low), x_click.to(low), autocast=False)):
        out = got[0]
        assert out.mean.dtype == out.samples.dtype == out.variance.dtype == torch.float32
        for a, b in [(out.mean, ref[0].mean), (out.samples, ref[0].samples), (out.variance, ref[0].variance),
                     (out.vi_loss, ref[0].vi_loss)] + list(zip(got[1], ref[1])):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # gradients w.r.t. half inputs come back in their dtype, equal to the rounded float32 ones
        for g_got, g_ref in zip(got[2:], ref[2:]):
            torch.testing.assert_close(g_got.float(), g_ref.to(g_got.dtype).float(), rtol=0, atol=0)


def test_vi_loss_can_be_skipped_without_changing_anything_else():
    head = GPHead(5, GPHeadConfig(num_features=16)).eval()
    x_test, x_click, labels, valid = _inputs()
    full = head(x_test, x_click, labels, valid, num_samples=2, return_variance=True,
                generator=torch.Generator().manual_seed(0))
    lean = head(x_test, x_click, labels, valid, num_samples=2, return_variance=True,
                generator=torch.Generator().manual_seed(0), compute_vi_loss=False)
    assert lean.vi_loss is None and full.vi_loss is not None and full.vi_loss > 0
    with torch.no_grad():  # the default at inference (eval mode, no gradients): skipped
        assert head(x_test, x_click, labels, valid).vi_loss is None
        assert head.train()(x_test, x_click, labels, valid).vi_loss is not None  # training mode
    for a, b in [(lean.mean, full.mean), (lean.samples, full.samples), (lean.variance, full.variance),
                 (lean.click_mean, full.click_mean)]:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("click_noise", [False, True])
def test_cpu_inference_takes_the_one_pass_path_with_or_without_the_variance(monkeypatch, click_noise):
    """At inference on the CPU mean and variance come from one blocked_mean_path pass. In
    float64 both equal the two paths' (prior_path + update_path, predictive_variance; the
    head with its one-pass method switched off) to rounding: the head hands over the right
    weights, L^{-1} and click-noise correction. In float32 the mean is within twice the
    one-pass bound of the two paths' (tests/gp/reference.py; the two paths' own bound,
    tests/gp/test_fused.py, is term by term the smaller)."""
    from gpcis.gp import head as head_module

    calls = []
    blocked = head_module.blocked_mean_path
    monkeypatch.setattr(head_module, "blocked_mean_path", lambda *a, **k: calls.append(a) or blocked(*a, **k))
    cfg = GPHeadConfig(num_features=32, eval_noise=0.01, variance_with_click_noise=click_noise)
    head = GPHead(7, cfg).eval()
    g = torch.Generator().manual_seed(0)
    x_test = torch.randn(2, 300, 7, generator=g)
    x_click = x_test[:, :5].clone() + 0.2 * torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0]] * 2)
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 3:] = False
    inputs = (x_test, x_click, labels * valid, valid)
    two_paths = copy.deepcopy(head)
    monkeypatch.setattr(two_paths, "_blocked_mean_path", lambda *a, **k: None)
    with torch.no_grad():
        mean_only = head(*inputs)
        assert len(calls) == 1 and mean_only.variance is None
        _, bound = mean_path_exact_and_bound(*calls[0])
        ref = two_paths(*inputs)
        assert ((mean_only.mean - ref.mean).double().abs() <= 2 * bound).all()
        inputs64 = tuple(t.double() if t.is_floating_point() else t for t in inputs)
        one = head.double()(*inputs64, return_variance=True)
        two = two_paths.double()(*inputs64, return_variance=True)
    assert len(calls) == 2 and one.variance is not None
    torch.testing.assert_close(one.mean, two.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(one.variance, two.variance, rtol=0, atol=1e-12)


def _small_inputs(dtype=torch.float64, b=2, m=12, n=3, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_test = torch.randn(b, m, d, generator=g, dtype=dtype)
    x_click = torch.randn(b, n, d, generator=g, dtype=dtype)
    labels = torch.tensor([[1.0, -1.0, 1.0]] * b, dtype=dtype)[:, :n]
    valid = torch.ones(b, n, dtype=torch.bool)
    return x_test, x_click, labels, valid


@pytest.mark.parametrize("train_noise,mode", [(0.01, "eval"), (0.02, "train")])
def test_variance_with_click_noise_is_differentiable(train_noise, mode):
    """The click-noise correction of the variance backpropagates (an in-place square of a
    tensor its own product had saved broke the backward whenever s^2 != eps^2)."""
    head = GPHead(2, GPHeadConfig(num_features=8, variance_with_click_noise=True, train_noise=train_noise)).double()
    head.train(mode == "train")
    x_test, x_click, labels, valid = _small_inputs()
    x_test.requires_grad_(True)

    def variance(x):
        return head(x, x_click, labels, valid, return_variance=True).variance

    assert torch.autograd.gradcheck(variance, (x_test,), eps=1e-6, atol=1e-6)


def test_padded_clicks_have_no_effect_whatever_their_label():
    """A NaN / Inf label (or NaN-filled inputs) at a padded click changes nothing: the same
    result as a finite one (NaN * 0 had made the whole item NaN)."""
    head = GPHead(2, GPHeadConfig(num_features=8)).double().eval()
    x_test, x_click, labels, valid = _small_inputs()
    valid[0, 2] = False
    with torch.no_grad():
        ref = head(x_test, x_click, labels, valid, return_variance=True)
        for bad in (float("nan"), float("inf")):
            lab = labels.clone()
            lab[0, 2] = bad
            out = head(x_test, x_click, lab, valid, return_variance=True)
            torch.testing.assert_close(out.mean, ref.mean, rtol=0, atol=0)
            torch.testing.assert_close(out.click_mean, ref.click_mean, rtol=0, atol=0)


def test_dtype_mismatches_and_empty_inputs():
    head = GPHead(2, GPHeadConfig(num_features=8))  # float32 parameters
    x_test, x_click, labels, valid = _small_inputs(torch.float64)
    with pytest.raises(ValueError, match="float64, the head's parameters torch.float32.*head.double"):
        head(x_test, x_click, labels, valid)
    with pytest.raises(ValueError, match="x_click must be a floating-point tensor"):
        head(x_test.float(), None, labels, valid)
    with pytest.raises(ValueError, match="one dtype"):
        head.double()(x_test, x_click.float(), labels, valid)
    # no test points, an empty batch: a clear error (they crashed inside the kernels)
    head = head.double()
    for xt, xc, lab, val in ((x_test[:, :0], x_click, labels, valid),
                             (x_test[:0], x_click[:0], labels[:0], valid[:0])):
        with pytest.raises(ValueError, match="at least one batch item and one test point"):
            head(xt, xc, lab, val)


@pytest.mark.parametrize("training", [False, True])
def test_padded_clicks_have_no_effect_whatever_their_values(training):
    """Padded click rows (valid False) holding large values, NaN or Inf change nothing, bit
    for bit (before session 12 a padded 1e3 moved the kernel's centre and changed a float32
    mean by 1e-2, 1e5 gave garbage and NaN was refused)."""
    from gpcis.gp import neutral_padding

    head = GPHead(5, GPHeadConfig(num_features=16)).train(training)
    x_test, x_click, labels, valid = _inputs()
    valid = valid.clone()
    valid[0, 2:] = False  # item 0: two clicks and two padded rows; item 1: all four valid

    def run(xc):
        out = head(x_test, xc, labels, valid, num_samples=2, return_variance=True,
                   generator=torch.Generator().manual_seed(0))
        return out.mean, out.samples, out.variance, out.vi_loss

    ref = run(x_click)
    for value in (1e3, 1e5, float("nan"), float("inf")):
        xc = x_click.clone()
        xc[0, 2:] = value
        for a, b in zip(run(xc), ref):
            assert torch.equal(a, b), value
    filled = neutral_padding(x_click, valid)
    assert torch.equal(filled[1], x_click[1]) and torch.equal(filled[0, :2], x_click[0, :2])
    torch.testing.assert_close(filled[0, 2:], x_click[0, :2].mean(0).expand(2, -1), rtol=0, atol=0)
    none_valid = neutral_padding(x_click, torch.zeros_like(valid))
    assert torch.equal(none_valid, torch.zeros_like(x_click))


@pytest.mark.parametrize(
    "field, value",
    [("eval_noise", -1.0), ("train_noise", 0.0), ("click_variance", float("nan")), ("eval_noise", float("inf")),
     ("mlp_hidden", 0), ("num_features", 2.5), ("num_features", -1), ("vi_quad_scale", -1.0),
     ("vi_reduction", "bogus"), ("prior", "bogus"), ("init_log_precision", float("nan")), ("seed", True),
     ("learn_weight_prior", "yes"), ("vi_kernel_grad", 1)],
)
def test_config_values_that_would_give_wrong_results_are_refused(field, value):
    """A negative eval_noise gave logits of -5e7 with no error; every field is checked."""
    with pytest.raises(ValueError, match=f"GPHeadConfig.{field}"):
        GPHeadConfig(**{field: value})


def test_num_samples_must_be_an_int_and_labels_tensors():
    head = GPHead(5, GPHeadConfig(num_features=8))
    x_test, x_click, labels, valid = _inputs()
    for bad in (2.5, True):
        with pytest.raises(ValueError, match="num_samples must be an int"):
            head(x_test, x_click, labels, valid, num_samples=bad)
    with pytest.raises(ValueError, match="labels must be a torch.Tensor, got ndarray"):
        head(x_test, x_click, labels.numpy(), valid)
    with pytest.raises(ValueError, match="valid must be a torch.Tensor, got ndarray"):
        head(x_test, x_click, labels, valid.numpy())


def test_the_config_seed_fixes_every_initial_draw():
    """Theta, tau, mu_w and (since session 12) the amortisation MLP come from the config's
    seed: two heads of one config start equal whatever the global RNG did in between; the
    MLP keeps nn.Linear's initial distribution U(+-1/sqrt(fan_in))."""
    torch.manual_seed(1)
    a = GPHead(6, GPHeadConfig(num_features=16, mlp_hidden=8, seed=3))
    torch.rand(100)
    b = GPHead(6, GPHeadConfig(num_features=16, mlp_hidden=8, seed=3))
    c = GPHead(6, GPHeadConfig(num_features=16, mlp_hidden=8, seed=4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["posterior.mlp.0.weight"], sc["posterior.mlp.0.weight"])
    for name, fan_in in (("posterior.mlp.0.weight", 6), ("posterior.mlp.0.bias", 6), ("posterior.mlp.2.weight", 8)):
        assert sa[name].abs().max() <= 1 / math.sqrt(fan_in)
