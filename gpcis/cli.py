"""The ``gpcis`` command line: ``gpcis evaluate | segment | demo | train``.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` (which
registers the subcommand and sets ``func``) so this file stays a thin dispatcher.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

__all__ = ["main", "build_parser"]

# subcommand name -> module that defines add_parser(subparsers)
_SUBCOMMANDS = {
    "evaluate": "gpcis.evaluation.cli",
    "segment": "gpcis.inference.cli",
    "demo": "gpcis.demo.cli",
    "train": "gpcis.training.cli",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``gpcis`` parser with its subcommands (segment, evaluate, train, demo)."""
    parser = argparse.ArgumentParser(
        prog="gpcis", description="Interactive segmentation as Gaussian-process classification."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:  # a subcommand not built yet
            if err.name != module:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gpcis`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
