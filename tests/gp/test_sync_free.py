"""The GP head's sync_free mode (CUDA-graph capturable): no host synchronisation, and the
same result as the default call whenever the click system needs no jitter."""

from __future__ import annotations

import pytest
import torch

from gpcis.gp import ARDRBFKernel, GPHead, GPHeadConfig, click_gram_cholesky, click_gram_cholesky_ex
from tests.sync import host_syncs


def _inputs(b=2, m=300, n=5, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_test = torch.randn(b, m, d, generator=g)
    x_click = torch.randn(b, n, d, generator=g)
    labels = torch.tensor([[1.0, -1.0, 1.0, -1.0, 1.0]] * b)[:, :n]
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[1, 3:] = False  # item 1 has 3 clicks and 2 padded entries
    labels = labels * valid
    return x_test, x_click, labels, valid


def test_the_detector_sees_the_default_calls_synchronisations(monkeypatch):
    """Sanity check of tests.sync: the default call reads values back (its input checks and
    the Cholesky jitter test), so a clean sync_free run below is not a blind detector."""
    head = GPHead(6, GPHeadConfig(num_features=16)).eval()
    with torch.no_grad(), host_syncs(monkeypatch) as found:
        head(*_inputs())
    assert "Tensor.tolist" in found and "aten::_local_scalar_dense" in found


@pytest.mark.parametrize("n", [0, 5])
@pytest.mark.parametrize("prior", ["learned", "spectral"])
def test_sync_free_call_never_synchronises_and_equals_the_default_call(monkeypatch, n, prior):
    head = GPHead(6, GPHeadConfig(num_features=16, prior=prior)).eval()
    x_test, x_click, labels, valid = _inputs(n=n)
    labels, valid = labels[:, :n], valid[:, :n]
    with torch.no_grad():
        ref = head(x_test, x_click, labels, valid, return_variance=True)
        with host_syncs(monkeypatch) as found:
            out = head(x_test, x_click, labels, valid, return_variance=True, sync_free=True)
    assert found == []
    assert out.cholesky_info is not None and out.cholesky_info.shape == (2,) and (out.cholesky_info == 0).all()
    assert ref.cholesky_info is None
    # the same arithmetic (the first, jitter-free factorisation of the same matrix): equal
    torch.testing.assert_close(out.mean, ref.mean, rtol=0, atol=0)
    torch.testing.assert_close(out.variance, ref.variance, rtol=0, atol=0)


def test_cholesky_ex_equals_cholesky_and_reports_failure():
    kernel = ARDRBFKernel(ard_num_dims=6)
    _, x_click, _, valid = _inputs()
    with torch.no_grad():
        chol, info = click_gram_cholesky_ex(kernel, x_click, valid, 1e-4)
        assert (info == 0).all()
        torch.testing.assert_close(chol, click_gram_cholesky(kernel, x_click, valid, 1e-4), rtol=0, atol=0)
        # eps^2 = -10 on the diagonal of a matrix with entries <= eta0 = 1: not positive definite
        _, info = click_gram_cholesky_ex(kernel, x_click, valid, -10.0)
    assert info.dtype == torch.int32 and (info > 0).all()


def test_sync_free_refuses_the_vi_loss():
    head = GPHead(6, GPHeadConfig(num_features=16))
    with pytest.raises(ValueError, match="sync_free=True is for inference"):
        head(*_inputs(), sync_free=True)
