"""Iterative training's error clicks: inside the error region, deep enough, right sign."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torch import nn

from gpcis.clicks import ClickBatch
from gpcis.models.model import ModelOutput
from gpcis.training.iterative import add_error_clicks, error_click, iterative_prev_mask


def _edt(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance to the nearest non-mask pixel, the border counting as one."""
    return distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def test_error_click_brute_force():
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
        dfn, dfp = _edt(fn), _edt(fp)
        positive = dfn.max() > dfp.max()
        region, d = (fn, dfn) if positive else (fp, dfp)
        for seed in range(5):
            click = error_click(pred, gt, np.random.default_rng(seed), ignore)
            assert click.positive == positive
            assert region[click.row, click.col]
            assert d[click.row, click.col] >= 0.49 * d.max() - 1e-4


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
