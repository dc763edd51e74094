"""The demo's Flask app through its test client, with an injected tiny segmenter."""

from __future__ import annotations

import json
import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gpcis.demo
from gpcis.clicks import Click
from gpcis.demo import DemoConfig, create_app
from gpcis.demo.render import encode_png
from tests.demo._segmenters import ColourSegmenter, two_squares


def _client(factory=ColourSegmenter, **cfg):
    app = create_app(factory, DemoConfig(method_name="colour", **cfg))
    app.testing = True
    return app, app.test_client()


def _upload(client, data: bytes, name: str = "img.png", session: str | None = None):
    form = {"file": (io.BytesIO(data), name)}
    if session:
        form["session"] = session
    return client.post("/api/image", data=form, content_type="multipart/form-data")


def _png_of_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_page_and_assets_are_local():
    _, c = _client()
    page = c.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for element in ("upload", "sample", "negative-mode", "show-prob", "show-std", "show-suggest",
                    "undo", "reset", "finish", "save-labels", "message", "click-count", "click-time"):
        assert f'id="{element}"' in html
    static = Path(gpcis.demo.__file__).parent / "static"
    texts = [html] + [p.read_text() for p in static.iterdir()]
    for t in texts:  # nothing fetched from the internet
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", t)
        assert "cdn" not in t.lower()
    for name in ("app.js", "style.css"):
        assert c.get(f"/static/{name}").status_code == 200
    info = c.get("/api/info").get_json()
    assert info["method"] == "colour" and "astronaut" in info["samples"] and info["error"] is None


def test_click_undo_finish_save_flow():
    img, red, blue = two_squares()
    seg = ColourSegmenter()
    app, c = _client(lambda: seg)
    st = _upload(c, encode_png(img)).get_json()
    sid = st["session"]
    assert (st["width"], st["height"]) == (64, 48) and st["num_clicks"] == 0 and st["layers"]["mask"] is None
    st = c.post("/api/click", json={"session": sid, "row": 15, "col": 15, "positive": True}).get_json()
    assert st["num_clicks"] == 1 and st["area"] == red.sum() and st["time_ms"] >= 0
    layer = _png_of_data_url(st["layers"]["mask"])
    np.testing.assert_array_equal(layer[..., 3] > 0, red)
    assert st["has_std"] and st["layers"]["std"] and st["layers"]["prob"]
    assert st["suggestion"] is not None and st["suggestion"]["source"] == "std"
    st = c.post("/api/click", json={"session": sid, "row": 30, "col": 45, "positive": True}).get_json()
    assert st["area"] == red.sum() + blue.sum() and st["clicks"][1] == {"row": 30, "col": 45, "positive": True}
    st = c.post("/api/undo", json={"session": sid}).get_json()
    assert st["num_clicks"] == 1 and st["area"] == red.sum()
    st = c.post("/api/finish", json={"session": sid}).get_json()
    assert st["num_objects"] == 1 and st["num_clicks"] == 0
    st = c.post("/api/click", json={"session": sid, "row": 30, "col": 45, "positive": True}).get_json()
    resp = c.get(f"/api/save?session={sid}&kind=labels")
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert "attachment" in resp.headers["Content-Disposition"]
    labels = np.asarray(Image.open(io.BytesIO(resp.data)))
    np.testing.assert_array_equal(labels, red * 1 + blue * 2)
    cur = np.asarray(Image.open(io.BytesIO(c.get(f"/api/save?session={sid}&kind=current").data)))
    np.testing.assert_array_equal(cur, blue * 255)
    st = c.post("/api/reset", json={"session": sid}).get_json()
    assert st["num_clicks"] == 0 and st["num_objects"] == 1
    st = c.post("/api/reset_all", json={"session": sid}).get_json()
    assert st["num_objects"] == 0 and st["layers"]["mask"] is None


def test_sample_and_session_reuse():
    made = []

    def factory():
        made.append(ColourSegmenter(with_std=False))
        return made[-1]

    app, c = _client(factory, max_side=200)
    st = c.post("/api/image", data={"sample": "shapes"}).get_json()
    assert (st["original_width"], st["original_height"]) == (480, 320)
    assert (st["width"], st["height"]) == (200, 133) and st["image"].startswith("data:image/jpeg")
    st = c.post("/api/click", json={"session": st["session"], "row": 60, "col": 60}).get_json()
    assert st["has_std"] is False and st["layers"]["std"] is None and st["suggestion"]["source"] == "probability"
    full = np.asarray(Image.open(io.BytesIO(c.get(f"/api/save?session={st['session']}&kind=current").data)))
    assert full.shape == (320, 480)  # saved at the original size
    st2 = c.post("/api/image", data={"sample": "coffee", "session": st["session"]}).get_json()
    assert st2["session"] == st["session"] and st2["num_clicks"] == 0
    assert len(made) == 1  # the preloaded instance, reused for the second image


def test_errors_are_json_messages():
    app, c = _client(max_pixels=1000, max_upload_bytes=200_000)
    r = _upload(c, b"this is not an image", "notes.txt")
    assert r.status_code == 400 and "not a readable image" in r.get_json()["error"]
    big = encode_png(np.zeros((40, 40, 3), np.uint8))  # 1600 px > 1000
    r = _upload(c, big)
    assert r.status_code == 413 and "too large" in r.get_json()["error"]
    r = _upload(c, b"\0" * 300_000, "huge.png")
    assert r.status_code == 413 and "too large" in r.get_json()["error"]
    r = c.post("/api/image", data={"sample": "nope"})
    assert r.status_code == 400 and "unknown sample" in r.get_json()["error"]
    r = c.post("/api/image", data={})
    assert r.status_code == 400 and "choose an image" in r.get_json()["error"]
    r = c.post("/api/click", json={"session": "gone", "row": 1, "col": 1})
    assert r.status_code == 404 and "open the image again" in r.get_json()["error"]
    r = c.post("/api/undo", json={})
    assert r.status_code == 400 and "session" in r.get_json()["error"]
    sid = _upload(c, encode_png(np.zeros((20, 30, 3), np.uint8))).get_json()["session"]
    r = c.post("/api/click", json={"session": sid, "row": 20, "col": 0})
    assert r.status_code == 400 and "outside the image" in r.get_json()["error"]
    r = c.post("/api/click", json={"session": sid, "row": "x", "col": 0})
    assert r.status_code == 400 and "integers" in r.get_json()["error"]
    for row in (10.7, True, float("inf")):  # not a pixel index (inf was a 500: OverflowError)
        r = c.post("/api/click", data=json.dumps({"session": sid, "row": row, "col": 0}),
                   content_type="application/json")
        assert r.status_code == 400 and "integers" in r.get_json()["error"], row
    r = c.post("/api/click", json=[1, 2])  # not an object (was a 500: AttributeError)
    assert r.status_code == 400 and "JSON object" in r.get_json()["error"]
    r = c.post("/api/click", json={"session": sid, "row": 1, "col": 1, "positive": "yes"})
    assert r.status_code == 400
    r = c.post("/api/finish", json={"session": sid})
    assert r.status_code == 400 and "nothing to finish" in r.get_json()["error"]
    r = c.get(f"/api/save?session={sid}&kind=labels")
    assert r.status_code == 400 and "nothing to save" in r.get_json()["error"]
    r = c.get(f"/api/save?session={sid}&kind=other")
    assert r.status_code == 400 and "kind" in r.get_json()["error"]
    assert c.get("/api/nothing").get_json()["error"]


def test_method_that_does_not_load_or_crashes():
    def broken():
        raise ValueError("--checkpoint bad.pt: could not load the model (bad magic)")

    app, c = _client(broken)
    assert "bad magic" in c.get("/api/info").get_json()["error"]
    r = c.post("/api/image", data={"sample": "shapes"})
    assert r.status_code == 503 and "bad magic" in r.get_json()["error"]

    class Crashing(ColourSegmenter):
        def predict(self, clicks, prev_mask=None):
            raise RuntimeError("out of memory")

    app, c = _client(Crashing)
    sid = c.post("/api/image", data={"sample": "shapes"}).get_json()["session"]
    r = c.post("/api/click", json={"session": sid, "row": 5, "col": 5})
    assert r.status_code == 500 and "out of memory" in r.get_json()["error"]
    assert c.get("/api/info").status_code == 200  # the server lives on


def test_checkpoint_method_uses_its_own_suggestion(tmp_path):
    from gpcis import models
    from gpcis.models import checkpoint
    from gpcis.inference.cli import make_method_factory

    path = tmp_path / "tiny.pt"
    checkpoint.save_checkpoint(path, models.create_model("gpcis_tiny"))
    factory, name = make_method_factory(checkpoint=path)
    app, c = _client(factory, max_side=96)
    sid = c.post("/api/image", data={"sample": "shapes"}).get_json()["session"]
    st = c.post("/api/click", json={"session": sid, "row": 30, "col": 30}).get_json()
    assert st["num_clicks"] == 1 and st["has_std"]  # a GP model gives the posterior std
    assert st["suggestion"]["source"] == "method" and isinstance(st["suggestion"]["positive"], bool)


def test_a_click_for_a_replaced_image_is_refused_not_applied_to_the_new_one():
    """The page opened a new image in its session while a click for the old one was queued:
    the click came with the old coordinates and landed on the new image (200). Now a click
    echoes the image's id and is refused with 409 when it does not match; and any request
    that had fetched the replaced session is refused once it runs."""
    img, _, _ = two_squares()
    _, c = _client()
    first = _upload(c, encode_png(img)).get_json()
    sid, old_id = first["session"], first["image_id"]
    second = _upload(c, encode_png(img[:, ::-1].copy()), session=sid).get_json()
    assert second["session"] == sid and second["image_id"] != old_id
    r = c.post("/api/click", json={"session": sid, "image_id": old_id, "row": 15, "col": 15, "positive": True})
    assert r.status_code == 409 and "previous image" in r.get_json()["error"]
    assert c.post("/api/click", json={"session": sid, "image_id": second["image_id"], "row": 15, "col": 15,
                                      "positive": True}).status_code == 200
    # a request holding the replaced session object (it fetched it before the reopen) is
    # refused once it runs
    store = c.application.extensions["gpcis_demo"]["store"]
    sess = store.get(sid)
    third = _upload(c, encode_png(img), session=sid).get_json()
    assert sess.closed and not store.get(sid).closed
    store._items[sid] = sess  # as if the request had fetched it before the reopen
    r = c.post("/api/click", json={"session": sid, "row": 15, "col": 15, "positive": True})
    assert r.status_code == 409 and "replaced by another one" in r.get_json()["error"]
    r = c.get(f"/api/save?session={sid}&kind=labels&image_id={third['image_id']}")
    assert r.status_code == 409


def test_a_refused_image_leaves_the_tabs_current_image_usable():
    """Opening an image under 2 x 2 in the same tab closed the session before the open
    failed: every later click, undo and save of the image still shown answered 409."""
    from gpcis.baselines import create_method

    img, _, _ = two_squares()
    _, c = _client(factory=lambda: create_method("grabcut"))
    opened = _upload(c, encode_png(img)).get_json()
    sid, image_id = opened["session"], opened["image_id"]
    assert c.post("/api/click", json={"session": sid, "image_id": image_id, "row": 15, "col": 15}).status_code == 200
    r = _upload(c, encode_png(np.zeros((1, 7, 3), np.uint8)), session=sid)
    assert r.status_code == 400 and "too small" in r.get_json()["error"]
    r = c.post("/api/click", json={"session": sid, "image_id": image_id, "row": 16, "col": 16})
    assert r.status_code == 200 and r.get_json()["num_clicks"] == 2
    assert c.post("/api/undo", json={"session": sid, "image_id": image_id}).status_code == 200
    assert c.get(f"/api/save?session={sid}&kind=current&image_id={image_id}").status_code == 200

    class FailsOnSecondImage(ColourSegmenter):
        opened = 0

        def set_image(self, image):
            FailsOnSecondImage.opened += 1
            if FailsOnSecondImage.opened == 2:
                raise ValueError("cannot take this image")
            super().set_image(image)

    _, c = _client(factory=FailsOnSecondImage)
    opened = _upload(c, encode_png(img)).get_json()
    r = _upload(c, encode_png(img[:, ::-1].copy()), session=opened["session"])
    assert r.status_code == 400 and "cannot take this image" in r.get_json()["error"]
    r = c.post("/api/click", json={"session": opened["session"], "image_id": opened["image_id"], "row": 15, "col": 15})
    assert r.status_code == 200  # the method was given the old image back


def test_limits_of_a_session_are_clear_errors():
    img, _, _ = two_squares()
    _, c = _client(max_clicks=2)
    sid = _upload(c, encode_png(img)).get_json()["session"]
    for _ in range(2):
        assert c.post("/api/click", json={"session": sid, "row": 15, "col": 15}).status_code == 200
    r = c.post("/api/click", json={"session": sid, "row": 16, "col": 16})
    assert r.status_code == 400 and "at most 2 clicks per object" in r.get_json()["error"]
    # an image under 2 x 2 pixels: 400 with the method's message (was a 500)
    from gpcis.baselines import create_method

    _, c = _client(factory=lambda: create_method("grabcut"))
    r = _upload(c, encode_png(np.zeros((1, 7, 3), np.uint8)))
    assert r.status_code == 400 and "too small" in r.get_json()["error"]
    with pytest.raises(ValueError, match="max_side"):
        DemoConfig(max_side=8)


def test_a_non_finite_std_does_not_break_the_json():
    """std.max() of NaN went out as the bare token NaN, which JSON parsers refuse."""
    from gpcis.demo.app import state
    from gpcis.demo.session import AnnotationSession
    from gpcis.inference.base import PredictionResult

    img, _, _ = two_squares()

    class NaNStd(ColourSegmenter):
        def predict(self, clicks, prev_mask=None):
            r = super().predict(clicks, prev_mask)
            return PredictionResult(r.mask, r.prob, np.full(r.prob.shape, np.nan, np.float32))

    sess = AnnotationSession.open(NaNStd(), img)
    sess.add_click(Click(15, 15, True))
    out = state("s", sess)
    assert out["std_max"] is None
    json.loads(json.dumps(out, allow_nan=False))
