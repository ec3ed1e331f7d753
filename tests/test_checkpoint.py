"""Checkpoints: our format is plain; official checkpoints load without running pickled code."""
import os
import pickle

import pytest
import torch
from torch import nn

from dept.util import safe_pickle
from dept.util.checkpoint import find_checkpoint, normalize_state_dict, read_checkpoint


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
    """The official baselines save their prompt learner alone: its bare keys are the prompt learner's
    (the trainer's ``official_state`` says so; the token buffers are dropped)."""
    from dept.core.trainer import PromptTrainer

    checkpoint = {"state_dict": {"ctx": torch.zeros(1), "token_prefix": torch.zeros(1)}}
    state = normalize_state_dict(checkpoint, PromptTrainer.official_state)
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


def sgd_step(model, optim):
    """One real SGD step: with momentum, its state becomes a defaultdict keyed by Parameters."""
    optim.zero_grad()
    model(torch.randn(4, model.in_features)).logsumexp(1).sum().backward()
    optim.step()


def official_full_state_dict(tiny_clip, head):
    """A full CustomCLIP state dict as the official DePT code saves it (frozen CLIP included)."""
    state = {"prompt_learner.ctx": torch.randn(4, 64), "prompt_learner.token_prefix": torch.randn(3, 1, 64),
             "prompt_learner.token_suffix": torch.randn(3, 72, 64), "logit_scale": tiny_clip.logit_scale.detach()}
    state.update({f"image_encoder.{k}": v for k, v in tiny_clip.visual.state_dict().items()})
    state.update({f"text_encoder.transformer.{k}": v for k, v in tiny_clip.transformer.state_dict().items()})
    for side in ("img", "text"):
        state[f"film_lp_{side}.scale"] = torch.rand(32)
        state[f"film_lp_{side}.bias"] = torch.randn(32)
    state["linear_probe_proj.weight"] = head.weight.detach().clone()
    state["linear_probe_proj.bias"] = head.bias.detach().clone()
    return state


def test_official_checkpoint_with_stepped_momentum_and_live_successor_loads(tmp_path, tiny_clip):
    """Dassl's save_checkpoint of the official trainer after training: the warm-up scheduler's
    state holds the successor *object*, which holds the stepped SGD (momentum buffers in a
    defaultdict keyed by Parameters). All tensors come back; no pickled object is built."""
    head = nn.Linear(32, 3)
    optim = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 10.0)
    for _ in range(2):
        sgd_step(head, optim)
        successor.step()
    # ConstantWarmupScheduler.state_dict(): its __dict__ without the optimizer.
    scheduler_state = {"successor": successor, "warmup_epoch": 1, "cons_lr": 1e-5, "base_lrs": [0.1],
                       "last_epoch": 2, "verbose": False, "_step_count": 3, "_get_lr_called_within_step": False,
                       "_last_lr": successor.get_last_lr()}
    state_dict = official_full_state_dict(tiny_clip, head)
    marker = tmp_path / "pickled_code_ran"
    path = tmp_path / "model.pth.tar-2"
    torch.save({"state_dict": state_dict, "epoch": 2, "optimizer": optim.state_dict(),
                "scheduler": {**scheduler_state, "payload": Payload(marker)}, "val_result": None}, path)

    checkpoint = read_checkpoint(str(path))
    assert not marker.exists()
    state = normalize_state_dict(checkpoint)
    assert sorted(state) == ["dept_head.film_img.bias", "dept_head.film_img.scale", "dept_head.film_text.bias",
                             "dept_head.film_text.scale", "dept_head.linear_probe.bias",
                             "dept_head.linear_probe.weight", "prompt_learner.ctx"]
    for ours, official in (("dept_head.linear_probe.weight", "linear_probe_proj.weight"),
                           ("dept_head.film_text.scale", "film_lp_text.scale"), ("prompt_learner.ctx",) * 2):
        torch.testing.assert_close(state[ours], state_dict[official], rtol=0, atol=0)
    # the optimizer's own state dict is plain data and comes back whole
    momentum = checkpoint["optimizer"]["state"][0]["momentum_buffer"]
    torch.testing.assert_close(momentum, optim.state[head.weight]["momentum_buffer"], rtol=0, atol=0)
    # the live successor is an inert stand-in that says what it replaces; its graph was read, not run
    stand_in = checkpoint["scheduler"]["successor"]
    assert isinstance(stand_in, safe_pickle.Inert)
    assert stand_in.pickled_global == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert checkpoint["scheduler"]["_last_lr"] == successor.get_last_lr()
    sgd_stand_in = stand_in.state["optimizer"]
    assert sgd_stand_in.pickled_global == "torch.optim.sgd.SGD"
    buffers = [s["momentum_buffer"] for s in sgd_stand_in.state["state"].values()]
    torch.testing.assert_close(buffers[0], optim.state[head.weight]["momentum_buffer"], rtol=0, atol=0)


@pytest.mark.dassl
def test_dassl_constant_warmup_scheduler_state_loads(tmp_path, tiny_clip):
    """The real Dassl ConstantWarmupScheduler (initialised as Dassl's __init__ does, minus the
    ``verbose`` argument torch >= 2.6 rejects) and torch's own ``state_dict()`` of it."""
    from dassl.optim.lr_scheduler import ConstantWarmupScheduler
    from dassl.utils import save_checkpoint as dassl_save_checkpoint
    from torch.optim.lr_scheduler import LRScheduler

    head = nn.Linear(32, 3)
    optim = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = ConstantWarmupScheduler.__new__(ConstantWarmupScheduler)
    scheduler.successor = torch.optim.lr_scheduler.CosineAnnealingLR(optim, 10.0)
    scheduler.warmup_epoch, scheduler.cons_lr = 1, 1e-5
    LRScheduler.__init__(scheduler, optim, -1)
    for _ in range(3):
        sgd_step(head, optim)
        scheduler.step()
    dassl_save_checkpoint({"state_dict": official_full_state_dict(tiny_clip, head), "epoch": 3,
                           "optimizer": optim.state_dict(), "scheduler": scheduler.state_dict(),
                           "val_result": None}, str(tmp_path / "PromptLearner"))
    path = tmp_path / "PromptLearner" / "model.pth.tar-3"
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    checkpoint = read_checkpoint(str(path))
    assert checkpoint["epoch"] == 3
    assert checkpoint["scheduler"]["last_epoch"] == 1  # past warm-up only the successor counts
    successor = checkpoint["scheduler"]["successor"]
    assert successor.pickled_global == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert successor.state["last_epoch"] == 2 and successor.state["_last_lr"] == scheduler.get_last_lr()
    torch.testing.assert_close(normalize_state_dict(checkpoint)["dept_head.linear_probe.weight"], head.weight.detach())


def test_safe_unpickler_builds_data_and_never_imports_or_calls():
    import collections

    data = {"d": collections.defaultdict(list, a=[1]), "o": collections.OrderedDict(x={1, 2}),
            "t": (torch.float16, torch.Size([2]), b"raw", bytearray(b"ba"), 1 + 2j), "f": frozenset({3})}
    loaded = safe_pickle.loads(pickle.dumps(data, protocol=2))
    assert loaded == data and loaded["d"].default_factory is list
    # a defaultdict whose factory is not a plain type keeps its items but no factory
    odd = safe_pickle.loads(pickle.dumps(collections.defaultdict(collections.OrderedDict.fromkeys, k=1)))
    assert odd == {"k": 1} and odd.default_factory is None
    stand_in = safe_pickle.loads(pickle.dumps(Payload("/nonexistent/marker")))
    assert repr(stand_in) == "<inert stand-in for posix.system>"
    assert stand_in.calls == [(("touch /nonexistent/marker",), {})]
