"""Backbones: deep-kernel feature extractors giving ``d`` channels at stride 4.

Build them by name with :func:`create_backbone` (``tiny``, ``resnet50``, ``hrnet18s``,
``segformer_b0``, ``efflite0``); see :class:`Backbone` for the interface.
"""

from gpcis.models.backbones.base import (
    Backbone,
    create_backbone,
    list_backbones,
    load_matching_state_dict,
    load_state_dict_file,
)
from gpcis.models.backbones.efflite import EffLiteBackbone, efficientnet_lite0_pretrained_state_dict
from gpcis.models.backbones.hrnet import HRNetBackbone
from gpcis.models.backbones.mit import MiTConfig, MixVisionTransformer, SegFormerBackbone
from gpcis.models.backbones.resnet_deeplab import ResNetDeepLab
from gpcis.models.backbones.tiny import TinyBackbone

__all__ = [
    "Backbone",
    "EffLiteBackbone",
    "HRNetBackbone",
    "MiTConfig",
    "MixVisionTransformer",
    "ResNetDeepLab",
    "SegFormerBackbone",
    "TinyBackbone",
    "create_backbone",
    "efficientnet_lite0_pretrained_state_dict",
    "list_backbones",
    "load_matching_state_dict",
    "load_state_dict_file",
]
