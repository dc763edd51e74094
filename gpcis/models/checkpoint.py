"""Model checkpoints: one file with weights, config, gpcis version and training state.

File layout (a ``torch.save`` dict)::

    {"format": "gpcis-checkpoint", "format_version": 1, "gpcis_version": "0.1.0",
     "config": ModelConfig as a dict, "state_dict": {name: tensor},
     "dtype": "float32" | "float16", "extra": {...} | None}

Files are written atomically (a temporary file in the same folder, flushed and fsynced,
then ``os.replace``), so a crash while saving never leaves a half-written checkpoint in
place of a good one. Files are read with ``torch.load(weights_only=True)`` by default:
``extra`` should therefore hold only tensors, numbers, strings, ``None`` and
lists/tuples/dicts of these (convert numpy RNG states with ``.tolist()``); pass
``weights_only=False`` for a trusted file holding arbitrary Python objects.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import gpcis
from gpcis.atomic import atomic_open

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_model_weights", "unwrap_model", "FORMAT"]

FORMAT = "gpcis-checkpoint"
FORMAT_VERSION = 1
_FP16_MAX = float(torch.finfo(torch.float16).max)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, not gpcis, or mismatched."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside its wrappers -- DDP / DataParallel (``.module``) and ``torch.compile``
    (``._orig_mod``), nested in any order -- so that checkpoints hold the plain parameter
    names. Only those wrapper classes are unwrapped (a model's own child named ``module`` is
    not)."""
    wrappers: tuple[type, ...] = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    try:
        from torch._dynamo.eval_frame import OptimizedModule

        wrappers += (OptimizedModule,)
    except ImportError:  # pragma: no cover - depends on the torch build
        pass
    while isinstance(model, wrappers):
        model = model._orig_mod if hasattr(model, "_orig_mod") else model.module
    return model


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` (weights + config + version) and optional training state atomically.

    Args:
        path: destination file; its folder is created if missing.
        model: a :class:`gpcis.models.SegmentationModel` (anything with a dataclass
            ``config`` having ``to_dict()``); ``DistributedDataParallel`` wrappers are
            unwrapped.
        extra: optional training state (optimizer, scheduler, epoch, RNG states ...).
        half: store floating-point tensors with more than one element as float16 (a
            smaller shipped file; scalars such as GPyTorch constraint bounds stay exact);
            :func:`load_checkpoint` turns them back into float32.

    Returns:
        The path written.

    Raises:
        ValueError: ``model`` has no config, ``extra`` is not a dict, or ``half=True``
            with a weight outside the float16 range.
    """
    model = unwrap_model(model)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise ValueError("model must be a gpcis SegmentationModel (with a .config ModelConfig)")
    if extra is not None and not isinstance(extra, dict):
        raise ValueError(f"extra must be a dict or None, got {type(extra).__name__}")
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point() and value.numel() > 1:
            finite = value[torch.isfinite(value)]
            finite_max = float(finite.abs().max()) if finite.numel() else 0.0
            if finite_max > _FP16_MAX:
                raise ValueError(f"half=True: weight {key!r} has |value| {finite_max:.3g} > float16 max")
            value = value.to(torch.float16)
        state[key] = value.clone()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gpcis_version": gpcis.__version__,
        "config": config.to_dict(),
        "state_dict": state,
        "dtype": "float16" if half else "float32",
        "extra": extra,
    }
    with atomic_open(path) as fh:
        torch.save(payload, fh)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    weights_only: bool = True,
) -> dict[str, Any]:
    """Read and check a gpcis checkpoint.

    Args:
        path: the checkpoint file.
        map_location: where to put the tensors.
        weights_only: use PyTorch's safe unpickler (default); ``False`` only for trusted
            files whose ``extra`` holds arbitrary Python objects.

    Returns:
        The checkpoint dict (keys as in the module docstring); ``state_dict`` is float32
        again when the file was saved with ``half=True`` (``dtype`` then says
        ``"float16"``, the stored precision).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: truncated/corrupt file, not a gpcis checkpoint, or unsafe content
            under ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; truncation breaks it
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt file: not the zip archive "
            "torch.save writes)"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise CheckpointError(
                f"{path}: holds Python objects the safe loader refuses; if you trust this file, "
                f"load it with weights_only=False ({str(exc).splitlines()[0]})"
            ) from None
        raise CheckpointError(f"{path}: corrupt checkpoint file ({exc})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt file: {first})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        what = f"a dict with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a gpcis checkpoint (found {what}, no 'format': '{FORMAT}')")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this gpcis "
            f"({gpcis.__version__}) reads (<= {FORMAT_VERSION}); upgrade gpcis"
        )
    for key, kind in (("config", dict), ("state_dict", dict)):
        if not isinstance(data.get(key), kind):
            raise CheckpointError(f"{path}: gpcis checkpoint without a valid {key!r} entry")
    if data.get("dtype") == "float16":
        data["state_dict"] = {
            k: (v.float() if v.dtype == torch.float16 else v) for k, v in data["state_dict"].items()
        }
    data.setdefault("extra", None)
    return data


def load_model_weights(model: nn.Module, checkpoint: dict[str, Any], source: str = "checkpoint") -> None:
    """Load a checkpoint's weights into ``model`` strictly, with a clear mismatch report.

    Args:
        model: the model built from the checkpoint's config.
        checkpoint: a dict from :func:`load_checkpoint`.
        source: name of the file, for the error message.

    Raises:
        CheckpointError: missing, unexpected or differently-shaped tensors (config and
            weights do not match).
    """
    model = unwrap_model(model)
    state = checkpoint["state_dict"]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {items[:5]}{more}")
        raise CheckpointError(
            f"{source}: the weights do not match the model built from its config "
            f"({checkpoint.get('config', {}).get('name') or 'unnamed'}); " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)
