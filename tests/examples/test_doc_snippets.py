"""The GP-layer snippets of README.md and docs/gp_layer.md run as written and give the shapes
their comments state (a user copies them first)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _gp_snippets(path: Path) -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
    return [textwrap.dedent(b) for b in blocks if "GPHead(" in b and "x_test" in b]


@pytest.mark.parametrize("doc", ["README.md", "docs/gp_layer.md"])
def test_gp_snippet_runs_as_written(doc):
    snippets = _gp_snippets(ROOT / doc)
    assert len(snippets) == 1
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(snippets[0], doc, "exec"), namespace)
    out, x_test = namespace["out"], namespace["x_test"]
    b, m, _ = x_test.shape
    assert out.mean.shape == (b, m) and out.variance.shape == (b, m)
    assert out.samples.shape[1:] == (b, m)
    assert torch.isfinite(namespace["loss"]) and namespace["loss"].requires_grad
