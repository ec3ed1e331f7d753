"""A new method and its DePT variant, added from outside the package (one module, ``DEPT_PLUGINS``,
and its config files), without editing a central file: the runner runs it, the report places it
beside the others, and every run finished before it was added is still reused."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

pytestmark = pytest.mark.dassl

PLUGIN = textwrap.dedent('''
    """TwoCtx: CoOp's model with its own config node (TRAINER.TWOCTX), as a user's method file."""
    from dept import DePTMixin, Method, PromptTrainer, register_method


    def keys(cfg):
        from yacs.config import CfgNode

        from dept.core.config import add_missing

        add_missing(cfg.TRAINER, {"TWOCTX": CfgNode({"N_CTX": 2, "CSC": False, "CTX_INIT": "",
                                                     "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"})})


    class TwoCtx(PromptTrainer):
        """CoOp with two context vectors, under its own name and node."""


    class TwoCtxDePT(DePTMixin, TwoCtx):
        """TwoCtx + DePT."""


    register_method(Method("TwoCtx", configs={"base2new": "demo_tiny"}, node="TWOCTX", keys=keys), TwoCtx,
                    TwoCtxDePT)
''')
CONFIG = textwrap.dedent('''
    _BASE_: ../CoOp/demo_tiny.yaml
    TRAINER:
      NAME: "{name}"
      TWOCTX:
        PREC: "fp32"
''')


def run(cwd, env, *args):
    proc = subprocess.run([sys.executable, "-m", "dept", *args], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return proc


def test_a_new_method_runs_beside_the_others_and_invalidates_no_earlier_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATA", "DEPT_PLUGINS")}
    configs = tmp_path / "configs"
    shutil.copytree(os.path.join(REPO, "configs"), configs)
    common = ["--seeds", "1", "--output", "out", "--configs-dir", str(configs), "--", "OPTIM.MAX_EPOCH", "1"]
    before = run(tmp_path, env, "base2new", "--trainers", "CoOp", *common)
    assert "(2 ran, 0 skipped, 0 failed)" in before.stdout

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "two_ctx.py").write_text(PLUGIN)
    for name in ("TwoCtx", "TwoCtxDePT"):
        (configs / "trainers" / name).mkdir()
        (configs / "trainers" / name / "demo_tiny.yaml").write_text(CONFIG.format(name=name))
        # the demo's: demo_tiny with the demo's pretrained CLIP (as every trainer of configs/ has)
        (configs / "trainers" / name / "demo_digits.yaml").write_text(
            (configs / "trainers" / "CoOp" / "demo_digits.yaml").read_text())
    env.update(DEPT_PLUGINS="two_ctx", PYTHONPATH=str(tmp_path / "plugins") + os.pathsep + env.get("PYTHONPATH", ""))
    after = run(tmp_path, env, "base2new", "--trainers", "CoOp", "TwoCtx", "TwoCtxDePT", *common)
    assert "(4 ran, 2 skipped, 0 failed)" in after.stdout, after.stdout[-3000:]
    record = (tmp_path / "out" / "base2new" / "train_base" / "digits" / "shots_16" / "TwoCtxDePT" /
              "demo_digits+OPTIM.MAX_EPOCH=1" / "seed1" / "dept_run.json").read_text()
    assert "TWOCTX" in record and '"parameters": ' in record

    report = run(tmp_path, env, "report", "out", "--configs-dir", str(configs), "--no-figures")
    assert "(6 runs counted, 0 not counted, 0 absent" in report.stdout
    line = next(x for x in report.stdout.splitlines() if x.startswith("| digits | TwoCtx | yes |"))
    assert line.count("|") > 10 and " / " in line  # its DePT gain beside it
