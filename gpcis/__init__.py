"""gpcis: interactive image segmentation as Gaussian-process classification (GPCIS, CVPR 2023).

The user API: :func:`create_model`, :func:`list_models`, :class:`Predictor`, :class:`Click`.
The GP layer, usable on any features, lives in :mod:`gpcis.gp`; the classic and
training-free methods in :mod:`gpcis.baselines`; data, training and evaluation in
:mod:`gpcis.data`, :mod:`gpcis.training`, :mod:`gpcis.evaluation`.
"""

__version__ = "0.1.0"

from gpcis.clicks import Click
from gpcis.inference.predictor import Predictor
from gpcis.models.registry import create_model, list_models

__all__ = ["Click", "Predictor", "create_model", "list_models", "__version__"]
