"""Fault injection: a run killed anywhere and resumed ends bit-identical to one never killed.

Each run is a real ``python -m dept.run.train`` subprocess on a tiny DTD with random augmentation
(random resized crop and flip, so the random streams matter), stopped at a chosen point by
``DEPT_FAULT`` (dept.util.faults: SIGKILL or SIGTERM sent to itself), then started again with the same
command. The final checkpoint's tensors, the optimizer state and the printed accuracy must equal
those of an uninterrupted run exactly.
"""
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl

EPOCHS = 3  # 12 base-class images at batch 4: 3 steps an epoch, 9 in all


def command(root, out, clip_file, *extra):
    return [sys.executable, "-m", "dept.run.train", "--root", root, "--seed", "1", "--trainer", "CoOpDePT",
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
            "--config-file", os.path.join(REPO, "configs", "trainers", "CoOpDePT", "demo_tiny.yaml"),
            "--output-dir", str(out), "MODEL.BACKBONE.PATH", clip_file, "DATASET.NUM_SHOTS", "4",
            "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", str(EPOCHS), "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "INPUT.TRANSFORMS", "['random_resized_crop', 'random_flip', 'normalize']", *extra]


def launch(cmd, fault=None):
    env = dict(os.environ)
    env.pop("DEPT_FAULT", None)
    if fault:
        env["DEPT_FAULT"] = fault
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def final_state(out):
    folder = os.path.join(out, "PromptLearner")
    state = torch.load(os.path.join(folder, f"model.pth.tar-{EPOCHS}"), weights_only=True)
    with open(os.path.join(out, "log.txt")) as f:
        accuracy = [line for line in f if "* accuracy:" in line][-1]
    return state, accuracy


def assert_identical(a, b):
    (state_a, acc_a), (state_b, acc_b) = a, b
    assert state_a["state_dict"].keys() == state_b["state_dict"].keys()
    for key, value in state_a["state_dict"].items():
        assert torch.equal(value, state_b["state_dict"][key]), key
    momentum_a = [s["momentum_buffer"] for s in state_a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in state_b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b)) and len(momentum_a) == len(momentum_b)
    assert state_a["scheduler"] == state_b["scheduler"]
    assert acc_a == acc_b


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from dept.core.testing import save_tiny_clip

    base = tmp_path_factory.mktemp("resume")
    root = make_dtd(str(base / "data"), per_split=(8, 2, 3))
    clip_file = save_tiny_clip(str(base / "clip.pt"))
    return base, root, clip_file


@pytest.fixture(scope="module")
def reference(setup):
    base, root, clip_file = setup
    out = base / "uninterrupted"
    proc = launch(command(root, out, clip_file))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return final_state(out)


@pytest.mark.parametrize("fault", [
    "step:2",        # SIGKILL before the first checkpoint
    "step:5",        # SIGKILL mid-epoch (epoch 2)
    "checkpoint:2",  # SIGKILL right after the epoch-2 checkpoint
    "test:1",        # SIGKILL after training, before the final evaluation
])
def test_killed_run_resumes_bit_identical(setup, reference, fault):
    base, root, clip_file = setup
    out = base / f"killed_{fault.replace(':', '_')}"
    cmd = command(root, out, clip_file)
    killed = launch(cmd, fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = launch(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_identical(final_state(out), reference)


@pytest.mark.parametrize("workers, signal", [(0, "TERM"), (2, "TERM"), (0, "TERMx2")])
def test_sigterm_mid_epoch_saves_and_resumes_bit_identical(setup, reference, workers, signal, tmp_path):
    """TERMx2: the signal arrives twice at once (the scheduler's and the runner's forward): still one stop."""
    base, root, clip_file = setup
    ref = reference
    if workers:  # DataLoader workers draw their own random streams: compare with a reference using them
        ref_out = tmp_path / "reference_workers"
        proc = launch(command(root, ref_out, clip_file, "DATALOADER.NUM_WORKERS", str(workers)))
        assert proc.returncode == 0, proc.stderr[-3000:]
        ref = final_state(ref_out)
    out = tmp_path / "terminated"
    cmd = command(root, out, clip_file, "DATALOADER.NUM_WORKERS", str(workers))
    stopped = launch(cmd, f"step:4:{signal}")  # epoch 2, after its first batch
    assert stopped.returncode == 143
    assert "Traceback" not in stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("Interrupted by SIGTERM at epoch 2/3, batch 1/3: state saved to ")
    assert last.endswith("model-interrupted.pth.tar. Run the same command again to resume.")
    resumed = launch(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming epoch 2 at batch 2 of 3" in resumed.stdout
    assert_identical(final_state(out), ref)
    assert not (out / "PromptLearner" / "model-interrupted.pth.tar").exists()


def test_every_epoch_is_saved_and_only_the_last_and_requested_are_kept(setup, tmp_path):
    base, root, clip_file = setup
    out = tmp_path / "kept"
    proc = launch(command(root, out, clip_file, "TRAIN.CHECKPOINT_FREQ", "2"), "checkpoint:1")
    assert proc.returncode == -9
    assert sorted(os.listdir(out / "PromptLearner")) == ["checkpoint", "model.pth.tar-1"]  # saved after epoch 1
    proc = launch(command(root, out, clip_file, "TRAIN.CHECKPOINT_FREQ", "2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(out / "PromptLearner")) == ["checkpoint", "model.pth.tar-2", "model.pth.tar-3"]


def test_truncated_checkpoint_is_named_and_the_last_good_one_resumes(setup, reference, tmp_path):
    base, root, clip_file = setup
    out = tmp_path / "truncated"
    cmd = command(root, out, clip_file, "TRAIN.CHECKPOINT_FREQ", "1")  # keep every epoch
    assert launch(cmd, "checkpoint:2").returncode == -9
    newest = out / "PromptLearner" / "model.pth.tar-2"
    newest.write_bytes(newest.read_bytes()[:1000])  # what a full disk used to leave behind
    resumed = launch(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Checkpoint {newest} cannot be read" in resumed.stdout
    assert (out / "PromptLearner" / "model.pth.tar-2.corrupt").is_file()
    assert_identical(final_state(out), reference)


def test_an_unreadable_best_model_trains_the_run_again_from_the_start(setup, tmp_path):
    """TEST.FINAL_MODEL best_val: no later state can rebuild the best model, so a damaged one sends
    the run back to its start, which ends exactly as the first time (instead of failing forever)."""
    base, root, clip_file = setup

    def best_val(out):
        return command(root, out, clip_file, "TEST.FINAL_MODEL", "best_val")

    first = launch(best_val(tmp_path / "first"))
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "damaged"
    assert launch(best_val(out), "checkpoint:3").returncode == -9  # killed after its last save
    best = out / "PromptLearner" / "model-best.pth.tar"
    best.write_bytes(best.read_bytes()[:100])
    again = launch(best_val(out))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"Checkpoint {best} cannot be read" in again.stdout and "trains again from the start" in again.stdout
    assert (out / "PromptLearner" / "model-best.pth.tar.corrupt").is_file()
    assert_identical(final_state(out), final_state(tmp_path / "first"))
    reread = torch.load(best, weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "first" / "PromptLearner" / "model-best.pth.tar", weights_only=True)
    assert reread.keys() == expected["state_dict"].keys()
    assert all(torch.equal(value, expected["state_dict"][key]) for key, value in reread.items())
