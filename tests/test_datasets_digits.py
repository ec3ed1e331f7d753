"""The embedded Digits demo: written fast, deterministically, once; read through the shared base."""
import json
import os
import random
import time

import pytest

pytest.importorskip("dassl")
pytest.importorskip("sklearn")

from dassl.config import get_cfg_default  # noqa: E402
from dassl.data import DataManager  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from dept.datasets import Digits, prepare_digits  # noqa: E402
from dept.datasets.digits import CLASSNAMES  # noqa: E402
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.dassl


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    start = time.perf_counter()
    assert prepare_digits(root) == str(root)
    assert time.perf_counter() - start < 5
    return str(root)


def test_layout_split_and_images(digits_root):
    dataset_dir = os.path.join(digits_root, "digits")
    with open(os.path.join(dataset_dir, "split_zhou_Digits.json")) as f:
        split = json.load(f)
    assert {k: len(v) for k, v in split.items()} == Digits.expected_sizes
    assert sum(Digits.expected_sizes.values()) == 1797
    for relpath, label, name in split["train"] + split["val"] + split["test"]:
        assert name == CLASSNAMES[label] and relpath.startswith(f"{name}/")
    with Image.open(os.path.join(dataset_dir, "images", split["test"][0][0])) as img:
        assert img.size == (32, 32) and img.mode == "RGB"


def test_prepare_is_idempotent_deterministic_and_leaves_random_alone(digits_root, tmp_path):
    split_path = os.path.join(digits_root, "digits", "split_zhou_Digits.json")
    before = os.stat(split_path).st_mtime_ns
    random.seed(5)
    state = random.getstate()
    prepare_digits(digits_root)
    assert os.stat(split_path).st_mtime_ns == before
    prepare_digits(tmp_path)
    assert random.getstate() == state
    with open(split_path) as a, open(tmp_path / "digits" / "split_zhou_Digits.json") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("which, names", [("base", CLASSNAMES[:5]), ("new", CLASSNAMES[5:]), ("all", CLASSNAMES)])
def test_digits_through_the_datamanager(digits_root, which, names):
    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = which
    cfg.DATASET.NAME = "Digits"
    cfg.DATASET.ROOT = digits_root
    cfg.DATASET.NUM_SHOTS = 4
    cfg.SEED = 1
    cfg.INPUT.SIZE = (32, 32)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.VERBOSE = False
    set_random_seed(1)
    dm = DataManager(cfg)
    assert dm.dataset.classnames == list(names)
    assert len(dm.dataset.train_x) == 4 * len(names) and len(dm.dataset.val) == 4 * len(names)
    assert next(iter(dm.train_loader_x))["img"].shape[1:] == (3, 32, 32)
