"""Dassl's warm-up schedulers for a user's own Dassl trainer: the patch, the .pth hook, resume.

Every patched process here is a subprocess: the patch changes Dassl's classes for the whole
process, and this one must keep the real, unpatched Dassl for the other tests.
"""
import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl

# A user's own Dassl trainer: Dassl's optimizer and Dassl's warm-up scheduler, nothing of dept's
# unless --patch asks for dept.util.dassl_compat (or --site-dir adds a site dir holding the .pth).
USER_TRAINER = '''
import argparse, json, os, site, sys
parser = argparse.ArgumentParser()
parser.add_argument("--root"); parser.add_argument("--out"); parser.add_argument("--epochs", type=int)
parser.add_argument("--stop-after", type=int, default=0); parser.add_argument("--patch", action="store_true")
parser.add_argument("--site-dir", default="")
args = parser.parse_args()
if args.site_dir:
    site.addsitedir(args.site_dir)            # as site-packages is read at start-up
if args.patch:
    from dept.util.dassl_compat import patch_dassl_schedulers
    patch_dassl_schedulers()

import torch.nn.functional as F
from torch import nn
from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from dassl.engine import TRAINER_REGISTRY, TrainerX, build_trainer
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import set_random_seed


@DATASET_REGISTRY.register()
class TinyTextures(DatasetBase):
    def __init__(self, cfg):
        dtd = os.path.join(cfg.DATASET.ROOT, "dtd")
        with open(os.path.join(dtd, "split_zhou_DescribableTextures.json")) as f:
            split = json.load(f)
        def data(key):
            return [Datum(impath=os.path.join(dtd, "images", p), label=y, classname=c) for p, y, c in split[key]]
        super().__init__(train_x=data("train"), val=data("val"), test=data("test"))


@TRAINER_REGISTRY.register()
class UserTrainer(TrainerX):
    def build_model(self):
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, self.num_classes)).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        x, y, _ = self.parse_batch_train(batch)
        loss = F.cross_entropy(self.model(x), y)
        self.model_backward_and_update(loss)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}

    def after_epoch(self):
        super().after_epoch()
        print("LR", self.epoch, repr(self.optim.param_groups[0]["lr"]))
        if self.epoch + 1 == args.stop_after:
            raise SystemExit(0)               # as if killed right after the checkpoint


cfg = get_cfg_default()
cfg.merge_from_list(["DATASET.NAME", "TinyTextures", "DATASET.ROOT", args.root, "OUTPUT_DIR", args.out,
                     "TRAINER.NAME", "UserTrainer", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", 0,
                     "DATALOADER.TRAIN_X.BATCH_SIZE", 4, "USE_CUDA", False, "TEST.NO_TEST", True,
                     "OPTIM.NAME", "sgd", "OPTIM.LR", 0.1, "OPTIM.MAX_EPOCH", args.epochs,
                     "OPTIM.LR_SCHEDULER", "cosine", "OPTIM.WARMUP_EPOCH", 1, "OPTIM.WARMUP_TYPE", "constant",
                     "OPTIM.WARMUP_CONS_LR", 1e-5, "TRAIN.CHECKPOINT_FREQ", 1])
set_random_seed(1)
build_trainer(cfg).train()
'''

# The hook's own imports, at interpreter start-up: nothing but the standard library.
STARTUP_PROBE = '''
import site, sys
site.addsitedir({site_dir!r})
print(json.dumps({{"loaded": sorted(m for m in ("torch", "dassl", "dept") if m in sys.modules),
                   "finders": [type(f).__name__ for f in sys.meta_path if getattr(f, "dept_dassl_fix", False)]}}))
'''


def python(args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, **kwargs)


def train(tmp_path, *runs):
    """Run the user's trainer once per ``(out, *flags)`` in ``runs``, all at the same time."""
    script = tmp_path / "user_train.py"
    script.write_text(USER_TRAINER)
    root = tmp_path / "data"
    if not root.exists():
        make_dtd(str(root), per_split=(4, 1, 1))
    procs = [subprocess.Popen([sys.executable, str(script), "--root", str(root), "--out", str(out), *flags],
                              cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for out, *flags in runs]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return done


def lrs(stdout):
    return [float(line.split()[2]) for line in stdout.splitlines() if line.startswith("LR ")]


def install(site_dir):
    proc = python(["-m", "dept", "dassl-fix", "install", "--site-dir", str(site_dir)], cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_users_dassl_trainer_fails_without_the_fix_and_trains_and_resumes_with_it(tmp_path):
    unpatched, whole, first = train(
        tmp_path, (tmp_path / "unpatched", "--epochs", "3"), (tmp_path / "whole", "--epochs", "3", "--patch"),
        # interrupted after epoch 2 (explicit patch); resumed below by a process with only the .pth hook
        (tmp_path / "resumed", "--epochs", "3", "--stop-after", "2", "--patch"))
    assert unpatched.returncode != 0
    assert "LRScheduler.__init__() takes from 2 to 3 positional arguments" in unpatched.stderr

    assert whole.returncode == 0, whole.stderr[-3000:]
    assert (whole.stdout + whole.stderr).count("Patched Dassl's warm-up LR schedulers") == 1
    assert len(lrs(whole.stdout)) == 3

    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "resumed" / "model" / "model.pth.tar-2", weights_only=True)
    assert checkpoint["scheduler"]["successor"]["T_max"] == 3.0  # the successor as plain state
    site_dir = tmp_path / "site"
    install(site_dir)
    second, = train(tmp_path, (tmp_path / "resumed", "--epochs", "3", "--site-dir", str(site_dir)))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Loaded scheduler" in second.stdout and "Previous epoch: 2" in second.stdout  # Dassl's own resume
    assert (second.stdout + second.stderr).count("Patched Dassl's warm-up LR schedulers") == 1
    # the resumed run drives the live optimizer along the same schedule as the uninterrupted one
    assert lrs(first.stdout) + lrs(second.stdout) == lrs(whole.stdout)
    assert lrs(whole.stdout)[0] != lrs(whole.stdout)[2]


def test_hook_imports_nothing_at_startup_and_patches_on_import_only(tmp_path):
    site_dir = tmp_path / "site"
    installed = install(site_dir)
    assert "dept-dassl-fix.pth" in installed.stdout
    probe = python(["-c", "import json\n" + STARTUP_PROBE.format(site_dir=str(site_dir))], cwd=str(tmp_path))
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == {"loaded": [], "finders": ["DasslSchedulerFinder"]}
    assert probe.stderr == ""

    applied = python(["-c", textwrap.dedent(f"""
        import importlib, site, sys
        site.addsitedir({str(site_dir)!r})
        site.addsitedir({str(site_dir)!r})                # read twice: still one finder
        import torch
        assert "dassl.optim.lr_scheduler" not in sys.modules
        from dassl.optim import lr_scheduler               # patched here, one line
        from dept.util.dassl_compat import is_patched, patch_dassl_schedulers
        assert is_patched() and patch_dassl_schedulers() is False   # already: nothing more, no line
        importlib.reload(lr_scheduler)                     # a fresh module is patched again, one line
        assert is_patched()
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = lr_scheduler.LinearWarmupScheduler(opt, torch.optim.lr_scheduler.StepLR(opt, 1), 2, 1e-4)
        print(type(sched.state_dict()["successor"]).__name__)
    """)], cwd=str(tmp_path))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-1] == "dict"
    # the first line on stderr (nothing configured logging yet); the second through dept's logging
    output = applied.stdout + applied.stderr
    assert output.count("[dept.util.dassl_compat] Patched Dassl's warm-up LR schedulers") == 2


def test_the_hook_module_imports_only_the_standard_library():
    from dept import _dassl_hook

    tree = ast.parse(open(_dassl_hook.__file__).read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names), imported


def test_install_status_uninstall_round_trip(tmp_path, caplog):
    import logging

    from dept.util.dassl_compat import main, pth_line

    site_dir = tmp_path / "site"
    caplog.set_level(logging.INFO, logger="dept.util.dassl_compat")
    assert main(["status", "--site-dir", str(site_dir)]) == 1 and "is not installed" in caplog.text
    caplog.clear()
    assert main(["install", "--site-dir", str(site_dir)]) == 0
    assert "is not a site-packages directory" in caplog.text  # said, since only addsitedir reads it
    pth = site_dir / "dept-dassl-fix.pth"
    assert os.path.isfile(pth)
    caplog.clear()
    assert main(["status", "--site-dir", str(site_dir)]) == 0
    assert f"loads {os.path.join(REPO, 'dept', '_dassl_hook.py')}" in caplog.text
    assert "not patched; this torch needs the fix" in caplog.text  # this process: the real, unpatched Dassl
    caplog.clear()
    assert main(["uninstall", "--site-dir", str(site_dir)]) == 0 and not pth.exists() and "Removed" in caplog.text
    # a .pth left behind after dept is gone is a no-op, not an error at every start-up
    pth.write_text(pth_line(str(tmp_path / "gone" / "_dassl_hook.py")))
    probe = python(["-c", f"import site; site.addsitedir({str(site_dir)!r}); print('ok')"])
    assert probe.stdout.strip() == "ok" and probe.stderr == ""
