"""Inference: the predictor, zoom-in, and the interface shared with the baselines."""

from gpcis.inference.base import InteractiveSegmenter, PredictionResult, check_image
from gpcis.inference.predictor import Predictor
from gpcis.inference.zoom import ZoomConfig, ZoomIn

__all__ = ["InteractiveSegmenter", "PredictionResult", "Predictor", "ZoomConfig", "ZoomIn", "check_image"]
