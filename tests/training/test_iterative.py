"""Iterative training's error clicks: inside the error region, deep enough, right sign."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gpcis.clicks import ClickBatch
from gpcis.models.model import ModelOutput
from gpcis.training.iterative import add_error_clicks, error_click, iterative_prev_mask


def _chamfer(mask: np.ndarray) -> np.ndarray:
    """RITM's distance, computed independently: the shortest path from each mask pixel to a
    non-mask pixel (the border counting as one) with 5 x 5 chamfer steps, 1 along an axis,
    1.4 diagonally, 2.1969 for a knight's move (OpenCV's DIST_L2 with mask 5), by Dijkstra."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    padded = np.pad(mask, 1)
    h, w = padded.shape
    steps = [(0, 1, 1.0), (1, 0, 1.0), (1, 1, 1.4), (1, -1, 1.4),
             (1, 2, 2.1969), (2, 1, 2.1969), (1, -2, 2.1969), (2, -1, 2.1969)]
    rows, cols, weights = [], [], []
    idx = np.arange(h * w).reshape(h, w)
    for dr, dc, wt in steps:
        r0, r1 = max(0, -dr), h - max(0, dr)
        c0, c1 = max(0, -dc), w - max(0, dc)
        a = idx[r0:r1, c0:c1].ravel()
        b = idx[r0 + dr:r1 + dr, c0 + dc:c1 + dc].ravel()
        rows += [a, b]
        cols += [b, a]
        weights += [np.full(a.size, wt)] * 2
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(h * w, h * w))
    sources = idx[~padded]
    dist = dijkstra(graph.tocsr(), indices=sources, min_only=True)
    return dist.reshape(h, w)[1:-1, 1:-1]


class _Draw:
    """A stand-in generator whose ``integers(0, n)`` answers ``k`` (and records ``n``)."""

    def __init__(self, k: int, record: list | None = None) -> None:
        self.k, self.record = k, record

    def integers(self, low: int, high: int) -> int:
        if self.record is not None:
            self.record.append(high - low)
        return low + self.k


def test_error_click_brute_force():
    """RITM's rule (get_next_points): the larger error region by its maximum chamfer
    distance (false negatives only when strictly larger), a pixel whose distance exceeds
    half that maximum; every candidate is reachable (the draw is uniform over them)."""
    rng_masks = np.random.default_rng(0)
    for trial in range(20):
        h, w = 40, 50
        gt = np.zeros((h, w), bool)
        r, c = rng_masks.integers(5, 20, 2)
        gt[r:r + 15, c:c + 20] = True
        pred = np.zeros((h, w), bool)
        r2, c2 = rng_masks.integers(0, 25, 2)
        pred[r2:r2 + 12, c2:c2 + 18] = True
        ignore = np.zeros((h, w), bool)
        ignore[:, :3] = True
        fn, fp = gt & ~pred & ~ignore, ~gt & pred & ~ignore
        dfn, dfp = _chamfer(fn), _chamfer(fp)
        positive = dfn.max() > dfp.max()
        d = dfn if positive else dfp
        # float32 chamfer sums of a few dozen steps against float64: 1e-4 is ~100 ulps
        candidates = {tuple(p) for p in np.argwhere(d > max(dfn.max(), dfp.max()) / 2 + 1e-4)}
        border = {tuple(p) for p in np.argwhere(np.abs(d - max(dfn.max(), dfp.max()) / 2) <= 1e-4)}
        # every candidate, by answering the draw with each index in turn
        count = []
        error_click(pred, gt, _Draw(0, count), ignore)
        seen = set()
        for k in range(count[0]):
            click = error_click(pred, gt, _Draw(k), ignore)
            assert click.positive == positive
            seen.add((click.row, click.col))
        assert len(seen) == count[0] and candidates <= seen <= candidates | border, trial


def test_chamfer_reference_is_opencvs_distance():
    from gpcis.training.iterative import _dist

    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = rng.random((30, 37)) < 0.8
        np.testing.assert_allclose(_dist(mask), _chamfer(mask), rtol=0, atol=1e-4)


def test_no_error_no_click():
    gt = np.zeros((10, 10), bool)
    gt[2:5, 2:5] = True
    assert error_click(gt.copy(), gt, np.random.default_rng(0)) is None


class _FixedModel(nn.Module):
    """Predicts a fixed logit map regardless of the input (records its inputs)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.calls: list[tuple[int, bool]] = []

    def forward(self, image, clicks, prev_mask=None):
        self.calls.append((clicks.max_clicks, self.training))
        return ModelOutput(logits=self.logits.clone(), aux_loss=torch.zeros(()))


def test_iterative_step_adds_a_click_in_the_error_region():
    b, h, w = 2, 32, 32
    gt = torch.zeros(b, 1, h, w)
    gt[:, :, 8:24, 8:24] = 1
    logits = torch.full((b, 1, h, w), -5.0)
    logits[0, :, 8:24, 8:16] = 5.0  # image 0 misses the right half: a positive click there
    logits[1, :, 0:30, 0:30] = 5.0  # image 1 spills over: a negative click outside the object
    model = _FixedModel(logits).train()
    clicks = ClickBatch.from_lists([[], []], min_length=1)
    clicks.valid[:] = False
    new, prev = iterative_prev_mask(model, torch.rand(b, 3, h, w), clicks, gt, 2, np.random.default_rng(0))
    assert model.training and model.calls == [(1, False), (2, False)]  # eval during the passes
    assert new.max_clicks == 3 and new.valid[:, 1:].all()
    torch.testing.assert_close(prev, torch.sigmoid(logits))
    lists = new.to_lists()
    c0, c1 = lists[0][0], lists[1][0]
    assert c0.positive and 8 <= c0.row < 24 and 16 <= c0.col < 24
    assert not c1.positive and not (8 <= c1.row < 24 and 8 <= c1.col < 24) and c1.row < 30 and c1.col < 30
    # zero passes: the clicks come back unchanged with an empty previous mask
    same, empty = iterative_prev_mask(model, torch.rand(b, 3, h, w), clicks, gt, 0, np.random.default_rng(0))
    assert same is clicks and not empty.any()


def test_add_error_clicks_marks_perfect_images_invalid():
    gt = torch.zeros(2, 1, 8, 8)
    gt[:, :, 2:6, 2:6] = 1
    prob = gt.clone()
    prob[1] = 0
    out = add_error_clicks(ClickBatch.empty(2), prob, gt, np.random.default_rng(0))
    assert out.valid.tolist() == [[False], [True]] and out.labels[1, 0] == 1


def test_add_error_clicks_thresholds_at_ritms_049():
    """RITM's get_next_points reads foreground as prob > 0.49: an object predicted at 0.495
    is no false negative (a 0.5 threshold clicked it)."""
    gt = torch.zeros(1, 1, 8, 8)
    gt[:, :, 2:6, 2:6] = 1
    prob = gt * 0.495
    out = add_error_clicks(ClickBatch.empty(1), prob, gt, np.random.default_rng(0))
    assert out.valid.tolist() == [[False]]
    out = add_error_clicks(ClickBatch.empty(1), gt * 0.485, gt, np.random.default_rng(0))
    assert out.valid.tolist() == [[True]] and out.labels[0, 0] == 1
