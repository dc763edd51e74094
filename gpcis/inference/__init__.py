"""Inference: the predictor and the interface shared with the baselines."""

from gpcis.inference.base import InteractiveSegmenter, PredictionResult

__all__ = ["InteractiveSegmenter", "PredictionResult"]
