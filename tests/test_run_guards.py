"""No silent wrong answers from one run: untrained models, out-of-range values, locks, records, errors once."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl
DTD_YAML = os.path.join(REPO, "configs", "datasets", "dtd.yaml")


def argv(root, out, trainer, clip_file, *extra, subsample="base", epochs=1):
    folder = "CoOp" if trainer == "CoOp" else "CoOpDePT"
    return ["--root", str(root), "--seed", "1", "--trainer", trainer, "--dataset-config-file", DTD_YAML,
            "--config-file", os.path.join(REPO, "configs", "trainers", folder, "demo_tiny.yaml"),
            "--output-dir", str(out), *extra, "MODEL.BACKBONE.PATH", clip_file, "DATASET.NUM_SHOTS", "2",
            "DATASET.SUBSAMPLE_CLASSES", subsample, "OPTIM.MAX_EPOCH", str(epochs),
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]


def run(*args, **kwargs):
    from dept.run.train import main

    return main(argv(*args, **kwargs))


def cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "dept.run.train", *argv(*args, **kwargs)], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def dtd(tmp_path_factory):
    return make_dtd(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def coop_run(dtd, tiny_clip_file, tmp_path_factory):
    import sys as _sys

    saved = _sys.stdout
    out = tmp_path_factory.mktemp("coop") / "train"
    run(dtd, out, "CoOp", tiny_clip_file)
    _sys.stdout = saved
    return out


def test_a_checkpoint_without_dept_head_is_not_fused_with_a_random_head(dtd, tiny_clip_file, coop_run, tmp_path,
                                                                          restore_stdout):
    with pytest.raises(ValueError, match="untrained CAT head.*the checkpoint it loaded has no DePT head"):
        run(dtd, tmp_path / "e", "ExtrasLinearProbeCoOp", tiny_clip_file, "--eval-only", "--model-dir",
            str(coop_run))
    # on new classes the head is not used: a CoOp checkpoint evaluated by CoOpDePT is plain CoOp
    evaluated = run(dtd, tmp_path / "n", "CoOpDePT", tiny_clip_file, "--eval-only", "--model-dir", str(coop_run),
                    subsample="new")
    assert evaluated.head_mode == "itm"


def test_eval_only_without_a_model_is_an_error_unless_asked_for(dtd, tiny_clip_file, tmp_path, restore_stdout):
    with pytest.raises(ValueError, match="--eval-only needs --model-dir.*unset shell variable"):
        run(dtd, tmp_path / "e", "CoOp", tiny_clip_file, "--eval-only", "--model-dir", "")
    with pytest.raises(ValueError, match="--eval-only needs --model-dir"):
        run(dtd, tmp_path / "e", "CoOp", tiny_clip_file, "--eval-only")
    run(dtd, tmp_path / "u", "CoOp", tiny_clip_file, "--eval-only", "--untrained")
    record = json.loads((tmp_path / "u" / "dept_run.json").read_text())
    assert record["status"] == "finished" and record["checkpoint"] is None
    assert any("UNTRAINED" in note for note in record["notes"])
    # a random head is never fused, even on purpose; said before the model is built
    with pytest.raises(ValueError, match="--untrained loads nothing, so CoOpDePT's CAT head is untrained"):
        run(dtd, tmp_path / "d", "CoOpDePT", tiny_clip_file, "--eval-only", "--untrained")
    assert not (tmp_path / "d").exists()


def test_zero_epochs_is_an_error(dtd, tiny_clip_file, tmp_path, restore_stdout):
    with pytest.raises(ValueError, match="OPTIM.MAX_EPOCH is 0"):
        run(dtd, tmp_path / "e", "CoOp", tiny_clip_file, epochs=0)


@pytest.mark.parametrize("weight", ["1.5", "-0.1"])
def test_lambda_outside_0_1_is_an_error(dtd, tiny_clip_file, tmp_path, weight, restore_stdout):
    with pytest.raises(ValueError, match=r"DEPT.WEIGHT .* must be in \[0, 1\]"):
        run(dtd, tmp_path / "e", "CoOpDePT", tiny_clip_file, "DEPT.WEIGHT", weight)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        run(dtd, tmp_path / "e", "CoOpDePT", tiny_clip_file, "TRAINER.LINEAR_PROBE.WEIGHT", weight)


def test_both_spellings_written_with_different_values_is_an_error(dtd, tiny_clip_file, tmp_path, restore_stdout):
    with pytest.raises(ValueError, match="DEPT.WEIGHT=0.7 and its official alias TRAINER.LINEAR_PROBE.WEIGHT=0.5"):
        run(dtd, tmp_path / "e", "CoOpDePT", tiny_clip_file, "DEPT.WEIGHT", "0.7", "TRAINER.LINEAR_PROBE.WEIGHT",
            "0.5")


def test_an_official_key_alone_is_used_said_and_recorded(dtd, tiny_clip_file, tmp_path, restore_stdout, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="dept"):
        trainer = run(dtd, tmp_path / "a", "CoOpDePT", tiny_clip_file, "TRAINER.LINEAR_PROBE.WEIGHT", "0.5")
    assert trainer.head.weight == 0.5
    assert "DEPT.WEIGHT = 0.5, from the official key TRAINER.LINEAR_PROBE.WEIGHT" in caplog.text
    record = json.loads((tmp_path / "a" / "dept_run.json").read_text())
    assert "WEIGHT: 0.5" in record["config"].split("DEPT:")[1].split("\n\n")[0]
    # each setting once, under the key that applied: no official spelling beside DEPT.*
    assert "LINEAR_PROBE" not in record["config"] and "STAGED_LR" not in record["config"].split("OPTIM:")[1]
    assert "LR_EXP" not in record["config"] and "NAMES_TO_UPDATE: []" in record["config"]
    assert record["trainable"]["tensors"] == ["dept_head.film_img.bias", "dept_head.film_img.scale",
                                              "dept_head.film_text.bias", "dept_head.film_text.scale",
                                              "dept_head.linear_probe.bias", "dept_head.linear_probe.weight",
                                              "prompt_learner.ctx"]


def test_a_run_that_would_train_nothing_is_refused(dtd, tiny_clip_file, tmp_path, restore_stdout):
    """CoOp with no context vectors has 0 trainable parameters: its number would be the model as
    built reported as trained. Refused before training, with what to do; nothing is recorded as
    finished."""
    with pytest.raises(ValueError, match=r"CoOp has nothing to train: its trainable tensors hold 0 parameters "
                                         r"\(prompt_learner.ctx \(0, 64\)\).*TRAINER.COOP.*--eval-only --untrained"):
        run(dtd, tmp_path / "a", "CoOp", tiny_clip_file, "TRAINER.COOP.N_CTX", "0")
    record = json.loads((tmp_path / "a" / "dept_run.json").read_text())
    assert record["status"] == "failed" and record["result"] is None
    # the same model evaluated as built, on purpose, is recorded as untrained
    trainer = run(dtd, tmp_path / "b", "CoOp", tiny_clip_file, "--eval-only", "--untrained", "TRAINER.COOP.N_CTX", "0")
    assert trainer.test_result is not None
    assert "UNTRAINED" in json.loads((tmp_path / "b" / "dept_run.json").read_text())["notes"][0]


def test_input_size_must_match_the_clip_in_both_dimensions(dtd, tiny_clip_file, tmp_path, restore_stdout):
    with pytest.raises(ValueError, match=r"INPUT.SIZE is \(32, 64\).*set INPUT.SIZE \(32, 32\)"):
        run(dtd, tmp_path / "e", "CoOp", tiny_clip_file, "INPUT.SIZE", "(32, 64)")


def test_the_run_record_says_what_ran_and_what_it_gave(dtd, tiny_clip_file, coop_run, tmp_path, restore_stdout):
    record = json.loads((coop_run / "dept_run.json").read_text())
    assert record["status"] == "finished" and record["mode"] == "train" and record["trainer"] == "CoOp"
    assert "MAX_EPOCH: 1" in record["config"]
    with open(coop_run / "log.txt") as f:
        printed = [line for line in f if "* accuracy:" in line][-1]
    assert f"{record['result']['accuracy']:.1f}%" in printed
    final = record["checkpoint"]
    assert final["path"] == str(coop_run / "prompt_learner" / "model.pth.tar-1") and final["epoch"] == 1
    assert record["clip"]["arch"]["embed_dim"] == 32 and record["clip"]["name"] == "tiny-random"
    # accuracy per class (in label order, consistent with the total), and the words nearest the context
    per_class = record["result"]["per_class"]
    assert [c["class"] for c in per_class] == ["banded", "blotchy", "braided"]  # the base half of make_dtd's six
    assert sum(c["n"] * c["accuracy"] for c in per_class) / sum(c["n"] for c in per_class) == \
        pytest.approx(record["result"]["accuracy"])
    words = record["prompt_words"]
    assert len(words) == 4 and all(len(w) == 5 and w[0]["distance"] <= w[-1]["distance"] for w in words)
    evaluated = tmp_path / "eval"
    run(dtd, evaluated, "CoOp", tiny_clip_file, "--eval-only", "--model-dir", str(coop_run), subsample="new")
    eval_record = json.loads((evaluated / "dept_run.json").read_text())
    assert eval_record["mode"] == "eval" and eval_record["checkpoint"]["sha256"] == final["sha256"]


def test_evaluation_loads_the_file_the_pointer_names(dtd, tiny_clip_file, coop_run, tmp_path, restore_stdout):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(coop_run, copy)
    folder = copy / "prompt_learner"
    (folder / "model.pth.tar-7").write_bytes(b"a partial file from a full disk")
    trainer = run(dtd, tmp_path / "e", "CoOp", tiny_clip_file, "--eval-only", "--model-dir", str(copy))
    assert trainer.loaded_checkpoint["path"] == str(folder / "model.pth.tar-1")
    (folder / "checkpoint").write_text("model.pth.tar-7\n")
    with pytest.raises(ValueError, match=f"Checkpoint {folder / 'model.pth.tar-7'} cannot be read.*--load-epoch"):
        run(dtd, tmp_path / "e2", "CoOp", tiny_clip_file, "--eval-only", "--model-dir", str(copy))


def test_a_second_process_on_the_same_output_dir_is_refused(dtd, tiny_clip_file, tmp_path):
    from dept.store.record import lock_path
    from dept.util.files import FileLock

    out = tmp_path / "busy"
    out.mkdir()
    with FileLock(lock_path(str(out))):
        proc = cli(dtd, out, "CoOp", tiny_clip_file)
    assert proc.returncode == 1
    assert "is locked: another process is running there" in proc.stderr


def test_errors_are_printed_once_and_kept_in_the_log(dtd, tiny_clip_file, tmp_path):
    out = tmp_path / "bad"
    proc = cli(dtd, out, "CoOpDePT", tiny_clip_file, "DEPT.WEIGHT", "1.5")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("must be in [0, 1]") == 1 and "must be in [0, 1]" not in proc.stdout
    # a dataset error raised inside the run: once on the console, once in log.txt
    (tmp_path / "broken" / "dtd").mkdir(parents=True)
    proc = cli(tmp_path / "broken", out, "CoOp", tiny_clip_file)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    console = proc.stdout + proc.stderr
    assert console.count("split file not found") == 1, console[-2000:]
    assert (out / "log.txt").read_text().count("split file not found") == 1
    assert json.loads((out / "dept_run.json").read_text())["status"] == "failed"


def test_eval_only_log_does_not_claim_training(dtd, tiny_clip_file, coop_run, tmp_path, restore_stdout):
    out = tmp_path / "e"
    run(dtd, out, "CoOp", tiny_clip_file, "--eval-only", "--model-dir", str(coop_run))
    assert "Training " not in (out / "log.txt").read_text()
    assert torch.load(coop_run / "prompt_learner" / "model.pth.tar-1", weights_only=True)["format"] == "dept/1"
