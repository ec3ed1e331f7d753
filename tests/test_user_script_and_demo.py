"""DePT added to a user's own CoOp-style train.py, and the embedded demo through the runner."""
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


def test_demo_runs_end_to_end_and_writes_the_results_table(tmp_path):
    env = dict(os.environ)
    env.pop("DATA", None)
    proc = subprocess.run([sys.executable, "-m", "dept", "base2new", "--seeds", "1", "--output", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM weights" in proc.stdout
    results = tmp_path / "base2new" / "results" / "CoOpDePT_demo_tiny_shots16.csv"
    header, row = results.read_text().splitlines()[:2]
    assert header.split(",")[:5] == ["dataset", "seeds", "base", "new", "hm"]
    dataset, seeds, base, new, hm = row.split(",")[:5]
    assert (dataset, seeds) == ("digits", "1") and 0 <= float(base) <= 100 and 0 <= float(new) <= 100
    for stage in ("train_base", "test_new"):
        log = tmp_path / "base2new" / stage / "digits" / "shots_16" / "CoOpDePT" / "demo_tiny" / "seed1" / "log.txt"
        assert "* accuracy:" in log.read_text()
    # a second run skips what finished
    again = subprocess.run([sys.executable, "-m", "dept", "base2new", "--seeds", "1", "--output", str(tmp_path)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skip (finished)") == 2


def test_base2new_on_dtd_through_the_runner(tmp_path, tiny_clip_file):
    """A real dataset loader (DTD layout) through scripts/base2new.sh, with the paper's figures beside."""
    root = make_dtd(str(tmp_path / "data"))
    out = tmp_path / "output"
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "base2new.sh"), "--root", root, "--datasets", "dtd",
                           "--seeds", "1", "2", "--shots", "2", "--config", "demo_tiny", "--output", str(out),
                           "--", "MODEL.BACKBONE.PATH", tiny_clip_file, "OPTIM.MAX_EPOCH", "1"],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DEMO" not in proc.stdout
    table = (out / "base2new" / "results" / "CoOpDePT_demo_tiny_shots2.md").read_text()
    dtd_row = next(line for line in table.splitlines() if line.startswith("| dtd |"))
    assert dtd_row.split("|")[2].strip() == "2"  # both seeds finished
    assert dtd_row.rstrip(" |").endswith("83.20 | 56.13 | 67.04")  # CoOp+DePT's DTD row in the paper
    for seed in (1, 2):
        assert (out / "base2new" / "test_new" / "dtd" / "shots_2" / "CoOpDePT" / "demo_tiny" / f"seed{seed}"
                / "log.txt").is_file()
