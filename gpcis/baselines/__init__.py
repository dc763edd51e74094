"""Training-free interactive segmentation methods, evaluated through the same protocol.

``create_method(name, **kwargs)`` builds one by name; ``list_methods()`` lists the names.
Methods are imported lazily so that, e.g., the GP baseline's dependencies are only
loaded when it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from gpcis.inference.base import InteractiveSegmenter

__all__ = ["create_method", "list_methods"]

# name -> (module, method class, its config dataclass)
_METHODS: dict[str, tuple[str, str, str]] = {
    "grabcut": ("gpcis.baselines.grabcut", "GrabCutMethod", "GrabCutConfig"),
    "random-walker": ("gpcis.baselines.random_walker", "RandomWalkerMethod", "RandomWalkerConfig"),
    "gp-pixel": ("gpcis.baselines.gp_pixel", "GPPixelMethod", "GPPixelConfig"),
}


def list_methods() -> list[str]:
    """Names accepted by :func:`create_method` (and ``gpcis evaluate --method``)."""
    return sorted(_METHODS)


def create_method(name: str, **kwargs: Any) -> InteractiveSegmenter:
    """Build a training-free method by name.

    Args:
        name: one of :func:`list_methods`.
        **kwargs: fields of the method's config dataclass (``GrabCutConfig``,
            ``RandomWalkerConfig``, ``GPPixelConfig``).

    Raises:
        ValueError: unknown ``name``.
    """
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    module_name, cls_name, cfg_name = _METHODS[name]
    module = importlib.import_module(module_name)
    cls = getattr(module, cls_name)
    return cls(getattr(module, cfg_name)(**kwargs))
