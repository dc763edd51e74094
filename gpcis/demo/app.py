"""The demo web application (Flask): a page and a small JSON API over
:class:`~gpcis.demo.session.AnnotationSession`.

Routes (all API answers are JSON; errors are ``{"error": message}`` with a 4xx/5xx status):

- ``GET /``: the page; ``GET /static/...``: its script and style (no CDN).
- ``GET /api/info``: method name, sample names, limits, and the method's load error if any.
- ``POST /api/image``: open an image, multipart ``file`` (upload) or form field ``sample``;
  optional ``session`` to reuse that session's method. Starts a new annotation.
- ``POST /api/click`` ``{session, row, col, positive[, image_id]}``; ``POST /api/undo |
  /api/reset | /api/reset_all | /api/finish`` ``{session[, image_id]}``: each answers the new
  :func:`state`; 409 when ``image_id`` (from the state) is not the session's current image,
  or when another image replaced this one while the request waited.
- ``GET /api/save?session=...&kind=labels|current``: PNG download at the original size
  (``labels``: indexed PNG, value ``k`` = object ``k``; ``current``: 0/255 mask).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np
from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from gpcis.clicks import Click
from gpcis.demo.render import data_url, encode_jpeg, encode_png, heatmap_layer, label_png, mask_layer, object_color
from gpcis.demo.samples import list_samples, load_sample
from gpcis.demo.session import AnnotationSession, SessionStore, resize_mask
from gpcis.inference.base import InteractiveSegmenter
from gpcis.inference.cli import ImageTooLargeError, decode_image

__all__ = ["DemoConfig", "create_app", "state"]

log = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent


@dataclass
class DemoConfig:
    """Settings of the demo server.

    Attributes:
        method_name: shown on the page.
        max_upload_bytes: larger uploads are refused (413).
        max_pixels: larger images are refused (413).
        max_side: images are downscaled so their longer side is at most this for
            segmentation (masks are saved at the original size); ``None``: never.
        max_sessions: sessions kept in memory (least recently used dropped).
        idle_s: a session unused this long is dropped (``None``: never).
        max_clicks: clicks per object (then finish or reset it).
        alpha: opacity of the mask fill.
    """

    method_name: str = "method"
    max_upload_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: Optional[int] = 1024
    max_sessions: int = 8
    idle_s: Optional[float] = 3600.0
    max_clicks: int = 100
    alpha: float = 0.5

    def __post_init__(self) -> None:
        if self.max_side is not None and self.max_side < 16:
            raise ValueError(f"max_side must be None or >= 16, got {self.max_side}")
        if self.max_clicks < 1:
            raise ValueError(f"max_clicks must be >= 1, got {self.max_clicks}")


class DemoError(Exception):
    """An error shown to the user: message and HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def state(session_id: str, sess: AnnotationSession, alpha: float = 0.5) -> dict[str, Any]:
    """The JSON state of a session: clicks, counts, timings and the image layers.

    Layers are PNG data URLs at the working resolution: ``mask`` (all objects, each in
    its colour; ``None`` when there is none), ``prob`` and ``std`` (heat maps of the
    current object; ``std`` only when the method gives it).
    """
    step = sess.current
    masks = sess.all_masks()
    colors = [object_color(k) for k in range(1, len(masks) + 1)]
    layers: dict[str, Optional[str]] = {"mask": None, "prob": None, "std": None}
    if masks:
        layers["mask"] = data_url(encode_png(mask_layer(masks, colors, alpha)))
    std_max = None
    if step is not None:
        layers["prob"] = data_url(encode_png(heatmap_layer(np.asarray(step.result.prob), vmax=1.0)))
        if step.result.std is not None:
            std = np.asarray(step.result.std, dtype=np.float32)
            finite = std[np.isfinite(std)]
            std_max = float(finite.max()) if finite.size else None  # NaN is not JSON
            layers["std"] = data_url(encode_png(heatmap_layer(std, colormap=cv2.COLORMAP_INFERNO)))
    area = int(sess.current_mask.sum()) if step is not None else 0
    sug = step.suggestion if step is not None else None
    return {
        "session": session_id,
        "image_id": sess.token,
        "width": sess.size[1],
        "height": sess.size[0],
        "clicks": [{"row": c.row, "col": c.col, "positive": c.positive} for c in sess.clicks],
        "num_clicks": len(sess.clicks),
        "num_objects": len(sess.objects),
        "object_color": "#%02x%02x%02x" % object_color(len(sess.objects) + 1),
        "area": area,
        "time_ms": None if step is None else 1000.0 * step.time_s,
        "mean_time_ms": None if sess.mean_time_s is None else 1000.0 * sess.mean_time_s,
        "has_std": step is not None and step.result.std is not None,
        "std_max": std_max,
        "suggestion": None
        if sug is None
        else {"row": sug.row, "col": sug.col, "source": sug.source, "positive": sug.positive},
        "layers": layers,
    }


def create_app(
    method_factory: Callable[[], InteractiveSegmenter],
    config: Optional[DemoConfig] = None,
    preload: bool = True,
) -> Flask:
    """Build the demo application.

    Args:
        method_factory: returns a fresh :class:`InteractiveSegmenter`; called once per
            session (each user/tab gets its own instance). Its exceptions (a checkpoint
            that does not load) become error messages on the page.
        config: server settings.
        preload: call the factory once now, so that a method that fails to load is
            reported at start (on the page and in :attr:`Flask.config` ``GPCIS_LOAD_ERROR``)
            and the first image opens fast.

    Returns:
        The Flask app; its state lives in ``app.extensions["gpcis_demo"]``.
    """
    cfg = config or DemoConfig()
    app = Flask(
        "gpcis.demo",
        root_path=str(_HERE),
        static_folder=str(_HERE / "static"),
        template_folder=str(_HERE / "templates"),
    )
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_upload_bytes
    app.config["GPCIS_LOAD_ERROR"] = None
    store = SessionStore(cfg.max_sessions, cfg.idle_s)
    spare: list[InteractiveSegmenter] = []
    spare_lock = threading.Lock()
    app.extensions["gpcis_demo"] = {"store": store, "config": cfg}

    def new_method() -> InteractiveSegmenter:
        with spare_lock:
            if spare:
                return spare.pop()
        try:
            method = method_factory()
        except Exception as err:
            msg = f"could not create the segmentation method: {err}"
            app.config["GPCIS_LOAD_ERROR"] = msg
            log.exception("method factory failed")
            raise DemoError(msg, 503) from err
        app.config["GPCIS_LOAD_ERROR"] = None
        return method

    if preload:
        try:
            spare.append(new_method())
        except DemoError:
            pass  # reported on the page through /api/info

    def json_body() -> dict[str, Any]:
        """The request's JSON object (``{}`` without one; anything but an object is an error)."""
        data = request.get_json(silent=True)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise DemoError(f"request body: expected a JSON object, got {type(data).__name__}", 400)
        return data

    def get_session() -> tuple[str, AnnotationSession]:
        data = json_body()
        sid = data.get("session") or request.args.get("session") or request.form.get("session")
        if not sid:
            raise DemoError("session: missing; open an image first", 400)
        try:
            return sid, store.get(str(sid))
        except KeyError:
            raise DemoError("session expired or unknown: open the image again", 404) from None

    def check_open(sess: AnnotationSession, image_id: Any = None) -> None:
        """Under ``sess.lock``: refuse an action on an image another one replaced, or a click
        meant for another image than this session's (``image_id`` given and different)."""
        if sess.closed:
            raise DemoError("this image was replaced by another one in this tab: open the image again", 409)
        if image_id is not None and image_id != sess.token:
            raise DemoError("this request was meant for the previous image of this tab: open the image again", 409)

    # ------------------------------------------------------------------ errors
    @app.errorhandler(DemoError)
    def _demo_error(err: DemoError) -> tuple[Response, int]:
        return jsonify(error=err.message), err.status

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return err
        msg = err.description or err.name
        if err.code == 413:
            msg = f"the upload is too large (limit {cfg.max_upload_bytes // (1024 * 1024)} MiB)"
        return jsonify(error=msg), err.code or 500

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> tuple[Response, int]:
        log.exception("demo request failed")
        return jsonify(error=f"internal error: {type(err).__name__}: {err}"), 500

    # ------------------------------------------------------------------ routes
    @app.get("/")
    def index() -> str:
        return render_template("index.html", method_name=cfg.method_name, samples=list_samples())

    @app.get("/api/info")
    def info() -> Response:
        return jsonify(
            method=cfg.method_name,
            samples=list_samples(),
            max_upload_bytes=cfg.max_upload_bytes,
            max_pixels=cfg.max_pixels,
            max_side=cfg.max_side,
            error=app.config["GPCIS_LOAD_ERROR"],
        )

    @app.post("/api/image")
    def open_image() -> Response:
        upload = request.files.get("file")
        sample = request.form.get("sample")
        if upload is not None and upload.filename:
            try:
                image = decode_image(upload.read(), f"upload {upload.filename!r}", cfg.max_pixels)
            except ImageTooLargeError as err:
                raise DemoError(str(err), 413) from err
            except ValueError as err:
                raise DemoError(str(err), 400) from err
            name = upload.filename
        elif sample:
            try:
                image = load_sample(sample)
            except ValueError as err:
                raise DemoError(str(err), 400) from err
            name = sample
        else:
            raise DemoError("choose an image file or a sample first", 400)
        old_sid = request.form.get("session")
        old = None
        if old_sid:
            try:
                old = store.get(old_sid)
            except KeyError:
                old = None
        if old is not None:
            with old.lock:
                # the old image stays usable if this one is refused: checked before the method
                # sees it, and a method that fails on it gets the old image back
                try:
                    work = AnnotationSession.working_image(image, cfg.max_side)
                except ValueError as err:  # e.g. an image under 2 x 2 pixels
                    raise DemoError(str(err), 400) from err
                try:
                    sess = AnnotationSession.start(old.method, work, image.shape[:2])
                except Exception as err:
                    old.method.set_image(old.image)
                    if isinstance(err, ValueError):
                        raise DemoError(str(err), 400) from err
                    raise
                # the method holds the new image now: nothing may run on the old session (a
                # request that fetched it before is refused once it gets the lock)
                old.closed = True
            sid = store.put(sess, old_sid)
        else:
            method = new_method()
            try:
                sess = AnnotationSession.open(method, image, cfg.max_side)
            except ValueError as err:
                with spare_lock:
                    spare.append(method)  # unused: the next image takes it
                raise DemoError(str(err), 400) from err
            sid = store.put(sess)
        out = state(sid, sess, cfg.alpha)
        out.update(
            name=name,
            image=data_url(encode_jpeg(sess.image), "image/jpeg"),
            original_width=int(image.shape[1]),
            original_height=int(image.shape[0]),
            set_image_ms=1000.0 * sess.set_image_s,
        )
        return jsonify(out)

    @app.post("/api/click")
    def click() -> Response:
        sid, sess = get_session()
        data = json_body()
        row, col = data.get("row"), data.get("col")
        # JSON integers only: 10.7 is not a pixel, true is not 1, Infinity not a number here
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (row, col)):
            raise DemoError(f"click: row and col must be integers, got {row!r}, {col!r}", 400)
        positive = data.get("positive", True)
        if not isinstance(positive, bool):
            raise DemoError("click: positive must be true or false", 400)
        with sess.lock:
            check_open(sess, data.get("image_id"))
            if len(sess.clicks) >= cfg.max_clicks:
                raise DemoError(f"click: at most {cfg.max_clicks} clicks per object; finish or reset it", 400)
            try:
                sess.add_click(Click(row, col, positive))
            except ValueError as err:
                raise DemoError(f"click: {err}", 400) from err
            out = state(sid, sess, cfg.alpha)
        store.touch(sid)  # idle time counts from the end of a request
        return jsonify(out)

    def action(fn: Callable[[AnnotationSession], Any]) -> Response:
        sid, sess = get_session()
        with sess.lock:
            check_open(sess, json_body().get("image_id"))
            try:
                fn(sess)
            except ValueError as err:
                raise DemoError(str(err), 400) from err
            out = state(sid, sess, cfg.alpha)
        store.touch(sid)
        return jsonify(out)

    @app.post("/api/undo")
    def undo() -> Response:
        return action(AnnotationSession.undo)

    @app.post("/api/reset")
    def reset() -> Response:
        return action(AnnotationSession.reset)

    @app.post("/api/reset_all")
    def reset_all() -> Response:
        return action(AnnotationSession.reset_all)

    @app.post("/api/finish")
    def finish() -> Response:
        return action(AnnotationSession.finish)

    @app.get("/api/save")
    def save() -> Response:
        sid, sess = get_session()
        kind = request.args.get("kind", "labels")
        with sess.lock:
            check_open(sess, request.args.get("image_id") or None)
            if kind == "labels":
                labels = sess.label_map(original_size=True)
                if not labels.any():
                    raise DemoError("nothing to save yet: segment an object first", 400)
                if labels.max() > 255:
                    raise DemoError("more than 255 objects cannot be saved as one PNG", 400)
                data, fname = label_png(labels), "masks.png"
            elif kind == "current":
                mask = sess.current_mask
                if mask is None:
                    raise DemoError("nothing to save yet: the current object has no clicks", 400)
                full = resize_mask(mask, sess.original_size)
                data, fname = encode_png(full.astype(np.uint8) * 255), "mask.png"
            else:
                raise DemoError(f"kind: expected 'labels' or 'current', got {kind!r}", 400)
        return Response(
            data,
            mimetype="image/png",
            headers={"Content-Disposition": f'attachment; filename="{fname}"'},
        )

    return app
