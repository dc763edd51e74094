"""Clicks: the typed user input of interactive segmentation.

Coordinate convention (one, everywhere in gpcis): a click is at integer pixel
``(row, col)``, 0-based, ``row`` counting down from the top edge (the image's y) and
``col`` counting right from the left edge (x). ``image[row, col]`` is the clicked pixel.

Batched clicks (:class:`ClickBatch`) carry explicit ``labels`` (+1 positive, -1
negative) and a boolean ``valid`` mask for padded entries; padded coordinates are zero
(no sentinel values) and have no effect: the disk maps skip them, and the GP head leaves
the features gathered there out (:func:`gpcis.gp.neutral_padding`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Click", "ClickBatch", "disk_maps", "check_clicks_in_image"]


@dataclass(frozen=True)
class Click:
    """One user click.

    Attributes:
        row: 0-based pixel row (y, from the top).
        col: 0-based pixel column (x, from the left).
        positive: ``True`` for a foreground (positive) click, ``False`` for background.
    """

    row: int
    col: int
    positive: bool = True

    @classmethod
    def from_xy(cls, x: int, y: int, positive: bool = True) -> "Click":
        """Build a click from image ``(x, y)`` coordinates (``x`` = column, ``y`` = row)."""
        return cls(row=int(y), col=int(x), positive=bool(positive))

    @property
    def label(self) -> int:
        """+1 for a positive click, -1 for a negative one."""
        return 1 if self.positive else -1


def check_clicks_in_image(clicks: Iterable[Click], height: int, width: int) -> None:
    """Raise ``ValueError`` naming the first click that is not a :class:`Click` with integer
    pixel coordinates (Python or NumPy integers) inside an ``height x width`` image and a
    boolean ``positive``."""
    for i, c in enumerate(clicks):
        if not isinstance(c, Click):
            raise ValueError(f"clicks[{i}] is {type(c).__name__}, expected gpcis.Click")
        if not (isinstance(c.row, numbers.Integral) and isinstance(c.col, numbers.Integral)):
            raise ValueError(
                f"clicks[{i}] = (row={c.row!r}, col={c.col!r}): coordinates must be integer pixel indices "
                f"(e.g. Click(int(round(row)), int(round(col))))"
            )
        if not isinstance(c.positive, (bool, np.bool_)):  # -1 or 'no' would count as positive
            raise ValueError(f"clicks[{i}].positive = {c.positive!r}: must be True (foreground) or False "
                             "(background)")
        if not (0 <= c.row < height and 0 <= c.col < width):
            raise ValueError(
                f"clicks[{i}] = (row={c.row}, col={c.col}) is outside the image of "
                f"{height}x{width} (rows 0..{height - 1}, cols 0..{width - 1})"
            )


@dataclass
class ClickBatch:
    """Clicks of a batch of images, padded to a common length with a validity mask.

    Attributes:
        coords: ``(B, N, 2)`` float tensor of ``(row, col)`` pixel coordinates.
        labels: ``(B, N)`` float tensor, +1 positive / -1 negative (0 where padded).
        valid: ``(B, N)`` bool tensor, ``False`` for padding.
    """

    coords: Tensor
    labels: Tensor
    valid: Tensor

    def __post_init__(self) -> None:
        if self.coords.dim() != 3 or self.coords.shape[-1] != 2:
            raise ValueError(f"coords must have shape (B, N, 2), got {tuple(self.coords.shape)}")
        if self.labels.shape != self.coords.shape[:2]:
            raise ValueError(
                f"labels must have shape {tuple(self.coords.shape[:2])}, got {tuple(self.labels.shape)}"
            )
        if self.valid.shape != self.coords.shape[:2]:
            raise ValueError(
                f"valid must have shape {tuple(self.coords.shape[:2])}, got {tuple(self.valid.shape)}"
            )
        if self.valid.dtype != torch.bool:
            raise ValueError(f"valid must be a bool tensor, got {self.valid.dtype}")

    @property
    def batch_size(self) -> int:
        """``B``, the number of images."""
        return self.coords.shape[0]

    @property
    def max_clicks(self) -> int:
        """``N``, the padded length (valid clicks of the longest list and padding)."""
        return self.coords.shape[1]

    def num_clicks(self) -> Tensor:
        """``(B,)`` number of valid clicks per image."""
        return self.valid.sum(dim=1)

    def to(self, device: torch.device | str) -> "ClickBatch":
        """The same clicks on ``device``."""
        return ClickBatch(self.coords.to(device), self.labels.to(device), self.valid.to(device))

    @classmethod
    def empty(cls, batch_size: int, device: torch.device | str | None = None) -> "ClickBatch":
        """A batch with no clicks at all (``N = 0``)."""
        return cls(
            torch.zeros(batch_size, 0, 2, device=device),
            torch.zeros(batch_size, 0, device=device),
            torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
        )

    @classmethod
    def from_lists(
        cls,
        clicks: Sequence[Sequence[Click]],
        device: torch.device | str | None = None,
        min_length: int = 0,
    ) -> "ClickBatch":
        """Pad per-image click lists into one batch.

        Args:
            clicks: one list of :class:`Click` per image.
            device: target device.
            min_length: pad to at least this many entries.
        """
        n = max([len(c) for c in clicks] + [min_length])
        b = len(clicks)
        coords = np.zeros((b, n, 2), dtype=np.float32)
        labels = np.zeros((b, n), dtype=np.float32)
        valid = np.zeros((b, n), dtype=bool)
        for i, lst in enumerate(clicks):
            for j, c in enumerate(lst):
                coords[i, j] = (c.row, c.col)
                labels[i, j] = c.label
                valid[i, j] = True
        return cls(
            torch.from_numpy(coords).to(device),
            torch.from_numpy(labels).to(device),
            torch.from_numpy(valid).to(device),
        )

    def to_lists(self) -> list[list[Click]]:
        """Inverse of :meth:`from_lists` (valid entries only)."""
        out: list[list[Click]] = []
        coords = self.coords.detach().cpu().numpy()
        labels = self.labels.detach().cpu().numpy()
        valid = self.valid.detach().cpu().numpy()
        for i in range(self.batch_size):
            out.append(
                [
                    Click(int(round(coords[i, j, 0])), int(round(coords[i, j, 1])), bool(labels[i, j] > 0))
                    for j in range(self.max_clicks)
                    if valid[i, j]
                ]
            )
        return out


def disk_maps(clicks: ClickBatch, size: tuple[int, int], radius: float = 5.0) -> Tensor:
    """Encode clicks as binary disk maps (RITM's click encoding).

    A pixel ``(r, c)`` belongs to the disk of a click at ``(r0, c0)`` iff
    ``(r - r0)^2 + (c - c0)^2 <= radius^2``.

    Args:
        clicks: batch of clicks with coordinates in pixels of an ``size`` image.
        size: ``(H, W)`` of the output maps.
        radius: disk radius in pixels (5 in RITM/GPCIS).

    Returns:
        ``(B, 2, H, W)`` float tensor: channel 0 = positive disks, channel 1 = negative.
    """
    h, w = size
    device = clicks.coords.device
    b = clicks.batch_size
    out = torch.zeros(b, 2, h, w, device=device)
    if clicks.max_clicks == 0:
        return out
    rows = torch.arange(h, device=device, dtype=torch.float32).view(1, 1, h, 1)
    cols = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, 1, w)
    r0 = clicks.coords[..., 0].float().view(b, -1, 1, 1)
    c0 = clicks.coords[..., 1].float().view(b, -1, 1, 1)
    inside = (rows - r0) ** 2 + (cols - c0) ** 2 <= radius**2  # (B, N, H, W)
    inside = inside & clicks.valid.view(b, -1, 1, 1)
    pos = inside & (clicks.labels > 0).view(b, -1, 1, 1)
    neg = inside & (clicks.labels < 0).view(b, -1, 1, 1)
    out[:, 0] = pos.any(dim=1).float()
    out[:, 1] = neg.any(dim=1).float()
    return out
