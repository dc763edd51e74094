"""gpcis.clicks: the click types, their checks and the disk maps (RITM's click encoding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpcis.clicks import Click, ClickBatch, check_clicks_in_image, disk_maps


def test_from_lists_pads_with_a_validity_mask_and_to_lists_inverts_it():
    lists = [[Click(1, 2, True), Click(3, 4, False)], [], [Click(5, 6, False)]]
    batch = ClickBatch.from_lists(lists, min_length=3)
    assert batch.batch_size == 3 and batch.max_clicks == 3
    assert batch.num_clicks().tolist() == [2, 0, 1]
    assert batch.valid.tolist() == [[True, True, False], [False, False, False], [True, False, False]]
    assert batch.labels.tolist() == [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]
    assert batch.coords[0, :2].tolist() == [[1.0, 2.0], [3.0, 4.0]] and not batch.coords[1].any()
    assert batch.to_lists() == lists
    assert ClickBatch.empty(2).max_clicks == 0 and ClickBatch.empty(2).to_lists() == [[], []]


@pytest.mark.parametrize(
    "coords, labels, valid, match",
    [
        (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), "coords must have shape"),
        (torch.zeros(2, 3, 2), torch.zeros(2, 2), torch.zeros(2, 3, dtype=torch.bool), "labels must have shape"),
        (torch.zeros(2, 3, 2), torch.zeros(2, 3), torch.zeros(3, 3, dtype=torch.bool), "valid must have shape"),
        (torch.zeros(2, 3, 2), torch.zeros(2, 3), torch.zeros(2, 3), "valid must be a bool tensor"),
    ],
)
def test_click_batch_checks_its_shapes(coords, labels, valid, match):
    with pytest.raises(ValueError, match=match):
        ClickBatch(coords, labels, valid)


def test_check_clicks_in_image_names_the_bad_click():
    check_clicks_in_image([Click(0, 0, True), Click(np.int64(9), 19, np.bool_(False))], 10, 20)
    for click, match in [
        (Click(10, 0, True), r"clicks\[1\] = \(row=10, col=0\) is outside the image of 10x20"),
        (Click(0, -1, True), "outside"),
        (Click(1.5, 2, True), "integer pixel indices"),
        # a label of -1 or "no" counted as a positive click (truthy) before session 12
        (Click(1, 2, -1), r"clicks\[1\].positive = -1: must be True"),
        (Click(1, 2, "no"), "positive = 'no'"),
        ((1, 2, True), "expected gpcis.Click"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_clicks_in_image([Click(0, 0, True), click], 10, 20)


def test_disk_maps_against_a_brute_force_loop():
    """A pixel is in a click's disk iff its squared distance is <= radius^2; positive clicks
    draw channel 0, negative channel 1, padding nothing (whatever its coordinates)."""
    clicks = ClickBatch(
        torch.tensor([[[3.0, 4.0], [9.0, 2.0], [0.0, 0.0]], [[7.0, 10.0], [6.0, 6.0], [1.0, 1.0]]]),
        torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]]),
        torch.tensor([[True, True, False], [True, True, False]]),
    )
    h, w, radius = 12, 14, 2.5
    maps = disk_maps(clicks, (h, w), radius)
    expected = np.zeros((2, 2, h, w), np.float32)
    for b in range(2):
        for n in range(3):
            if not clicks.valid[b, n]:
                continue
            r0, c0 = clicks.coords[b, n].tolist()
            channel = 0 if clicks.labels[b, n] > 0 else 1
            for r in range(h):
                for c in range(w):
                    if (r - r0) ** 2 + (c - c0) ** 2 <= radius**2:
                        expected[b, channel, r, c] = 1.0
    assert maps.shape == (2, 2, h, w) and maps.dtype == torch.float32
    np.testing.assert_array_equal(maps.numpy(), expected)
    assert expected[0, 0].sum() == 21  # 21 pixels within 2.5 of an integer point
    assert not disk_maps(ClickBatch.empty(2), (h, w)).any()
