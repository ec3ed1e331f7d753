"""Train or evaluate a CoOp-family / DePT model: the CoOp family's usual entry point.

    python train.py --root DATA --seed 1 --trainer CoOpDePT \
        --dataset-config-file configs/datasets/dtd.yaml \
        --config-file configs/trainers/CoOpDePT/vit_b16_ep10_bs4_lr35.yaml \
        --output-dir output/... DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base
"""
import os
import sys

# This folder holds trainers/ and datasets/; importing them from here as top-level packages
# would shadow Hugging Face `datasets`. They are used as the installed dept.trainers/dept.datasets.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

# -- entry point
try:
    from dept.run.train import cli
except ModuleNotFoundError as err:
    if err.name != "dept":
        raise
    sys.exit("dept is not installed: run `bash scripts/setup.sh` (or `pip install -e .`) in this folder first.")

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
