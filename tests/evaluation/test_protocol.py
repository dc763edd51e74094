"""The protocol loop with methods whose behaviour is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.data import Sample
from gpcis.evaluation.protocol import EvalConfig, evaluate_dataset, evaluate_object, summarize
from gpcis.inference.base import PredictionResult


def _samples(n: int = 3, size: int = 24) -> list[Sample]:
    out = []
    for i in range(n):
        img = np.full((size, size, 3), 40 * i, np.uint8)
        m = np.zeros((size, size), bool)
        m[3 + i: 15 + i, 4: 18] = True
        ign = np.zeros_like(m)
        ign[0, :] = True
        out.append(Sample(img, [m], ign, f"s{i}"))
    return out


class Oracle:
    """Knows the ground truth of the current image: perfect after any click."""

    def __init__(self, dataset):
        self.gts = {id(s.image): s.masks[0] for s in dataset}
        self.calls = 0

    def set_image(self, image):
        self.gt = self.gts[id(image)]

    def predict(self, clicks, prev_mask=None):
        self.calls += 1
        return PredictionResult(self.gt.copy(), self.gt.astype(np.float32))


class Never:
    """Always predicts background: never improves."""

    def set_image(self, image):
        self.shape = image.shape[:2]
        self.seen = []

    def predict(self, clicks, prev_mask=None):
        self.seen.append((len(clicks), prev_mask is None))
        z = np.zeros(self.shape, np.float32)
        return PredictionResult(z > 0.5, z)


class Ramp:
    """IoU-independent: probability = a fixed fraction of the object revealed per click."""

    def __init__(self, gt, steps):
        self.gt, self.steps = gt, steps

    def set_image(self, image):
        pass

    def predict(self, clicks, prev_mask=None):
        k = min(len(clicks), len(self.steps)) - 1
        rows = np.flatnonzero(self.gt.any(1))
        keep = rows[: int(round(self.steps[k] * len(rows)))]
        m = np.zeros_like(self.gt)
        m[keep] = self.gt[keep]
        return PredictionResult(m, m.astype(np.float32))


def test_oracle_gives_noc_one():
    ds = _samples()
    method = Oracle(ds)
    cfg = EvalConfig(progress=False)
    recs = evaluate_dataset(method, ds, cfg)
    m = summarize(recs, cfg)
    assert m["noc85"] == 1 and m["noc90"] == 1 and m["nof90"] == 0 and m["noc100_90"] == 1
    assert m["num_images"] == 3 and method.calls == 3 and m["noic"] == 0
    assert m["miou_at"] == [1.0] * 20


def test_never_improving_fails_everywhere():
    ds = _samples()
    method = Never()
    cfg = EvalConfig(max_clicks=20, long_max_clicks=30, progress=False)
    recs = evaluate_dataset(method, ds, cfg)
    m = summarize(recs, cfg)
    assert m["nof90"] == 3 and m["noc90"] == 20 and m["nof100_90"] == 3 and m["noc100_90"] == 30
    assert all(len(r.ious) == 30 for r in recs)        # continued to the long budget
    # every click is positive on a background prediction, so every click is invalid; NoIC
    # counts the protocol's 20 clicks, not the NoC100 continuation's (it counted 30 each)
    assert m["noic"] == 3 * 20
    short = summarize(evaluate_dataset(Never(), ds, EvalConfig(max_clicks=20, long_max_clicks=None,
                                                                 progress=False)), cfg)
    assert short["noic"] == m["noic"]  # the same with or without the continuation
    # first call without a previous mask, then with one; click counts grow by one
    assert method.seen[0] == (1, True) and method.seen[1] == (2, False)
    # the user never clicks the same pixel twice
    assert all(len(set(r.clicks)) == len(r.clicks) for r in recs)


def test_stop_at_target_and_all_clicks():
    gt = np.zeros((40, 10), bool)
    gt[0:20] = True
    steps = [0.5, 0.8, 0.95, 1.0]  # IoU = step
    cfg = EvalConfig(progress=False, max_clicks=6)
    rec = evaluate_object(Ramp(gt, steps), gt, None, cfg)
    assert rec.ious == pytest.approx([0.5, 0.8, 0.95])  # stops at 0.9
    cfg_all = EvalConfig(progress=False, max_clicks=6, all_clicks=True)
    rec = evaluate_object(Ramp(gt, steps), gt, None, cfg_all)
    assert rec.ious == pytest.approx([0.5, 0.8, 0.95, 1.0, 1.0, 1.0])


def test_threshold_is_applied_to_prob():
    gt = np.zeros((10, 10), bool)
    gt[2:8, 2:8] = True

    class Half:
        def set_image(self, image):
            pass

        def predict(self, clicks, prev_mask=None):
            p = np.where(gt, 0.495, 0.0).astype(np.float32)
            return PredictionResult(p > 0.5, p)

    assert evaluate_object(Half(), gt, None, EvalConfig(progress=False, thresh=0.49)).ious == [1.0]
    rec = evaluate_object(Half(), gt, None, EvalConfig(progress=False, thresh=0.5, long_max_clicks=None))
    assert len(rec.ious) == 20 and max(rec.ious) == 0.0


def test_an_object_without_scored_pixels_is_an_error_not_a_solved_object():
    """An empty ground truth (or one inside the ignore mask) has IoU 1 with any prediction,
    so it counted as solved at click 1 (NoC 1); and a gt of another size than the image."""
    gt = np.zeros((30, 30), bool)
    with pytest.raises(ValueError, match="object 'e': the ground-truth mask is empty"):
        evaluate_object(Oracle([]), gt, None, EvalConfig(progress=False), "e")
    gt[5:10, 5:10] = True
    with pytest.raises(ValueError, match="empty outside the ignore mask"):
        evaluate_object(Oracle([]), gt, gt.copy(), EvalConfig(progress=False))
    with pytest.raises(ValueError, match="ignore has shape"):
        evaluate_object(Oracle([]), gt, np.zeros((30, 31), bool), EvalConfig(progress=False))

    class Fixed:
        def predict(self, clicks, prev_mask=None):
            return PredictionResult(np.zeros((20, 20), bool), np.zeros((20, 20), np.float32))

    with pytest.raises(ValueError, match=r"prob of shape \(20, 20\) for a gt of shape \(30, 30\)"):
        evaluate_object(Fixed(), gt, None, EvalConfig(progress=False))


def test_limit_and_errors():
    ds = _samples(5)
    recs = evaluate_dataset(Oracle(ds), ds, EvalConfig(progress=False, limit=2))
    assert [r.name for r in recs] == ["s0", "s1"]
    with pytest.raises(ValueError, match="empty"):
        evaluate_dataset(Oracle(ds), [], EvalConfig(progress=False))
    with pytest.raises(ValueError, match="target_iou"):
        EvalConfig(target_iou=1.5)
    for low in (0.85, 0.5):  # would stop objects before NoC@90 could be counted
        with pytest.raises(ValueError, match="target_iou must be in \\[0.9, 1\\]"):
            EvalConfig(target_iou=low)
        with pytest.raises(ValueError, match="NoC@90"):
            EvalConfig(target_iou=low, all_clicks=True)  # NoC100@90's continuation stops at the target too


def test_the_previous_probability_map_is_fed_back_as_ritms_prev_prediction():
    """RITM's predictor feeds its last sigmoid output back as the previous mask: the loop
    passes the method's probabilities (not ``prob > thresh``, which the models never see in
    training)."""
    gt = np.zeros((10, 10), bool)
    gt[2:8, 2:8] = True

    class Soft:
        def __init__(self):
            self.prevs = []

        def set_image(self, image):
            pass

        def predict(self, clicks, prev_mask=None):
            self.prevs.append(None if prev_mask is None else np.array(prev_mask))
            p = np.where(gt, 0.3 + 0.1 * len(clicks), 0.2).astype(np.float32)
            return PredictionResult(p > 0.5, p)

    method = Soft()
    evaluate_object(method, gt, None, EvalConfig(progress=False, max_clicks=4, long_max_clicks=None))
    assert method.prevs[0] is None and len(method.prevs) == 3  # IoU 1 at click 3 (0.6 > 0.5)
    for k, prev in enumerate(method.prevs[1:], start=1):
        assert prev.dtype == np.float32
        np.testing.assert_array_equal(prev, np.where(gt, 0.3 + 0.1 * k, 0.2).astype(np.float32))


def test_noic_counts_the_clicks_up_to_the_target_also_with_all_clicks():
    """With all_clicks the loop goes on after reaching the target (for the exact mIoU curve):
    NoIC counts only the protocol's clicks up to the target, so it does not change."""
    gt = np.zeros((40, 10), bool)
    gt[0:20] = True

    class Late(Ramp):
        def predict(self, clicks, prev_mask=None):
            out = super().predict(clicks, prev_mask)
            if len(clicks) > 3:  # after the target: the clicked pixel flips to the wrong side
                c = clicks[-1]
                m = out.mask.copy()
                m[c.row, c.col] = not c.positive
                return PredictionResult(m, m.astype(np.float32))
            return out

    steps = [0.5, 0.8, 0.95, 1.0]
    stopped = evaluate_object(Late(gt, steps), gt, None, EvalConfig(progress=False, max_clicks=6))
    every = evaluate_object(Late(gt, steps), gt, None, EvalConfig(progress=False, max_clicks=6, all_clicks=True))
    assert len(stopped.ious) == 3 and len(every.ious) == 6
    assert every.noic == stopped.noic
