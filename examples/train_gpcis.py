"""Train a GPCIS model (GP head).

With no arguments this trains ``gpcis_tiny`` on the built-in synthetic data on the CPU
in a few minutes and prints the validation NoC@85/90. The paper's recipes (SBD, GPUs) and
the CPU-scale COCO_MVal recipe are in docs/training.md, e.g.::

    python examples/train_gpcis.py --model gpcis_hrnet18s --data SBD/dataset --dataset-type SBD \\
        --device cuda --pretrained --epochs 230 --batch-size 28 --lr 5e-4 --milestones 190 220

Options: --model --data synthetic|PATH --dataset-type --epochs --batch-size --lr --device
--out --resume --seed (and more, see --help).
"""

import os
import sys

from gpcis.training.cli import main

# a quick CPU run: 5 epochs x 40 steps of 8 synthetic 96x96 images (about 3 minutes)
QUICK = {"model": "gpcis_tiny", "epochs": 5, "batch_size": 8, "synthetic_samples": 320,
         "synthetic_size": 96, "val_samples": 20, "out": os.path.join("runs", "train_gpcis")}

if __name__ == "__main__":
    sys.exit(main(defaults=QUICK, prog="train_gpcis.py"))
