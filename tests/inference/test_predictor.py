"""Predictor: API errors, zoom-in mapping, history (add_click / undo / reset), suggestions."""

from __future__ import annotations

import types

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from gpcis.clicks import Click
from gpcis.evaluation.metrics import iou
from gpcis.inference.predictor import Predictor
from gpcis.inference.zoom import ZoomConfig


class ColourModel(nn.Module):
    """Fake model: logit +8 where the red channel > 0.5, else -8; std = a fixed bump.

    Records every call so tests can inspect what the predictor fed it.
    """

    def __init__(self, std_centre=None):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls = []
        self.std_centre = std_centre

    def forward(self, image, clicks, prev_mask=None, return_std=False):
        self.calls.append(types.SimpleNamespace(shape=tuple(image.shape), clicks=clicks, prev=prev_mask,
                                                image=image.clone()))
        logits = torch.where(image[:, :1] > 0.5, 8.0, -8.0) + 0 * self.w
        std = None
        if self.std_centre is not None:
            h, w = image.shape[-2:]
            r = torch.arange(h).view(h, 1).float()
            c = torch.arange(w).view(1, w).float()
            std = torch.exp(-((r - self.std_centre[0]) ** 2 + (c - self.std_centre[1]) ** 2) / 50.0)[None, None]
        return types.SimpleNamespace(logits=logits, aux_loss=torch.zeros(()), std=std)


def _scene(h=90, w=120):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = 90
    gt = np.zeros((h, w), np.uint8)
    cv2.circle(gt, (70, 40), 18, 1, -1)
    gt = gt.astype(bool)
    img[gt, 0] = 230
    return img, gt


def test_api_errors():
    img, _ = _scene()
    p = Predictor(ColourModel())
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict([Click(1, 1)])
    with pytest.raises(ValueError, match="image"):
        p.set_image(img[..., 0])
    with pytest.raises(ValueError, match="uint8"):
        p.set_image(img.astype(np.float32))
    p.set_image(img)
    with pytest.raises(ValueError, match="outside"):
        p.predict([Click(90, 0)])
    with pytest.raises(ValueError, match="integer pixel"):  # accepted, then an IndexError in suggest_click
        p.predict([Click(3.5, 4.2)])
    p.predict([Click(np.int64(3), np.int32(4))])  # NumPy integers are integers
    with pytest.raises(ValueError, match="prev_mask"):
        p.predict([Click(1, 1)], prev_mask=np.zeros((10, 10), bool))
    mask255 = np.zeros(img.shape[:2], np.uint8)
    mask255[:5] = 255  # what cv2.imread gives: fed as 255 it would be a wrong input
    with pytest.raises(ValueError, match=r"prev_mask values must be in \[0, 1\].*0\.\.255"):
        p.predict([Click(1, 1)], prev_mask=mask255)
    with pytest.raises(ValueError, match="prev_mask values"):
        p.predict([Click(1, 1)], prev_mask=np.full(img.shape[:2], np.nan, np.float32))
    p.predict([Click(1, 1)], prev_mask=mask255 > 0)
    with pytest.raises(ValueError, match="thresh"):
        Predictor(ColourModel(), thresh=1.5)
    with pytest.raises(ValueError, match="zoom must be a ZoomConfig"):  # was an AttributeError at click 2
        Predictor(ColourModel(), zoom="x")
    with pytest.raises(ValueError, match=r"clicks\[0\].positive = -1"):  # -1 counted as positive
        p.predict([Click(1, 1, -1)])


def test_full_image_prediction_and_padding():
    img, gt = _scene()
    model = ColourModel()
    p = Predictor(model, zoom_in=False, size_divisor=32)
    p.set_image(img)
    res = p.predict([Click(40, 70, True)])
    assert model.calls[-1].shape == (1, 3, 96, 128)  # padded to a multiple of 32
    assert res.prob.shape == gt.shape and res.mask.dtype == bool
    np.testing.assert_array_equal(res.mask, gt)
    assert res.std is None
    coords = model.calls[-1].clicks.coords[0].tolist()
    assert coords == [[40.0, 70.0]]


def _big_object_scene():
    """A 180 x 240 image whose red channel marks a radius-30 disk at (80, 140)."""
    img, _ = _scene(180, 240)
    gt = np.zeros((180, 240), np.uint8)
    cv2.circle(gt, (140, 80), 30, 1, -1)
    img[..., 0] = np.where(gt > 0, 230, 0)
    return img, gt.astype(bool)


def test_zoom_in_crops_and_maps_back():
    img, gt = _big_object_scene()
    model = ColourModel()
    p = Predictor(model, zoom_in=True, zoom=ZoomConfig(target_size=160, min_crop_size=40), size_divisor=1)
    p.set_image(img)
    first = p.add_click(Click(80, 140, True))
    assert model.calls[-1].shape == (1, 3, 180, 240)  # first click: whole image
    second = p.add_click(Click(60, 140, True))
    shape = model.calls[-1].shape
    assert max(shape[-2:]) == 160 and shape != (1, 3, 180, 240)
    assert model.calls[-1].prev is not None
    # each click in the crop lands on the same colour as in the full image
    crop = model.calls[-1].image[0, 0].numpy()
    for (r, c) in model.calls[-1].clicks.coords[0].tolist():
        assert crop[int(round(r)), int(round(c))] > 0.5
    assert iou(first.mask, gt) == 1.0
    assert iou(second.mask, gt) > 0.97  # only resampling at the boundary differs


def _outside(box, shape):
    out = np.ones(shape, bool)
    out[box.top:box.bottom, box.left:box.right] = False
    return out


def test_std_outside_the_zoom_crop_is_not_made_certain():
    """Outside the zoom-in crop the model did not look again: the std there is the previous
    prediction's (a continuing session) or the prior std (an explicit prev_mask), never 0."""
    img, _ = _big_object_scene()

    class Uncertain(ColourModel):  # std 0.5 + a bump: nowhere ~0
        def forward(self, image, clicks, prev_mask=None, return_std=False):
            out = super().forward(image, clicks, prev_mask, return_std)
            out.std = out.std + 0.5
            return out

    p = Predictor(Uncertain(std_centre=(80, 140)), zoom_in=True, zoom=ZoomConfig(target_size=160, min_crop_size=40),
                  size_divisor=1)
    p.set_image(img)
    clicks = [Click(80, 140, True), Click(60, 140, True)]
    first = p.add_click(clicks[0])
    second = p.add_click(clicks[1])
    box = p.zoom.box(first.prob > p.thresh, clicks, img.shape[:2])
    outside = _outside(box, img.shape[:2])
    assert 0 < outside.mean() < 1  # the second click ran on a crop
    np.testing.assert_array_equal(second.std[outside], first.std[outside])
    assert second.std.min() >= 0.5
    # the previous mask given with clicks that continue the history (the demo's way): the
    # same; with clicks that do not, no previous std: a model without a GP kernel gets the
    # largest std of its crop-space output outside the crop (the bump's peak 1.5 is inside
    # the crop; the pasted-back region is resampled, so its max is at most that)
    p.predict(clicks[:1])
    again = p.predict(clicks, prev_mask=first.prob)
    np.testing.assert_array_equal(again.std[outside], first.std[outside])
    p.reset()
    third = p.predict(clicks, prev_mask=first.prob)
    np.testing.assert_allclose(third.std[outside], 1.5, rtol=1e-6)
    assert third.std[~outside].max() <= 1.5 + 1e-6
    # a GP model: its prior std sqrt(eta0) outside the crop
    from gpcis.models import create_model

    torch.manual_seed(0)
    model = create_model("gpcis_tiny").eval()
    with torch.no_grad():
        model.head.gp.kernel.outputscale = 2.25
    gp = Predictor(model, zoom_in=True, zoom=ZoomConfig(target_size=64, min_crop_size=40), size_divisor=1)
    gp.set_image(img)
    res = gp.predict(clicks, prev_mask=first.prob)
    outside = _outside(gp.zoom.box(first.prob > gp.thresh, clicks, img.shape[:2]), img.shape[:2])
    assert 0 < outside.mean() < 1
    np.testing.assert_allclose(res.std[outside], 1.5, rtol=1e-6)


def test_whole_image_view_is_downscaled_when_asked():
    img, gt = _big_object_scene()
    model = ColourModel()
    cfg = ZoomConfig(target_size=160, min_crop_size=40, whole_image_size=120)
    p = Predictor(model, zoom_in=True, zoom=cfg, size_divisor=1)
    p.set_image(img)
    first = p.add_click(Click(80, 140, True))
    assert model.calls[-1].shape == (1, 3, 90, 120)  # longer side 240 -> 120, aspect kept
    (r, c), = model.calls[-1].clicks.coords[0].tolist()
    # the click maps to the downscaled view (pixel-centre convention): (x + 0.5) / 2 - 0.5
    assert (r, c) == pytest.approx((39.75, 69.75))
    assert first.prob.shape == (180, 240)
    assert iou(first.mask, gt) > 0.97  # mapped back to the full image (boundary resampling only)
    p.add_click(Click(60, 140, True))  # the zoomed crop is unaffected by the setting
    assert max(model.calls[-1].shape[-2:]) == 160
    # an image already within the limit is fed at its own size
    small = Predictor(model, zoom_in=True, zoom=ZoomConfig(whole_image_size=400), size_divisor=1)
    small.set_image(img)
    small.add_click(Click(80, 140, True))
    assert model.calls[-1].shape == (1, 3, 180, 240)
    with pytest.raises(ValueError, match="whole_image_size"):
        ZoomConfig(whole_image_size=4)


def test_refine_snaps_a_blurred_decision_to_the_object_edges():
    """A model whose decision is the object shifted by 6 px: the GrabCut refinement seeded
    from it recovers the object's colour edges; the probability map agrees with the mask, the
    clicked pixels carry their labels, and without ``refine`` the shifted mask is returned."""
    from gpcis.baselines.refine import GrabCutRefineConfig

    h, w = 120, 160
    gt = np.zeros((h, w), np.uint8)
    cv2.circle(gt, (80, 60), 30, 1, -1)
    gt = gt.astype(bool)
    rng = np.random.default_rng(0)
    img = np.where(gt[..., None], [200, 40, 40], [40, 120, 200]).astype(np.float64)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)

    class Shifted(ColourModel):
        def forward(self, image, clicks, prev_mask=None, return_std=False):
            out = super().forward(image, clicks, prev_mask, return_std)
            out.logits = torch.roll(out.logits, shifts=6, dims=-1)
            return out

    clicks = [Click(60, 80, True), Click(5, 5, False)]
    plain = Predictor(Shifted(), zoom_in=False, size_divisor=1)
    plain.set_image(img)
    res_plain = plain.predict(clicks)
    refined = Predictor(Shifted(), zoom_in=False, size_divisor=1, refine=GrabCutRefineConfig())
    refined.set_image(img)
    res = refined.predict(clicks)
    assert iou(res_plain.mask, gt) < 0.85
    assert iou(res.mask, gt) > 0.97
    np.testing.assert_array_equal(res.mask, res.prob > 0.5)
    assert res.mask[60, 80] and not res.mask[5, 5]
    with pytest.raises(ValueError, match="refine"):
        Predictor(ColourModel(), refine={"iterations": 3})


def test_flip_averages_the_prediction_of_the_mirrored_input():
    """RITM's test-time flip: item 1 of the batch is the mirror image with mirrored clicks
    (pixel-centre columns: c -> w - 1 - c) and previous mask; the two probabilities are
    averaged after mirroring back. A column-ramp model makes the average checkable in closed
    form: 0.5 (sigmoid(L(c)) + sigmoid(L(w - 1 - c)))."""
    img, _ = _scene(40, 50)

    class Ramp(ColourModel):
        def forward(self, image, clicks, prev_mask=None, return_std=False):
            out = super().forward(image, clicks, prev_mask, return_std)
            cols = torch.arange(image.shape[-1], dtype=torch.float32)
            out.logits = ((cols - 10.0) / 4.0).expand(image.shape[0], 1, *image.shape[-2:]).clone()
            return out

    model = Ramp()
    p = Predictor(model, zoom_in=False, size_divisor=16, flip=True)
    p.set_image(img)
    prev = np.zeros((40, 50), np.float32)
    prev[:, :5] = 1.0
    res = p.predict([Click(7, 3, True), Click(30, 44, False)], prev_mask=prev)
    call = model.calls[-1]
    assert call.shape == (2, 3, 48, 64)  # both items padded to a multiple of 16
    np.testing.assert_array_equal(call.image[1, :, :40, :50].numpy(), call.image[0, :, :40, :50].flip(-1).numpy())
    assert call.clicks.coords[1].tolist() == [[7.0, 46.0], [30.0, 5.0]]
    assert call.clicks.labels[1].tolist() == [1.0, -1.0]
    np.testing.assert_array_equal(call.prev[1, 0, :40, :50].numpy(), prev[:, ::-1])
    cols = np.arange(50, dtype=np.float64)
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    expected = 0.5 * (sig((cols - 10) / 4) + sig((49 - cols - 10) / 4))
    np.testing.assert_allclose(res.prob[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.prob, res.prob[:, ::-1], atol=1e-6)  # symmetric after averaging


def test_history_add_undo_reset_and_continuation():
    img, gt = _scene()
    model = ColourModel()
    p = Predictor(model, zoom_in=False)
    p.set_image(img)
    r1 = p.add_click(Click(40, 70, True))
    assert model.calls[-1].prev is None
    r2 = p.add_click(Click(5, 5, False))
    assert model.calls[-1].prev is not None and len(p.clicks) == 2
    assert p.undo() is r1 and p.clicks == [Click(40, 70, True)]
    assert p.undo() is None and p.clicks == []
    assert p.undo() is None
    # stateless use: full list; a continuation of the history reuses the previous prob
    p.predict([Click(40, 70, True)])
    p.predict([Click(40, 70, True), Click(5, 5, False)])
    assert model.calls[-1].prev is not None
    np.testing.assert_array_equal(p.result.mask, r2.mask)
    # a list that is not a continuation starts from an empty previous mask
    p.predict([Click(10, 10, False)])
    assert model.calls[-1].prev is None
    # undo after stateless calls recomputes what it does not know
    p.predict([Click(40, 70, True), Click(5, 5, False)], prev_mask=np.zeros(gt.shape, bool))
    n = len(model.calls)
    res = p.undo()
    assert len(model.calls) == n + 1 and res is not None and iou(res.mask, gt) == 1.0
    p.reset()
    assert p.clicks == [] and p.result is None
    with pytest.raises(RuntimeError):
        Predictor(model).undo()


def test_suggest_click_follows_std_and_avoids_clicks():
    img, gt = _scene()
    model = ColourModel(std_centre=(40, 52))  # on the left boundary of the disk (col 70 - 18)
    p = Predictor(model, zoom_in=False)
    p.set_image(img)
    assert p.suggest_click() is None
    p.add_click(Click(40, 70, True))
    assert p.result.std is not None and p.result.std.shape == gt.shape
    s = p.suggest_click()
    # the model's prob is ~0/1 everywhere, so the score is std * tiny boundary term:
    # brute-force the same score
    prob = p.result.prob.astype(np.float64)
    score = (1 - np.abs(2 * prob - 1)) * p.result.std
    rr, cc = np.mgrid[0:90, 0:120]
    score[(rr - 40) ** 2 + (cc - 70) ** 2 < 100] = -np.inf
    assert (s.row, s.col) == np.unravel_index(np.argmax(score), score.shape)
    assert s.positive == bool(p.result.prob[s.row, s.col] > 0.5)
    p.add_click(Click(s.row, s.col, s.positive))
    s2 = p.suggest_click()
    assert np.hypot(s2.row - s.row, s2.col - s.col) >= 10


def test_with_tiny_registry_model():
    from gpcis.models import create_model

    torch.manual_seed(0)
    model = create_model("gpcis_tiny")
    img, _ = _scene(48, 64)
    p = Predictor(model, zoom_in=True, zoom=ZoomConfig(target_size=64, min_crop_size=16))
    p.set_image(img)
    clicks = [Click(20, 35, True), Click(5, 5, False)]
    results = [p.add_click(c) for c in clicks]
    for k, r in enumerate(results):
        assert r.prob.shape == (48, 64) and r.prob.dtype == np.float32
        assert 0 <= r.prob.min() and r.prob.max() <= 1
        assert r.std is not None and np.isfinite(r.std).all() and (r.std >= 0).all()
        # even untrained, the GP interpolates its clicks (eval noise 1e-4): each clicked
        # pixel carries its label (NoIC 0)
        assert all(r.mask[c.row, c.col] == c.positive for c in clicks[:k + 1])


def test_with_std_false_skips_the_uncertainty_map():
    import gpcis

    model = gpcis.create_model("gpcis_tiny")
    image = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    clicks = [gpcis.Click(10, 12, True), gpcis.Click(30, 40, False)]
    with_std = gpcis.Predictor(model, zoom_in=False)
    with_std.set_image(image)
    a = with_std.predict(clicks)
    without = gpcis.Predictor(model, zoom_in=False, with_std=False)
    without.set_image(image)
    b = without.predict(clicks)
    assert a.std is not None and a.std.shape == (40, 48) and b.std is None
    np.testing.assert_array_equal(a.mask, b.mask)


def test_clicks_the_model_sees_at_one_pixel_keep_only_the_newest():
    """A pixel clicked again with the other label (or neighbours a downscaling crop maps onto
    one pixel) was one GP input with two labels: the GP averaged them and the newest click
    lost its label half of the time. Only the newest click per model-input pixel is fed."""
    from gpcis.inference.predictor import _latest_per_pixel
    from gpcis.inference.zoom import CropClick
    from gpcis.models import create_model

    clicks = [CropClick(10.2, 5.0, True), CropClick(3.0, 3.0, False), CropClick(9.8, 4.6, False)]
    assert _latest_per_pixel(clicks, (20, 20)) == clicks[1:]  # (10, 5) twice: the later one
    assert _latest_per_pixel(clicks[:2], (20, 20)) == clicks[:2]
    assert _latest_per_pixel([CropClick(-0.4, 25.0, True), CropClick(0.0, 19.0, False)], (20, 20))[0].positive is False
    torch.manual_seed(0)
    img, _ = _scene(48, 64)
    p = Predictor(create_model("gpcis_tiny"), zoom_in=False)
    p.set_image(img)
    for first in (True, False):
        res = p.predict([Click(20, 30, first), Click(20, 30, not first)])
        assert res.mask[20, 30] == (not first)  # the newest label, whichever it is
    model = ColourModel()
    q = Predictor(model, zoom_in=False)
    q.set_image(img)
    q.predict([Click(5, 5, True), Click(6, 6, False), Click(5, 5, False)])
    assert model.calls[-1].clicks.coords[0].tolist() == [[6.0, 6.0], [5.0, 5.0]]


@pytest.mark.parametrize("thresh", [0.3, 0.7])
def test_refined_masks_are_prob_above_the_predictors_threshold(thresh):
    """refined_probability squeezed around [0.45, 0.55] whatever the threshold: with 0.3 or 0.7
    mask != prob > thresh, which the next zoom box and the evaluation read."""
    from gpcis.baselines.refine import GrabCutRefineConfig
    from gpcis.models import create_model

    torch.manual_seed(0)
    img, _ = _scene()
    p = Predictor(create_model("gpcis_tiny"), thresh=thresh, refine=GrabCutRefineConfig(click_radius=3))
    p.set_image(img)
    for clicks in ([Click(40, 70, True)], [Click(40, 70, True), Click(10, 10, False)]):
        res = p.predict(clicks)
        np.testing.assert_array_equal(res.mask, res.prob > thresh)


def test_whole_image_size_applies_without_zoom_in():
    """`--no-zoom-in --whole-image-size 320` ran at full resolution without a word; the
    setting is for every prediction that is not zoomed, which without zoom-in is all."""
    model = ColourModel()
    img, gt = _scene(90, 120)
    p = Predictor(model, zoom_in=False, zoom=ZoomConfig(whole_image_size=60), size_divisor=1)
    p.set_image(img)
    res = p.predict([Click(40, 70, True)])
    assert model.calls[-1].shape[-2:] == (45, 60) and res.mask.shape == (90, 120)
    assert iou(res.mask, gt) > 0.8


def test_more_bad_arguments_are_named():
    img, _ = _scene()
    p = Predictor(ColourModel())
    p.set_image(img)
    with pytest.raises(ValueError, match="a single Click"):
        p.predict(Click(3, 3, True))
    p.predict([Click(40, 70, True)])
    for bad in (0, 0.5, float("nan")):  # below one pixel the existing click itself qualified
        with pytest.raises(ValueError, match="min_distance"):
            p.suggest_click(bad)
    with pytest.raises(ValueError, match="thresh must be a number"):
        Predictor(ColourModel(), thresh="0.5")
    with pytest.raises(ValueError, match="size_divisor must be an int"):
        Predictor(ColourModel(), size_divisor=1.5)
    for kw, match in ((dict(expansion=float("nan")), "expansion"), (dict(target_size=10**6), "8192"),
                      (dict(whole_image_size=100.5), "whole_image_size"), (dict(min_crop_size=2.5), "min_crop_size")):
        with pytest.raises(ValueError, match=match):
            ZoomConfig(**kw)


class ClickSpotModel(nn.Module):
    """Fake model conditioned at its clicks only: logit +8 / -8 at each click's rounded input
    pixel (as a GP interpolates its clicks), 0 elsewhere; std 0 there, 1 elsewhere."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, image, clicks, prev_mask=None, return_std=False):
        b, _, h, w = image.shape
        logits = torch.zeros(b, 1, h, w) + 0 * self.w
        std = torch.ones(b, 1, h, w)
        for i in range(b):
            for (r, c), lab, ok in zip(clicks.coords[i].tolist(), clicks.labels[i].tolist(), clicks.valid[i].tolist()):
                if ok:
                    logits[i, 0, int(round(r)), int(round(c))] = 8.0 * lab
                    std[i, 0, int(round(r)), int(round(c))] = 0.0
        return types.SimpleNamespace(logits=logits, aux_loss=torch.zeros(()), std=std)


def test_a_clicked_pixel_keeps_the_value_the_model_gave_it_through_the_zoom_in():
    """Resizing a zoom-in crop back blended a clicked pixel with unconditioned neighbours (at
    a ~3x upscale it lies between crop pixels): its own prediction came back weakened or
    flipped. Each clicked pixel now takes its crop pixel's value (prob and std)."""
    img, _ = _scene(90, 120)
    zoom = ZoomConfig(target_size=96, min_crop_size=30, skip_clicks=0)
    p = Predictor(ClickSpotModel(), zoom=zoom, size_divisor=1)
    p.set_image(img)
    clicks = [Click(40, 70, True), Click(45, 77, False)]
    res = p.predict(clicks)
    for c in clicks:
        assert res.mask[c.row, c.col] == c.positive
        assert abs(res.prob[c.row, c.col] - (1 / (1 + np.exp(-8.0)) if c.positive else 1 / (1 + np.exp(8.0)))) < 1e-6
        assert res.std[c.row, c.col] == 0.0
    # its neighbours are the resized crop's (blended) values, as before
    assert 0.5 <= res.prob[40, 71] < res.prob[40, 70]


def test_a_clicked_pixel_keeps_its_value_with_flip_at_a_2x_upscale():
    """At a 2x upscale a click lies at 2c + 0.5 in the crop: the image item read column 2c
    and the mirrored item (rounding w - 1.5 - 2c half to even) the other neighbour, so the
    averaged, pinned value was half conditioned and the click lost its label with flip. At
    such ties the mirrored item now gets the mirror of the pixel read."""
    img, _ = _scene(90, 120)
    zoom = ZoomConfig(target_size=96, min_crop_size=48, expansion=1.0, skip_clicks=0)
    for flip in (False, True):
        p = Predictor(ClickSpotModel(), zoom=zoom, size_divisor=1, flip=flip)
        p.set_image(img)
        res = p.predict([Click(40, 70, True)])
        assert res.mask[40, 70] and res.prob[40, 70] == pytest.approx(1 / (1 + np.exp(-8.0)), abs=1e-6), flip


def test_numpy_scalars_are_accepted_where_numbers_are():
    """The new type checks refused np.int64 / np.float32 that sweeps with np.arange pass."""
    from gpcis.training.trainer import TrainConfig

    z = ZoomConfig(target_size=np.int64(400), whole_image_size=np.int32(320), expansion=np.float32(1.4))
    assert type(z.target_size) is int and type(z.whole_image_size) is int and type(z.expansion) is float
    p = Predictor(ColourModel(), thresh=np.float32(0.49), size_divisor=np.int64(32))
    assert p.thresh == pytest.approx(0.49) and p.size_divisor == 32
    assert TrainConfig(seed=np.int64(3)).seed == 3


@pytest.mark.parametrize("thresh", [0.1, 0.3, 0.7])
def test_refined_probability_holds_in_float64_too(thresh):
    """float32(0.3) > 0.3: an off-mask pixel of prob 1 became 0.30000001 > 0.3 in float64."""
    from gpcis.baselines.refine import refined_probability

    mask = np.array([False, True, False, True])
    out = refined_probability(mask, np.array([1.0, 0.0, 0.5, 1.0], np.float32), thresh)
    np.testing.assert_array_equal(out.astype(np.float64) > thresh, mask)
    np.testing.assert_array_equal(out > np.float32(thresh), mask)
