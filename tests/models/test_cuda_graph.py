"""CUDA graphs of the heads (gpcis.models.cuda_graph): the sync_free head on the CPU (no host
synchronisation, same result), the API's errors, and on a GPU the graphed model against the
eager one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpcis.clicks import Click, ClickBatch
from gpcis.inference.predictor import Predictor
from gpcis.models import create_model
from gpcis.models.cuda_graph import CUDAGraphHead, _Graph
from gpcis.models.heads import normalize_image
from tests.sync import host_syncs


def _clicks(b: int, n: int, size: int, seed: int = 0) -> ClickBatch:
    g = np.random.default_rng(seed)
    lists = [[Click(int(g.integers(size)), int(g.integers(size)), bool(i % 2 == 0)) for i in range(max(n - j, 0))]
             for j in range(b)]  # item j has n - j clicks: padding inside the batch
    return ClickBatch.from_lists(lists)


def _inputs(model, b=2, n=5, size=64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, size, size, generator=g).to(device)
    clicks = _clicks(b, n, size, seed).to(device)
    with torch.no_grad():
        maps = model.encode_clicks(clicks, None, (size, size))
        features = model.backbone(normalize_image(image), model.click_encoder(maps))
    return features, image, clicks


@pytest.mark.parametrize("stride", [1, 2])
def test_sync_free_gp_head_never_synchronises_and_equals_the_eager_head(monkeypatch, stride):
    model = create_model("gpcis_tiny").eval()
    model.set_gp_stride(stride)
    features, image, clicks = _inputs(model)
    with torch.no_grad():
        ref = model.head(features, image, clicks, num_samples=0, return_std=True)
        with host_syncs(monkeypatch) as found:
            out = model.head(features, image, clicks, num_samples=0, return_std=True, sync_free=True)
    assert found == []
    assert ref.ok is None and out.ok is not None and out.ok.dtype == torch.bool and bool(out.ok)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.std, ref.std, rtol=0, atol=0)


def test_sync_free_conv_head_has_nothing_to_check(monkeypatch):
    model = create_model("ritm_tiny").eval()
    features, image, clicks = _inputs(model)
    with torch.no_grad(), host_syncs(monkeypatch) as found:
        out = model.head(features, image, clicks, sync_free=True)
    assert found == [] and out.ok is None


def test_sync_free_flags_non_finite_features():
    model = create_model("gpcis_tiny").eval()
    features, image, clicks = _inputs(model)
    features[0, :, 0, 0] = float("nan")
    with torch.no_grad():
        out = model.head(features, image, clicks, num_samples=0, sync_free=True)
    assert not bool(out.ok)


def test_cuda_graph_api_errors():
    model = create_model("gpcis_tiny").eval()
    with pytest.raises(ValueError, match="must be >= 1"):
        CUDAGraphHead(model.head, click_bucket=0)
    features, image, clicks = _inputs(model)
    with torch.no_grad(), pytest.raises(ValueError, match="needs CUDA tensors"):
        CUDAGraphHead(model.head)(features, image, clicks)
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        Predictor(model, device="cpu", cuda_graphs=True)


def test_shapes_are_captured_at_their_nth_call_and_one_off_shapes_are_not_kept():
    graphs = CUDAGraphHead(create_model("gpcis_tiny").eval().head, capture_after=3)
    assert [graphs._due("a") for _ in range(3)] == [False, False, True]
    assert "a" not in graphs._calls  # its count ends with its capture
    for i in range(graphs.max_counted + 10):  # many one-off shapes (e.g. zoom-in crops)
        graphs._due(("crop", i))
    assert len(graphs._calls) == graphs.max_counted and ("crop", 0) not in graphs._calls
    graphs._due("b")
    graphs._due(("crop", 20))  # a shape seen again moves to the most recent end
    assert list(graphs._calls)[-2:] == ["b", ("crop", 20)] and graphs._calls[("crop", 20)] == 2
    assert graphs._due("b") is False and graphs._due("b") is True
    graphs.clear()
    assert not graphs._calls


def test_load_rewrites_only_the_padding_a_previous_call_filled():
    """The static clicks, as the graph unpacks them, after loads of 3, 5 and 2 clicks: the
    clicks, then padding (label 0, valid False, coords 0) exactly as a fresh buffer's,
    whatever came before; the image is copied again when it is another tensor or was
    modified in place."""
    n_pad = 8
    entry = _Graph(None, torch.empty(2, 4, 8, 8), torch.empty(2, 3, 32, 32), torch.zeros(2, n_pad, 4))
    image = torch.rand(2, 3, 32, 32)
    for n in (3, 5, 2):
        features, clicks = torch.randn(2, 4, 8, 8), _clicks(2, n, 32, seed=n)
        clicks.coords.add_(0.25)  # no zero coordinates among the clicks
        entry.load(features, image, clicks)
        st = entry.clicks()
        assert entry.loaded == n and st.valid.dtype == torch.bool and st.coords.shape == (2, n_pad, 2)
        assert torch.equal(entry.features, features) and torch.equal(entry.image, image)
        assert torch.equal(st.coords[:, :n], clicks.coords) and torch.equal(st.labels[:, :n], clicks.labels)
        assert torch.equal(st.valid[:, :n], clicks.valid)
        assert not st.coords[:, n:].any() and not st.labels[:, n:].any() and not st.valid[:, n:].any()
        if n == 3:
            image.mul_(0.5)  # in place: the next load must copy it again
        if n == 5:
            image = torch.rand(2, 3, 32, 32)  # another tensor
    assert entry.image_src is image


def test_load_takes_integer_coordinates_no_clicks_and_inference_tensors():
    """Integer coordinates are packed as float32 (the graph's key uses that dtype); zero
    clicks leave only padding; an inference-mode image (no version counter) is always copied."""
    from gpcis.models.cuda_graph import _click_dtype

    clicks = ClickBatch(torch.tensor([[[3, 4], [5, 6]]]), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2, dtype=torch.bool))
    assert _click_dtype(clicks) == torch.float32
    assert _click_dtype(ClickBatch(clicks.coords.double(), clicks.labels, clicks.valid)) == torch.float64
    entry = _Graph(None, torch.empty(1, 4, 8, 8), torch.empty(1, 3, 16, 16), torch.zeros(1, 4, 4, dtype=_click_dtype(clicks)))
    features = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        image = torch.rand(1, 3, 16, 16)
    entry.load(features, image, clicks)
    st = entry.clicks()
    assert torch.equal(st.coords[:, :2], clicks.coords.float()) and st.valid.tolist() == [[True, True, False, False]]
    assert torch.equal(entry.image, image) and entry.image_src is None
    entry.load(features, image, ClickBatch.empty(1))
    st = entry.clicks()
    assert entry.loaded == 0 and not st.coords.any() and not st.labels.any() and not st.valid.any()


def test_parameter_addresses_follow_moved_and_replaced_parameters():
    head = create_model("gpcis_tiny").eval().head
    graphs = CUDAGraphHead(head)
    every = lambda: sorted(t.data_ptr() for t in (*head.parameters(), *head.buffers()))  # noqa: E731
    before = graphs._param_ptrs()
    assert sorted(before) == every()
    state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(state)  # in place: same addresses
    assert graphs._param_ptrs() == before
    head.load_state_dict(state, assign=True)  # replaced tensors: new addresses
    after = graphs._param_ptrs()
    assert after != before and sorted(after) == every()


def test_run_head_stays_eager_where_graphs_do_not_apply():
    """On the CPU (and in training, with gradients or with samples) run_head is the head."""
    model = create_model("gpcis_tiny").eval()
    features, image, clicks = _inputs(model)
    model.enable_cuda_graphs()
    assert isinstance(model.cuda_graphs, CUDAGraphHead)
    with torch.no_grad():
        out = model.run_head(features, image, clicks, num_samples=0)
        ref = model.head(features, image, clicks, num_samples=0)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    assert model.cuda_graphs.replays == 0 and model.cuda_graphs.eager_calls == 0
    model.enable_cuda_graphs(False)
    assert model.cuda_graphs is None


# ---------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["gpcis_tiny", "ritm_tiny"])
def test_graphed_model_equals_the_eager_model_on_cuda(name):
    model = create_model(name).cuda().eval()
    graphs = CUDAGraphHead(model.head, click_bucket=4, capture_after=1)
    # padded to 4, 4, 4, 4, 8, 8, 8, 12 clicks: three graphs; 4 -> 2 and 7 -> 6 clicks leave
    # stale clicks in a graph's buffers that its next load must clear
    for n in (1, 3, 4, 2, 5, 7, 6, 9):
        features, image, clicks = _inputs(model, b=2, n=n, seed=n, device="cuda")
        with torch.no_grad():
            n_pad = -(-clicks.max_clicks // 4) * 4
            padded = ClickBatch(torch.zeros(2, n_pad, 2, device="cuda"), torch.zeros(2, n_pad, device="cuda"),
                                torch.zeros(2, n_pad, dtype=torch.bool, device="cuda"))
            padded.coords[:, :n], padded.labels[:, :n], padded.valid[:, :n] = clicks.coords, clicks.labels, clicks.valid
            ref = model.head(features, image, padded, num_samples=0, return_std=True)
            out = graphs(features, image, clicks, return_std=True)
            unpadded = model.head(features, image, clicks, num_samples=0, return_std=True)
        # same inputs (same padding) and the same kernels, replayed: equal to rounding
        torch.testing.assert_close(out.logits, ref.logits, rtol=1e-6, atol=1e-6)
        if ref.std is not None:
            torch.testing.assert_close(out.std, ref.std, rtol=1e-6, atol=1e-6)
        # padding changes only the centring of the distance expansion: probabilities agree closely
        torch.testing.assert_close(torch.sigmoid(out.logits), torch.sigmoid(unpadded.logits), rtol=0, atol=1e-3)
    assert graphs.replays == 8 and graphs.eager_calls == 0 and len(graphs._graphs) == 3


@pytest.mark.gpu
def test_graph_falls_back_to_the_eager_head_when_the_factorisation_fails():
    model = create_model("gpcis_tiny").cuda().eval()
    model.head.gp.config.eval_noise = -10.0  # K + eps^2 I is then not positive definite
    graphs = CUDAGraphHead(model.head, capture_after=1)
    features, image, clicks = _inputs(model, n=3, device="cuda")
    with torch.no_grad(), pytest.raises(Exception, match="(?i)not p\\.?d|positive"):
        graphs(features, image, clicks)  # the eager retry raises its clear error
    assert graphs.eager_calls == 1 and graphs.replays == 0


@pytest.mark.gpu
def test_predictor_with_cuda_graphs_equals_the_eager_predictor():
    torch.manual_seed(0)
    model = create_model("gpcis_tiny").cuda().eval()
    rng = np.random.default_rng(0)
    image = (rng.random((70, 90, 3)) * 255).astype(np.uint8)
    clicks = [Click(30, 40, True), Click(10, 10, False), Click(50, 70, True), Click(35, 45, True)]
    results = []
    for graphs in (False, True):
        model.enable_cuda_graphs(False)
        pred = Predictor(model, zoom_in=False, cuda_graphs=graphs, with_std=True)
        pred.set_image(image)
        results.append([pred.add_click(c) for c in clicks])
    for eager, graphed in zip(*results):
        np.testing.assert_allclose(graphed.prob, eager.prob, rtol=0, atol=1e-3)
        np.testing.assert_allclose(graphed.std, eager.std, rtol=0, atol=1e-3)
    assert model.cuda_graphs is not None and model.cuda_graphs.replays > 0
    model.set_gp_stride(2)  # the graphs hold the old test grid: dropped
    assert len(model.cuda_graphs._graphs) == 0
