"""Common checks over every registered trainer of this package, with and without DePT.

The trainers come from the registry (``dept.core.methods.trainers``), as timm's tests iterate
``list_models()``: a new method gets these checks by registering, with nothing to edit here. Each
trainer says what it trains (``trainable``), where it saves (its record's checkpoint folder) and its tiny
config (its record's ``demo_config``). The checks: a training step moves exactly the trainable parameters, the
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
        from dept.core.methods import trainers as dept_trainers
    except ModuleNotFoundError:  # no Dassl: the dassl marker skips these tests
        return ["CoOp"]
    return list(dept_trainers())


TRAINERS = _trainers()


def _learning(names):
    try:
        from dept.core.methods import trainers as dept_trainers
    except ModuleNotFoundError:
        return names
    return [n for n in names if dept_trainers()[n].method.trained]


TRAINED = _learning(TRAINERS)  # zero-shot CLIP learns nothing: only the evaluation checks apply to it


def trainer_class(name):
    from dept.core.methods import trainers as dept_trainers

    return dept_trainers()[name]


def checkpoint_folder(cls):
    return cls.method.checkpoint_folder(cls.with_dept)


def demo_config(name):
    return os.path.join(REPO, "configs", "trainers", name, f"{trainer_class(name).method.demo_config}.yaml")


def is_dept(name):
    from dept.core.mixin import DePTMixin

    return issubclass(trainer_class(name), DePTMixin)


@pytest.fixture(scope="module")
def data_and_clip(tmp_path_factory):
    from dept.core.testing import save_tiny_clip

    base = tmp_path_factory.mktemp("methods")
    return make_dtd(str(base / "data")), save_tiny_clip(str(base / "clip.pt"))


def build(trainer, data_and_clip, out, subsample="base", *extra):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    from dept.run.train import build_parser, setup_cfg

    root, clip_file = data_and_clip
    args = build_parser().parse_args([
        "--root", root, "--trainer", trainer, "--output-dir", str(out),
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
        "--config-file", demo_config(trainer),
        "MODEL.BACKBONE.PATH", clip_file, "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", subsample,
        "OPTIM.MAX_EPOCH", "1", *extra])
    set_random_seed(1)
    return build_trainer(setup_cfg(args))


@pytest.mark.parametrize("trainer", TRAINED)
def test_one_step_moves_only_the_intended_parameters(trainer, data_and_clip, tmp_path):
    t = build(trainer, data_and_clip, tmp_path)
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.set_model_mode("train")
    t.num_batches, t.batch_idx = 2, 0
    summary = t.forward_backward(next(iter(t.train_loader_x)))
    assert torch.isfinite(torch.tensor(summary["loss"]))
    moved = {n for n, p in t.model.named_parameters() if not torch.equal(p, before[n])}
    expected = {n for n in before if n.startswith(trainer_class(trainer).trainable)}
    # every trainable tensor is reached by the loss and optimised; nothing else changes. (A tensor
    # may keep its value in one warm-up step: a dead ReLU unit of CoCoOp's 2-unit tiny meta-net.)
    assert {n for n, p in t.model.named_parameters() if p.grad is not None} == expected
    optimised = {id(p) for group in t.optim.param_groups for p in group["params"]}
    assert optimised == {id(p) for n, p in t.model.named_parameters() if n in expected}
    assert moved <= expected and len(moved) >= len(expected) // 2


@pytest.mark.parametrize("trainer", TRAINED)
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
    folder = checkpoint_folder(trainer_class(trainer))
    state = torch.load(tmp_path / "a" / folder / "model.pth.tar-1", weights_only=True)
    assert sorted(state["state_dict"]) == sorted(n for n, p in t.model.named_parameters() if p.requires_grad)
    images = torch.randn(2, 3, 32, 32)
    t.before_test()
    reloaded = build(trainer, data_and_clip, tmp_path / "b")
    reloaded.load_model(str(tmp_path / "a"))
    reloaded.before_test()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model_inference(images), t.model_inference(images))


@pytest.mark.parametrize("trainer", TRAINED)
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


def _train_py(trainer, data_and_clip, out, *extra, subsample="base"):
    from dept.run.train import main

    root, clip_file = data_and_clip
    return main(["--root", root, "--seed", "1", "--trainer", trainer, "--output-dir", str(out),
                 "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
                 "--config-file", demo_config(trainer), *extra, "MODEL.BACKBONE.PATH", clip_file,
                 "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", subsample, "OPTIM.MAX_EPOCH", "1",
                 "DATALOADER.TRAIN_X.BATCH_SIZE", "2"])


def _accuracy(out):
    import json

    with open(os.path.join(out, "dept_run.json")) as f:
        return json.load(f)["result"]["accuracy"]


@pytest.mark.parametrize("trainer", TRAINERS)
def test_train_py_end_to_end_base_then_reload_then_new(trainer, data_and_clip, tmp_path, restore_stdout):
    """train.py on Dassl: train on base, evaluate the reloaded checkpoint on base (the same number) and on new.
    A trainer that learns nothing is evaluated as built, on base and on new."""
    if not trainer_class(trainer).method.trained:
        base = _train_py(trainer, data_and_clip, tmp_path / "base", "--eval-only")
        new = _train_py(trainer, data_and_clip, tmp_path / "new", "--eval-only", subsample="new")
        assert 0 <= _accuracy(tmp_path / "base") <= 100 and 0 <= _accuracy(tmp_path / "new") <= 100
        assert base.optim is None and not any(p.requires_grad for p in base.model.parameters())
        with pytest.raises(ValueError, match="learns nothing"):
            _train_py(trainer, data_and_clip, tmp_path / "train")
        return
    trained = _train_py(trainer, data_and_clip, tmp_path / "train")
    model_dir = str(tmp_path / "train")
    reloaded = _train_py(trainer, data_and_clip, tmp_path / "base", "--eval-only", "--model-dir", model_dir)
    assert _accuracy(tmp_path / "base") == _accuracy(tmp_path / "train")
    new = _train_py(trainer, data_and_clip, tmp_path / "new", "--eval-only", "--model-dir", model_dir, subsample="new")
    assert new.dm.dataset.classnames == ["bubbly", "bumpy", "chequered"]
    if is_dept(trainer):
        assert (trained.head_mode, reloaded.head_mode, new.head_mode) == ("fused (logits)",) * 2 + ("itm",)


OFFICIAL_HEAD = {"dept_head.film_img.": "film_lp_img.", "dept_head.film_text.": "film_lp_text.",
                 "dept_head.linear_probe.": "linear_probe_proj."}


@pytest.mark.parametrize("trainer", TRAINED)
def test_a_checkpoint_in_the_official_layout_evaluates_the_same(trainer, data_and_clip, tmp_path, restore_stdout):
    """Re-save a trained model as the official code saves it (fp16; what it saves, ``official_checkpoint_part``:
    the whole CustomCLIP for DePT, MaPLe, IVLP, PromptSRC and VPT, the prompt learner alone for CoOp, CoCoOp
    and KgCoOp, the adapter for CLIP-Adapter; official module names; a pickled scheduler object) and
    evaluate that."""
    trained = _train_py(trainer, data_and_clip, tmp_path / "train")
    cls = trainer_class(trainer)
    part = cls.official_checkpoint_part  # what the official code saves: a child of the model, or all of it
    state = {}
    for key, value in trained.model.state_dict().items():
        for ours, theirs in OFFICIAL_HEAD.items():
            key = key.replace(ours, theirs)
        if part:
            if not key.startswith(f"{part}."):
                continue
            key = key[len(part) + 1:]
        state[key] = value.half() if value.is_floating_point() else value
    folder = tmp_path / "official" / checkpoint_folder(cls)
    folder.mkdir(parents=True)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.SGD([torch.zeros(1)], lr=1.0), 10)
    torch.save({"state_dict": state, "epoch": 1, "optimizer": None, "val_result": None,
                "scheduler": {"successor": successor}}, folder / "model.pth.tar-1")
    (folder / "checkpoint").write_text("model.pth.tar-1\n")
    evaluated = _train_py(trainer, data_and_clip, tmp_path / "eval", "--eval-only", "--model-dir",
                          str(tmp_path / "official"))
    # fp16 storage rounds the weights; the predictions are what must agree
    assert _accuracy(tmp_path / "eval") == _accuracy(tmp_path / "train")
    if is_dept(trainer):
        assert evaluated.head_mode == "fused (logits)"
