"""Import a repository script (``benchmarks/*.py``, ``examples/*.py``) as a module in tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str, rel: str) -> ModuleType:
    """Load ``REPO/rel`` as module ``name`` (registered in ``sys.modules``: dataclasses need it).

    The script's own folder is put on ``sys.path`` so sibling imports work.
    """
    path = REPO / rel
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
