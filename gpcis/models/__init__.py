"""Models: click encoder + backbone + segmentation head, the registry and checkpoints.

>>> from gpcis.models import create_model
>>> model = create_model("gpcis_tiny")          # or create_model(checkpoint="run/best.pt")
"""

from gpcis.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gpcis.models.click_encoder import Conv1S
from gpcis.models.heads import ConvHead, GPSegHead, HeadOutput, SegHead
from gpcis.models.model import ModelConfig, ModelOutput, SegmentationModel
from gpcis.models.registry import create_model, list_models, model_config

__all__ = [
    "CheckpointError",
    "Conv1S",
    "ConvHead",
    "GPSegHead",
    "HeadOutput",
    "ModelConfig",
    "ModelOutput",
    "SegHead",
    "SegmentationModel",
    "create_model",
    "list_models",
    "load_checkpoint",
    "model_config",
    "save_checkpoint",
]
