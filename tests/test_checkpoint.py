"""Checkpoints: our format is plain; official checkpoints load without running pickled code."""
import os
import pickle

import pytest
import torch
from torch import nn

from dept.checkpoint import find_checkpoint, normalize_state_dict, read_checkpoint


class Payload:
    """An object whose unpickling would run code (what weights_only=False allows)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def official_checkpoint(path, marker):
    """The official DePT layout: full CustomCLIP state dict + a pickled scheduler successor."""
    model = nn.Linear(2, 2)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 10)
    state = {
        "state_dict": {
            "prompt_learner.ctx": torch.randn(4, 8).half(),
            "prompt_learner.token_prefix": torch.randn(3, 1, 8).half(),
            "image_encoder.conv1.weight": torch.randn(2, 2),
            "film_lp_img.scale": torch.ones(8), "film_lp_img.bias": torch.zeros(8),
            "linear_probe_proj.weight": torch.randn(3, 8).half(),
            "linear_probe_proj.bias": torch.randn(3).half(),
        },
        "epoch": 10,
        "optimizer": optim.state_dict(),
        "scheduler": {"successor": successor, "payload": Payload(marker), "last_epoch": 10},
        "val_result": None,
    }
    torch.save(state, path)


def test_official_checkpoint_loads_without_executing_pickled_code(tmp_path):
    marker = tmp_path / "pickled_code_ran"
    path = tmp_path / "model.pth.tar-10"
    official_checkpoint(path, marker)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # why a fallback is needed at all
    checkpoint = read_checkpoint(str(path))
    assert not marker.exists()
    assert checkpoint["epoch"] == 10
    state = normalize_state_dict(checkpoint)
    assert sorted(state) == ["dept_head.film_img.bias", "dept_head.film_img.scale",
                             "dept_head.linear_probe.bias", "dept_head.linear_probe.weight",
                             "prompt_learner.ctx"]


def test_baseline_coop_checkpoint_keys_are_mapped():
    state = normalize_state_dict({"state_dict": {"ctx": torch.zeros(1), "token_prefix": torch.zeros(1)}})
    assert list(state) == ["prompt_learner.ctx"]


def test_find_checkpoint_takes_the_last_epoch_and_ignores_other_files(tmp_path):
    folder = tmp_path / "PromptLearner"
    folder.mkdir()
    for name in ("model.pth.tar-2", "model.pth.tar-10", "model-best.pth.tar", "checkpoint"):
        (folder / name).write_text("x")
    assert find_checkpoint(str(tmp_path), ["PromptLearner"]).endswith("model.pth.tar-10")
    assert find_checkpoint(str(tmp_path), ["PromptLearner"], epoch=-1).endswith("model.pth.tar-10")
    assert find_checkpoint(str(tmp_path), ["PromptLearner"], epoch=2).endswith("model.pth.tar-2")
    with pytest.raises(FileNotFoundError, match="epochs \\[2, 10\\]"):
        find_checkpoint(str(tmp_path), ["PromptLearner"], epoch=5)
    with pytest.raises(FileNotFoundError, match="--model-dir"):
        find_checkpoint(str(tmp_path / "nothing"), ["PromptLearner"])


def test_best_checkpoint_is_taken_when_asked(tmp_path):
    folder = tmp_path / "prompt_learner"
    folder.mkdir()
    for name in ("model.pth.tar-3", "model-best.pth.tar"):
        (folder / name).write_text("x")
    assert find_checkpoint(str(tmp_path), ["prompt_learner"], best=True).endswith("model-best.pth.tar")
    assert find_checkpoint(str(tmp_path), ["prompt_learner"], epoch=3, best=True).endswith("model.pth.tar-3")
