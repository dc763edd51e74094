#!/bin/bash
# One prepared run for a lent GPU machine (the `device` tool; ~15 minutes of device time):
# the CUDA tests, the GP sampler and per-click latency benchmarks on CUDA, and the AMP
# training throughput of the efflite0 pair.
# Results go to ${OUT:-runs/bench/gpu} (JSON, PNG, logs); collect them with
#   python benchmarks/report.py --runs <that folder's parent> --out docs/benchmarks.md
# Usage (repository root):  bash benchmarks/gpu_checks.sh [STEP ...]   (default: 1 2 3 4 5 6)
# The machine needs torch, gpytorch, linear-operator, timm, opencv, scikit-image and botorch
# importable (the project's device machines have torch preinstalled; the others travel as
# wheels, see /work/.library/device/README.md) and gpcis on PYTHONPATH (the repo root).
set -u -o pipefail  # a failing step before a `| tee` fails the line, not only tee
STEPS=" ${*:-1 2 3 4 5 6} "
want() { [[ "$STEPS" == *" $1 "* ]]; }
OUT=${OUT:-runs/bench/gpu}
mkdir -p "$OUT"
if [ -z "${PY:-}" ]; then
    PY=python3
    [ -x .venv/bin/python ] && PY=.venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import gpcis, botorch" || { echo "gpcis or botorch not importable (see above)"; exit 1; }
# device.txt names the machine of these results: written only once a CUDA device is there
name=$($PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))") \
    || exit 1
echo "$name" | tee "$OUT/device.txt"
# 1. every CUDA test (parity of the GP layer, models, AMP training); test modules that need
#    packages the machine lacks (flask for the demo) fail to collect and are passed over
want 1 && timeout 180 $PY -m pytest -q -m gpu -p no:cacheprovider --continue-on-collection-errors 2>&1 | tail -n 20 | tee "$OUT/pytest_gpu.log"
# 2. the GP sampler at every (m, n) of issue 2, CUDA events; the calls are host-bound (2-5 ms),
#    so each case is timed for at least 1 s (7 calls per case let single cells jump by 0.5-1 ms)
want 2 && timeout 240 $PY benchmarks/gp_sampler.py --device cuda --min-time 1.0 --repeats 15 \
    --json "$OUT/gp_sampler/gp_sampler.json" \
    --png "$OUT/gp_sampler/gp_sampler.png" 2>&1 | tee "$OUT/gp_sampler.log"
# 3. per-click latency (Fig. S1) of the full-size model pairs at 384x384: GPU times are a few
#    ms, so more repeats and warm-up calls than on the CPU; the GP head's profile at click 20
want 3 && timeout 180 $PY benchmarks/click_latency.py --device cuda --repeats 30 --warmup 10 --profile \
    --out "$OUT/click_latency" 2>&1 | tail -n 30 \
    | tee "$OUT/click_latency.log"
# 4. AMP training throughput of the efflite0 pair (random init, synthetic 320 px images, the
#    paper's 256x256 crops and batch 28): images/s over steps 11-40, from steps.csv
#    (gpcis.training.cli directly: `-m gpcis` also loads the demo, i.e. flask)
want 4 && for model in gpcis_efflite0 ritm_efflite0; do
    timeout 150 $PY -c 'import sys; from gpcis.training.cli import main; sys.exit(main())' --model "$model" --data synthetic --synthetic-size 320 \
        --crop-size 256 256 --batch-size 28 --max-steps 40 --steps-per-epoch 40 --epochs 1 \
        --device cuda --num-workers 8 --val-samples 0 --no-progress --out "$OUT/train_$model" \
        > "$OUT/train_$model.log" 2>&1
    $PY - "$OUT/train_$model/steps.csv" "$model" <<'PYEOF' 2>&1 | tee -a "$OUT/train_throughput.log"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
a, b = rows[10], rows[-1]
steps = int(b["step"]) - int(a["step"])
print(f"{sys.argv[2]}: {28 * steps / (float(b['elapsed_s']) - float(a['elapsed_s'])):.1f} images/s (AMP, batch 28, 256x256, steps {a['step']}-{b['step']})")
PYEOF
done
# 5. per-click latency as in 3 with both models' heads through CUDA graphs (gpcis.models.cuda_graph)
want 5 && timeout 180 $PY benchmarks/click_latency.py --device cuda --repeats 30 --warmup 10 --cuda-graphs \
    --out "$OUT/click_latency_graphs" 2>&1 | tail -n 30 \
    | tee "$OUT/click_latency_graphs.log"
# 6. launch configurations of the fused GP kernels (mean path per input width, click solve per
#    click count); the fastest are what gpcis.gp.fused hard-codes (GPCIS_FUSED_MEAN_CONFIG overrides)
want 6 && timeout 240 $PY benchmarks/fused_sweep.py --device cuda --out "$OUT/fused_sweep" 2>&1 | tail -n 45 \
    | tee "$OUT/fused_sweep.log"
echo "done: $OUT"
