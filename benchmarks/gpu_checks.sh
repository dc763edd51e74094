#!/bin/bash
# One prepared run for a lent GPU machine (the `device` tool; ~15 minutes of device time):
# the CUDA tests, then the GP sampler and per-click latency benchmarks on CUDA.
# Results go to ${OUT:-runs/bench/gpu} (JSON, PNG, logs); collect them with
#   python benchmarks/report.py --runs <that folder's parent> --out docs/benchmarks.md
# Usage (repository root):  bash benchmarks/gpu_checks.sh
# The machine needs torch, gpytorch, linear-operator, timm, opencv, scikit-image and botorch
# importable (the project's device machines have torch preinstalled; the others travel as
# wheels, see /work/.library/device/README.md) and gpcis on PYTHONPATH (the repo root).
set -u
OUT=${OUT:-runs/bench/gpu}
mkdir -p "$OUT"
PY=${PY:-python}
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import gpcis, botorch" || { echo "gpcis or botorch not importable (see above)"; exit 1; }
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
    | tee "$OUT/device.txt" || exit 1
# 1. every CUDA test (parity of the GP layer, models, AMP training)
timeout 180 $PY -m pytest -q -m gpu -p no:cacheprovider 2>&1 | tail -n 20 | tee "$OUT/pytest_gpu.log"
# 2. the GP sampler at every (m, n) of issue 2, CUDA events
timeout 240 $PY benchmarks/gp_sampler.py --device cuda --json "$OUT/gp_sampler/gp_sampler.json" \
    --png "$OUT/gp_sampler/gp_sampler.png" 2>&1 | tee "$OUT/gp_sampler.log"
# 3. per-click latency (Fig. S1) of the full-size model pairs at 384x384
timeout 180 $PY benchmarks/click_latency.py --device cuda --out "$OUT/click_latency" 2>&1 | tail -n 30 \
    | tee "$OUT/click_latency.log"
echo "done: $OUT"
