"""Our log lines in a user's own Dassl script, never doubled, and log.txt surviving SIGKILL."""
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, make_dtd

USER_SCRIPT = '''
import argparse
from yacs.config import CfgNode as CN
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed, setup_logger

import dept
from dept import add_dept_config

parser = argparse.ArgumentParser()
parser.add_argument("--root"); parser.add_argument("--out"); parser.add_argument("--clip")
args = parser.parse_args()
cfg = get_cfg_default()
cfg.TRAINER.COOP = CN()
cfg.TRAINER.COOP.N_CTX = 4
cfg.TRAINER.COOP.PREC = "fp16"               # no CUDA here: dept falls back to fp32 and says so
cfg.DATASET.SUBSAMPLE_CLASSES = "all"
add_dept_config(cfg)
cfg.merge_from_file("{repo}/configs/datasets/dtd.yaml")
cfg.merge_from_list(["DATASET.ROOT", args.root, "OUTPUT_DIR", args.out, "TRAINER.NAME", "CoOpDePT",
                     "MODEL.BACKBONE.PATH", args.clip, "INPUT.SIZE", "(32, 32)", "DATASET.NUM_SHOTS", 2,
                     "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", 1, "DATALOADER.NUM_WORKERS", 0,
                     "USE_CUDA", False])
setup_logger(cfg.OUTPUT_DIR)                  # Dassl's: sys.stdout becomes a tee to log.txt
set_random_seed(1)
trainer = build_trainer(cfg)
trainer.train()
'''


def python(code, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.mark.dassl
def test_dept_lines_reach_console_and_dassl_log_in_a_users_own_script(tmp_path, tiny_clip_file):
    root = make_dtd(str(tmp_path / "data"))
    script = tmp_path / "train.py"
    script.write_text(USER_SCRIPT.format(repo=REPO))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(script), "--root", root, "--out", str(out), "--clip", tiny_clip_file],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    for pattern in (r"\[dept\.core\.clip_loader\] No CUDA device: running CLIP in fp32 instead of fp16\.",
                    r"\[dept\.core\.clip_loader\] Loading CLIP .*from .*tiny_clip\.pt",
                    r"\[dept\.util\.checkpoint\] Checkpoint saved to .*model\.pth\.tar-1",
                    r"\[dept\.[\w.]+\] Evaluating \d+ classes with"):
        assert len(re.findall(pattern, proc.stdout)) == 1, (pattern, proc.stdout[-3000:])
        assert len(re.findall(pattern, log)) == 1, (pattern, log[-3000:])


def test_one_line_whether_or_not_logging_is_configured():
    unconfigured = python("""
        import logging, dept
        logging.getLogger("dept.example").info("hello %d", 1)
    """)
    assert unconfigured.returncode == 0, unconfigured.stderr
    assert unconfigured.stdout.splitlines().count("[dept.example] hello 1") == 1
    assert "hello" not in unconfigured.stderr
    configured = python("""
        import logging, sys, dept
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="root: %(message)s")
        logging.getLogger("dept.example").info("hello %d", 2)
    """)
    assert configured.returncode == 0, configured.stderr
    assert [line for line in configured.stdout.splitlines() if "hello" in line] == ["root: hello 2"]
    as_dept_train = python("""
        import logging, dept
        from dept.util.logs import setup_logging
        setup_logging()
        logging.getLogger("dept.example").info("hello %d", 3)
        logging.getLogger("dept.example").debug("not shown at INFO")
    """)
    assert as_dept_train.returncode == 0, as_dept_train.stderr
    assert [line for line in as_dept_train.stdout.splitlines() if "hello" in line] == ["[dept.example] hello 3"]
    assert "not shown" not in as_dept_train.stdout


def test_log_txt_keeps_every_line_logged_before_sigkill(tmp_path):
    out = tmp_path / "run"
    proc = python(f"""
        import logging, os, signal
        from dept.util.logs import run_log, setup_logging
        setup_logging()
        with run_log({str(out)!r}):
            for step in range(12):
                logging.getLogger("dept.run.train").info("step %d of 12", step)
            print("a plain print line")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL
    log = (out / "log.txt").read_text()
    assert [f"[dept.run.train] step {step} of 12" in log for step in range(12)] == [True] * 12
    assert "a plain print line" in log
    assert os.path.getsize(out / "log.txt") == len(log.encode())
