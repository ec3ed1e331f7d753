"""DePT added to a user's own CoOp-style train.py (the runner's end-to-end tests: tests/test_runner_e2e.py)."""
import os
import subprocess
import sys

import pytest
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl

USER_TRAIN_PY = '''
import argparse
from yacs.config import CfgNode as CN
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed, setup_logger

import dept                                  # 1. registers CoOpDePT, ExtrasLinearProbeCoOp, ...
from dept import add_dept_config


def extend_cfg(cfg):                         # the user's own keys, as in CoOp's train.py
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 4
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp32"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"


parser = argparse.ArgumentParser()
parser.add_argument("--root"); parser.add_argument("--out"); parser.add_argument("--clip")
args = parser.parse_args()
cfg = get_cfg_default()
extend_cfg(cfg)
add_dept_config(cfg)                         # 2. adds DEPT.* and whatever else is missing
cfg.merge_from_file("{repo}/configs/datasets/dtd.yaml")
cfg.merge_from_list(["DATASET.ROOT", args.root, "OUTPUT_DIR", args.out, "TRAINER.NAME", "CoOpDePT",
                     "MODEL.BACKBONE.PATH", args.clip, "INPUT.SIZE", "(32, 32)", "DATASET.NUM_SHOTS", 2,
                     "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", 1, "DATALOADER.NUM_WORKERS", 0,
                     "OPTIM.LR", 0.01, "OPTIM.WARMUP_EPOCH", 1, "OPTIM.WARMUP_TYPE", "constant"])
setup_logger(cfg.OUTPUT_DIR)
set_random_seed(1)
trainer = build_trainer(cfg)
trainer.train()
print("N_CTX kept:", trainer.model.prompt_learner.n_ctx, "head:", type(trainer.model.dept_head).__name__)
'''


def test_users_own_train_py_gains_dept_with_one_import_and_one_call(tmp_path, tiny_clip_file):
    root = make_dtd(str(tmp_path / "data"))
    script = tmp_path / "train.py"
    script.write_text(USER_TRAIN_PY.format(repo=REPO))
    proc = subprocess.run([sys.executable, str(script), "--root", root, "--out", str(tmp_path / "out"),
                           "--clip", tiny_clip_file], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "N_CTX kept: 4 head: DePTHead" in proc.stdout
    assert "* accuracy:" in proc.stdout
    assert os.path.isfile(tmp_path / "out" / "PromptLearner" / "model.pth.tar-1")
