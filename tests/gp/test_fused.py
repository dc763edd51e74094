"""The fused mean-path kernel (gpcis.gp.fused): against the float64 formula within a derived
float32 bound, in the GP head, and its fallback. On the CPU the Triton kernel runs in
Triton's interpreter (TRITON_INTERPRET=1, set for this module); on a GPU compiled, with the
tf32x3 products of the default."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from gpcis.gp import GPHead, GPHeadConfig, fused  # noqa: E402
from tests.gp.reference import mean_path_problem  # noqa: E402

U = 2.0**-24  # float32 unit roundoff


@triton.jit
def _round_kernel(src, dst, n, BLOCK: tl.constexpr):
    """``dst = _tf32(src)`` (a jit function reads module globals, not a test's locals)."""
    i = tl.arange(0, BLOCK)
    tl.store(dst + i, fused._tf32(tl.load(src + i, mask=i < n, other=0.0)), mask=i < n)


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
    prob = mean_path_problem(lf=lf, n=n)
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
    the float64 value: the same operations, with an accurate torch.cos). (The reference
    head has its CPU one-pass method switched off: the PyTorch path.)"""
    cfg = GPHeadConfig(num_features=32, use_prior_path=use_prior_path, use_update_path=use_update_path,
                       eval_noise=0.01)
    head = GPHead(7, cfg).eval()
    inputs = _head_inputs()
    calls = []
    kernel = interpreted.fused_mean_path
    with torch.no_grad():
        with monkeypatch.context() as m:
            m.setattr(head, "_blocked_mean_path", lambda *a, **k: None)
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
        monkeypatch.setattr(interpreted, "click_system", broken)
        with pytest.warns(RuntimeWarning, match="fused GP mean path unavailable.*no C compiler"):
            out = head(*inputs).mean
        # then neither fused path is tried again on this head (it would warn again)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch.testing.assert_close(head(*inputs).mean, ref, rtol=0, atol=0)
    assert head._fused_error == "RuntimeError: no C compiler"
    torch.testing.assert_close(out, ref, rtol=0, atol=0)



E64 = 2.0**-53  # float64 unit roundoff


def _click_problem(b=2, n=7, d=9, lf=24, hidden=8, seed=1, noise=0.01, log_eta0=0.2):
    """Inputs of fused.click_system: clicks, labels (+-1, 0 at padding; item 1 padded), the
    prior's frequencies, phases and weights, the kernel's eta, the MLP."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, n, d, generator=g)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[1, max(n - 2, 1):] = False
    labels = torch.where(torch.rand(b, n, generator=g) < 0.5, -1.0, 1.0) * valid
    mlp = (torch.randn(hidden, d, generator=g) * 0.5, torch.randn(hidden, generator=g) * 0.5,
           torch.randn(1, hidden, generator=g) * 0.5, torch.randn(1, generator=g))
    return dict(
        source=z, labels=labels, valid=valid, theta=torch.randn(d, lf, generator=g),
        tau=torch.rand(lf, generator=g) * 2 * math.pi, w=torch.randn(lf, generator=g) * 0.5,
        w_scale=math.sqrt(2.0 / max(lf, 1)), precision=torch.rand(d, generator=g) * 0.3 + 0.05,
        log_outputscale=torch.tensor(log_eta0), noise=noise, mlp=mlp,
    )


_f32 = fused._f32  # a Python float as the float32 number a compiled kernel receives for it


def _click_reference(p):
    """float64 value of everything click_system computes, from the same float32 inputs (the
    scalars w_scale and noise rounded to float32 as the kernel receives them), and the
    magnitudes its error bounds are made of."""
    z, v = p["source"].double(), p["valid"].double()
    w1, b1, w2, b2 = (t.double() for t in p["mlp"])
    hid = torch.relu(z @ w1.T + b1)
    o = (hid @ w2.T).squeeze(-1) + b2
    m = torch.nn.functional.softplus(o) * p["labels"].double() * v
    arg = z @ p["theta"].double() + p["tau"].double()
    wl = p["w"].double() * _f32(p["w_scale"])
    prior = (torch.cos(arg) * wl).sum(-1)
    eta = p["precision"].double().reshape(-1)
    sq = ((z[:, :, None] - z[:, None]) ** 2 * eta).sum(-1)
    eta0 = math.exp(float(p["log_outputscale"]))
    a = eta0 * torch.exp(-0.5 * sq) * v[..., None] * v[:, None] + torch.diag_embed(_f32(p["noise"]) * v + 1 - v)
    resid = (m - prior) * v
    alpha = torch.linalg.solve(a, resid.unsqueeze(-1)).squeeze(-1) * v
    # the kernel centres at the float32-rounded mean of the valid clicks (padding left out)
    centre = ((z * v[..., None]).sum(1) / v.sum(1, keepdim=True).clamp_min(1)).float().double()
    bz = z - centre[:, None]
    # magnitudes of the residual's terms: per basis function |w_l| (|z.theta_l| + |tau_l| + 1)
    # (the projection's sum, then the cosine), per hidden unit |W2_h| (|h| + |W1_h||z| + |b1_h|)
    # (softplus has slope <= 1), |b2| and |m|
    mag_r = ((z.abs() @ p["theta"].double().abs() + p["tau"].double().abs() + 1) * wl.abs()).sum(-1) \
        + ((hid + z.abs() @ w1.abs().T + b1.abs()) * w2.abs()[0]).sum(-1) + b2.abs() + m.abs()
    return dict(alpha=alpha, m=m, a=a, resid=resid, centre=centre, zt=(eta * bz).transpose(1, 2),
                e=math.log(eta0) - 0.5 * (bz**2 * eta).sum(-1), mag_r=mag_r, hid=hid, o=o)


def _alpha_bound(ref, d: int, lf: int, hidden: int):
    """Bound on |alpha_kernel - alpha| (alpha the exact solution for the float32 inputs).

    Both evaluate the same float64 formulas in different orders: the matrix entries carry
    relative errors <= g = (D + L + H + N + 10) e64 (distance sums, exp, MLP and prior sums;
    e64 = 2^-53), the residual an absolute error <= g |r|_mag (|r|_mag: the sum of the
    magnitudes of its terms). To first order (perturbation of a linear system)
    |d alpha|_2 <= |A^-1|_2 (|dA|_2 |alpha|_2 + |dr|_2) with |dA|_2 <= g |A|_F, plus the
    backward error of Cholesky and the two substitutions, (3 N + 3) e64 |A|_2 |alpha|_2
    through |A^-1|_2; times 2 for the second-order terms. The result is stored in float32:
    + u |alpha| per entry. ``alpha`` for ``ref`` is float64-accurate to far below that.
    """
    a, alpha = ref["a"], ref["alpha"]
    n = a.shape[-1]
    g = (d + lf + hidden + n + 10) * E64
    inv_norm = 1.0 / torch.linalg.eigvalsh(a)[..., 0]  # |A^-1|_2 (A symmetric positive definite)
    a_norm = torch.linalg.matrix_norm(a)
    da = (g + (3 * n + 3) * E64) * a_norm * alpha.norm(dim=-1) + g * ref["mag_r"].norm(dim=-1)
    return U * alpha.abs() + 2 * (inv_norm * da)[:, None]


@pytest.mark.parametrize("n,lf,fused_forward", [(7, 24, True), (1, 24, True), (7, 0, True), (17, 40, True),
                                                (17, 40, False)])
def test_click_system_against_the_float64_solution(interpreted, n, lf, fused_forward):
    """Also with the forward substitution after the factorisation (a launch option)."""
    p = _click_problem(n=n, lf=lf)
    out = interpreted.click_system(**p, fused_forward=fused_forward, solve_warps=2 if fused_forward else None)
    ref = _click_reference(p)
    d, hidden = p["source"].shape[-1], p["mlp"][0].shape[0]
    bound = _alpha_bound(ref, d, lf, hidden)
    assert (out.info == 0).all()
    assert bound.max() < 1e-4 * ref["alpha"].abs().max()  # a meaningful bound: float32 rounding dominates
    assert ((out.alpha.double() - ref["alpha"]).abs() <= bound).all()
    g = (d + hidden + 10) * E64
    # m_xi: its float64 sums (|o| and the hidden layer's magnitudes) then float32 rounding
    m_mag = (ref["hid"].abs() @ p["mlp"][2].double().abs().T).squeeze(-1) + ref["o"].abs() + 1
    assert ((out.click_mean.double() - ref["m"]).abs() <= U * ref["m"].abs() + g * m_mag).all()
    assert (out.alpha[~p["valid"]] == 0).all() and (out.click_mean[~p["valid"]] == 0).all()
    # the centred clicks the mean-path kernel reads: float32 roundings of float64 values
    z_mag = p["source"].double().abs().amax()
    assert ((out.centre.double() - ref["centre"]).abs() <= U * ref["centre"].abs() + g * z_mag).all()
    eta_max = float(p["precision"].max())
    assert ((out.zt.double() - ref["zt"]).abs() <= U * ref["zt"].abs() + g * eta_max * z_mag).all()
    e_mag = abs(float(p["log_outputscale"])) + 0.5 * (ref["zt"].abs() * (p["source"].double().abs() + z_mag).mT).sum(1)
    assert ((out.e.double() - ref["e"]).abs() <= U * ref["e"].abs() + g * e_mag).all()


def test_click_system_reports_a_failed_factorisation_as_cholesky_ex(interpreted):
    """A negative 'noise' makes K_nn + eps^2 I indefinite: info is the order of the first
    leading minor that is not positive definite, as torch.linalg.cholesky_ex reports it."""
    for noise in (-0.6, -1.5, -5.0):
        p = _click_problem(n=6, noise=noise, log_eta0=0.0)
        out = interpreted.click_system(**p)
        expected = torch.linalg.cholesky_ex(_click_reference(p)["a"]).info
        assert out.info.dtype == torch.int32
        torch.testing.assert_close(out.info, expected.to(torch.int32), rtol=0, atol=0)
    assert (out.info > 0).all()


def test_click_system_reads_clicked_pixels_as_gather_at_clicks(interpreted):
    """With coordinates the kernel reads the rows of the (B, H*W, D) pixel inputs that
    gather_at_clicks picks (rounding half to even, clamping into the image): the same
    values, so the same results bit for bit."""
    from gpcis.models.heads import gather_at_clicks

    p = _click_problem(n=6)
    b, n, d = p["source"].shape
    size = (5, 7)
    g = torch.Generator().manual_seed(3)
    pixels = torch.randn(b, d, size[0] * size[1], generator=g).transpose(1, 2)  # channel-major view
    coords = torch.tensor([[[2.5, 3.5], [3.5, 0.5], [-0.7, 9.0], [4.49, 6.51], [1.0, 1.0], [0.0, 6.0]],
                           [[1.5, 2.5], [7.0, -3.0], [2.0, 2.0], [0.4, 0.6], [0.0, 0.0], [0.0, 0.0]]])
    p["source"] = gather_at_clicks(pixels, coords, size[1])
    direct = interpreted.click_system(**p)
    p["source"] = pixels
    gathered = interpreted.click_system(**p, coords=coords, size=size)
    for name in ("alpha", "click_mean", "centre", "zt", "e", "info"):
        torch.testing.assert_close(getattr(gathered, name), getattr(direct, name), rtol=0, atol=0)
    # parameters in other layouts are read as their values
    p["theta"] = p["theta"].T.contiguous().T
    p["mlp"] = (p["mlp"][0].T.contiguous().T, *p["mlp"][1:])
    strided = interpreted.click_system(**p, coords=coords, size=size)
    torch.testing.assert_close(strided.alpha, direct.alpha, rtol=0, atol=0)


def test_click_system_rejects_too_many_clicks(interpreted):
    p = _click_problem(n=interpreted.MAX_CLICKS + 1)
    with pytest.raises(ValueError, match="up to 64 clicks"):
        interpreted.click_system(**p)


def _pixel_reference(features, image, size, mean, std):
    f = torch.nn.functional.normalize(features.double(), p=2, dim=1)
    up = torch.nn.functional.interpolate(f, size=size, mode="bilinear", align_corners=False)
    if image is None:
        return up
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    return torch.cat([up, (image.double() - m) / s], 1)


def _pixel_bound(features, image, size, mean, std):
    """Per-entry bound of the kernel's float32 evaluation against the float64 value.

    Feature channels (unit vectors after normalisation, entries <= 1): the norm's sum of C
    squares, its square root and reciprocal (<= 2 ulp each on a GPU: Triton's approximate
    sqrt and division) cost <= (C + 8) u relative per corner, its weight and the four
    weighted corners <= 8 u more; the source coordinate scale * (dst + 0.5) - 0.5 is
    formed in float32 as PyTorch does (scale rounded, a product, a difference: <= 3 u
    (|src| + 1)), and the interpolant's slope in it is <= 2 (entries in [-1, 1]), per axis.
    Image channels: (x - m) / s with m, s rounded to float32 (a division of <= 2 ulp):
    <= 8 u (|x| + |m|) / s.
    """
    c = features.shape[1]
    src_max = max(size) * max(features.shape[-2] / size[0], features.shape[-1] / size[1]) + 1
    feat = (c + 16) * U + 2 * 2 * 3 * U * (src_max + 1)
    bound = torch.full((features.shape[0], c + (3 if image is not None else 0), *size), feat, dtype=torch.float64)
    if image is not None:
        m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
        bound[:, c:] = 8 * U * (image.double().abs() + m) / s
    return bound


@pytest.mark.parametrize("small,size,with_image", [((6, 7), (23, 29), True), ((9, 9), (9, 9), True),
                                                    ((5, 4), (17, 8), False), ((12, 10), (7, 6), True)])
def test_pixel_features_against_the_float64_formula(interpreted, small, size, with_image):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 10, 2 * small[0], small[1], generator=g)[:, :, ::2]  # strided input
    features[0, :, 0, 0] = 0.0  # a zero vector: F.normalize's eps, no division by zero
    image = torch.rand(2, 3, *size, generator=g) if with_image else None
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = interpreted.pixel_features(features, image, size, mean, std)
    exact = _pixel_reference(features, image, size, mean, std)
    assert out.shape == exact.shape and out.dtype == torch.float32 and out.is_contiguous()
    assert ((out.double() - exact).abs() <= _pixel_bound(features, image, size, mean, std)).all()


def _record(monkeypatch, module, name):
    calls = []
    fn = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append((a, k)) or fn(*a, **k))
    return calls


@pytest.mark.parametrize("prior,use_prior_path", [("learned", True), ("spectral", True), ("learned", False)])
def test_head_mean_through_the_click_system(interpreted, monkeypatch, prior, use_prior_path):
    """GPHead's mean at inference through click_system + the mean-path kernel: the click
    weights it computes are the float64 library path's (click_gram_cholesky, update_weights
    of a float64 copy of the head) within the click system's bound, and the mean is the
    mean-path kernel's f of those weights within that kernel's bound."""
    from gpcis.gp.pathwise import click_gram_cholesky, prior_path, update_weights

    cfg = GPHeadConfig(num_features=32, prior=prior, use_prior_path=use_prior_path)  # eval_noise 1e-4
    head = GPHead(7, cfg).eval()
    x_test, x_click, labels, valid = _head_inputs()
    monkeypatch.setattr(interpreted, "usable", lambda x: x.dtype == torch.float32)
    systems = _record(monkeypatch, interpreted, "click_system")
    means = _record(monkeypatch, interpreted, "mean_path_from_clicks")
    with torch.no_grad():
        out = head(x_test, x_click, labels, valid)
        h64 = copy.deepcopy(head).double()
        # the kernels receive eta = exp(log eta) as computed in float32 by the head: the same
        # inputs for the reference (exp in float64 differs by up to 2^-24 relative, which the
        # bound below, made for equal inputs, does not cover: it failed by 3% for one seed)
        h64.kernel.raw_precision.copy_(head.kernel.precision.double().log())
        z = x_click.double()
        m = h64.posterior.mean(z, labels.double(), valid)
        w = h64.weight_prior.mean.expand(1, 2, -1)
        prior_z = prior_path(h64.rff, z, w)[0] if use_prior_path else torch.zeros_like(m)
        chol = click_gram_cholesky(h64.kernel, z, valid, _f32(cfg.eval_noise), jitter=0.0, max_tries=0)
        alpha = update_weights(chol, m - prior_z, valid, torch.float64)
    assert len(systems) == 1 and len(means) == 1 and out.cholesky_info is None
    system = means[0][0][5]
    assert system.alpha.shape == (2, 5)
    # the click system against the float64 library path
    a = chol @ chol.mT
    mag_r = m.abs() + (prior_z.abs() + 1 if use_prior_path else 0)
    bound = _alpha_bound(dict(a=a, alpha=alpha, mag_r=mag_r), 7, 32, cfg.mlp_hidden)
    assert ((system.alpha.double() - alpha).abs() <= bound).all()
    torch.testing.assert_close(out.click_mean.double(), m, rtol=2 * U, atol=1e-12)
    # the mean: f of the kernel's operands within the mean-path kernel's bound (the exponents
    # e and eta (z - c) are float64 values rounded to float32, inside that bound's terms)
    (x, theta, tau, wk, scale, _, eta, log_eta0), _ = means[0]
    w_scaled = (wk * scale).expand(2, -1)
    exact, kbound = _exact_and_bound(x, theta, tau, w_scaled, x_click, eta.reshape(-1), log_eta0.detach().exp(),
                                     system.alpha, dot_rel=U)
    assert ((out.mean.double() - exact).abs() <= kbound).all()


def test_head_falls_back_to_the_jitter_escalation_when_the_system_is_not_positive_definite(interpreted,
                                                                                          monkeypatch):
    """Without sync_free a failed factorisation (info > 0) sends the call to the PyTorch path
    (its jitter escalation); with sync_free the info comes back in the output."""
    head = GPHead(7, GPHeadConfig(num_features=32)).eval()
    inputs = _head_inputs()
    with torch.no_grad():
        monkeypatch.setattr(interpreted, "usable", lambda x: x.dtype == torch.float32)
        monkeypatch.setattr(interpreted, "MAX_CLICKS", 0)  # the reference: the PyTorch click side
        ref = head(*inputs)
        monkeypatch.setattr(interpreted, "MAX_CLICKS", 64)
        real = interpreted.click_system

        def failing(*args, **kwargs):
            out = real(*args, **kwargs)
            out.info.fill_(3)
            return out

        monkeypatch.setattr(interpreted, "click_system", failing)
        means = _record(monkeypatch, interpreted, "mean_path_from_clicks")
        out = head(*inputs)
        assert len(means) == 0  # not used: the PyTorch path ran (its mean path through fused_mean_path)
        torch.testing.assert_close(out.mean, ref.mean, rtol=0, atol=0)
        free = head(*inputs, sync_free=True)
    assert len(means) == 1 and (free.cholesky_info == 3).all()


@pytest.mark.parametrize("lf,n", [(40, 6), (0, 6), (40, 0)])
def test_split_rows_mean_path_within_its_tf32x3_bound(interpreted, lf, n):
    """The three-TF32-product evaluation with the rows split once per program (in the
    interpreter tl.dot is a float32 product of the TF32 parts: what the tensor cores compute
    up to the accumulation order) within the tf32x3 bound."""
    prob = mean_path_problem(lf=lf, n=n)
    out = interpreted.fused_mean_path(*prob, config=interpreted.MeanPathConfig(64, 16, 4, 2, True))
    exact, bound = _exact_and_bound(*prob, dot_rel=2.0**-20)
    assert ((out.double() - exact).abs() <= bound).all()
    ieee = interpreted.fused_mean_path(*prob, input_precision="ieee",
                                       config=interpreted.MeanPathConfig(64, 16, 4, 2, True))  # split off
    assert ((ieee.double() - exact).abs() <= _exact_and_bound(*prob, dot_rel=U)[1]).all()


def test_tf32_rounding_against_its_definition(interpreted):
    """``_tf32``: 11 significant bits, to nearest, ties away from zero (``cvt.rna.tf32.f32``),
    against frexp arithmetic in float64; ties, negatives, zero, powers of two, large values."""
    g = np.random.default_rng(0)
    base = (g.standard_normal(400) * 10.0 ** g.integers(-20, 20, 400)).astype(np.float32)
    ties = (np.float32(1.0) + np.float32(2.0**-11) * np.arange(1, 16, 2)).astype(np.float32)  # halfway cases
    special = np.array([0.0, -0.0, 1.0, -1.0, 2.0**-30, 3.0e38, -1.5, 1.0 + 2.0**-11 - 2.0**-23], np.float32)
    v = np.concatenate([base, ties, -ties, special])
    out = torch.empty(len(v))
    _round_kernel[(1,)](torch.from_numpy(v), out, len(v), BLOCK=512)
    m, e = np.frexp(v.astype(np.float64))  # v = m 2^e, 0.5 <= |m| < 1
    ref = np.sign(m) * np.floor(np.abs(m) * 2.0**11 + 0.5) * 2.0**-11 * 2.0**e.astype(np.float64)
    np.testing.assert_array_equal(out.numpy().astype(np.float64), ref)
    assert (np.abs(out.numpy() - v) <= np.abs(v) * 2.0**-11).all()
    # NaN payloads whose rounding carry would leave the NaN range (CUDA's canonical NaN is
    # 0x7FFFFFFF) stay NaN; infinities stay infinite
    special_bits = np.array([0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0x7FC00000, 0x7F800000, 0xFF800000], np.uint32)
    v = special_bits.view(np.float32)
    out = torch.empty(len(v))
    _round_kernel[(1,)](torch.from_numpy(v.copy()), out, len(v), BLOCK=8)
    assert out[:4].isnan().all() and out[4] == float("inf") and out[5] == float("-inf")


@pytest.mark.parametrize("lf", [40, 0])
@pytest.mark.parametrize("split", [False, True])
def test_mean_path_propagates_nan_inputs(interpreted, split, lf):
    """A row with a NaN (CUDA's 0x7FFFFFFF bits) gives NaN at that row, with and without the
    split and without the prior path (the kernel term's clamp must not swallow it): the
    head's ``ok`` flag then sends the call to the eager head's checks. No other row changes."""
    prob = mean_path_problem(lf=lf, n=6)
    cfg = interpreted.MeanPathConfig(64, 16, 4, 2, split)
    ref = interpreted.fused_mean_path(*prob, config=cfg)
    x = prob[0].clone()
    x[0, 5, 2] = torch.tensor([0x7FFFFFFF], dtype=torch.int32).view(torch.float32)[0]
    out = interpreted.fused_mean_path(x, *prob[1:], config=cfg)
    assert out[0, 5].isnan()
    keep = torch.ones_like(out, dtype=torch.bool)
    keep[0, 5] = False
    torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=0)


def test_split_configuration_reaches_the_kernel(interpreted, monkeypatch):
    """The launch passes SPLIT from the configuration, and only with tf32x3."""
    seen = []
    kernel = interpreted._mean_path_kernel

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                seen.append((kwargs["SPLIT"], kwargs["PRECISION"]))
                return kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(interpreted, "_mean_path_kernel", Spy())
    prob = mean_path_problem(lf=40, n=6)
    for split in (True, False):
        interpreted.fused_mean_path(*prob, config=interpreted.MeanPathConfig(64, 16, 4, 2, split))
    interpreted.fused_mean_path(*prob, input_precision="ieee", config=interpreted.MeanPathConfig(64, 16, 4, 2, True))
    assert seen == [(True, "tf32x3"), (False, "tf32x3"), (False, "ieee")]


@pytest.mark.gpu
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("lf,n,d", [(256, 20, 51), (128, 1, 51), (128, 20, 99)])
def test_fused_mean_path_on_cuda_within_its_tf32x3_bound(lf, n, d, split):
    prob = mean_path_problem(m=5000, d=d, lf=lf, n=n, device="cuda")
    assert fused.usable(prob[0])
    out = fused.fused_mean_path(*prob, config=fused.mean_path_config(d)._replace(split=split))
    exact, bound = _exact_and_bound(*prob, dot_rel=2.0**-20, cos_abs=2.0**-21.4)
    assert bound.max() < 3e-3 * exact.abs().max()  # a meaningful bound: under 0.3% of f's range
    assert ((out.double().cpu() - exact).abs() <= bound).all()


def _to(p, device):
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else tuple(t.to(device) for t in v)
                if isinstance(v, tuple) else v) for k, v in p.items()}


@pytest.mark.gpu
@pytest.mark.parametrize("n,lf", [(24, 256), (1, 128), (64, 256)])
def test_click_system_on_cuda_against_the_float64_solution(n, lf):
    """Compiled, with libdevice's float64 cos / exp / log1p / sqrt (<= 2 ulp of float64,
    inside the bound's per-operation allowance)."""
    p = _click_problem(n=n, d=51, lf=lf, hidden=32, noise=1e-3)
    out = fused.click_system(**_to(p, "cuda"))
    ref = _click_reference(p)
    bound = _alpha_bound(ref, 51, lf, 32)
    assert (out.info == 0).all()
    assert ((out.alpha.double().cpu() - ref["alpha"]).abs() <= bound).all()
    m_mag = (ref["hid"].abs() @ p["mlp"][2].double().abs().T).squeeze(-1) + ref["o"].abs() + 1
    assert ((out.click_mean.double().cpu() - ref["m"]).abs() <= U * ref["m"].abs() + 1e-13 * m_mag).all()


@pytest.mark.gpu
@pytest.mark.parametrize("small,size", [((96, 96), (384, 384)), ((50, 37), (201, 149))])
def test_pixel_features_on_cuda_against_the_float64_formula(small, size):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, 48, *small, generator=g)
    image = torch.rand(1, 3, *size, generator=g)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = fused.pixel_features(features.cuda(), image.cuda(), size, mean, std).cpu()
    exact = _pixel_reference(features, image, size, mean, std)
    assert ((out.double() - exact).abs() <= _pixel_bound(features, image, size, mean, std)).all()


@pytest.mark.gpu
def test_seg_head_fused_inference_on_cuda():
    """The GP segmentation head at inference on CUDA: the fused kernels ran (no fallback),
    the result is the GP layer's fused mean on the gathered pixel rows bit for bit, and
    the sync-free call (CUDA graphs) gives the same logits with ok = True."""
    from gpcis.clicks import Click, ClickBatch
    from gpcis.models.heads import IMAGENET_MEAN, IMAGENET_STD, GPSegHead, gather_at_clicks

    head = GPSegHead(48, GPHeadConfig(num_features=256)).cuda().eval()
    g = torch.Generator().manual_seed(0)
    features = torch.randn(1, 48, 96, 96, generator=g).cuda()
    image = torch.rand(1, 3, 384, 384, generator=g).cuda()
    clicks = ClickBatch.from_lists([[Click(10 * i + 5, 17 * i % 384, i % 2 == 0) for i in range(20)]]).to("cuda")
    with torch.no_grad():
        out = head(features, image, clicks)
        free = head(features, image, clicks, sync_free=True)
        x = fused.pixel_features(features, image, (384, 384), IMAGENET_MEAN, IMAGENET_STD).flatten(2).transpose(1, 2)
        ref = head.gp(x, gather_at_clicks(x, clicks.coords, 384), clicks.labels, clicks.valid)
    assert head.gp._fused_error is None
    torch.testing.assert_close(out.logits.reshape(1, -1), ref.mean, rtol=0, atol=0)
    torch.testing.assert_close(free.logits, out.logits, rtol=0, atol=0)
    assert bool(free.ok)


def test_mean_path_launch_configuration_from_the_environment(interpreted, monkeypatch):
    monkeypatch.delenv(interpreted.LAUNCH_ENV, raising=False)
    assert interpreted.mean_path_config() == interpreted._DEFAULT_MEAN_CONFIG
    for d, width in ((51, 64), (99, 128), (7, 16), (16, 16), (17, 32)):  # the table is read by padded width
        assert interpreted.padded_width(d) == width
        assert interpreted.mean_path_config(d) == interpreted._MEAN_CONFIGS.get(width, interpreted._DEFAULT_MEAN_CONFIG)
    monkeypatch.setenv(interpreted.LAUNCH_ENV, "64,32,8,3")
    assert interpreted.mean_path_config() == (64, 32, 8, 3, interpreted._DEFAULT_MEAN_CONFIG.split)
    assert interpreted.mean_path_config(99) == interpreted.mean_path_config()
    monkeypatch.setenv(interpreted.LAUNCH_ENV, "32,16,2,1,1")
    assert interpreted.mean_path_config(51) == (32, 16, 2, 1, True)
    monkeypatch.setenv(interpreted.LAUNCH_ENV, "32,16,2,1,0")
    assert interpreted.mean_path_config(51) == (32, 16, 2, 1, False)
    monkeypatch.setenv(interpreted.LAUNCH_ENV, "32,16,2,1,1")
    prob = mean_path_problem(lf=40, n=6)
    out = interpreted.fused_mean_path(*prob)  # runs with that configuration (split rows)
    exact, bound = _exact_and_bound(*prob, dot_rel=2.0**-20)
    assert ((out.double() - exact).abs() <= bound).all()
    for bad in ("64,32", "64,8,4", "a,b,c", "0,32,4", "64,32,4,2,2", "64,32,4,2,1,0"):
        monkeypatch.setenv(interpreted.LAUNCH_ENV, bad)
        with pytest.raises(ValueError, match="GPCIS_FUSED_MEAN_CONFIG"):
            interpreted.mean_path_config()
