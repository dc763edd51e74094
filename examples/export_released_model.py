"""Turn a training checkpoint into a released model file (no training state; float16 weights
unless ``--float32``).

The released file is what ``gpcis.create_model(name, pretrained_checkpoint=True)``,
``gpcis segment`` and ``gpcis demo`` load (``gpcis/models/weights/``; docs/model_card.md).
It keeps the model config (so the GP head's test-grid stride can be chosen here with
``--gp-stride``) and, under ``extra``, where it came from: the source file, its training
config and step, and optionally the evaluation metrics of ``gpcis evaluate`` (``--metrics``).

Usage::

    python examples/export_released_model.py --checkpoint runs/gpcis_efflite0_coco/best.pt \\
        --name gpcis_efflite0 [--gp-stride 2] [--metrics runs/eval/released/metrics.json] \\
        [--out gpcis/models/weights/gpcis_efflite0_coco.pt] [--float32]

Check that a float16 file keeps the scores (``gpcis evaluate --checkpoint FILE``) before
shipping it; ``--float32`` keeps the weights bit for bit (twice the size).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from gpcis.models import RELEASED_MODELS, load_checkpoint, model_from_checkpoint, save_checkpoint
from gpcis.models.released import WEIGHTS_DIR


def export(
    checkpoint: Path,
    name: str,
    out: Path | None = None,
    gp_stride: int | None = None,
    metrics: Path | None = None,
    half: bool = True,
) -> Path:
    """Write the released file of ``checkpoint``.

    Args:
        checkpoint: a training checkpoint (``best.pt`` / ``last.pt``) of model ``name``.
        name: the registry name; must be a key of ``RELEASED_MODELS`` unless ``out`` is given.
        out: destination (default: ``gpcis/models/weights/<RELEASED_MODELS[name]>``).
        gp_stride: set the GP head's test-grid stride of the released model.
        metrics: a ``metrics.json`` of ``gpcis evaluate`` to store with the weights.
        half: store float16 weights (``False``: float32, identical to the source).

    Returns:
        The path written.

    Raises:
        ValueError: no destination for ``name``, or an unusable ``metrics`` file.
    """
    if out is None:
        if name not in RELEASED_MODELS:
            raise ValueError(f"{name!r} has no released file name; pass --out (known: {sorted(RELEASED_MODELS)})")
        out = WEIGHTS_DIR / RELEASED_MODELS[name]
    data = load_checkpoint(checkpoint)  # read once: the weights and their provenance
    model = model_from_checkpoint(data, name, source=str(checkpoint))
    if gp_stride is not None:
        model.set_gp_stride(gp_stride)
    source_extra = data.get("extra") or {}
    extra: dict[str, Any] = {
        "released": True,
        "source": Path(checkpoint).name,
        "global_step": source_extra.get("global_step"),
        "elapsed_s": source_extra.get("elapsed_s"),
        "train_config": source_extra.get("train_config"),
    }
    if metrics is not None:
        try:
            extra["metrics"] = json.loads(Path(metrics).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--metrics {metrics}: cannot read it ({err})") from None
    path = save_checkpoint(out, model.eval(), extra=extra, half=half)
    path.chmod(0o644)  # a shipped, readable file (the atomic writer's temp file is 0600)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="training checkpoint to release")
    p.add_argument("--name", default="gpcis_efflite0", help="registry name (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="destination (default: the package's weights folder)")
    p.add_argument("--gp-stride", type=int, default=None, help="GP head test-grid stride of the released model")
    p.add_argument("--metrics", type=Path, default=None, help="gpcis evaluate metrics.json to store with it")
    p.add_argument("--float32", action="store_true", help="keep float32 weights (default: float16)")
    args = p.parse_args(argv)
    try:
        path = export(args.checkpoint, args.name, args.out, args.gp_stride, args.metrics, half=not args.float32)
    except (ValueError, FileNotFoundError) as err:
        print(f"export_released_model: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
