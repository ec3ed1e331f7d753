"""Common checks over every registered trainer of this package, with and without DePT.

The trainers come from the registry (``dept.registry.dept_trainers``), as timm's tests iterate
``list_models()``: a new method gets these checks by registering, with nothing to edit here. Each
trainer says what it trains (``trainable``), where it saves (``checkpoint_name``) and its tiny
config (``demo_config``). The checks: a training step moves exactly the trainable parameters, the
checkpoint holds exactly those and restores the same predictions, and the DePT head is used on the
classes it was trained on and not on new ones.
"""
import os

import pytest
import torch
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl


def _trainers():
    try:
        from dept.registry import dept_trainers
    except ModuleNotFoundError:  # no Dassl: the dassl marker skips these tests
        return ["CoOp"]
    return list(dept_trainers())


TRAINERS = _trainers()


def trainer_class(name):
    from dept.registry import dept_trainers

    return dept_trainers()[name]


def demo_config(name):
    return os.path.join(REPO, "configs", "trainers", name, f"{trainer_class(name).demo_config}.yaml")


def is_dept(name):
    from dept.mixin import DePTMixin

    return issubclass(trainer_class(name), DePTMixin)


@pytest.fixture(scope="module")
def data_and_clip(tmp_path_factory):
    from dept.testing import save_tiny_clip

    base = tmp_path_factory.mktemp("methods")
    return make_dtd(str(base / "data")), save_tiny_clip(str(base / "clip.pt"))


def build(trainer, data_and_clip, out, subsample="base", *extra):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    from dept.train import build_parser, setup_cfg

    root, clip_file = data_and_clip
    args = build_parser().parse_args([
        "--root", root, "--trainer", trainer, "--output-dir", str(out),
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
        "--config-file", demo_config(trainer),
        "MODEL.BACKBONE.PATH", clip_file, "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", subsample,
        "OPTIM.MAX_EPOCH", "1", *extra])
    set_random_seed(1)
    return build_trainer(setup_cfg(args))


@pytest.mark.parametrize("trainer", TRAINERS)
def test_one_step_moves_only_the_intended_parameters(trainer, data_and_clip, tmp_path):
    t = build(trainer, data_and_clip, tmp_path)
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.set_model_mode("train")
    t.num_batches, t.batch_idx = 2, 0
    summary = t.forward_backward(next(iter(t.train_loader_x)))
    assert torch.isfinite(torch.tensor(summary["loss"]))
    moved = {n for n, p in t.model.named_parameters() if not torch.equal(p, before[n])}
    expected = {n for n in before if n.startswith(trainer_class(trainer).trainable)}
    assert moved == expected


@pytest.mark.parametrize("trainer", TRAINERS)
def test_checkpoint_round_trip_restores_predictions(trainer, data_and_clip, tmp_path):
    t = build(trainer, data_and_clip, tmp_path / "a")
    t.set_model_mode("train")
    t.num_batches, t.batch_idx = 2, 0
    t.forward_backward(next(iter(t.train_loader_x)))  # one step trains every part, the head included
    with torch.no_grad():
        for p in t.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    t.save_model(0, str(tmp_path / "a"))
    state = torch.load(tmp_path / "a" / trainer_class(trainer).checkpoint_name / "model.pth.tar-1", weights_only=True)
    assert sorted(state["state_dict"]) == sorted(n for n, p in t.model.named_parameters() if p.requires_grad)
    images = torch.randn(2, 3, 32, 32)
    t.before_test()
    reloaded = build(trainer, data_and_clip, tmp_path / "b")
    reloaded.load_model(str(tmp_path / "a"))
    reloaded.before_test()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model_inference(images), t.model_inference(images))


@pytest.mark.parametrize("trainer", TRAINERS)
def test_base_classes_fuse_and_new_classes_use_itm(trainer, data_and_clip, tmp_path):
    t = build(trainer, data_and_clip, tmp_path / "a")
    t.save_model(0, str(tmp_path / "a"))
    images = torch.randn(2, 3, 32, 32)
    for subsample, fused in (("base", is_dept(trainer)), ("new", False)):
        evaluated = build(trainer, data_and_clip, tmp_path / subsample, subsample)
        evaluated.load_model(str(tmp_path / "a"))
        evaluated.set_model_mode("eval")
        evaluated.before_test()
        with torch.no_grad():
            itm = evaluated.model(images)
            prediction = evaluated.model_inference(images)
        assert torch.equal(prediction, itm) != fused
