"""Value types for ``argparse`` options shared by the command lines (``type=`` callables):
a bad value is a usage error naming the option, not a traceback later."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "non_negative_int", "non_negative_float", "port"]


def positive_int(text: str) -> int:
    """An integer >= 1."""
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    v = float(text)
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return v


def port(text: str) -> int:
    """A TCP port, 0..65535 (werkzeug took 70000 as 4464, mod 2^16, and failed on -1 with a
    raw ``OverflowError``)."""
    v = int(text)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port in 0..65535, got {v}")
    return v
