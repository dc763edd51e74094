"""The browser demo (``gpcis demo``): a Flask app over any :class:`~gpcis.inference.base.InteractiveSegmenter`."""

from gpcis.demo.app import DemoConfig, create_app
from gpcis.demo.samples import list_samples, load_sample, shapes_image
from gpcis.demo.session import AnnotationSession, SessionStore, Step
from gpcis.demo.suggest import Suggestion, suggest_from_uncertainty, suggest_next_click

__all__ = [
    "AnnotationSession",
    "DemoConfig",
    "SessionStore",
    "Step",
    "Suggestion",
    "create_app",
    "list_samples",
    "load_sample",
    "shapes_image",
    "suggest_from_uncertainty",
    "suggest_next_click",
]
