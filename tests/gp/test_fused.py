"""The fused mean-path kernel (gpcis.gp.fused): against the float64 formula within a derived
float32 bound, in the GP head, and its fallback. On the CPU the Triton kernel runs in
Triton's interpreter (TRITON_INTERPRET=1, set for this module); on a GPU compiled, with the
tf32x3 products of the default."""

from __future__ import annotations

import math
import os

import pytest
import torch

pytest.importorskip("triton")

from gpcis.gp import GPHead, GPHeadConfig, fused  # noqa: E402

U = 2.0**-24  # float32 unit roundoff


@pytest.fixture
def interpreted():
    """gpcis.gp.fused, its kernel in Triton's interpreter (CPU tensors; tests/conftest.py
    switches it on where CUDA is absent, before triton is imported)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton's interpreter is off (CUDA present, or triton imported before tests/conftest.py)")
    return fused


def _problem(b=2, m=257, d=11, lf=40, n=6, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, m, generator=g).transpose(1, 2)  # channel-major (B, M, D) view
    theta = torch.randn(d, lf, generator=g)
    tau = torch.rand(lf, generator=g) * 2 * math.pi
    w = torch.randn(b, lf, generator=g) * 0.2
    z = x[:, :n].clone() + 0.3 * torch.randn(b, n, d, generator=g)  # clicks near test points
    eta = torch.rand(d, generator=g) * 0.5 + 0.05
    eta0 = torch.tensor(1.3)
    alpha = torch.randn(b, n, generator=g)
    alpha[1, n - 2:] = 0.0  # item 1: two padded clicks
    return [t.to(device) for t in (x, theta, tau, w, z, eta, eta0, alpha)]


def _exact_and_bound(x, theta, tau, w, z, eta, eta0, alpha, dot_rel, cos_abs=U):
    """float64 value of f and a bound on a float32 evaluation's error at each point.

    Per basis function r: the dot product x.theta_r has error <= (D + 2) u S_r + dot_rel S_r
    (float32 accumulation; ``dot_rel`` the relative error of one product, u for float32,
    ~2^-21 for tf32x3), S_r = sum_t |x_t theta_tr| + |tau_r|; the reduction to [-pi, pi]
    adds <= 4 u (|arg| + pi); the cosine ``cos_abs`` (u for an accurate one, 2^-21.4 for the
    GPU's __cosf on [-pi, pi]). The weighted sum adds (l + 1) u sum |w_r|.
    Per click: the exponent e = a.(eta b) - |a|^2_eta / 2 - |b|^2_eta / 2 + log eta0
    (a = x - c, b = z - c) has error <= ((D + 4) u + dot_rel) T + 2 u |log eta0|,
    T = sum_t eta_t (|a_t| |b_t| + a_t^2 + b_t^2) + |x|_eta-ish centring terms (bounded by
    adding eta_t (|x_t| + |c_t|)^2); exp adds 2 u relative; the sum (N + 1) u sum |alpha k|.
    """
    xd, thd, tad, wd, zd, ed, e0, ad = (t.double().cpu() for t in (x, theta, tau, w, z, eta, eta0, alpha))
    d = xd.shape[-1]
    arg = xd @ thd + tad
    s = xd.abs() @ thd.abs() + tad.abs()
    err_arg = (d + 2) * U * s + dot_rel * s + 4 * U * (arg.abs() + math.pi) + cos_abs
    prior = (torch.cos(arg) * wd[:, None]).sum(-1)
    err = (err_arg * wd[:, None].abs()).sum(-1) + (thd.shape[1] + 1) * U * wd.abs().sum(-1)[:, None]
    if zd.shape[1]:
        c = zd.mean(1, keepdim=True)
        a, bz = xd - c, zd - c
        sq = ((xd[:, :, None] - zd[:, None]) ** 2 * ed).sum(-1)
        k = e0 * torch.exp(-0.5 * sq)
        t = (a.abs()[:, :, None] * bz.abs()[:, None] * ed).sum(-1) + (a**2 * ed).sum(-1)[..., None] \
            + (bz**2 * ed).sum(-1)[:, None] + ((xd.abs() + c.abs()) ** 2 * ed).sum(-1)[..., None]
        err_e = ((d + 4) * U + dot_rel) * t + 2 * U * abs(math.log(float(e0)))
        upd = (k * ad[:, None]).sum(-1)
        err = err + ((err_e + 2 * U) * k * ad[:, None].abs()).sum(-1) \
            + (zd.shape[1] + 1) * U * (k * ad[:, None]).abs().sum(-1)
    else:
        upd = torch.zeros_like(prior)
    f = prior + upd
    return f, err + 2 * U * f.abs()


@pytest.mark.parametrize("lf,n", [(40, 6), (0, 6), (40, 0), (70, 17)])
def test_fused_mean_path_within_its_float32_bound(interpreted, lf, n):
    prob = _problem(lf=lf, n=n)
    out = interpreted.fused_mean_path(*prob, input_precision="ieee")
    exact, bound = _exact_and_bound(*prob, dot_rel=U)
    assert out.shape == exact.shape and out.dtype == torch.float32
    assert bound.max() < 1e-3  # a meaningful bound for this problem
    assert ((out.double() - exact).abs() <= bound).all()


def _head_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x_test = torch.randn(2, 300, 7, generator=g)
    x_click = x_test[:, :5].clone() + 0.2 * torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0]] * 2)
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 3:] = False
    return x_test, x_click, labels * valid, valid


@pytest.mark.parametrize("use_prior_path,use_update_path", [(True, True), (False, True), (True, False)])
def test_head_mean_through_the_fused_kernel_equals_the_pytorch_path(interpreted, monkeypatch, use_prior_path,
                                                                    use_update_path):
    """The head hands the kernel its weights (w with Phi's scale, alpha, the kernel's eta):
    the result is f of those arguments within the kernel's bound, and the PyTorch path's
    float32 evaluation of the same f is within twice that bound (each within one bound of
    the float64 value: the same operations, with an accurate torch.cos)."""
    cfg = GPHeadConfig(num_features=32, use_prior_path=use_prior_path, use_update_path=use_update_path,
                       eval_noise=0.01)
    head = GPHead(7, cfg).eval()
    inputs = _head_inputs()
    calls = []
    kernel = interpreted.fused_mean_path
    with torch.no_grad():
        ref_out = head(*inputs, return_variance=True)
        monkeypatch.setattr(interpreted, "usable", lambda x: x.dtype == torch.float32)
        monkeypatch.setattr(interpreted, "fused_mean_path", lambda *a, **k: calls.append(a) or kernel(*a, **k))
        fused_out = head(*inputs, return_variance=True)
    ref, out = ref_out.mean, fused_out.mean
    assert head._fused_error is None and len(calls) == 1
    # the variance does not go through the kernel: the same computation either way
    torch.testing.assert_close(fused_out.variance, ref_out.variance, rtol=0, atol=0)
    x, theta, tau, w, z, eta, eta0, alpha = calls[0]
    assert (w.shape[-1] == 32) == use_prior_path and (z.shape[1] == 5) == use_update_path
    exact, bound = _exact_and_bound(x, theta, tau, w, z, eta, eta0, alpha, dot_rel=U)
    assert ((out.double() - exact).abs() <= bound).all()
    assert ((out - ref).double().abs() <= 2 * bound).all()


def test_head_falls_back_when_the_kernel_cannot_run(interpreted, monkeypatch):
    head = GPHead(7, GPHeadConfig(num_features=32)).eval()
    inputs = _head_inputs()
    with torch.no_grad():
        ref = head(*inputs).mean

        def broken(*args, **kwargs):
            raise RuntimeError("no C compiler")

        monkeypatch.setattr(interpreted, "usable", lambda x: True)
        monkeypatch.setattr(interpreted, "fused_mean_path", broken)
        with pytest.warns(RuntimeWarning, match="fused GP mean path unavailable.*no C compiler"):
            out = head(*inputs).mean
    assert head._fused_error == "RuntimeError: no C compiler"
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("lf,n", [(256, 20), (128, 1)])
def test_fused_mean_path_on_cuda_within_its_tf32x3_bound(lf, n):
    prob = _problem(m=5000, d=51, lf=lf, n=n, device="cuda")
    assert fused.usable(prob[0])
    out = fused.fused_mean_path(*prob)
    exact, bound = _exact_and_bound(*prob, dot_rel=2.0**-20, cos_abs=2.0**-21.4)
    assert bound.max() < 1e-2
    assert ((out.double().cpu() - exact).abs() <= bound).all()
