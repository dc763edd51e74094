"""Detect host synchronisation on the CPU: what a CUDA graph capture would refuse.

On a GPU, reading a value back (``.item()``, ``bool(t)``, ``.tolist()``, ``torch.equal``,
``nonzero``) waits for the device and cannot be captured in a CUDA graph, and building a
tensor from Python data (``torch.tensor([...])``) is a host-to-device copy that cannot be
captured either. :func:`host_syncs` records the ATen operations that do either (through a
``TorchDispatchMode``) and the tensor methods that read values back (patched to record),
so a CPU test can assert that a code path is capturable.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: ATen operations that read device data on the host or copy host data to the device
SYNC_OPS = frozenset({"_local_scalar_dense", "equal", "is_nonzero", "nonzero", "masked_select",
                      "lift_fresh", "_unique2", "unique_consecutive", "unique_dim"})
#: tensor methods that read values back without an ATen operation on the CPU
SYNC_METHODS = ("tolist", "numpy", "item", "__bool__", "__int__", "__float__")


class _Recorder(TorchDispatchMode):
    def __init__(self, found: list[str]) -> None:
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            self.found.append(f"aten::{name}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def host_syncs(monkeypatch) -> Iterator[list[str]]:
    """Record host synchronisations inside the block into the yielded list (its patches are
    undone at the block's end; the test's other patches stay)."""
    found: list[str] = []
    with monkeypatch.context() as patch:
        for name in SYNC_METHODS:
            original: Callable = getattr(torch.Tensor, name)

            def recorded(self, *args, _name=name, _original=original, **kwargs):
                found.append(f"Tensor.{_name}")
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, recorded)
        with _Recorder(found):
            yield found
