"""CUDA graphs of a segmentation head at inference.

On a GPU a head is launched kernel by kernel from Python, and at interactive sizes the GPU
waits for the host: the GP head's PyTorch path was a few hundred small kernels (0.75 ms of
kernel time at 384^2 on an H200, 3.5-4.7 ms per click); its fused inference
(:mod:`gpcis.gp.fused`) is a few kernels and ~0.2 ms, still 1.2-1.5 ms per click eagerly.
:class:`CUDAGraphHead` captures the head once per input shape into a CUDA graph and then
replays it with one launch (0.4-0.5 ms per click with the fused kernels).

What makes the head capturable is its ``sync_free`` mode (:meth:`SegHead.forward`): no
value is read back to the host inside it, the click system is factorised without the
jitter escalation, and the output carries a flag ``ok`` that is read after the replay.
When the flag is false (a click system that needs jitter, non-finite features) the call is
repeated eagerly, with the head's checks and jitter escalation, so the result is always the
eager head's up to rounding.

Clicks are padded to a multiple of ``click_bucket`` with ``valid = False`` (padding has
exactly no effect on the GP head, see :mod:`gpcis.gp.pathwise`; the conv head ignores
clicks), so clicks 1-8 share one graph, 9-16 the next, and so on.

Example:
    >>> model = gpcis.create_model("gpcis_resnet50").cuda().eval()
    >>> model.enable_cuda_graphs()          # used by forward() under torch.no_grad on CUDA
    >>> predictor = Predictor(model, cuda_graphs=True)   # the same, through the predictor
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Optional

import torch
from torch import Tensor

from gpcis.clicks import ClickBatch
from gpcis.models.heads import HeadOutput, SegHead

__all__ = ["CUDAGraphHead"]


def _click_dtype(clicks: ClickBatch) -> torch.dtype:
    """The packed clicks' dtype: float32, or float64 for float64 coordinates (integer or
    half-precision coordinates are written as float32)."""
    return torch.promote_types(clicks.coords.dtype, torch.float32)


@dataclass
class _Graph:
    """One captured graph: its static inputs (written before each replay) and outputs.

    The clicks travel packed, one ``(B, n_pad, 4)`` float buffer of ``(row, col, label,
    valid)`` rows written by one kernel; the graph unpacks them itself (:meth:`clicks`), so
    a replay launches two or three small kernels instead of eight: at interactive sizes each
    launch is ~10-20 us of the head's time on a GPU that waits for the host. (Measured on
    the H200's host, session 10: the packing ``torch.cat`` alone takes ~60 us of host time;
    three plain copies into cached views may be cheaper -- to be measured, see
    docs/benchmarks.md.)
    """

    graph: Optional[torch.cuda.CUDAGraph]  # None: capture failed, run eagerly
    features: Tensor
    image: Tensor
    packed: Tensor  # (B, n_pad, 4), created zero: padding is label 0, valid False
    out: Optional[HeadOutput] = None
    loaded: int = 0  # clicks written by the last load; the rest is padding
    #: the image of the last load and its version counter: the same tensor, unmodified, is
    #: not copied again (a session's image stays; holding it keeps its memory from reuse).
    #: In-place PyTorch operations on it bump the counter; writes that bypass autograd's
    #: bookkeeping (``image.data``, DLPack) do not: pass a new tensor after those.
    image_src: Optional[Tensor] = None
    image_version: int = -1

    def clicks(self) -> ClickBatch:
        """The static clicks as the head reads them, unpacked by kernels inside the graph."""
        p = self.packed
        return ClickBatch(p[..., :2].contiguous(), p[..., 2].contiguous(), p[..., 3] > 0.5)

    def load(self, features: Tensor, image: Tensor, clicks: ClickBatch) -> None:
        """Write the inputs into the static buffers: the features; the image unless it is
        the last one unchanged; the ``n`` clicks, packed in one kernel. The padding behind
        them is rewritten only where the previous call had more clicks (a session's clicks
        usually grow)."""
        self.features.copy_(features)
        if image.is_inference():  # no version counter: always copied
            self.image.copy_(image)
            self.image_src = None
        elif image is not self.image_src or image._version != self.image_version:
            self.image.copy_(image)
            self.image_src, self.image_version = image, image._version
        n = clicks.max_clicks
        if n < self.loaded:
            self.packed[:, n:self.loaded].zero_()
        torch.cat([clicks.coords, clicks.labels.unsqueeze(-1), clicks.valid.unsqueeze(-1)], dim=-1,
                  out=self.packed[:, :n])
        self.loaded = n


class CUDAGraphHead:
    """Run a segmentation head through CUDA graphs, one per input shape.

    Args:
        head: the model's head (:class:`~gpcis.models.heads.GPSegHead` or
            :class:`~gpcis.models.heads.ConvHead`), on a CUDA device, in eval mode.
        click_bucket: clicks are padded to a multiple of this (one graph per multiple).
        max_graphs: graphs kept (least recently used ones are dropped); each holds the
            head's intermediate buffers (about 0.2 GB at 384^2 for the GP head).
        capture_after: a shape is captured at its ``capture_after``-th call; the calls
            before run eagerly. With the predictor's zoom-in every crop can have another
            shape, and a capture (tens of ms) only pays off for a shape that comes back.

    Calls must run under ``torch.no_grad`` with the head in eval mode (what
    :meth:`SegmentationModel.run_head <gpcis.models.model.SegmentationModel.run_head>`
    checks before using it). The head's parameters may change in place (e.g.
    ``load_state_dict``): the graphs read them at replay. If they are moved (``.to()``) or
    replaced (``load_state_dict(..., assign=True)``), the graphs are dropped and captured
    again. The head's submodules are listed once, at construction: after replacing a
    submodule, make a new ``CUDAGraphHead``.
    """

    def __init__(self, head: SegHead, click_bucket: int = 8, max_graphs: int = 4, capture_after: int = 2) -> None:
        if click_bucket < 1 or max_graphs < 1 or capture_after < 1:
            raise ValueError(
                f"click_bucket, max_graphs and capture_after must be >= 1, got {click_bucket}, "
                f"{max_graphs}, {capture_after}"
            )
        self.head = head
        self.click_bucket = int(click_bucket)
        self.max_graphs = int(max_graphs)
        self.capture_after = int(capture_after)
        self._graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
        self._calls: OrderedDict[Hashable, int] = OrderedDict()  # calls of shapes not captured yet
        self._params: tuple[int, ...] = ()
        self._modules = list(head.modules())
        #: calls answered by a graph replay / run eagerly (before capture, failed capture, ``ok`` false)
        self.replays = 0
        self.eager_calls = 0

    def _param_ptrs(self) -> tuple[int, ...]:
        """Addresses of the head's parameters and buffers, read from its modules' own
        dictionaries (``parameters()``'s generators cost 23 us per call on this project's
        CPU, this 3 us), so a parameter moved or replaced in place is seen."""
        ptrs = []
        for module in self._modules:
            for t in module._parameters.values():
                if t is not None:
                    ptrs.append(t.data_ptr())
            for t in module._buffers.values():
                if t is not None:
                    ptrs.append(t.data_ptr())
        return tuple(ptrs)

    def clear(self) -> None:
        """Drop every captured graph (and the call counts)."""
        self._graphs.clear()
        self._calls.clear()

    #: shapes whose calls are counted before their capture (the most recent ones): the
    #: predictor's zoom-in can give every crop another shape, most of which never come back
    max_counted = 64

    def _due(self, key: Hashable) -> bool:
        """Count a call of a shape that has no graph; whether it is the one to capture it at
        (its ``capture_after``-th). Only the :attr:`max_counted` most recent shapes keep a
        count, so one-off shapes do not accumulate."""
        count = self._calls.pop(key, 0) + 1
        if count >= self.capture_after:
            return True
        self._calls[key] = count  # most recent last
        while len(self._calls) > self.max_counted:
            self._calls.popitem(last=False)
        return False

    def _eager(self, features: Tensor, image: Tensor, clicks: ClickBatch, return_std: bool) -> HeadOutput:
        self.eager_calls += 1
        return self.head(features, image, clicks, num_samples=0, return_std=return_std)

    def __call__(self, features: Tensor, image: Tensor, clicks: ClickBatch, return_std: bool = False) -> HeadOutput:
        """The head's output for ``(features, image, clicks)`` (mean path, no samples).

        Args:
            features: ``(B, d, h, w)`` backbone features on a CUDA device.
            image: ``(B, 3, H, W)`` image in [0, 1], same device.
            clicks: clicks in pixels of the ``H x W`` image, same device, validated
                (e.g. by the model's ``forward``).
            return_std: also return the posterior std (GP head).

        Returns:
            :class:`~gpcis.models.heads.HeadOutput` with tensors of its own (not the
            graph's buffers).
        """
        if not features.is_cuda:
            raise ValueError(f"CUDAGraphHead needs CUDA tensors, got features on {features.device}")
        if self.head.training or torch.is_grad_enabled():
            raise RuntimeError("CUDAGraphHead is for inference: head.eval() and torch.no_grad()")
        ptrs = self._param_ptrs()
        if ptrs != self._params:  # parameters moved: every graph reads stale addresses
            self.clear()
            self._params = ptrs
        n_pad = max(-(-clicks.max_clicks // self.click_bucket), 1) * self.click_bucket
        key = (tuple(features.shape), features.dtype, tuple(image.shape), image.dtype, features.device,
               n_pad, _click_dtype(clicks), bool(return_std))
        entry = self._graphs.get(key)
        if entry is None:
            if not self._due(key):
                return self._eager(features, image, clicks, return_std)
            entry = self._capture(features, image, clicks, n_pad, return_std)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        if entry.graph is None or entry.out is None:
            return self._eager(features, image, clicks, return_std)
        entry.load(features, image, clicks)
        entry.graph.replay()
        out = entry.out
        # the copies are queued before ``ok`` is read (a synchronisation), so they run right
        # behind the graph instead of after the host wakes up
        result = HeadOutput(
            logits=out.logits.clone(),
            aux_loss=out.aux_loss.clone(),
            std=out.std.clone() if out.std is not None else None,
        )
        if out.ok is not None and not bool(out.ok):  # jitter needed / non-finite: the eager head decides
            return self._eager(features, image, clicks, return_std)
        self.replays += 1
        return result

    def _capture(self, features: Tensor, image: Tensor, clicks: ClickBatch, n_pad: int, return_std: bool) -> _Graph:
        b, device = clicks.batch_size, features.device
        entry = _Graph(None, torch.empty_like(features), torch.empty_like(image),
                       torch.zeros(b, n_pad, 4, device=device, dtype=_click_dtype(clicks)))
        entry.load(features, image, clicks)

        def run() -> HeadOutput:
            return self.head(entry.features, entry.image, entry.clicks(), num_samples=0, return_std=return_std,
                             sync_free=True)

        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up off the capture: library handles, workspaces
                for _ in range(2):
                    run()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                entry.out = run()
            entry.graph = graph
        except RuntimeError as err:  # an operation that cannot be captured: stay eager for this shape
            torch.cuda.synchronize(device)
            warnings.warn(f"CUDA graph capture of {type(self.head).__name__} failed, running eagerly: {err}",
                          RuntimeWarning, stacklevel=3)
            entry.graph, entry.out = None, None
        return entry
