"""The suggested next click: where the method is least sure of its answer.

Methods that know better expose ``suggest_click()`` (e.g. ``gpcis.Predictor``); for the
others :func:`suggest_from_uncertainty` picks a location from the prediction itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from gpcis.clicks import Click
from gpcis.inference.base import PredictionResult

__all__ = ["Suggestion", "suggest_from_uncertainty", "suggest_next_click"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suggestion:
    """A suggested next click.

    Attributes:
        row: 0-based pixel row.
        col: 0-based pixel column.
        source: ``"method"`` (from ``method.suggest_click()``), ``"std"`` (GP posterior
            uncertainty) or ``"probability"`` (closeness to the decision boundary only).
        positive: the label the method proposes, or ``None`` when the user should decide.
    """

    row: int
    col: int
    source: str
    positive: Optional[bool] = None


def uncertainty_score(prob: np.ndarray, std: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-pixel score ``4 p (1 - p)``, times ``std`` when given.

    ``4 p (1 - p)`` is 1 on the decision boundary ``p = 0.5`` and 0 where the method is
    certain; the GP posterior std adds how little the clicks constrain that pixel.

    Args:
        prob: ``(H, W)`` foreground probability.
        std: ``(H, W)`` posterior std of the latent function, or ``None``.

    Returns:
        ``(H, W)`` float32 score, ``>= 0``.
    """
    p = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
    score = 4.0 * p * (1.0 - p)
    if std is not None:
        score = score * np.maximum(np.asarray(std, dtype=np.float32), 0.0)
    return score


def suggest_from_uncertainty(
    prob: np.ndarray,
    std: Optional[np.ndarray] = None,
    clicks: Sequence[Click] = (),
    window: Optional[int] = None,
    exclusion: Optional[int] = None,
    min_score: float = 1e-3,
) -> Optional[Suggestion]:
    """Suggest the next click at the centre of the most uncertain region.

    The :func:`uncertainty_score` is averaged over a ``window x window`` box (so a region,
    not an isolated pixel, wins), pixels within ``exclusion`` of an existing click are
    excluded, and the argmax is returned (ties: the first in row-major order).

    Args:
        prob: ``(H, W)`` foreground probability.
        std: ``(H, W)`` posterior std, or ``None``.
        clicks: the clicks so far.
        window: box size in pixels (default ``max(3, min(H, W) // 16)``, odd).
        exclusion: radius around existing clicks (default ``max(5, min(H, W) // 20)``).
        min_score: below this smoothed score nothing is suggested.

    Returns:
        A :class:`Suggestion` (``positive=None``), or ``None`` when nothing is uncertain.
    """
    score = uncertainty_score(prob, std)
    if score.ndim != 2:
        raise ValueError(f"prob must be (H, W), got shape {score.shape}")
    h, w = score.shape
    if window is None:
        window = max(3, min(h, w) // 16) | 1
    if exclusion is None:
        exclusion = max(5, min(h, w) // 20)
    smooth = cv2.blur(score, (int(window), int(window)), borderType=cv2.BORDER_REFLECT)
    if clicks:
        rows = np.arange(h, dtype=np.float32)[:, None]
        cols = np.arange(w, dtype=np.float32)[None, :]
        for c in clicks:
            smooth[(rows - c.row) ** 2 + (cols - c.col) ** 2 <= exclusion**2] = 0.0
    idx = int(np.argmax(smooth))
    if not smooth.flat[idx] > min_score:
        return None
    r, c = divmod(idx, w)
    return Suggestion(row=r, col=c, source="std" if std is not None else "probability")


def _as_suggestion(obj: Any) -> Optional[Suggestion]:
    if obj is None:
        return None
    if isinstance(obj, Click):
        return Suggestion(obj.row, obj.col, "method", obj.positive)
    row, col = int(obj[0]), int(obj[1])
    positive = bool(obj[2]) if len(obj) > 2 else None
    return Suggestion(row, col, "method", positive)


def suggest_next_click(
    method: Any, result: Optional[PredictionResult], clicks: Sequence[Click]
) -> Optional[Suggestion]:
    """The method's own ``suggest_click()`` when it has one, else :func:`suggest_from_uncertainty`.

    Must be called right after ``method.predict(clicks)`` (a method's ``suggest_click``
    refers to its latest prediction). A failing ``suggest_click`` is logged and the
    uncertainty helper is used instead.
    """
    fn = getattr(method, "suggest_click", None)
    if callable(fn):
        try:
            return _as_suggestion(fn())
        except Exception as err:  # a suggestion is optional; never break a click over it
            log.warning("%s.suggest_click() failed (%s); using the uncertainty helper", type(method).__name__, err)
    if result is None:
        return None
    return suggest_from_uncertainty(result.prob, result.std, clicks)
