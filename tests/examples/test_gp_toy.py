"""The 2-D toy classification example: generators (closed-form geometry), tiny runs, accuracy on moons."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.scripts import load_script as _load




toy = _load("gp_toy_example", "examples/gp_toy_classification.py")


def test_moons_geometry_without_noise():
    x, y = toy.make_moons(201, 0.0, np.random.default_rng(0))
    assert x.shape == (201, 2) and x.dtype == np.float32 and set(np.unique(y)) == {0, 1}
    assert (y == 0).sum() == 100
    a, b = x[y == 0].astype(np.float64), x[y == 1].astype(np.float64)
    # class 0: upper unit half circle; class 1: lower unit half circle centred at (1, 0.5)
    np.testing.assert_allclose(np.hypot(a[:, 0], a[:, 1]), 1.0, atol=1e-6)
    assert (a[:, 1] >= -1e-6).all()
    np.testing.assert_allclose(np.hypot(b[:, 0] - 1.0, b[:, 1] - 0.5), 1.0, atol=1e-6)
    assert (b[:, 1] <= 0.5 + 1e-6).all()


def test_circles_geometry_without_noise():
    x, y = toy.make_circles(100, 0.0, np.random.default_rng(1), factor=0.3)
    r = np.hypot(x[:, 0].astype(np.float64), x[:, 1].astype(np.float64))
    np.testing.assert_allclose(r[y == 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(r[y == 1], 0.3, atol=1e-6)
    assert (y == 1).sum() == 50


def test_noise_std_matches():
    rng = np.random.default_rng(2)
    x, y = toy.make_circles(20000, 0.1, rng, factor=0.5)
    r = np.hypot(x[:, 0], x[:, 1])
    # radial residual of the outer circle: r - 1 = e_r + e_t^2 / 2 + O(s^3) for 2-D noise of
    # std s, so its std is s (1 + s^2 / 4); the sample std of n points has standard error
    # s / sqrt(2 n): within 4 of them
    res = r[y == 0] - 1.0
    s = 0.1
    assert abs(res.std() - s * (1 + s**2 / 4)) < 4 * s / np.sqrt(2 * len(res))


@pytest.mark.parametrize(
    "call",
    [
        lambda: toy.make_moons(1, 0.1, np.random.default_rng(0)),
        lambda: toy.make_moons(10, -0.1, np.random.default_rng(0)),
        lambda: toy.make_circles(10, 0.1, np.random.default_rng(0), factor=1.5),
        lambda: toy.ToyConfig(dataset="spirals"),
        lambda: toy.ToyConfig(steps=0),
        lambda: toy.ToyConfig(clicks=300, n_train=300),
        lambda: toy.ToyConfig(vgp_inducing=0),
    ],
)
def test_bad_input(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("dataset", ["moons", "circles"])
def test_tiny_run_writes_png(tmp_path, dataset):
    cfg = toy.ToyConfig(
        dataset=dataset, n_train=60, n_test=40, steps=3, clicks=10, splits=2, vgp_inducing=8, grid=12
    )
    res = toy.run(cfg, tmp_path, progress=False)
    assert 0.0 <= res.gpcis_accuracy <= 1.0 and 0.0 <= res.gpytorch_accuracy <= 1.0
    assert res.gpcis_seconds > 0 and res.gpytorch_seconds > 0
    assert res.png == tmp_path / f"gp_toy_{dataset}.png"
    assert res.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeded_runs_are_reproducible():
    cfg = toy.ToyConfig(n_train=40, n_test=30, steps=4, clicks=8, splits=2, vgp_inducing=6, seed=3)
    a = toy.run(cfg, None, progress=False)
    b = toy.run(cfg, None, progress=False)
    assert a.png is None
    assert (a.gpcis_accuracy, a.gpytorch_accuracy) == (b.gpcis_accuracy, b.gpytorch_accuracy)


def test_moons_default_settings_above_90_percent(tmp_path, capsys):
    res = toy.main(["--dataset", "moons", "--out", str(tmp_path)])
    assert res.gpcis_accuracy > 0.9
    assert res.gpytorch_accuracy > 0.9
    out = capsys.readouterr().out
    assert "gpcis MLP + GPHead" in out and "GPyTorch variational GP" in out


def test_the_vi_kernel_gradient_switch_reaches_the_head():
    """--no-vi-kernel-grad (the released code's L_VI) builds the head with vi_kernel_grad=False."""
    model = toy.DeepKernelClassifier(toy.ToyConfig(vi_kernel_grad=False))
    assert model.head.config.vi_kernel_grad is False
    assert toy.DeepKernelClassifier(toy.ToyConfig()).head.config.vi_kernel_grad is True
    assert toy.build_parser().parse_args(["--no-vi-kernel-grad"]).vi_kernel_grad is False
