"""Torch devices from user input: one check with a clear message for every entry point."""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["resolve_device"]


def resolve_device(device: Optional[torch.device | str]) -> torch.device:
    """The ``torch.device`` for ``device``, checked.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``; ``None``: CUDA when
            available, else the CPU.

    Raises:
        ValueError: a malformed name, a device type other than CPU / CUDA, CUDA requested
            but not available, or a CUDA index beyond the visible devices.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: {device!r} is not a device name (cpu, cuda, cuda:N)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
                             "are visible")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return dev
