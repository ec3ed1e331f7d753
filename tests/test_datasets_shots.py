"""``DATASET.NUM_SHOTS``: -1 = all images; 0 and a K no class can give are errors; a K some
classes cannot give is a warning and a note on the dataset (``dataset.notes``)."""
import json
import logging

import pytest

pytest.importorskip("dassl")

import dept.datasets  # noqa: E402,F401
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data.datasets import build_dataset  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from dept.datasets import DatasetError  # noqa: E402
from dept.datasets.fewshot import plan_shots  # noqa: E402
from dept.datasets.testing import PER_CLASS, build_tree  # noqa: E402

pytestmark = pytest.mark.dassl


def make_cfg(name, root, shots, subsample="all", seed=1):
    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = seed
    cfg.VERBOSE = False
    return cfg


def load(cfg):
    """What DataManager does first: seed (the seed drives few-shot sampling), then build the dataset."""
    set_random_seed(cfg.SEED)
    return build_dataset(cfg)


def per_class(items):
    counts = {}
    for item in items:
        counts[item.classname] = counts.get(item.classname, 0) + 1
    return counts


def shorten(root, classname, keep, split="train"):
    """Keep only ``keep`` of ``classname``'s entries in the DTD split file's ``split`` list."""
    path = root / "dtd" / "split_zhou_DescribableTextures.json"
    data = json.loads(path.read_text())
    ours = [e for e in data[split] if e[2] == classname]
    data[split] = [e for e in data[split] if e[2] != classname] + ours[:keep]
    path.write_text(json.dumps(data))


def test_negative_shots_mean_all_images_and_no_notes(tmp_path):
    tree = build_tree("DescribableTextures", tmp_path)
    dataset = load(make_cfg("DescribableTextures", tmp_path, -1))
    assert len(dataset.train_x) == len(tree.lists["train"]) and len(dataset.val) == len(tree.lists["val"])
    assert dataset.notes == [] and dataset.fewshot_cache is None


def test_zero_shots_is_an_error_that_says_what_to_use(tmp_path):
    build_tree("DescribableTextures", tmp_path)
    with pytest.raises(ValueError) as err:
        load(make_cfg("DescribableTextures", tmp_path, 0))
    assert isinstance(err.value, DatasetError)
    message = str(err.value)
    assert "DescribableTextures" in message and "NUM_SHOTS 0" in message
    assert "-1 for all images" in message and "K >= 1" in message


@pytest.mark.parametrize("name", ["DescribableTextures", "ImageNet"])
def test_more_shots_than_the_largest_class_is_an_error(name, tmp_path):
    build_tree(name, tmp_path)
    largest = 6 if name == "ImageNet" else PER_CLASS["train"]
    with pytest.raises(ValueError) as err:
        load(make_cfg(name, tmp_path, 1000))
    message = str(err.value)
    assert name in message and "NUM_SHOTS 1000" in message and f"has {largest} training images" in message
    load(make_cfg(name, tmp_path, largest))  # exactly the largest class is fine


def test_short_classes_are_a_warning_and_a_note(tmp_path, caplog):
    build_tree("DescribableTextures", tmp_path)
    shorten(tmp_path, "blotchy", 2)
    with caplog.at_level(logging.WARNING):
        dataset = load(make_cfg("DescribableTextures", tmp_path, 3))
    expected = ("DescribableTextures: 1 of 3 classes have fewer than 3 training images and use all "
                "they have: blotchy (2)")
    assert dataset.notes == [expected]
    assert expected in caplog.text
    assert per_class(dataset.train_x) == {"banded": 3, "blotchy": 2, "braided": 3}
    # the same note when the sample comes from the cache
    again = load(make_cfg("DescribableTextures", tmp_path, 3))
    assert again.fewshot_cache == dataset.fewshot_cache and again.notes == [expected]


def test_val_shortfall_is_noted_too(tmp_path):
    build_tree("DescribableTextures", tmp_path)  # 3 val images per class; 4 shots ask for min(4, 4)
    dataset = load(make_cfg("DescribableTextures", tmp_path, 4))
    assert dataset.notes == [
        "DescribableTextures: 3 of 3 classes have fewer than 4 validation images (val takes min(K, 4) per "
        "class) and use all they have: banded (3), blotchy (3), braided (3)"]
    assert len(dataset.val) == 9


def test_only_the_classes_the_run_keeps_count(tmp_path):
    build_tree("DescribableTextures", tmp_path)  # base = banded, blotchy; new = braided
    shorten(tmp_path, "blotchy", 1)
    base = load(make_cfg("DescribableTextures", tmp_path, 3, subsample="base"))
    assert base.notes == ["DescribableTextures: 1 of 2 base classes have fewer than 3 training images and use "
                          "all they have: blotchy (1)"]
    assert load(make_cfg("DescribableTextures", tmp_path, 3, subsample="new")).notes == []
    shorten(tmp_path, "braided", 1)
    with pytest.raises(ValueError, match="NUM_SHOTS 2 is more than the largest class has: 'braided' has 1"):
        load(make_cfg("DescribableTextures", tmp_path, 2, subsample="new"))
    assert len(load(make_cfg("DescribableTextures", tmp_path, 2)).notes) == 1  # all: banded has 5


def test_plan_shots_names_at_most_twenty_classes_and_refuses_non_integers():
    from dassl.data.datasets import Datum

    class Item(Datum):
        def __init__(self, label, classname):  # no file behind it: plan_shots reads labels and names only
            self._label, self._classname = label, classname

    train = [Item(y, f"c{y}") for y in range(30) for _ in range(1 if y < 25 else 5)]
    shots, notes = plan_shots("X", 5, train)
    assert shots == {"train": 5}
    assert notes[0].startswith("X: 25 of 30 classes have fewer than 5 training images")
    assert notes[0].endswith("c19 (1), and 5 more")
    for bad in (2.5, True, "16"):
        with pytest.raises(ValueError, match="must be an integer"):
            plan_shots("X", bad, train)
