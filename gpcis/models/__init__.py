"""Models: click encoder + backbone + segmentation head, the registry and checkpoints.

>>> from gpcis.models import create_model
>>> model = create_model("gpcis_tiny")          # or create_model(checkpoint="run/best.pt")

Released weights shipped with the package (see :mod:`gpcis.models.released`)::

    model = create_model("gpcis_efflite0", pretrained_checkpoint=True)
"""

from gpcis.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpcis.models.click_encoder import Conv1S
from gpcis.models.heads import ConvHead, GPSegHead, HeadOutput, SegHead
from gpcis.models.model import ModelConfig, ModelOutput, SegmentationModel
from gpcis.models.registry import create_model, list_models, model_config, model_from_checkpoint
from gpcis.models.released import (
    RELEASED_MODELS,
    available_released_models,
    default_released_checkpoint,
    default_released_model,
    released_checkpoint,
)

__all__ = [
    "CheckpointError",
    "Conv1S",
    "ConvHead",
    "GPSegHead",
    "HeadOutput",
    "ModelConfig",
    "ModelOutput",
    "RELEASED_MODELS",
    "SegHead",
    "SegmentationModel",
    "available_released_models",
    "create_model",
    "default_released_checkpoint",
    "default_released_model",
    "list_models",
    "load_checkpoint",
    "model_config",
    "model_from_checkpoint",
    "released_checkpoint",
    "save_checkpoint",
]
