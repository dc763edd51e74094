"""Released model weights: checkpoints shipped inside the package, found by model name.

A released checkpoint is an ordinary file written by :func:`gpcis.models.save_checkpoint`
(weights only; the shipped ``gpcis_efflite0_coco.pt`` is float32), stored in the package
folder ``gpcis/models/weights/`` under the file name given by :data:`RELEASED_MODELS`;
``docs/model_card.md`` describes each file (data, training recipe, scores). An install may
lack a file (e.g. a checkout without it): every function here says so clearly instead of
failing later.

>>> from gpcis.models import create_model
>>> model = create_model("gpcis_efflite0", pretrained_checkpoint=True)   # doctest: +SKIP

The front ends (``gpcis segment``, ``gpcis demo``) use :func:`default_released_checkpoint`
when neither ``--method`` nor ``--checkpoint`` is given, and fall back to the training-free
``gp-pixel`` when it is ``None``. Set the environment variable ``GPCIS_NO_RELEASED=1`` to
force that fallback even when released weights are installed.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "NO_RELEASED_ENV",
    "RELEASED_MODELS",
    "WEIGHTS_DIR",
    "available_released_models",
    "default_released_checkpoint",
    "default_released_model",
    "released_checkpoint",
    "released_names",
]

#: Registry name -> file name in :data:`WEIGHTS_DIR`, in order of preference (the first
#: one available is the default of the front ends).
RELEASED_MODELS: dict[str, str] = {
    "gpcis_efflite0": "gpcis_efflite0_coco.pt",
}

#: The package folder holding the released files.
WEIGHTS_DIR: Path = Path(__file__).resolve().parent / "weights"

#: Environment variable that, set to ``1`` (or any value but ``""``, ``0``, ``false``,
#: ``no``, ``off``), makes :func:`default_released_checkpoint` return ``None``.
NO_RELEASED_ENV = "GPCIS_NO_RELEASED"

_FALSE_VALUES = ("", "0", "false", "no", "off")


def released_names() -> str:
    """The names of :data:`RELEASED_MODELS`, sorted and comma-separated (``"(none)"``), for messages."""
    return ", ".join(sorted(RELEASED_MODELS)) or "(none)"


def released_checkpoint(name: str) -> Path:
    """The path of the released checkpoint of a model.

    Args:
        name: a key of :data:`RELEASED_MODELS` (a registry name such as ``"gpcis_efflite0"``).

    Returns:
        The path of the file, which exists.

    Raises:
        ValueError: ``name`` has no released weights (the message lists the names that do).
        FileNotFoundError: this install lacks the file.
    """
    if name not in RELEASED_MODELS:
        raise ValueError(f"model {name!r} has no released weights; models with released weights: {released_names()}")
    path = WEIGHTS_DIR / RELEASED_MODELS[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"released weights of {name}: file expected at {path}; this install has no released "
            f"weights for {name}; train one (docs/training.md) or pass a checkpoint"
        )
    return path


def available_released_models() -> list[str]:
    """Names of :data:`RELEASED_MODELS` whose file is present, in the order of the mapping.

    Not affected by ``GPCIS_NO_RELEASED``.
    """
    return [name for name, file in RELEASED_MODELS.items() if (WEIGHTS_DIR / file).is_file()]


def _released_disabled() -> bool:
    return os.environ.get(NO_RELEASED_ENV, "").strip().lower() not in _FALSE_VALUES


def default_released_model() -> str | None:
    """The first available released model, or ``None``.

    Returns ``None`` when no released file is installed or when the environment variable
    ``GPCIS_NO_RELEASED`` is set (to ``1``), which forces the training-free fallback.
    """
    if _released_disabled():
        return None
    available = available_released_models()
    return available[0] if available else None


def default_released_checkpoint() -> Path | None:
    """The file of the first available released model, or ``None``.

    Returns ``None`` when no released file is installed or when the environment variable
    ``GPCIS_NO_RELEASED`` is set (to ``1``), which forces the training-free fallback.
    """
    name = default_released_model()
    return None if name is None else WEIGHTS_DIR / RELEASED_MODELS[name]
