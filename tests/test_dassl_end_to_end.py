"""The real pipeline on a tiny generated DTD: Dassl DataManager, our trainers, train.py, checkpoints."""
import os

import pytest
import torch
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl
DTD_YAML = os.path.join(REPO, "configs", "datasets", "dtd.yaml")


def config(trainer):
    return os.path.join(REPO, "configs", "trainers", trainer, "demo_tiny.yaml")


def run(root, out, trainer, clip_file, *extra, subsample="base", epochs=2):
    from dept.run.train import main

    argv = ["--root", str(root), "--seed", "1", "--trainer", trainer, "--dataset-config-file", DTD_YAML,
            "--config-file", config("CoOp" if trainer == "CoOp" else "CoOpDePT"),
            "--output-dir", str(out), *extra,
            "MODEL.BACKBONE.PATH", clip_file, "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", subsample,
            "OPTIM.MAX_EPOCH", str(epochs), "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
    return main(argv)


def accuracy_lines(out):
    with open(os.path.join(out, "log.txt")) as f:
        return [line for line in f if "* accuracy:" in line]


@pytest.fixture(scope="module")
def dtd(tmp_path_factory):
    return make_dtd(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def trained(dtd, tiny_clip_file, tmp_path_factory):
    """CoOp+DePT trained for 2 epochs on the 3 base classes (runs once for the module)."""
    import sys

    saved = sys.stdout
    out = str(tmp_path_factory.mktemp("run") / "train_base")
    trainer = run(dtd, out, "CoOpDePT", tiny_clip_file)
    sys.stdout = saved
    return out, trainer


def test_training_writes_log_accuracy_and_a_small_checkpoint(trained):
    out, trainer = trained
    lines = accuracy_lines(out)
    assert len(lines) == 1  # Dassl's evaluation of the base test split after training
    path = os.path.join(out, "PromptLearner", "model.pth.tar-2")
    state = torch.load(path, weights_only=True)  # tensors and plain values only
    assert sorted(state["state_dict"]) == [
        "dept_head.film_img.bias", "dept_head.film_img.scale", "dept_head.film_text.bias",
        "dept_head.film_text.scale", "dept_head.linear_probe.bias", "dept_head.linear_probe.weight",
        "prompt_learner.ctx",
    ]
    assert state["head_classes"] == ["banded", "blotchy", "braided"]
    assert state["epoch"] == 2 and state["scheduler"]["last_epoch"] == 2
    # the head and cwT moved, the frozen CLIP did not
    assert not torch.equal(state["state_dict"]["dept_head.film_img.scale"], torch.ones(32))


def test_only_prompt_cwt_and_head_train(trained):
    _, trainer = trained
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt_learner.ctx", "dept_head.film_img.scale", "dept_head.film_img.bias",
                         "dept_head.film_text.scale", "dept_head.film_text.bias",
                         "dept_head.linear_probe.weight", "dept_head.linear_probe.bias"}
    lrs = sorted(g["lr"] for g in trainer.optim.param_groups)
    assert lrs[1] == pytest.approx(6.5 * lrs[0])


def test_reloaded_checkpoint_gives_the_same_base_accuracy(trained, dtd, tiny_clip_file, tmp_path, restore_stdout):
    out, trainer = trained
    evaluated = run(dtd, tmp_path / "eval_base", "CoOpDePT", tiny_clip_file, "--eval-only", "--model-dir", out)
    assert evaluated._head_active  # base classes: fused ITM + CAT
    assert accuracy_lines(tmp_path / "eval_base") == accuracy_lines(out)


def test_new_classes_use_itm_only(trained, dtd, tiny_clip_file, tmp_path, restore_stdout):
    out, trainer = trained
    evaluated = run(dtd, tmp_path / "eval_new", "CoOpDePT", tiny_clip_file, "--eval-only", "--model-dir", out,
                    subsample="new")
    assert not evaluated._head_active
    assert evaluated.dm.dataset.classnames == ["bubbly", "bumpy", "chequered"]
    assert len(accuracy_lines(tmp_path / "eval_new")) == 1
    # ITM-only prediction is exactly the plain model's logits
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(evaluated.model_inference(images), evaluated.model(images))


def test_official_trainer_name_runs(trained, dtd, tiny_clip_file, tmp_path, restore_stdout):
    out, _ = trained
    evaluated = run(dtd, tmp_path / "eval_alias", "ExtrasLinearProbeCoOp", tiny_clip_file, "--eval-only",
                    "--model-dir", out)
    assert type(evaluated).__name__ == "CoOpDePT"
    assert accuracy_lines(tmp_path / "eval_alias") == accuracy_lines(out)


def test_resume_continues_from_the_saved_epoch_and_refuses_other_settings(dtd, tiny_clip_file, tmp_path,
                                                                           restore_stdout):
    out = tmp_path / "resume"
    run(dtd, out, "CoOpDePT", tiny_clip_file, epochs=2)
    # a finished run resumed with its own settings: nothing left to train, evaluated again
    trainer = run(dtd, out, "CoOpDePT", tiny_clip_file, epochs=2)
    assert trainer.start_epoch == 2
    # the same folder with another schedule would mix two configs: refused, naming the key
    with pytest.raises(ValueError, match="OPTIM.MAX_EPOCH: 2 there, 3 now"):
        run(dtd, out, "CoOpDePT", tiny_clip_file, epochs=3)


def test_coop_baseline_trains_and_checkpoints_only_the_context(dtd, tiny_clip_file, tmp_path, restore_stdout):
    out = tmp_path / "coop"
    trainer = run(dtd, out, "CoOp", tiny_clip_file, epochs=1)
    state = torch.load(os.path.join(out, "prompt_learner", "model.pth.tar-1"), weights_only=True)
    assert list(state["state_dict"]) == ["prompt_learner.ctx"]
    assert trainer.model.dept_head is None


def test_text_features_cached_for_evaluation_equal_per_batch(trained):
    _, trainer = trained
    images = torch.randn(3, 3, 32, 32)
    trainer.set_model_mode("eval")
    trainer.before_test()
    with torch.no_grad():
        per_batch = trainer.model_inference(images)
        with trainer.model.cached_text_features():
            cached = trainer.model_inference(images)
            assert trainer.model._text_cache is not None
    torch.testing.assert_close(cached, per_batch)


def test_checkpoint_written_by_the_official_code_evaluates_the_same(trained, dtd, tiny_clip_file, tmp_path,
                                                                     restore_stdout):
    """Re-save our trained tensors the way the official trainer does (full CustomCLIP state dict under
    PromptLearner/, official module names, a pickled scheduler object) and evaluate that."""
    out, trainer = trained
    rename = {"dept_head.film_img.": "film_lp_img.", "dept_head.film_text.": "film_lp_text.",
              "dept_head.linear_probe.": "linear_probe_proj."}
    state = {}
    for key, value in trainer.model.state_dict().items():
        for ours, theirs in rename.items():
            key = key.replace(ours, theirs)
        state[key] = value.half() if value.is_floating_point() else value
    official = tmp_path / "official_run"
    (official / "PromptLearner").mkdir(parents=True)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.SGD([torch.zeros(1)], lr=1.0), 10)
    torch.save({"state_dict": state, "epoch": 2, "optimizer": None, "val_result": None,
                "scheduler": {"successor": successor}}, official / "PromptLearner" / "model.pth.tar-2")
    (official / "PromptLearner" / "checkpoint").write_text("model.pth.tar-2\n")
    evaluated = run(dtd, tmp_path / "eval_official", "ExtrasLinearProbeCoOp", tiny_clip_file, "--eval-only",
                    "--model-dir", str(official))
    assert evaluated._head_active
    # fp16 storage of the official format rounds the weights; predictions are what we compare
    assert accuracy_lines(tmp_path / "eval_official") == accuracy_lines(out)


def test_bad_inputs_give_clear_errors(trained, dtd, tiny_clip_file, tmp_path, restore_stdout):
    out, _ = trained
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(tmp_path / "no_data", tmp_path / "e1", "CoOpDePT", tiny_clip_file)
    with pytest.raises(ValueError, match="Unknown trainer 'CoOpDPT'.*CoOpDePT"):
        run(dtd, tmp_path / "e2", "CoOpDPT", tiny_clip_file)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        run(dtd, tmp_path / "e3", "CoOpDePT", str(tmp_path / "missing.pt"))
    # a class-specific context trained on 3 base classes cannot be evaluated on 6 classes
    csc_run = tmp_path / "csc"
    run(dtd, csc_run, "CoOp", tiny_clip_file, "TRAINER.COOP.CSC", "True", epochs=1)
    with pytest.raises(ValueError, match="another number of classes"):
        run(dtd, tmp_path / "e4", "CoOp", tiny_clip_file, "--eval-only", "--model-dir", str(csc_run),
            "TRAINER.COOP.CSC", "True", subsample="all")
    # a DePT head trained on other classes, evaluated as this dataset's base classes
    other = make_dtd(str(tmp_path / "other"), classes=("waffled", "woven", "wrinkled", "zigzagged"))
    with pytest.raises(ValueError, match="another dataset or split"):
        run(other, tmp_path / "e5", "CoOpDePT", tiny_clip_file, "--eval-only", "--model-dir", out)


def test_imagenet_head_applies_to_a_variant_through_its_rows(tiny_clip_file, tmp_path, restore_stdout):
    """Train on all ImageNet classes; a variant whose classes are among them (as ImageNet-R's 200 of
    1000) is evaluated fused through the matching head rows, picked by WNID, not by dataset name."""
    from dept.datasets.testing import IMAGENET_CLASSES, _variant, imagenet, imagenet_a

    root = str(tmp_path / "data")
    imagenet(root)  # trains on the first three WNIDs
    wnids = [IMAGENET_CLASSES[i][0] for i in (2, 0)]
    _variant("ImageNetR", root, "imagenet-rendition", "imagenet-r", wnids, readme=True)
    imagenet_a(root)  # WNIDs 1, 3, 4: two of them were never trained
    out = tmp_path / "imagenet"
    yaml = os.path.join(REPO, "configs", "datasets", "{}.yaml")

    def go(dataset, *extra):
        from dept.run.train import main

        return main(["--root", root, "--seed", "1", "--trainer", "CoOpDePT", "--dataset-config-file",
                     yaml.format(dataset), "--config-file", config("CoOpDePT"), *extra, "MODEL.BACKBONE.PATH",
                     tiny_clip_file, "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1"])

    trained = go("imagenet", "--output-dir", str(out))
    assert trained.model.dept_head.classes == [w for w, _ in IMAGENET_CLASSES[:3]]
    variant = go("imagenet_r", "--output-dir", str(tmp_path / "r"), "--eval-only", "--model-dir", str(out))
    assert variant._head_active and variant.model.dept_head.rows == [0, 2]
    other = go("imagenet_a", "--output-dir", str(tmp_path / "a"), "--eval-only", "--model-dir", str(out))
    assert not other._head_active


@pytest.mark.parametrize("encoding", ["full", "truncated", "shared_prefix"])
def test_text_encoding_key_selects_the_path_and_gives_the_same_result(trained, dtd, tiny_clip_file, tmp_path,
                                                                       restore_stdout, encoding):
    out, _ = trained
    evaluated = run(dtd, tmp_path / encoding, "CoOpDePT", tiny_clip_file, "--eval-only", "--model-dir", out,
                    "DEPT.TEXT_ENCODING", encoding)
    assert evaluated.model.text_encoding == encoding
    assert accuracy_lines(tmp_path / encoding) == accuracy_lines(out)
