"""Train a RITM model (1x1 conv head), the baseline GPCIS is compared with.

With no arguments this trains ``ritm_tiny`` on the built-in synthetic data on the CPU
in a few minutes and prints the validation NoC@85/90. The paper's recipes (SBD, GPUs) and
the CPU-scale COCO_MVal recipe are in docs/training.md, e.g.::

    python examples/train_ritm.py --model ritm_hrnet18s --data SBD/dataset --dataset-type SBD \\
        --device cuda --pretrained --epochs 230 --batch-size 28 --lr 5e-4 --milestones 190 220

Options: --model --data synthetic|PATH --dataset-type --epochs --batch-size --lr --device
--out --resume --seed (and more, see --help).
"""

import os
import sys

from gpcis.training.cli import main

# a quick CPU run: 10 epochs x 40 steps of 8 synthetic 96x96 images at lr 2e-3 (about 2 minutes)
QUICK = {"model": "ritm_tiny", "epochs": 10, "lr": 2e-3, "batch_size": 8, "synthetic_samples": 320,
         "synthetic_size": 96, "val_samples": 20, "out": os.path.join("runs", "train_ritm")}

if __name__ == "__main__":
    sys.exit(main(defaults=QUICK, prog="train_ritm.py"))
