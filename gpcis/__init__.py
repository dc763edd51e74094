"""gpcis: interactive image segmentation as Gaussian-process classification (GPCIS, CVPR 2023).

The user API: :func:`create_model`, :func:`list_models`, :class:`Predictor`, :class:`Click`.
The GP layer, usable on any features, lives in :mod:`gpcis.gp`.
"""

__version__ = "0.1.0"

from gpcis.clicks import Click

__all__ = ["Click", "__version__"]
