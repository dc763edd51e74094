"""The model registry: every network the paper compares, created by name.

``gpcis_<backbone>`` models use the GP head (GPCIS), ``ritm_<backbone>`` their RITM twins
with the 1x1 conv classifier on the same backbone and click encoder.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

from gpcis.gp import GPHeadConfig
from gpcis.models import released as _released
from gpcis.models.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from gpcis.models.model import ModelConfig, SegmentationModel

__all__ = ["create_model", "model_from_checkpoint", "list_models", "model_config", "FULL_SIZE_MODELS"]

# Number of random Fourier features l of the GP head per backbone (paper Sec. 4.1:
# 256 for ResNet50 / HRNet18s, 128 for SegFormer-B0).
_GP_FEATURES = {"tiny": 128, "resnet50": 256, "hrnet18s": 256, "segformer_b0": 128, "efflite0": 256}


def _factory(backbone: str, head: str) -> Callable[[], ModelConfig]:
    def make() -> ModelConfig:
        prefix = "gpcis" if head == "gp" else "ritm"
        return ModelConfig(
            backbone=backbone,
            head=head,
            gp=GPHeadConfig(num_features=_GP_FEATURES[backbone]),
            name=f"{prefix}_{backbone}",
        )

    return make


_REGISTRY: dict[str, Callable[[], ModelConfig]] = {
    f"{prefix}_{backbone}": _factory(backbone, head)
    for backbone in _GP_FEATURES
    for prefix, head in (("gpcis", "gp"), ("ritm", "conv"))
}

#: Models at paper scale (the complexity benchmark covers these).
FULL_SIZE_MODELS = tuple(
    f"{p}_{b}" for b in ("resnet50", "hrnet18s", "segformer_b0", "efflite0") for p in ("ritm", "gpcis")
)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_REGISTRY)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of a registered model, with optional field overrides.

    Args:
        name: a name from :func:`list_models`.
        **overrides: :class:`ModelConfig` fields to replace (e.g. ``use_image_in_kernel``).

    Raises:
        ValueError: unknown name or unknown field.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; known models: {', '.join(list_models())}")
    config = _REGISTRY[name]()
    if overrides:
        fields = {f.name for f in dataclasses.fields(ModelConfig)}
        bad = sorted(set(overrides) - fields)
        if bad:
            raise ValueError(f"unknown ModelConfig field(s) {bad}; known: {sorted(fields)}")
        config = dataclasses.replace(config, **overrides)
    return config


def create_model(
    name: str | None = None,
    pretrained: bool | str = False,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained_checkpoint: bool = False,
    **overrides: Any,
) -> SegmentationModel:
    """Build a model by name and/or from a checkpoint.

    >>> model = create_model("gpcis_tiny")                                   # random init
    >>> model = create_model(checkpoint="run/best.pt")                       # doctest: +SKIP
    >>> model = create_model("gpcis_efflite0", pretrained_checkpoint=True)   # doctest: +SKIP

    Args:
        name: a registered name (see :func:`list_models`); may be omitted when
            ``checkpoint`` is given (the model is rebuilt from the file's config).
        pretrained: backbone initialisation: ``False``, ``True`` (ImageNet weights) or a
            path to a local backbone state dict. Ignored with ``checkpoint``.
        checkpoint: a file written by :func:`gpcis.models.save_checkpoint`.
        pretrained_checkpoint: load the released weights of ``name`` shipped with the
            package (:func:`gpcis.models.released_checkpoint`), exactly as
            ``checkpoint=`` loads a file. Needs ``name`` (a key of
            :data:`gpcis.models.RELEASED_MODELS`); exclusive with ``checkpoint``,
            ``pretrained`` and ``**overrides``.
        **overrides: :class:`ModelConfig` fields to replace (without ``checkpoint``).

    Returns:
        The model, in eval mode when loaded from a checkpoint, else in train mode.

    Raises:
        ValueError: unknown name/field, neither name nor checkpoint, a checkpoint of a
            different model than ``name``, ``pretrained_checkpoint=True`` without a name,
            for a model without released weights, or combined with ``checkpoint``,
            ``pretrained`` or ``overrides``.
        FileNotFoundError: ``pretrained_checkpoint=True`` but this install lacks the
            released file (or ``checkpoint`` does not exist).
        CheckpointError: an unusable checkpoint file.
    """
    if pretrained_checkpoint:
        if name is None:
            raise ValueError(
                f"pretrained_checkpoint=True needs a model name; models with released weights: "
                f"{_released.released_names()}"
            )
        if checkpoint is not None:
            raise ValueError("pretrained_checkpoint=True and checkpoint= are exclusive: give one source of weights")
        if pretrained:
            raise ValueError(
                "pretrained_checkpoint=True and pretrained= are exclusive "
                "(all the weights come from the released checkpoint)"
            )
        if overrides:
            raise ValueError(
                f"config overrides {sorted(overrides)} cannot be combined with pretrained_checkpoint=True"
            )
        checkpoint = _released.released_checkpoint(name)  # ValueError / FileNotFoundError
    if checkpoint is None:
        if name is None:
            raise ValueError("create_model needs a model name or a checkpoint; known models: "
                             + ", ".join(list_models()))
        return SegmentationModel(model_config(name, pretrained=pretrained, **overrides))
    if overrides:
        raise ValueError(f"config overrides {sorted(overrides)} cannot be combined with a checkpoint")
    if name is not None and name not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; known models: {', '.join(list_models())}")
    return model_from_checkpoint(load_checkpoint(checkpoint), name, source=str(Path(checkpoint)))


def model_from_checkpoint(data: dict, name: str | None = None, source: str = "checkpoint") -> SegmentationModel:
    """The model a loaded checkpoint (:func:`~gpcis.models.load_checkpoint`) holds, in eval mode.

    What :func:`create_model` does with ``checkpoint=PATH`` once the file is read, for a
    caller that also needs the file's other entries (e.g. ``extra``) without reading it twice.

    Args:
        data: the checkpoint's dictionary.
        name: if given, the registry name the checkpoint must be a model of.
        source: how to name the checkpoint in error messages (its path).

    Raises:
        ValueError: ``name`` unknown or not the checkpoint's model.
        CheckpointError: an unusable config or weights.
    """
    if name is not None and name not in _REGISTRY:
        raise ValueError(f"unknown model name {name!r}; known models: {', '.join(list_models())}")
    try:
        config = ModelConfig.from_dict(data["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{source}: its model config cannot be used: {exc}") from None
    if name is not None:
        expected = _REGISTRY[name]()
        if (config.backbone, config.head) != (expected.backbone, expected.head):
            raise ValueError(
                f"checkpoint {source} holds a {config.name or config.backbone + '/' + config.head} "
                f"model (backbone {config.backbone!r}, head {config.head!r}), not {name!r}"
            )
    config = dataclasses.replace(config, pretrained=False)  # the weights come from the file
    model = SegmentationModel(config)
    load_model_weights(model, data, source=source)
    return model.eval()
