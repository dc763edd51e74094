"""gpcis.argtypes: the command lines' option value types."""

from __future__ import annotations

import argparse

import pytest

from gpcis.argtypes import non_negative_float, non_negative_int, port, positive_int


@pytest.mark.parametrize(
    "fn, good, bad",
    [
        (positive_int, [("1", 1), ("20", 20)], ["0", "-3"]),
        (non_negative_int, [("0", 0), ("100", 100)], ["-1"]),
        (non_negative_float, [("0", 0.0), ("2.5", 2.5)], ["-0.1", "inf", "nan"]),
        (port, [("0", 0), ("65535", 65535), ("7860", 7860)], ["-1", "65536", "70000"]),
    ],
)
def test_values_and_usage_errors(fn, good, bad):
    for text, value in good:
        assert fn(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            fn(text)
    with pytest.raises(ValueError):  # not a number: argparse reports "invalid ... value"
        fn("abc")
