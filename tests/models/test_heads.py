"""Tests of gpcis.models.heads (GPSegHead, ConvHead, gather_at_clicks)."""

from __future__ import annotations

import pytest
import torch

from gpcis.clicks import Click, ClickBatch
from gpcis.gp import GPHead, GPHeadConfig
from gpcis.gp import head as gp_head_module
from gpcis.models.heads import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ConvHead,
    GPSegHead,
    gather_at_clicks,
    normalize_image,
    sample_at_clicks,
)
from tests.gp.reference import mean_path_exact_and_bound

D_FEAT = 8
SMALL_GP = GPHeadConfig(num_features=32, mlp_hidden=8)


def _inputs(b=2, h=16, w=20, fh=4, fw=5):
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(b, D_FEAT, fh, fw, generator=gen)
    image = torch.rand(b, 3, h, w, generator=gen)
    clicks = ClickBatch.from_lists(
        [[Click(3, 4, True), Click(12, 17, False), Click(0, 19, False)], [Click(15, 0, True)]][:b]
    )
    return features, image, clicks


def test_normalize_image_matches_per_channel_formula():
    image = torch.rand(2, 3, 4, 5)
    out = normalize_image(image)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    # the same two IEEE operations per element as the broadcast formula: equal bit for bit
    torch.testing.assert_close(out, (image - mean) / std, rtol=0, atol=0)
    buf = torch.zeros(2, 5, 4, 5)  # into a slice of a larger buffer
    assert normalize_image(image, out=buf[:, 2:]) is not None
    torch.testing.assert_close(buf[:, 2:], out, rtol=0, atol=0)
    assert (buf[:, :2] == 0).all()
    leaf = image.clone().requires_grad_(True)  # autograd: out-of-place
    normalize_image(leaf).sum().backward()
    torch.testing.assert_close(leaf.grad, (1 / std).expand(2, 3, 4, 5))


def test_gather_at_clicks_matches_loop():
    b, h, w, d = 2, 5, 7, 3
    x = torch.randn(b, d, h, w)
    coords = torch.tensor([[[0.0, 0.0], [4.0, 6.0], [2.2, 3.7]], [[1.0, 5.0], [3.0, 2.0], [0.0, 0.0]]])
    got = gather_at_clicks(x.flatten(2).transpose(1, 2), coords, w)
    for i in range(b):
        for n in range(3):
            r, c = int(round(coords[i, n, 0].item())), int(round(coords[i, n, 1].item()))
            torch.testing.assert_close(got[i, n], x[i, :, r, c])


def test_conv_head_constant_features_closed_form():
    head = ConvHead(D_FEAT)
    feat = torch.randn(1, D_FEAT, 1, 1).expand(2, D_FEAT, 4, 5)
    image = torch.rand(2, 3, 16, 20)
    out = head(feat, image, ClickBatch.empty(2))
    expected = (head.classifier.weight.view(-1) @ feat[0, :, 0, 0]) + head.classifier.bias
    assert out.logits.shape == (2, 1, 16, 20)
    torch.testing.assert_close(out.logits, expected.view(1, 1, 1, 1).expand(2, 1, 16, 20))
    assert out.aux_loss.item() == 0 and out.std is None and out.samples is None


@pytest.mark.parametrize("use_image, dim", [(True, D_FEAT + 3), (False, D_FEAT)])
def test_gp_feature_width(use_image, dim):
    head = GPSegHead(D_FEAT, SMALL_GP, use_image=use_image)
    assert head.feature_dim == dim and head.gp.in_dim == dim
    features, image, _ = _inputs()
    assert head.pixel_features(features, image).shape == (2, dim, 16, 20)


def test_pixel_features_are_l2_normalized_features_and_normalized_image():
    head = GPSegHead(D_FEAT, SMALL_GP)
    features = torch.randn(1, D_FEAT, 6, 7) * 5
    image = torch.rand(1, 3, 6, 7)  # same size: no interpolation
    x = head.pixel_features(features, image)
    torch.testing.assert_close(x[:, :D_FEAT].norm(dim=1), torch.ones(1, 6, 7))
    torch.testing.assert_close(x[:, :D_FEAT], features / features.norm(dim=1, keepdim=True))
    torch.testing.assert_close(x[:, D_FEAT:], normalize_image(image))


@pytest.mark.parametrize("same_size", [False, True])
def test_pixel_features_inference_buffer_equals_the_autograd_path(same_size):
    """Without autograd the upsampled features and the image are written into one buffer;
    the values are those of the differentiable path (upsample + concatenate) bit for bit,
    for a batch of 2 (whose channel slices of the buffer are not contiguous)."""
    head = GPSegHead(D_FEAT, SMALL_GP)
    torch.manual_seed(3)
    features = torch.randn(2, D_FEAT, 6, 7) * 3
    image = torch.rand(2, 3, 6, 7) if same_size else torch.rand(2, 3, 23, 29)
    with torch.no_grad():
        fast = head.pixel_features(features, image)
    slow = head.pixel_features(features.requires_grad_(True), image)
    assert slow.requires_grad and not fast.requires_grad
    assert torch.equal(fast, slow.detach())


def test_gp_head_equals_direct_gp_layer_call():
    """The head's row-major flattening and click gathering agree with explicit indexing."""
    torch.manual_seed(0)
    head = GPSegHead(D_FEAT, SMALL_GP, vi_weight=0.5).eval()
    features, image, clicks = _inputs()
    out = head(features, image, clicks, return_std=True)
    x = head.pixel_features(features, image)
    b, d, h, w = x.shape
    x_test = torch.stack([torch.stack([x[i, :, r, c] for r in range(h) for c in range(w)]) for i in range(b)])
    x_click = torch.zeros(b, clicks.max_clicks, d)
    for i in range(b):
        for n in range(clicks.max_clicks):
            r, c = clicks.coords[i, n].long().tolist()
            x_click[i, n] = x[i, :, r, c]
    ref = head.gp(x_test, x_click, clicks.labels, clicks.valid, return_variance=True)
    torch.testing.assert_close(out.logits.reshape(b, -1), ref.mean)
    # compared as variances: the float32 (N, M) solves carry an absolute error of order
    # cond(L) * eps32 * eta0 ~ 1e-5 * 1e-1; sqrt would amplify it near the clicks (var ~ 1e-4)
    torch.testing.assert_close(out.std.reshape(b, -1) ** 2, ref.variance, rtol=1e-4, atol=2e-6)
    torch.testing.assert_close(out.aux_loss, 0.5 * ref.vi_loss)


def test_eval_mean_path_interpolates_click_labels():
    """With the small eval noise the mean path's sign at a clicked pixel is the click's label."""
    head = GPSegHead(D_FEAT, SMALL_GP).eval()
    features, image, clicks = _inputs()
    logits = head(features, image, clicks).logits
    for i in range(clicks.batch_size):
        for n in range(clicks.max_clicks):
            if clicks.valid[i, n]:
                r, c = clicks.coords[i, n].long().tolist()
                assert torch.sign(logits[i, 0, r, c]) == clicks.labels[i, n]


def test_training_mode_uses_one_sample_eval_uses_mean():
    head = GPSegHead(D_FEAT, SMALL_GP)
    features, image, clicks = _inputs()
    head.train()
    out = head(features, image, clicks, generator=torch.Generator().manual_seed(3))
    assert out.samples.shape == (1, 2, 1, 16, 20)
    torch.testing.assert_close(out.logits, out.samples[0])
    again = head(features, image, clicks, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again.logits, out.logits)  # explicit generator: reproducible
    mean_path = head(features, image, clicks, num_samples=0)
    assert mean_path.samples is None and not torch.allclose(mean_path.logits, out.logits)
    head.eval()
    out = head(features, image, clicks, num_samples=3)
    assert out.samples.shape == (3, 2, 1, 16, 20)
    torch.testing.assert_close(out.logits, head(features, image, clicks).logits)


def test_gp_head_zero_clicks_and_backward():
    head = GPSegHead(D_FEAT, SMALL_GP).train()
    features, image, _ = _inputs()
    features.requires_grad_(True)
    out = head(features, image, ClickBatch.empty(2), return_std=True)
    assert out.logits.shape == (2, 1, 16, 20) and torch.isfinite(out.logits).all()
    # no click: the prior's std sqrt(eta0) everywhere (float32 sqrt of a float32: 1 ulp)
    eta0 = head.gp.kernel.outputscale.detach()
    torch.testing.assert_close(out.std, eta0.sqrt().expand_as(out.std), rtol=2.0**-23, atol=0.0)
    (out.logits.sum() + out.aux_loss).backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()


def test_negative_num_samples_rejected():
    head = GPSegHead(D_FEAT, SMALL_GP)
    features, image, clicks = _inputs()
    with pytest.raises(ValueError, match="num_samples"):
        head(features, image, clicks, num_samples=-1)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="in_channels"):
        GPSegHead(0, SMALL_GP)
    with pytest.raises(ValueError, match="vi_weight"):
        GPSegHead(4, SMALL_GP, vi_weight=-1)
    with pytest.raises(ValueError, match="in_channels"):
        ConvHead(0)
    with pytest.raises(ValueError, match="stride"):
        GPSegHead(4, SMALL_GP, stride=0)


@pytest.mark.parametrize("size", [(16, 20), (37, 50), (9, 5)])
def test_sample_at_clicks_reads_the_upsampled_map(size):
    """Bilinear sampling at the clicks == indexing the F.interpolate-upsampled map
    (exact up to float32 rounding of the two interpolation weight formulas)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 4, 6, generator=gen)
    h, w = size
    up = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    coords = torch.stack(
        [torch.randint(0, h, (2, 7), generator=gen), torch.randint(0, w, (2, 7), generator=gen)], dim=-1
    ).float()
    coords[0, 0] = torch.tensor([0.0, 0.0])
    coords[1, 0] = torch.tensor([h - 1.0, w - 1.0])  # the clamped corners
    got = sample_at_clicks(x, coords, size)
    ref = gather_at_clicks(up.flatten(2).transpose(1, 2), coords, w)
    # float32: each is a 4-term convex combination of |x| <= max|x| with weights from two
    # formulas rounded differently: |difference| <= ~8 u max|x| (u = 2^-24); in float64 the
    # same to 2^-53 (sample_at_clicks kept float32 for float64 maps before session 12)
    torch.testing.assert_close(got, ref, rtol=0, atol=8 * 2.0**-24 * x.abs().max().item())
    x64 = x.double()
    up64 = torch.nn.functional.interpolate(x64, size=size, mode="bilinear", align_corners=False)
    got64 = sample_at_clicks(x64, coords.double(), size)
    assert got64.dtype == torch.float64
    torch.testing.assert_close(got64, gather_at_clicks(up64.flatten(2).transpose(1, 2), coords, w), rtol=0,
                               atol=8 * 2.0**-53 * x.abs().max().item())


@pytest.mark.parametrize("stride", [2, 3])
def test_strided_head_is_the_gp_on_the_coarse_grid_upsampled(stride):
    """At stride s the head conditions on the full-resolution click inputs (the same X_n as
    at stride 1) and returns the GP on the ceil(H/s) x ceil(W/s) grid, bilinearly upsampled."""
    torch.manual_seed(0)
    # in float64: the identity is exact, so the tolerances only cover float64 rounding of the
    # two evaluation orders (each value from ~(D + l + N) operations: ~1e-13 relative)
    full = GPSegHead(D_FEAT, SMALL_GP).double().eval()
    head = GPSegHead(D_FEAT, SMALL_GP, stride=stride).double().eval()
    head.load_state_dict(full.state_dict())
    features, image, clicks = _inputs(h=17, w=20)
    features, image = features.double(), image.double()
    clicks = ClickBatch(clicks.coords.double(), clicks.labels.double(), clicks.valid)  # float64 click weights too
    out = head(features, image, clicks, return_std=True, num_samples=2, generator=torch.Generator().manual_seed(2))
    gh, gw = -(-17 // stride), -(-20 // stride)
    assert head.grid_size((17, 20)) == (gh, gw)
    # reference: the stride-1 head's click inputs, the coarse grid built by hand
    x_click = gather_at_clicks(full.pixel_features(features, image).flatten(2).transpose(1, 2), clicks.coords, 20)
    small = torch.nn.functional.adaptive_avg_pool2d(image, (gh, gw))
    x_test = full.pixel_features(features, small).flatten(2).transpose(1, 2)
    ref = full.gp(x_test, x_click, clicks.labels.double(), clicks.valid, return_variance=True)

    def up(t):
        return torch.nn.functional.interpolate(t.reshape(2, 1, gh, gw), size=(17, 20), mode="bilinear",
                                               align_corners=False)

    tol = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out.logits, up(ref.mean), **tol)
    torch.testing.assert_close(out.std ** 2, up(ref.variance.clamp_min(0).sqrt()) ** 2, **tol)
    assert out.samples.shape == (2, 2, 1, 17, 20)
    ref_s = full.gp(x_test, x_click, clicks.labels.double(), clicks.valid, num_samples=2,
                    generator=torch.Generator().manual_seed(2)).samples  # (S, B, M') from the same draws
    for s in range(2):
        torch.testing.assert_close(out.samples[s], up(ref_s[s]), **tol)
    assert not torch.allclose(out.samples[0], out.samples[1])
    same = full(features, image, clicks, num_samples=2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.aux_loss, same.aux_loss)  # L_VI depends on the clicks only


def test_strided_head_trains():
    head = GPSegHead(D_FEAT, SMALL_GP, stride=2).train()
    features, image, clicks = _inputs()
    features.requires_grad_(True)
    out = head(features, image, clicks)
    assert out.logits.shape == (2, 1, 16, 20)
    (out.logits.square().mean() + out.aux_loss).backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.gp.kernel.parameters())


def test_gp_seg_head_aux_loss_is_l_vi_except_at_inference(monkeypatch):
    """aux_loss = vi_weight * L_VI whenever it can be trained on (training mode, or grads
    on); in eval mode under no_grad the head skips L_VI and returns 0 (as ConvHead)."""
    features, image, clicks = _inputs()
    head = GPSegHead(D_FEAT, SMALL_GP, vi_weight=0.5).eval()
    ref = head(features, image, clicks)  # eval mode, grads enabled
    x_test = head.pixel_features(features, image).flatten(2).transpose(1, 2)
    x_click = gather_at_clicks(x_test, clicks.coords, image.shape[-1])
    direct = head.gp(x_test, x_click, clicks.labels.float(), clicks.valid)
    torch.testing.assert_close(ref.aux_loss, 0.5 * direct.vi_loss)
    assert ref.aux_loss > 0
    calls = []
    blocked = gp_head_module.blocked_mean_path
    monkeypatch.setattr(gp_head_module, "blocked_mean_path", lambda *a, **k: calls.append(a) or blocked(*a, **k))
    with torch.no_grad():
        lean = head(features, image, clicks)
    assert lean.aux_loss.item() == 0.0
    # the same logits: at inference on the CPU the mean path is one pass (blocked_mean_path),
    # with grads the two paths; each float32 evaluation is within the one-pass bound of the
    # float64 value of f (the two paths' own bound, tests/gp/test_fused.py, is the smaller)
    (operands,) = calls
    _, bound = mean_path_exact_and_bound(*operands)
    assert (lean.logits - ref.logits.detach()).abs().flatten(1).double().le(2 * bound).all()


def _fused_on(monkeypatch, fused):
    """Let gpcis.gp.fused's kernels run on CPU tensors (in Triton's interpreter)."""
    monkeypatch.setattr(fused, "usable", lambda x: x.dtype == torch.float32)


def test_gp_seg_head_inference_through_the_fused_kernels(interpreted, monkeypatch):
    """At inference (stride 1, mean path) the head runs fused.pixel_features, then the GP
    layer's fused mean with the clicks as pixel coordinates: the result is, bit for bit, the
    GP layer's fused mean given the gathered rows of those pixel features (the kernels'
    accuracy is tested in tests/gp/test_fused.py)."""
    head = GPSegHead(D_FEAT, SMALL_GP).eval()
    features, image, clicks = _inputs()
    _fused_on(monkeypatch, interpreted)
    pixel_calls, system_calls = [], []
    pixel_features, click_system = interpreted.pixel_features, interpreted.click_system
    monkeypatch.setattr(interpreted, "pixel_features", lambda *a, **k: pixel_calls.append(a) or pixel_features(*a, **k))
    monkeypatch.setattr(interpreted, "click_system", lambda *a, **k: system_calls.append(k) or click_system(*a, **k))
    with torch.no_grad():
        out = head(features, image, clicks)
        free = head(features, image, clicks, sync_free=True)
        x = interpreted.pixel_features(features, image, (16, 20), IMAGENET_MEAN, IMAGENET_STD)
        x_test = x.flatten(2).transpose(1, 2)
        ref = head.gp(x_test, gather_at_clicks(x_test, clicks.coords, 20), clicks.labels, clicks.valid)
    assert len(pixel_calls) == 3 and system_calls[0]["coords"] is clicks.coords and system_calls[-1]["coords"] is None
    assert head.gp._fused_error is None
    torch.testing.assert_close(out.logits.reshape(2, -1), ref.mean, rtol=0, atol=0)
    torch.testing.assert_close(free.logits, out.logits, rtol=0, atol=0)
    assert out.ok is None and bool(free.ok)
    # the PyTorch path's pixel features, within the kernel's float32 bound of them
    assert (x - head.pixel_features(features, image)).abs().max() < 1e-5


def test_gp_seg_head_sync_free_reports_a_failed_click_system(interpreted, monkeypatch):
    head = GPSegHead(D_FEAT, SMALL_GP).eval()
    features, image, clicks = _inputs()
    _fused_on(monkeypatch, interpreted)
    click_system = interpreted.click_system

    def failing(*args, **kwargs):
        out = click_system(*args, **kwargs)
        out.info[1] = 2
        return out

    monkeypatch.setattr(interpreted, "click_system", failing)
    with torch.no_grad():
        assert not bool(head(features, image, clicks, sync_free=True).ok)


def test_gp_seg_head_falls_back_when_the_pixel_kernel_cannot_run(interpreted, monkeypatch):
    head = GPSegHead(D_FEAT, SMALL_GP).eval()
    features, image, clicks = _inputs()
    with torch.no_grad():
        ref = head(features, image, clicks)  # the PyTorch path (CPU tensors)
        _fused_on(monkeypatch, interpreted)

        def broken(*args, **kwargs):
            raise RuntimeError("no C compiler")

        monkeypatch.setattr(interpreted, "pixel_features", broken)
        with pytest.warns(RuntimeWarning, match="fused GP mean path unavailable.*no C compiler"):
            out = head(features, image, clicks)
        again = head(features, image, clicks)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    torch.testing.assert_close(again.logits, ref.logits, rtol=0, atol=0)
