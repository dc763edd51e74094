"""AnnotationSession (clicks, undo, objects, label map) and SessionStore."""

from __future__ import annotations

import numpy as np
import pytest

from gpcis.clicks import Click
from gpcis.demo.session import AnnotationSession, SessionStore, fit_image, resize_mask
from tests.demo._segmenters import ColourSegmenter, two_squares


def test_clicks_predict_with_previous_mask_and_undo_restores():
    img, red, blue = two_squares()
    seg = ColourSegmenter()
    s = AnnotationSession.open(seg, img)
    assert s.current is None and s.clicks == () and s.current_mask is None
    first_prob = s.add_click(Click(15, 15, True)).result.prob
    np.testing.assert_array_equal(s.current_mask, red)
    assert seg.calls[0][1] is None  # first click: no previous mask
    s.add_click(Click(2, 2, False))
    assert seg.calls[1][0] == [Click(15, 15, True), Click(2, 2, False)]
    # the previous probabilities passed on (RITM's prev_prediction), kept in 255ths: within
    # half a step of the prediction's own
    prev = seg.calls[1][1]
    assert prev.dtype == np.float32 and np.abs(prev - first_prob).max() <= 0.5 / 255 + 1e-7
    assert len(s.history) == 2 and s.mean_time_s is not None and s.mean_time_s >= 0
    # only the latest step keeps its full prediction (prob / std maps: ~9.5 MB a click at
    # 1024^2, every click's was held); the earlier ones their masks
    assert s.history[0].result is None and s.history[1].result is not None
    np.testing.assert_array_equal(s.history[0].mask, red)
    first = s.history[0]
    assert s.undo() is True
    assert s.clicks == (Click(15, 15, True),)
    np.testing.assert_array_equal(s.current_mask, red)
    # the restored step's prediction is made again from the inputs it was made from
    assert len(seg.calls) == 3 and seg.calls[2][0] == [Click(15, 15, True)] and seg.calls[2][1] is None
    assert s.current is first and first.result is not None
    np.testing.assert_array_equal(first.result.mask, red)
    assert s.undo() is True and s.undo() is False


def test_undo_keeps_the_step_when_predicting_it_again_fails():
    img, red, _ = two_squares()
    seg = ColourSegmenter()
    s = AnnotationSession.open(seg, img)
    s.add_click(Click(15, 15, True))
    s.add_click(Click(2, 2, False))
    s.add_click(Click(3, 3, False))

    def broken(clicks, prev_mask=None):
        raise ValueError("the method failed")

    seg.predict = broken
    with pytest.raises(ValueError, match="the method failed"):
        s.undo()
    assert len(s.clicks) == 3 and s.current.result is not None  # nothing undone
    # the second step was predicted with the first step's probabilities: the same input
    # again on undo (bit for bit: both are the kept 255ths)
    seg2 = ColourSegmenter()
    s2 = AnnotationSession.open(seg2, img)
    for c in (Click(15, 15, True), Click(2, 2, False), Click(3, 3, False)):
        s2.add_click(c)
    s2.undo()
    np.testing.assert_array_equal(seg2.calls[-1][1], seg2.calls[1][1])
    assert seg2.calls[-1][0] == [Click(15, 15, True), Click(2, 2, False)]


def test_session_store_drops_idle_sessions():
    img, _, _ = two_squares()
    now = {"t": 0.0}
    store = SessionStore(max_sessions=4, idle_s=60.0, clock=lambda: now["t"])
    a = store.put(AnnotationSession.open(ColourSegmenter(), img))
    now["t"] = 30.0
    b = store.put(AnnotationSession.open(ColourSegmenter(), img))
    now["t"] = 80.0  # a idle for 80 s, b for 50 s
    store.get(b)
    with pytest.raises(KeyError):
        store.get(a)
    assert len(store) == 1
    now["t"] = 200.0
    with pytest.raises(KeyError):
        store.get(b)
    with pytest.raises(ValueError, match="idle_s"):
        SessionStore(idle_s=0)


def test_click_outside_image_is_value_error():
    img, _, _ = two_squares()
    s = AnnotationSession.open(ColourSegmenter(), img)
    with pytest.raises(ValueError, match="outside the image"):
        s.add_click(Click(48, 0, True))


def test_method_with_wrong_shape_is_value_error():
    class Bad(ColourSegmenter):
        def predict(self, clicks, prev_mask=None):
            r = super().predict(clicks, prev_mask)
            r.mask = r.mask[:-1]
            return r

    img, _, _ = two_squares()
    s = AnnotationSession.open(Bad(), img)
    with pytest.raises(ValueError, match="mask of shape"):
        s.add_click(Click(15, 15, True))


def test_open_rejects_bad_image():
    with pytest.raises(ValueError, match="uint8"):
        AnnotationSession.open(ColourSegmenter(), np.zeros((4, 4, 3), np.float32))


def test_objects_finish_reset_and_label_map():
    img, red, blue = two_squares()
    s = AnnotationSession.open(ColourSegmenter(), img)
    with pytest.raises(ValueError, match="nothing to finish"):
        s.finish()
    s.add_click(Click(15, 15, True))
    assert s.finish() == 1 and s.current is None
    s.add_click(Click(30, 45, True))
    labels = s.label_map()
    expected = np.zeros(red.shape, np.uint8)
    expected[red] = 1
    expected[blue] = 2  # the current object is included, later objects win overlaps
    np.testing.assert_array_equal(labels, expected)
    s.reset()
    assert s.current is None and len(s.objects) == 1
    np.testing.assert_array_equal(s.label_map(), (red * 1).astype(np.uint8))
    s.reset_all()
    assert s.objects == [] and not s.label_map().any()


def test_finish_refuses_empty_mask():
    class Empty(ColourSegmenter):
        def predict(self, clicks, prev_mask=None):
            r = super().predict(clicks, prev_mask)
            r.mask = np.zeros_like(r.mask)
            return r

    img, _, _ = two_squares()
    s = AnnotationSession.open(Empty(), img)
    s.add_click(Click(15, 15, True))
    with pytest.raises(ValueError, match="empty"):
        s.finish()


def test_downscaled_image_masks_come_back_at_original_size():
    img, red, _ = two_squares(96, 128)  # red square at rows/cols 8..23
    s = AnnotationSession.open(ColourSegmenter(), img, max_side=64)
    assert s.size == (48, 64) and s.original_size == (96, 128)
    s.add_click(Click(10, 10, True))
    labels = s.label_map(original_size=True)
    assert labels.shape == (96, 128)
    # the 16x16 red square at full size is recovered up to a one-pixel edge
    assert (labels == 1)[9:23, 9:23].all()
    assert not (labels == 1)[26:, :].any() and not (labels == 1)[:, 26:].any()
    assert s.label_map(original_size=False).shape == (48, 64)


def test_fit_image_and_resize_mask():
    img = np.zeros((30, 100, 3), np.uint8)
    assert fit_image(img, None) is img and fit_image(img, 100) is img
    assert fit_image(img, 50).shape == (15, 50, 3)
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    up = resize_mask(m, (8, 8))
    expected = np.zeros((8, 8), bool)
    expected[:4, :4] = True
    np.testing.assert_array_equal(up, expected)


def test_store_lru_and_method_reuse():
    img, _, _ = two_squares()
    store = SessionStore(max_sessions=2)
    made = []

    def factory():
        made.append(ColourSegmenter())
        return made[-1]

    a = store.put(AnnotationSession.open(store.method_of(None, factory), img))
    b = store.put(AnnotationSession.open(store.method_of(None, factory), img))
    assert a != b and len(made) == 2
    assert store.method_of(a, factory) is made[0] and len(made) == 2  # reused
    store.get(a)  # a is now the most recent; adding c drops b
    c = store.put(AnnotationSession.open(store.method_of("unknown", factory), img))
    assert len(made) == 3 and len(store) == 2
    store.get(a), store.get(c)
    with pytest.raises(KeyError):
        store.get(b)
    with pytest.raises(ValueError, match="max_sessions"):
        SessionStore(0)


def test_objects_are_capped_at_what_one_label_png_holds(monkeypatch):
    """254 finished objects and the current one: 255 labels, what Save masks writes (255
    finished objects plus a current one could not be saved)."""
    import gpcis.demo.session as session_module

    monkeypatch.setattr(session_module, "MAX_OBJECTS", 3)
    img, _, _ = two_squares()
    s = AnnotationSession.open(ColourSegmenter(), img)
    for _ in range(2):
        s.add_click(Click(15, 15, True))
        s.finish()
    s.add_click(Click(15, 15, True))
    with pytest.raises(ValueError, match="at most 3 objects"):
        s.finish()
    assert s.label_map().max() == 3
