"""PromptSRC's Gaussian-weighted prompt aggregation (GPA) on a 3-epoch run.

The final prompts must be Σ_e g_e·θ_e, with θ_e the trained tensors after epoch e and
g_e ∝ exp(-(e-μ)²/2σ²) normalised to sum 1, computed here by hand; the final checkpoint holds them;
and a run killed after an epoch's checkpoint and resumed aggregates the same way, bit for bit.
"""
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl
MEAN, STD, EPOCHS = 2.0, 1.0, 3


def command(root, out, clip_file):
    return ["--root", root, "--seed", "1", "--trainer", "PromptSRC", "--output-dir", str(out),
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
            "--config-file", os.path.join(REPO, "configs", "trainers", "PromptSRC", "demo_tiny.yaml"),
            "MODEL.BACKBONE.PATH", clip_file, "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base",
            "OPTIM.MAX_EPOCH", str(EPOCHS), "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
            "TRAINER.PROMPTSRC.GPA_MEAN", str(MEAN), "TRAINER.PROMPTSRC.GPA_STD", str(STD)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from dept.core.testing import save_tiny_clip

    base = tmp_path_factory.mktemp("gpa")
    return base, make_dtd(str(base / "data")), save_tiny_clip(str(base / "clip.pt"))


def test_the_final_prompts_are_the_gaussian_weighted_sum_of_the_epochs(setup, monkeypatch, restore_stdout):
    from dept.trainers.promptsrc import PromptSRC

    from dept.run.train import main

    base, root, clip_file = setup
    per_epoch, original = [], PromptSRC.after_epoch

    def spy(self):  # the trained tensors as the epoch left them, before GPA touches them
        per_epoch.append({n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad})
        original(self)

    monkeypatch.setattr(PromptSRC, "after_epoch", spy)
    trainer = main(command(root, base / "run", clip_file))
    density = [math.exp(-0.5 * ((e - MEAN) / STD) ** 2) for e in range(1, EPOCHS + 1)]
    weights = [d / sum(density) for d in density]
    assert len(per_epoch) == EPOCHS and all(w > 0.1 for w in weights)  # every epoch counts
    final = torch.load(base / "run" / "VLPromptLearner" / f"model.pth.tar-{EPOCHS}", weights_only=True)
    params = dict(trainer.model.named_parameters())
    for name in per_epoch[0]:
        expected = sum(w * epoch[name] for w, epoch in zip(weights, per_epoch))
        torch.testing.assert_close(params[name].detach(), expected, atol=1e-6, rtol=1e-6)
        assert torch.equal(final["state_dict"][name], params[name].detach())
        assert not torch.equal(params[name], per_epoch[-1][name])  # not simply the last epoch's
    assert set(final["method_state"]["gpa"]) == set(per_epoch[0])
    # only the trained tensors and the aggregation state: no frozen teacher (the original saves a second
    # image encoder in every checkpoint)
    assert all(name.startswith("prompt_learner.") for name in final["state_dict"])
    assert set(final["state_dict"]) == set(per_epoch[0])


def test_a_run_resumed_after_an_epoch_aggregates_the_same_way(setup):
    base, root, clip_file = setup
    env = {k: v for k, v in os.environ.items() if k != "DEPT_FAULT"}

    def launch(out, fault=None):
        return subprocess.run([sys.executable, "-m", "dept.run.train", *command(root, out, clip_file)],
                              env=dict(env, **({"DEPT_FAULT": fault} if fault else {})), capture_output=True,
                              text=True, timeout=600)

    assert launch(base / "whole").returncode == 0
    assert launch(base / "resumed", "checkpoint:2").returncode == -9  # killed right after epoch 2's checkpoint
    proc = launch(base / "resumed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (torch.load(base / d / "VLPromptLearner" / f"model.pth.tar-{EPOCHS}", weights_only=True)
            for d in ("whole", "resumed"))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
