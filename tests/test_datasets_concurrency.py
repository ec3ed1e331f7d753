"""Writers that run at the same time as other writers or readers: the demo dataset, the few-shot
cache and the tiny CLIP file are whole or absent, never half-written."""
import multiprocessing
import os
import pickle
import subprocess
import sys

import pytest

pytest.importorskip("dassl")

from dept.datasets import check as data_check  # noqa: E402
from dept.datasets.digits import SPLIT_FILE, prepare_digits  # noqa: E402
from dept.datasets.fewshot import _save  # noqa: E402
from dept.datasets.images import find_bad_images  # noqa: E402
from dept.datasets.splits import SPLITS, read_split_entries  # noqa: E402

pytestmark = pytest.mark.dassl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def assert_complete_digits(root):
    """The split file lists 1,797 images, every one a whole PNG, and no temporary file is left."""
    dataset_dir = os.path.join(root, "digits")
    entries = read_split_entries(os.path.join(dataset_dir, SPLIT_FILE))
    paths = [os.path.join(dataset_dir, "images", e[0]) for key in SPLITS for e in entries[key]]
    assert len(paths) == 1797
    assert find_bad_images(paths) == []
    leftovers = [f for _, _, files in os.walk(dataset_dir) for f in files if f.endswith(".tmp")]
    assert leftovers == []


def _prepare_then_read(root):
    """``prepare-demo``, then what a run does: read. Whoever returns first must find it whole."""
    assert data_check.main(["prepare-demo", "--root", root]) == 0
    assert_complete_digits(root)


def test_concurrent_prepare_in_forked_processes(tmp_path):
    """2, 3 and 4 processes forked at once on a fresh root (no interpreter start-up to stagger
    them), twice over; each one checks the dataset as soon as its own ``prepare_digits`` returns."""
    pytest.importorskip("sklearn")
    context = multiprocessing.get_context("fork")
    for attempt, processes in enumerate((2, 3, 4, 2, 3, 4)):
        root = str(tmp_path / f"data{attempt}")
        workers = [context.Process(target=_prepare_then_read, args=(root,)) for _ in range(processes)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert [w.exitcode for w in workers] == [0] * processes, f"attempt {attempt}"
        assert_complete_digits(root)


def test_concurrent_prepare_demo_commands(tmp_path):
    """The command itself, twice at once on a fresh root: both succeed, the dataset is complete."""
    pytest.importorskip("sklearn")
    root = str(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "dept", "data", "prepare-demo", "--root", root]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(outputs)
    assert all(f"Digits demo ready under {root}/digits" in out for out in outputs)
    assert_complete_digits(root)
    mode = os.stat(os.path.join(root, "digits", SPLIT_FILE)).st_mode & 0o777
    assert mode == 0o666 & ~umask()  # as open() makes it: readable by the other users of a shared root


def test_an_interrupted_prepare_is_finished_by_the_next_one(tmp_path):
    """A writer killed half-way leaves images and temporary files but no split file: not prepared."""
    pytest.importorskip("sklearn")
    root = str(tmp_path)
    prepare_digits(root)
    dataset_dir = os.path.join(root, "digits")
    os.remove(os.path.join(dataset_dir, SPLIT_FILE))
    image = os.path.join(dataset_dir, "images", "zero", "zero_0000.png")
    open(image, "wb").close()  # as a power cut may leave it
    leftover = os.path.join(dataset_dir, "images", "one", ".one_0001.png.abc123.tmp")
    open(leftover, "wb").close()
    prepare_digits(root)
    assert not os.path.exists(leftover)
    assert_complete_digits(root)


def test_fewshot_cache_write_that_fails_leaves_nothing_behind(tmp_path):
    cache = tmp_path / "split_fewshot" / "shot_2-seed_1.pkl"
    _save({"train": [1, 2]}, str(cache), "X")
    assert pickle.loads(cache.read_bytes()) == {"train": [1, 2]}
    assert cache.stat().st_mode & 0o777 == 0o666 & ~umask()  # a shared data root: others read it too
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        _save({"train": [lambda: 0]}, str(cache), "X")  # fails half-way through pickling
    assert pickle.loads(cache.read_bytes()) == {"train": [1, 2]}  # the old cache, whole
    assert sorted(os.listdir(cache.parent)) == ["shot_2-seed_1.pkl"]  # no temporary file left


def test_save_tiny_clip_replaces_the_file_instead_of_rewriting_it(tmp_path):
    """A reader that opened the file before a rewrite keeps reading the whole old file."""
    import torch

    from dept.core.testing import save_tiny_clip, tiny_clip

    path = str(tmp_path / "tiny_clip.pt")
    save_tiny_clip(path, seed=0)
    with open(path, "rb") as f:
        old = f.read()
    with open(path, "rb") as reader:
        save_tiny_clip(path, seed=1)
        assert reader.read() == old
    written = torch.load(path, weights_only=True)["positional_embedding"]
    assert torch.equal(written, tiny_clip(1).state_dict()["positional_embedding"])
    assert os.listdir(tmp_path) == ["tiny_clip.pt"]
