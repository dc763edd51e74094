"""``gpcis segment`` and the front-end helpers of gpcis.inference.cli."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from gpcis.cli import main
from gpcis.clicks import Click
from gpcis.inference.base import PredictionResult
from gpcis.inference.cli import (
    ImageTooLargeError,
    decode_image,
    make_method_factory,
    parse_click,
    read_image,
    render_overlay,
    run_segment,
    write_png,
)


def _scene(h: int = 96, w: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured background with one ellipse of another colour; returns (image, gt mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    gt = ((yy - 50) / 28.0) ** 2 + ((xx - 60) / 38.0) ** 2 <= 1.0
    img = np.empty((h, w, 3), np.float64)
    img[...] = (70, 120, 160)
    img[..., 0] += 40 * xx / w
    img[gt] = (210, 150, 40)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), gt


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_parse_click():
    assert parse_click("12,34,+") == Click(12, 34, True)
    assert parse_click(" 5 , 6 , - ") == Click(5, 6, False)
    for bad in ("1,2", "1,2,x", "a,2,+", "1,2,+,3"):
        with pytest.raises(argparse.ArgumentTypeError, match="--click"):
            parse_click(bad)


def test_decode_and_read_image(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    png = tmp_path / "a.png"
    Image.fromarray(rgb).save(png)
    np.testing.assert_array_equal(read_image(png), rgb)
    # grey, RGBA and 16-bit images come back as 8-bit RGB
    buf = io.BytesIO()
    Image.fromarray(rgb[..., 0]).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue()), np.repeat(rgb[..., :1], 3, axis=2))
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, np.full((6, 7), 9, np.uint8)])).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_image(buf.getvalue()), rgb)
    ok, enc = cv2.imencode(".png", np.array([[0, 65535], [32768, 0]], np.uint16))
    out = decode_image(enc.tobytes())
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3) and out[0, 1, 0] == 255 and out[0, 0, 0] == 0
    # EXIF orientation 6 (rotate 90 degrees clockwise to display) is applied
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", exif=exif, quality=100)
    assert decode_image(buf.getvalue()).shape == (7, 6, 3)
    # errors
    with pytest.raises(ValueError, match="not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="not a file"):
        read_image(tmp_path)
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(ValueError, match="x.png: not a readable image"):
        read_image(tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        decode_image(b"", "upload")
    with pytest.raises(ImageTooLargeError, match="too large"):
        decode_image(png.read_bytes(), max_pixels=41)
    truncated = png.read_bytes()[:60]
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(truncated)


def test_write_png_is_atomic_and_checks_paths(tmp_path):
    m = np.zeros((4, 5), np.uint8)
    m[1:3, 2:4] = 255
    p = write_png(tmp_path / "m.png", m)
    np.testing.assert_array_equal(np.asarray(Image.open(p)), m)
    assert os.listdir(tmp_path) == ["m.png"]  # no temporary file left
    with pytest.raises(ValueError, match="--out: .* must end in .png"):
        write_png(tmp_path / "m.jpg", m)
    with pytest.raises(ValueError, match="does not exist"):
        write_png(tmp_path / "no" / "m.png", m)


def test_render_overlay_draws_mask_and_clicks():
    img = np.zeros((40, 40, 3), np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    out = render_overlay(img, mask, [Click(20, 20, True), Click(2, 35, False)], color=(200, 0, 100), alpha=0.5)
    assert tuple(out[15, 25]) == (100, 0, 50)  # fill: half of the colour over black
    assert tuple(out[10, 20]) == (200, 0, 100)  # contour
    assert tuple(out[20, 20]) == (0, 200, 0) and tuple(out[2, 35]) == (230, 0, 0)
    assert tuple(out[35, 5]) == (0, 0, 0)


def test_method_factory_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("GPCIS_NO_RELEASED", "1")  # the default is gp-pixel even with released weights
    with pytest.raises(ValueError, match="not both"):
        make_method_factory(method="grabcut", checkpoint="x.pt")
    with pytest.raises(ValueError, match="--checkpoint: file not found"):
        make_method_factory(checkpoint=tmp_path / "none.pt")
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(device="cpu")
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(method="grabcut", refine=True)
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(method="grabcut", flip=True)
    with pytest.raises(ValueError, match="--method 'no-such-method' is not a method; available: .*grabcut"):
        make_method_factory(method="no-such-method")  # at once, not when the first image opens
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    factory, name = make_method_factory(checkpoint=bad)
    assert name == f"checkpoint {bad}"
    with pytest.raises(ValueError, match="could not load the model"):
        factory()


def test_method_factory_refine_and_flip_reach_the_predictors(tmp_path):
    import torch

    from gpcis.baselines.refine import GrabCutRefineConfig
    from gpcis.models import create_model, save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", create_model("gpcis_tiny"))
    plain, _ = make_method_factory(checkpoint=ckpt)
    refined, _ = make_method_factory(checkpoint=ckpt, refine=True, flip=True)
    assert plain().refine is None and plain().flip is False
    assert refined().refine == GrabCutRefineConfig() and refined().flip is True


def test_segment_with_gp_pixel_recovers_the_object(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPCIS_NO_RELEASED", "1")  # the default is gp-pixel even with released weights
    img, gt = _scene()
    Image.fromarray(img).save(tmp_path / "scene.png")
    out, ov = tmp_path / "mask.png", tmp_path / "overlay.png"
    rc = main(["segment", str(tmp_path / "scene.png"), "--click", "50,60,+", "--click", "45,100,+",
               "--click", "10,10,-", "--out", str(out), "--overlay", str(ov)])
    assert rc == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == gt.shape and set(np.unique(mask)) <= {0, 255}
    iou = _iou(mask > 0, gt)
    assert iou > 0.9, iou
    assert np.asarray(Image.open(ov)).shape == img.shape
    text = capsys.readouterr().out
    assert f"area: {int((mask > 0).sum())} px" in text and "gp-pixel" in text and "predict" in text


def test_segment_replay_feeds_previous_masks(tmp_path):
    img, gt = _scene(40, 50)
    Image.fromarray(img).save(tmp_path / "s.png")
    calls = []

    class Recorder:
        def set_image(self, image):
            self.shape = image.shape[:2]

        def predict(self, clicks, prev_mask=None):
            calls.append((len(clicks), prev_mask))
            m = np.zeros(self.shape, bool)
            m[: len(clicks)] = True
            return PredictionResult(m, m.astype(np.float32))

    clicks = [Click(5, 5, True), Click(6, 6, False), Click(7, 7, True)]
    result, times = run_segment(tmp_path / "s.png", clicks, Recorder, tmp_path / "m.png", replay=True)
    assert [n for n, _ in calls] == [1, 2, 3] and calls[0][1] is None
    assert calls[2][1][:2].all() and not calls[2][1][2:].any()
    assert result.mask[:3].all() and times["predict_s"] >= 0
    calls.clear()
    run_segment(tmp_path / "s.png", clicks, Recorder, tmp_path / "m.png")
    assert [n for n, _ in calls] == [3]


def test_segment_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPCIS_NO_RELEASED", "1")  # the default is gp-pixel even with released weights
    img, _ = _scene(30, 40)
    Image.fromarray(img).save(tmp_path / "s.png")
    (tmp_path / "t.txt").write_text("no image")
    cases = [
        (["segment", str(tmp_path / "missing.png"), "--click", "1,1,+"], "image file not found"),
        (["segment", str(tmp_path / "t.txt"), "--click", "1,1,+"], "not a readable image"),
        (["segment", str(tmp_path / "s.png"), "--click", "30,5,+"], "outside the image of 30x40"),
        (["segment", str(tmp_path / "s.png"), "--click", "3,5,+", "--out", str(tmp_path / "no/m.png")],
         "--out: folder"),
        (["segment", str(tmp_path / "s.png"), "--click", "3,5,+", "--checkpoint", str(tmp_path / "c.pt")],
         "--checkpoint: file not found"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # malformed click: argparse usage error
        main(["segment", str(tmp_path / "s.png"), "--click", "3;5"])
    assert "--click" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least one"):
        run_segment(tmp_path / "s.png", [], lambda: None, tmp_path / "m.png")


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    from gpcis import models
    from gpcis.models import checkpoint
    path = tmp_path / "tiny.pt"
    checkpoint.save_checkpoint(path, models.create_model("gpcis_tiny"))
    return path


def test_segment_with_a_checkpoint(tmp_path, tiny_checkpoint, capsys):
    img, _ = _scene(64, 80)
    Image.fromarray(img).save(tmp_path / "s.png")
    out = tmp_path / "m.png"
    rc = main(["segment", str(tmp_path / "s.png"), "--click", "30,40,+", "--checkpoint", str(tiny_checkpoint),
               "--device", "cpu", "--out", str(out), "--replay"])
    assert rc == 0, capsys.readouterr().err
    assert np.asarray(Image.open(out)).shape == (64, 80)  # an untrained model: only the shape is known
    assert f"checkpoint {tiny_checkpoint}" in capsys.readouterr().out


def test_default_is_the_released_model_when_installed(released_tiny, monkeypatch):
    from gpcis.inference.predictor import Predictor
    from gpcis.models import create_model

    factory, name = make_method_factory()
    assert name == f"released model gpcis_tiny ({released_tiny})"
    factory, name = make_method_factory(device="cpu")  # --device applies to the released model
    assert name.startswith("released model gpcis_tiny")
    predictor = factory()
    assert isinstance(predictor, Predictor)
    reference = create_model(checkpoint=released_tiny).state_dict()
    loaded = predictor.model.state_dict()
    assert all(torch.equal(loaded[k].cpu(), v) for k, v in reference.items())
    assert factory().model is predictor.model  # loaded once, shared
    # an explicit method or checkpoint still wins; --model needs --checkpoint
    assert make_method_factory(method="grabcut")[1] == "grabcut"
    assert make_method_factory(checkpoint=released_tiny)[1] == f"checkpoint {released_tiny}"
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(method="grabcut", device="cpu")
    with pytest.raises(ValueError, match="--model only applies"):
        make_method_factory(model="gpcis_tiny")
    # a released file that does not load is reported when the factory is called
    released_tiny.write_bytes(b"garbage")
    factory, name = make_method_factory()
    with pytest.raises(ValueError, match=r"released model gpcis_tiny \(.*\): could not load the model"):
        factory()


def test_default_falls_back_to_gp_pixel(released_tiny, monkeypatch):
    monkeypatch.setenv("GPCIS_NO_RELEASED", "1")
    assert make_method_factory()[1] == "gp-pixel"
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(device="cpu")
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(method="grabcut", refine=True)
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(method="grabcut", flip=True)
    monkeypatch.delenv("GPCIS_NO_RELEASED")
    released_tiny.unlink()  # no released weights installed
    assert make_method_factory()[1] == "gp-pixel"
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(device="cpu")
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(method="grabcut", refine=True)
    with pytest.raises(ValueError, match="--device, --refine and --flip only apply"):
        make_method_factory(method="grabcut", flip=True)


def test_segment_uses_the_released_model_by_default(tmp_path, released_tiny, capsys, monkeypatch):
    img, _ = _scene(64, 80)
    Image.fromarray(img).save(tmp_path / "s.png")
    out = tmp_path / "m.png"
    rc = main(["segment", str(tmp_path / "s.png"), "--click", "30,40,+", "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert np.asarray(Image.open(out)).shape == (64, 80)
    assert f"method: released model gpcis_tiny ({released_tiny})" in capsys.readouterr().out
    monkeypatch.setenv("GPCIS_NO_RELEASED", "1")
    assert main(["segment", str(tmp_path / "s.png"), "--click", "30,40,+", "--device", "cpu"]) == 2
    assert "--device, --refine and --flip only apply" in capsys.readouterr().err
