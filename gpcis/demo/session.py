"""Annotation state of one demo user: one image, its finished objects, and the clicks,
predictions and undo history of the object being segmented. No web code here."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np

from gpcis.clicks import Click, check_clicks_in_image
from gpcis.demo.suggest import Suggestion, suggest_next_click
from gpcis.inference.base import InteractiveSegmenter, PredictionResult, check_image

__all__ = ["Step", "AnnotationSession", "SessionStore", "fit_image", "resize_mask", "MAX_OBJECTS"]

#: finished objects per image: the label PNG of "Save masks" holds 255
MAX_OBJECTS = 255


def fit_image(image: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """Downscale ``image`` (area interpolation) so that its longer side is at most ``max_side``.

    Returns the image itself when it already fits or ``max_side`` is ``None``.
    """
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    # at least 2 pixels a side where the image has them (a 3000 x 2 strip is still 2 high):
    # the methods refuse images under 2 x 2
    size = (max(min(2, w), round(w * s)), max(min(2, h), round(h * s)))  # cv2 wants (width, height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(h, w)`` bool mask to ``size = (H, W)``: bilinear on 0/1, then ``> 0.5``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == tuple(size):
        return mask.copy()
    up = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return up > 0.5


@dataclass
class Step:
    """The state after one click of the current object.

    Attributes:
        clicks: every click of the current object so far.
        result: the method's prediction from those clicks; ``None`` for a step that is no
            longer the latest (only its mask is kept: a full prediction with its
            probability and std maps is ~9.5 MB at 1024^2, and a session held every click's;
            :meth:`AnnotationSession.undo` predicts it again when it becomes the latest).
        suggestion: the suggested next click, or ``None``.
        time_s: wall time of ``predict`` (seconds).
        mask: ``(H, W)`` bool, the prediction's mask (kept when ``result`` is dropped).
        prob8: ``(H, W)`` uint8, the prediction's probability in 255ths (kept when
            ``result`` is dropped; 1 byte a pixel): the next click's previous mask.
    """

    clicks: tuple[Click, ...]
    result: Optional[PredictionResult]
    suggestion: Optional[Suggestion]
    time_s: float
    mask: Optional[np.ndarray] = None
    prob8: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.mask is None and self.result is not None:
            self.mask = np.asarray(self.result.mask, dtype=bool)
        if self.prob8 is None and self.result is not None:
            prob = np.nan_to_num(np.asarray(self.result.prob, dtype=np.float32), nan=0.0)
            self.prob8 = np.round(np.clip(prob, 0.0, 1.0) * 255.0).astype(np.uint8)

    @property
    def prev_prob(self) -> Optional[np.ndarray]:
        """The probability map the next click is predicted from, ``(H, W)`` float32 in [0, 1]
        (:attr:`prob8` / 255: the same input on undo as on the click)."""
        return None if self.prob8 is None else self.prob8.astype(np.float32) / 255.0


@dataclass
class AnnotationSession:
    """One image being annotated with one method instance.

    Objects are segmented one after another: clicks go to the current object; ``finish``
    keeps its mask and starts the next. All masks are at the working resolution of
    ``image``; :meth:`label_map` can scale them to ``original_size``.

    Attributes:
        method: the segmentation method (``set_image`` is called by :meth:`open`).
        image: ``(H, W, 3)`` uint8 RGB working image.
        original_size: ``(H0, W0)`` of the image as opened (before downscaling).
        objects: finished object masks, ``(H, W)`` bool each.
        history: one :class:`Step` per click of the current object.
        set_image_s: wall time of ``set_image`` (seconds).
        token: identifies this image's annotation (a client echoes it with its clicks, so a
            click meant for the previous image is refused after a new one was opened).
        closed: set when another image replaced this one in its session (its method now
            holds the other image): every later action is refused.
    """

    method: InteractiveSegmenter
    image: np.ndarray
    original_size: tuple[int, int]
    objects: list[np.ndarray] = field(default_factory=list)
    history: list[Step] = field(default_factory=list)
    set_image_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(8))
    closed: bool = False

    @staticmethod
    def working_image(image: np.ndarray, max_side: Optional[int] = None) -> np.ndarray:
        """``image`` checked and downscaled to ``max_side``: what :meth:`open` gives the method.

        Raises:
            ValueError: not ``(H, W, 3)`` uint8 RGB, or under 2 x 2 pixels (after downscaling).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        work = np.ascontiguousarray(fit_image(image, max_side))
        check_image(work)
        return work

    @classmethod
    def open(
        cls, method: InteractiveSegmenter, image: np.ndarray, max_side: Optional[int] = None
    ) -> "AnnotationSession":
        """Start annotating ``image`` (``(H, W, 3)`` uint8 RGB), downscaled to ``max_side``.

        The image is checked (:meth:`working_image`) before the method sees it, so a refused
        image leaves the method as it was.
        """
        image = np.asarray(image)
        return cls.start(method, cls.working_image(image, max_side), image.shape[:2])

    @classmethod
    def start(cls, method: InteractiveSegmenter, work: np.ndarray,
              original_size: tuple[int, int]) -> "AnnotationSession":
        """Start annotating a working image already made by :meth:`working_image` (whose
        original was ``original_size``): ``method.set_image`` and its timing."""
        t0 = time.perf_counter()
        method.set_image(work)
        return cls(method, work, tuple(original_size), set_image_s=time.perf_counter() - t0)

    # ---------------------------------------------------------------- state
    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the working image."""
        return self.image.shape[0], self.image.shape[1]

    @property
    def current(self) -> Optional[Step]:
        """The latest step of the current object, ``None`` before its first click."""
        return self.history[-1] if self.history else None

    @property
    def clicks(self) -> tuple[Click, ...]:
        """Clicks of the current object."""
        return self.current.clicks if self.current else ()

    @property
    def current_mask(self) -> Optional[np.ndarray]:
        """``(H, W)`` bool mask of the current object, ``None`` before its first click."""
        return None if self.current is None else self.current.mask

    @property
    def mean_time_s(self) -> Optional[float]:
        """Mean ``predict`` time over the current object's clicks."""
        if not self.history:
            return None
        return float(np.mean([s.time_s for s in self.history]))

    # ---------------------------------------------------------------- actions
    def add_click(self, click: Click) -> Step:
        """Add a click to the current object and predict.

        The previous prediction's probability map (in 255ths, :attr:`Step.prob8`) is passed
        as ``prev_mask``, as RITM's predictor and the evaluation loop feed the previous
        probabilities back.

        Raises:
            ValueError: the click lies outside the image, or the method returns arrays of
                the wrong shape.
        """
        check_clicks_in_image([click], *self.size)
        clicks = self.clicks + (click,)
        prev = None if self.current is None else self.current.prev_prob
        t0 = time.perf_counter()
        result = self.method.predict(list(clicks), prev_mask=prev)
        dt = time.perf_counter() - t0
        for name in ("mask", "prob", "std"):
            arr = getattr(result, name)
            if arr is not None and np.asarray(arr).shape != self.size:
                raise ValueError(
                    f"the method returned {name} of shape {np.asarray(arr).shape} for a {self.size} image"
                )
        suggestion = suggest_next_click(self.method, result, clicks)
        step = Step(clicks, result, suggestion, dt)
        if self.history:
            self.history[-1].result = None  # only the latest step keeps its full prediction
        self.history.append(step)
        return step

    def undo(self) -> bool:
        """Remove the last click of the current object (restoring the prediction before it).

        The restored step's full prediction is computed again from its clicks and the
        probabilities before it -- the inputs it was made from, so a deterministic method gives it back
        (a model's std outside its zoom-in crop may differ: it came from the prediction
        before). If that fails, nothing is undone.

        Returns:
            ``False`` when there was nothing to undo.
        """
        if not self.history:
            return False
        last = self.history.pop()
        step = self.current
        if step is not None and step.result is None:
            prev = self.history[-2].prev_prob if len(self.history) > 1 else None
            try:
                step.result = self.method.predict(list(step.clicks), prev_mask=prev)
            except BaseException:
                self.history.append(last)
                raise
        return True

    def reset(self) -> None:
        """Clear the current object's clicks (finished objects stay)."""
        self.history.clear()

    def reset_all(self) -> None:
        """Clear the current object and every finished object."""
        self.history.clear()
        self.objects.clear()

    def finish(self) -> int:
        """Keep the current object's mask and start the next object.

        Returns:
            The number of finished objects.

        Raises:
            ValueError: the current object has no clicks or an empty mask, or 254 objects
                are finished already (with the current one, the 255 one label PNG holds).
        """
        mask = self.current_mask
        if mask is None:
            raise ValueError("nothing to finish: click on the object first")
        if not mask.any():
            raise ValueError("nothing to finish: the current mask is empty")
        if len(self.objects) >= MAX_OBJECTS - 1:  # the next (current) object is the last one a label PNG holds
            raise ValueError(f"at most {MAX_OBJECTS} objects per image (one label PNG): save them and open the image again")
        self.objects.append(mask.copy())
        self.history.clear()
        return len(self.objects)

    def all_masks(self) -> list[np.ndarray]:
        """Finished masks, then the current one when it has clicks."""
        masks = list(self.objects)
        if self.current_mask is not None:
            masks.append(self.current_mask)
        return masks

    def label_map(self, original_size: bool = True) -> np.ndarray:
        """Label map of all objects (finished ones and the current one): 0 = background,
        ``k`` = object ``k`` in the order they were made; a later object wins overlaps.

        Args:
            original_size: scale the masks back to the image as it was opened.

        Returns:
            ``(H, W)`` uint8 (``uint16`` beyond 255 objects).
        """
        masks = self.all_masks()
        size = self.original_size if original_size else self.size
        dtype = np.uint8 if len(masks) < 256 else np.uint16
        labels = np.zeros(size, dtype)
        for k, m in enumerate(masks, start=1):
            labels[resize_mask(m, size)] = k
        return labels


class SessionStore:
    """Sessions keyed by random ids, at most ``max_sessions`` (least recently used dropped),
    each dropped after ``idle_s`` seconds without use.

    Thread safe; each session also carries its own lock for its actions.

    Args:
        max_sessions: sessions kept.
        idle_s: a session unused this long is dropped (``None``: never).
        clock: the time source (seconds; for tests).
    """

    def __init__(self, max_sessions: int = 8, idle_s: Optional[float] = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if idle_s is not None and not idle_s > 0:
            raise ValueError(f"idle_s must be > 0 or None, got {idle_s}")
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self._clock = clock
        self._items: OrderedDict[str, AnnotationSession] = OrderedDict()
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def _expire(self, now: float) -> None:
        """Drop the sessions idle longer than ``idle_s`` (the oldest come first); under the lock."""
        if self.idle_s is None:
            return
        while self._items:
            sid = next(iter(self._items))
            if now - self._used[sid] <= self.idle_s:
                break
            del self._items[sid], self._used[sid]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, session_id: str) -> AnnotationSession:
        """The session ``session_id``.

        Raises:
            KeyError: unknown or expired id.
        """
        with self._lock:
            now = self._clock()
            self._expire(now)
            sess = self._items[session_id]
            self._items.move_to_end(session_id)
            self._used[session_id] = now
            return sess

    def touch(self, session_id: str) -> None:
        """Mark ``session_id`` as used now (at the end of a request, so that a long request
        does not count as idle time); nothing if it is gone. It also moves to the end of the
        order, which :meth:`_expire` reads as the order of last use."""
        with self._lock:
            if session_id in self._items:
                self._items.move_to_end(session_id)
                self._used[session_id] = self._clock()

    def put(self, session: AnnotationSession, session_id: Optional[str] = None) -> str:
        """Store ``session`` under ``session_id`` (a new random id when ``None``)."""
        sid = session_id or secrets.token_urlsafe(16)
        with self._lock:
            now = self._clock()
            self._expire(now)
            self._items[sid] = session
            self._items.move_to_end(sid)
            self._used[sid] = now
            while len(self._items) > self.max_sessions:
                old, _ = self._items.popitem(last=False)
                del self._used[old]
        return sid

    def method_of(self, session_id: Optional[str], factory: Callable[[], InteractiveSegmenter]) -> InteractiveSegmenter:
        """The method instance of an existing session (reused for a new image), else a new one."""
        if session_id:
            with self._lock:
                sess = self._items.get(session_id)
            if sess is not None:
                return sess.method
        return factory()
