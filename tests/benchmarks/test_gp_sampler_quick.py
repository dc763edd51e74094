"""The GP sampler benchmark on tiny sizes: row schema, same-problem checks against float64 closed forms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.gp.reference import rbf

from tests.scripts import load_script as _load




gs = _load("gp_sampler_bench", "benchmarks/gp_sampler.py")

EPS32 = float(np.finfo(np.float32).eps)


def _setup(m=64, n=6, seed=0):
    cfg = gs.BenchConfig(sizes=(8,), clicks=(n,), num_features=64)
    head = gs.make_head(cfg)
    prob = gs.make_problem(m, n, cfg.dim, "cpu", torch.Generator().manual_seed(seed))
    return cfg, head, prob


def _hyper(head):
    return head.kernel.outputscale.item(), head.kernel.precision.detach().reshape(-1).double().numpy()


def test_main_tiny_json_schema(tmp_path):
    path = tmp_path / "rows.json"
    rows = gs.main(["--sizes", "16", "--clicks", "1,5", "--repeats", "1", "--no-roofline", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["benchmark"] == "gp_sampler" and data["device"] == "cpu" and "threads" in data["machine"]
    gs.main(["--sizes", "16", "--clicks", "1", "--repeats", "1", "--no-roofline", "--impls", "gpcis-mean",
             "--out", str(tmp_path / "out")])  # --out: the JSON and the PNG there
    assert (tmp_path / "out" / "gp_sampler.json").is_file() and (tmp_path / "out" / "gp_sampler.png").is_file()
    loaded = data["rows"]
    assert loaded == rows
    assert len(loaded) == len(gs.IMPLS) * 2  # m = 256 <= max_exact_m: every implementation runs
    assert {(r["impl"], r["n"]) for r in loaded} == {(i, n) for i in gs.IMPLS for n in (1, 5)}
    for r in loaded:
        assert set(r) == {"impl", "m", "n", "ms"}
        assert r["m"] == 256 and isinstance(r["n"], int)
        assert isinstance(r["ms"], float) and r["ms"] > 0 and math.isfinite(r["ms"])


def test_exact_skipped_above_limit():
    cfg = gs.BenchConfig(sizes=(8,), clicks=(2,), repeats=1, warmup=0, max_exact_m=32, impls=("gpytorch-exact", "floor"))
    rows = gs.run(cfg, progress=False)
    assert [r["impl"] for r in rows] == ["floor"]
    assert "skip" in gs.format_table(rows + [{"impl": "botorch", "m": 64, "n": 3, "ms": 1.0}])


def test_reference_kernel_equals_closed_form():
    _, head, prob = _setup()
    with torch.no_grad():
        head.kernel.precision = torch.linspace(0.2, 2.0, head.in_dim)
        head.kernel.outputscale = 1.7
    ref = gs.make_reference_kernel(head)
    x = prob.x_test[0, :20]
    eta0, eta = _hyper(head)
    expected = rbf(x.double().numpy(), x.double().numpy(), eta0, eta)
    with torch.no_grad():
        got = ref(x).to_dense().double().numpy()
    # float32 evaluation of exp(-q/2), q <= ~30: relative error a few hundred eps32
    np.testing.assert_allclose(got, expected, rtol=0, atol=500 * EPS32 * eta0)
    with torch.no_grad():
        own = head.kernel(x).to_dense().double().numpy()
    np.testing.assert_allclose(own, expected, rtol=0, atol=500 * EPS32 * eta0)  # the head's, the same bound
    # both within 500 eps32 eta0 of the closed form: they differ by at most twice that
    assert gs.check_same_kernel(head, ref, x) <= 2 * 500 * EPS32 * eta0
    with torch.no_grad():
        ref.outputscale = 2 * eta0
    with pytest.raises(RuntimeError):
        gs.check_same_kernel(head, ref, x)


def test_gpytorch_exact_is_the_closed_form_posterior():
    _, head, prob = _setup()
    ref = gs.make_reference_kernel(head)
    noise = head.config.eval_noise
    mean, var = gs._ExactGP(ref, prob.x_click[0], prob.labels[0], noise)(prob.x_test[0])
    eta0, eta = _hyper(head)
    xs, xn = prob.x_test[0].double().numpy(), prob.x_click[0].double().numpy()
    y = prob.labels[0].double().numpy()
    a = rbf(xn, xn, eta0, eta) + noise * np.eye(len(xn))
    ksn = rbf(xs, xn, eta0, eta)
    mu = ksn @ np.linalg.solve(a, y)
    sig = eta0 - np.einsum("mn,mn->m", ksn, np.linalg.solve(a, ksn.T).T)
    # float32 Cholesky solve: backward-stable, forward error <= ~n * eps32 * cond(A) relative to
    # the solution; |K_*n| <= eta0 per entry, |y| = 1.
    tol = len(xn) * EPS32 * np.linalg.cond(a) * eta0
    np.testing.assert_allclose(mean.detach().double().numpy(), mu, atol=tol)
    np.testing.assert_allclose(var.detach().double().numpy(), sig, atol=tol)


def test_botorch_path_interpolates_clicks():
    _, head, prob = _setup(n=5)
    ref = gs.make_reference_kernel(head)
    noise = head.config.eval_noise
    model = gs.make_botorch_model(ref, prob.x_click[0], prob.labels[0], noise)
    torch.manual_seed(0)
    with torch.no_grad():
        f = gs.botorch_draw_and_eval(model, prob.x_click[0], 64)
    assert f.shape == (1, 5)
    # Matheron's update with observation noise e ~ N(0, s2 I), A = K + s2 I, at the clicks:
    #   f(x_c) = f0 + K A^-1 (y - f0 - e) = y - e - s2 A^-1 r,   r = y - f0(x_c) - e,
    # so |f - y| <= |e| + s2 / (lambda_min(K) + s2) * ||r||. With the prior draw f0 ~ N(0, eta0)
    # and e within 6 standard deviations, ||r|| <= sqrt(n) (1 + 6 sqrt(eta0) + 6 sqrt(s2)).
    # float32: the Cholesky solve's relative error <= n eps32 cond(A), carried through
    # ||K A^-1|| <= lambda_max / (lambda_min + s2) to the update, and the sum's own rounding.
    eta0, eta = _hyper(head)
    xn = prob.x_click[0].double().numpy()
    n = len(xn)
    lam = np.linalg.eigvalsh(rbf(xn, xn, eta0, eta))
    r_max = math.sqrt(n) * (1 + 6 * math.sqrt(eta0) + 6 * math.sqrt(noise))
    shrink = noise / (lam[0] + noise)
    rounding = EPS32 * (n * np.linalg.cond(rbf(xn, xn, eta0, eta) + noise * np.eye(n)) * lam[-1] / (lam[0] + noise) + 2) * r_max
    tol = 6 * math.sqrt(noise) + shrink * r_max + rounding
    np.testing.assert_allclose(f[0].numpy(), prob.labels[0].numpy(), rtol=0, atol=tol)


def test_floor_computes_the_mean_path():
    _, head, prob = _setup()
    floor = gs.Floor(head, prob)
    got = floor().double().numpy()
    x = prob.x_test[0].double().numpy()
    xn = prob.x_click[0].double().numpy()
    theta = head.rff.frequencies().detach().double().numpy()
    tau = head.rff.tau.detach().double().numpy()
    l = theta.shape[1]
    w = floor.vec[:l].double().numpy()
    alpha = floor.vec[l:].double().numpy()
    eta0, eta = _hyper(head)
    expected = np.cos(x @ theta + tau) @ w + rbf(x, xn, 1.0, eta) @ alpha
    # float32, each step's rounding bounded as in Higham (a k-term dot product errs by at
    # most k eps32 times the sum of its terms' magnitudes):
    # - a cosine's argument x theta + tau (d + 1 terms) by (d + 1) eps32 (|x| |theta| + |tau|),
    #   the cosine by that (|cos'| <= 1) plus its own eps32;
    # - a kernel exponent x (eta z) - q_z / 2 - q_x / 2 by (d + 2) eps32 (q_x + q_z), since
    #   sum_t eta_t |x_t z_t| <= (q_x + q_z) / 2; exp of an exponent <= 0 by that plus eps32;
    # - the final product with [w; alpha] (l + n terms), |cos| and the kernel values <= 1:
    #   (l + n) eps32 (sum |w| + sum |alpha|).
    d = x.shape[1]
    n = xn.shape[0]
    arg = (np.abs(x) @ np.abs(theta) + np.abs(tau)).max()
    q = (x * x) @ eta
    q_sum = q.max() + ((xn * xn) @ eta).max()
    per_cos = (d + 1) * EPS32 * arg + EPS32
    per_k = (d + 2) * EPS32 * q_sum + EPS32
    tol = (per_cos + (l + n) * EPS32) * np.abs(w).sum() + (per_k + (l + n) * EPS32) * np.abs(alpha).sum()
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)


def test_targets_and_table():
    rows = [
        {"impl": "gpcis-mean", "m": 4, "n": 1, "ms": 1.0},
        {"impl": "gpcis-mean", "m": 4, "n": 20, "ms": 1.05},
        {"impl": "botorch", "m": 4, "n": 1, "ms": 2.0},
        {"impl": "botorch", "m": 4, "n": 20, "ms": 1.0},
    ]
    lines = gs.targets(rows)
    assert "m=4 gpcis-mean faster than botorch at every n: NO" in lines
    assert "m=4 gpcis-mean t(n=20)/t(n=1) = 1.050 (met: <= 1.10)" in lines
    table = gs.format_table(rows)
    assert "| 2² | gpcis-mean | 1.0 | 1.1 |" in table


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sizes=()),
        dict(clicks=(0,)),
        dict(sizes=(2,), clicks=(5,)),
        dict(num_features=3),
        dict(repeats=0),
        dict(device="tpu"),
        dict(impls=("sklearn",)),
        dict(clock="gpu-cycles"),
        dict(min_time_s=-1.0),
    ],
)
def test_bad_config(kwargs):
    with pytest.raises(ValueError):
        gs.BenchConfig(**kwargs)


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_interleaved_timing_positive(clock):
    calls = []
    fns = {"a": lambda: calls.append("a") or sum(range(20000)), "b": lambda: calls.append("b")}
    out = gs.time_interleaved(fns, repeats=3, warmup=1, device="cpu", clock=clock)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up, then round-robin


def test_interleaved_timing_times_fast_functions_longer(monkeypatch):
    """With min_time_s, a function is called until about that long has been spent on it
    (estimated from its first timed call), capped at max_repeats; a slow one keeps `repeats`;
    the round-robin order holds while both run. A fake clock (a call of "slow" takes 20 ms,
    of "fast" 1 us), so that the machine's load cannot change the counts."""
    clock = {"t": 0.0}
    monkeypatch.setattr(gs, "_clock", lambda kind: lambda: clock["t"])
    calls = []

    def call(name, seconds):
        calls.append(name)
        clock["t"] += seconds

    fns = {"slow": lambda: call("slow", 0.02), "fast": lambda: call("fast", 1e-6)}
    medians = gs.time_interleaved(fns, repeats=3, warmup=0, device="cpu", min_time_s=0.03, max_repeats=50)
    assert medians == pytest.approx({"slow": 20.0, "fast": 1e-3})
    assert calls.count("slow") == 3  # 0.03 s / 0.02 s -> 2 < repeats
    assert calls.count("fast") == 50  # microseconds each: the cap
    assert calls[:6] == ["slow", "fast"] * 3 and set(calls[6:]) == {"fast"}


def test_bad_cli_list():
    with pytest.raises(SystemExit):
        gs.main(["--sizes", "a,b"])


def test_png(tmp_path):
    rows = [{"impl": i, "m": 16, "n": n, "ms": float(n + k)} for k, i in enumerate(gs.IMPLS) for n in (1, 5)]
    path = tmp_path / "plot.png"
    gs.write_png(rows, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA guard")
def test_gpu_checks_stops_without_cuda(tmp_path):
    """benchmarks/gpu_checks.sh refuses to run without a CUDA device (its guard's exit status
    was tee's: the script ran on and wrote an empty device.txt)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OUT": str(tmp_path / "gpu"), "PY": sys.executable}
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "device.txt").write_text("NVIDIA H200\n")  # an earlier run's machine
    proc = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_checks.sh"), "9"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no CUDA device" in proc.stdout + proc.stderr
    assert (tmp_path / "gpu" / "device.txt").read_text() == "NVIDIA H200\n"  # not emptied by the refusal
