"""Every dataset, on a tiny tree in its exact layout, loaded through Dassl's DataManager.

Checks class names and label order, split sizes, few-shot sampling identical to CoOp's algorithm
for a fixed seed, the cache round trip, and base/new subsampling.
"""
import math
import os
import pickle
import random

import pytest

pytest.importorskip("dassl")

import dept.datasets  # noqa: E402,F401  (registers the datasets)
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data import DataManager  # noqa: E402
from dassl.data.datasets import Datum  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from dept.datasets import CheckedDatasetWrapper  # noqa: E402
from dept.datasets.testing import BUILDERS, build_tree  # noqa: E402

pytestmark = pytest.mark.dassl

TEST_ONLY = {"ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"}
FEW_SHOT = sorted(set(BUILDERS) - TEST_ONLY)
IMAGENET_FAMILY = {"ImageNet"} | TEST_ONLY


def make_cfg(name, root, shots=-1, seed=1, subsample="all"):
    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample  # added by the project's config (extend_cfg)
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = seed
    cfg.INPUT.SIZE = (8, 8)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 4
    cfg.VERBOSE = False
    return cfg


def load(cfg):
    """What a trainer does: seed, then build the data (the seed drives few-shot sampling)."""
    set_random_seed(cfg.SEED)
    return DataManager(cfg, dataset_wrapper=CheckedDatasetWrapper).dataset


def triples(items):
    return [(d.impath, d.label, d.classname) for d in items]


def coop_fewshot(items, num_shots):
    """CoOp / Dassl few-shot sampling, restated: per label in first-appearance order,
    ``random.sample(items, K)`` (all items when fewer)."""
    groups = {}
    for item in items:
        groups.setdefault(item[1], []).append(item)
    out = []
    for group in groups.values():
        out += random.sample(group, num_shots) if len(group) >= num_shots else group
    return out


def subsample(items, labels, which):
    """CoOp's base/new rule on (path, label, name) triples."""
    labels = sorted(set(labels))
    m = math.ceil(len(labels) / 2)
    kept = labels[:m] if which == "base" else labels[m:]
    relabel = {y: i for i, y in enumerate(kept)}
    return [(p, relabel[y], c) for p, y, c in items if y in relabel]


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_full_lists_class_names_and_label_order(name, tmp_path):
    tree = build_tree(name, tmp_path)
    dataset = load(make_cfg(name, tmp_path))
    assert dataset.classnames == tree.classnames
    assert dataset.num_classes == len(tree.classnames)
    assert triples(dataset.train_x) == tree.lists["train"]
    assert triples(dataset.test) == tree.lists["test"]
    if name in TEST_ONLY:
        assert dataset.val is None
    else:
        assert triples(dataset.val) == tree.lists["val"]
    assert all(type(d) is Datum for d in dataset.train_x)  # Dassl's own class, for pickle compatibility


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_batches_come_out_of_the_loaders(name, tmp_path):
    build_tree(name, tmp_path)
    set_random_seed(1)
    dm = DataManager(make_cfg(name, tmp_path), dataset_wrapper=CheckedDatasetWrapper)
    batch = next(iter(dm.test_loader))
    assert batch["img"].shape[1:] == (3, 8, 8)


@pytest.mark.parametrize("name", FEW_SHOT)
def test_few_shot_sample_is_coops_and_cached_in_coop_format(name, tmp_path):
    tree = build_tree(name, tmp_path)
    shots, seed = 2, 3
    dataset = load(make_cfg(name, tmp_path, shots=shots, seed=seed))

    set_random_seed(seed)
    expected_train = coop_fewshot(tree.lists["train"], shots)
    assert triples(dataset.train_x) == expected_train
    if name == "ImageNet":  # val is the (full) test set and is not sampled
        assert triples(dataset.val) == tree.lists["test"]
    else:
        assert triples(dataset.val) == coop_fewshot(tree.lists["val"], min(shots, 4))
    assert triples(dataset.test) == tree.lists["test"]

    cache = os.path.join(dataset.dataset_dir, "split_fewshot", f"shot_{shots}-seed_{seed}.pkl")
    assert dataset.fewshot_cache == cache
    with open(cache, "rb") as f:
        data = pickle.load(f)
    assert set(data) == ({"train"} if name == "ImageNet" else {"train", "val"})
    assert triples(data["train"]) == expected_train
    assert all(type(d) is Datum and os.path.isabs(d.impath) for d in data["train"])


@pytest.mark.parametrize("name", FEW_SHOT)
def test_cache_round_trip_reads_the_same_sample_without_drawing(name, tmp_path):
    build_tree(name, tmp_path)
    first = load(make_cfg(name, tmp_path, shots=4, seed=1))
    set_random_seed(99)  # a different stream: a cache hit must not depend on it, nor consume it
    state = random.getstate()
    second = DataManager(make_cfg(name, tmp_path, shots=4, seed=1)).dataset
    assert random.getstate() == state
    assert triples(second.train_x) == triples(first.train_x)
    assert triples(second.val) == triples(first.val)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("which", ["base", "new"])
def test_base_new_subsampling_is_coops(name, which, tmp_path):
    tree = build_tree(name, tmp_path)
    dataset = load(make_cfg(name, tmp_path, subsample=which))
    labels = [y for _, y, _ in tree.lists["train"]]
    n, m = len(tree.classnames), math.ceil(len(tree.classnames) / 2)
    assert dataset.classnames == (tree.classnames[:m] if which == "base" else tree.classnames[m:])
    assert triples(dataset.test) == subsample(tree.lists["test"], labels, which)
    assert triples(dataset.train_x) == subsample(tree.lists["train"], labels, which)
    assert sorted({d.label for d in dataset.test}) == list(range(m if which == "base" else n - m))


@pytest.mark.parametrize("name", FEW_SHOT)
def test_one_cache_serves_base_new_and_all(name, tmp_path):
    build_tree(name, tmp_path)
    everything = load(make_cfg(name, tmp_path, shots=2, seed=1))
    labels = [d.label for d in everything.train_x]
    for which in ("base", "new"):
        part = load(make_cfg(name, tmp_path, shots=2, seed=1, subsample=which))
        assert triples(part.train_x) == subsample(triples(everything.train_x), labels, which)


@pytest.mark.parametrize("name", sorted(IMAGENET_FAMILY))
def test_imagenet_family_exposes_source_classes(name, tmp_path):
    tree = build_tree(name, tmp_path)
    dataset = load(make_cfg(name, tmp_path))
    from dept.datasets.testing import IMAGENET_CLASSES

    assert dataset.source_wnids == [w for w, _ in IMAGENET_CLASSES]
    assert dataset.source_classnames == [c for _, c in IMAGENET_CLASSES]
    assert dataset.wnids == tree.extra["wnids"]
    assert dataset.source_labels == tree.extra["source_labels"]
    assert [dataset.source_classnames[i] for i in dataset.source_labels] == dataset.classnames


def test_imagenet_a_new_classes_map_to_their_imagenet_rows(tmp_path):
    tree = build_tree("ImageNetA", tmp_path)
    dataset = load(make_cfg("ImageNetA", tmp_path, subsample="new"))
    assert dataset.source_labels == tree.extra["source_labels"][2:]
    assert dataset.classnames == tree.classnames[2:]


def test_datasets_register_idempotently():
    import importlib

    from dassl.data.datasets import DATASET_REGISTRY

    importlib.reload(dept.datasets.dtd)  # a second registration of the same definition is a no-op
    for name in BUILDERS:
        assert DATASET_REGISTRY.get(name) is not None
    assert DATASET_REGISTRY.get("Digits") is dept.datasets.Digits
