"""Bad input: missing folder / split file / image, unreadable image, stale or moved caches."""
import logging
import os
import pickle
import random
import shutil

import pytest

pytest.importorskip("dassl")

import dept.datasets  # noqa: E402,F401
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data import DataManager  # noqa: E402
from dassl.data.datasets import Datum  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from dept.datasets import (  # noqa: E402
    CheckedDatasetWrapper,
    DatasetNotFoundError,
    MissingImagesError,
    UnreadableImageError,
)
from dept.datasets.testing import build_tree  # noqa: E402

pytestmark = pytest.mark.dassl


def make_cfg(name, root, shots=-1, seed=1, workers=0):
    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = seed
    cfg.INPUT.SIZE = (8, 8)
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.DATALOADER.TEST.BATCH_SIZE = 4
    cfg.VERBOSE = False
    return cfg


def load(cfg):
    set_random_seed(cfg.SEED)
    return DataManager(cfg, dataset_wrapper=CheckedDatasetWrapper)


def paths(items):
    return [d.impath for d in items]


def test_missing_dataset_folder_names_the_path_and_the_source(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load(make_cfg("DescribableTextures", tmp_path))
    message = str(err.value)
    assert os.path.join(str(tmp_path), "dtd") in message
    assert "dtd-r1.0.1.tar.gz" in message and "data check" in message
    assert isinstance(err.value, FileNotFoundError)


def test_missing_split_file_names_the_path_and_the_download(tmp_path):
    build_tree("DescribableTextures", tmp_path)
    split = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    split.unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load(make_cfg("DescribableTextures", tmp_path))
    assert str(split) in str(err.value)
    assert "drive.google.com" in str(err.value) and "fetch-splits" in str(err.value)


@pytest.mark.parametrize("piece", ["variants.txt", "images_variant_val.txt"])
def test_missing_list_file_of_fgvc_aircraft(piece, tmp_path):
    build_tree("FGVCAircraft", tmp_path)
    (tmp_path / "fgvc_aircraft" / piece).unlink()
    with pytest.raises(DatasetNotFoundError, match=piece):
        load(make_cfg("FGVCAircraft", tmp_path))


def test_missing_classnames_of_an_imagenet_variant(tmp_path):
    build_tree("ImageNetA", tmp_path)
    (tmp_path / "imagenet-adversarial" / "classnames.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="classnames.txt") as err:
        load(make_cfg("ImageNetA", tmp_path))
    assert "imagenet/classnames.txt" in str(err.value)  # says it can be copied from ImageNet


def test_missing_image_names_the_file_the_split_and_the_dataset(tmp_path):
    tree = build_tree("OxfordPets", tmp_path)
    gone = tree.lists["val"][0][0]
    os.remove(gone)
    with pytest.raises(MissingImagesError) as err:
        load(make_cfg("OxfordPets", tmp_path))
    message = str(err.value)
    assert "OxfordPets" in message and gone in message and "split_zhou_OxfordPets.json" in message
    assert "1 of 9 images" in message


def _truncate(path):
    with open(path, "rb") as f:
        head = f.read(30)
    with open(path, "wb") as f:
        f.write(head)


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_image_error_names_the_file_and_the_dataset(workers, tmp_path):
    """The loader-time net (CheckedDatasetWrapper), for a file that goes bad after the up-front
    check; the check itself is off here (tests/test_datasets_images.py covers it)."""
    tree = build_tree("DescribableTextures", tmp_path)
    bad = tree.lists["test"][1][0]
    _truncate(bad)
    cfg = make_cfg("DescribableTextures", tmp_path, workers=workers)
    cfg.DATASET.CHECK_IMAGES = "none"
    dm = load(cfg)
    batches = iter(dm.test_loader)
    try:
        with pytest.raises(UnreadableImageError) as err:
            for _ in batches:
                pass
    finally:
        if workers:  # else the worker is only reaped at exit, after a 5 s timeout
            batches._shutdown_workers()
    assert bad in str(err.value) and "DescribableTextures" in str(err.value)


def test_other_errors_in_the_wrapper_are_not_blamed_on_the_image(tmp_path):
    build_tree("DescribableTextures", tmp_path)
    cfg = make_cfg("DescribableTextures", tmp_path)
    dm = load(cfg)

    def broken(img):
        raise ValueError("a transform bug")

    wrapper = CheckedDatasetWrapper(cfg, dm.dataset.test, transform=broken)
    with pytest.raises(ValueError, match="a transform bug"):
        wrapper[0]


def _cache(dataset_dir, shots=2, seed=1):
    return os.path.join(dataset_dir, "split_fewshot", f"shot_{shots}-seed_{seed}.pkl")


def test_stale_cache_with_other_counts_is_set_aside_and_resampled(tmp_path, caplog):
    build_tree("DescribableTextures", tmp_path)
    good = load(make_cfg("DescribableTextures", tmp_path, shots=2)).dataset
    dataset_dir = good.dataset_dir
    os.replace(_cache(dataset_dir), _cache(dataset_dir, shots=3))  # a 2-shot sample under the 3-shot name
    with caplog.at_level(logging.WARNING):
        fresh = load(make_cfg("DescribableTextures", tmp_path, shots=3)).dataset
    assert "does not match the current split" in caplog.text
    assert os.path.exists(_cache(dataset_dir, shots=3) + ".stale")
    assert len(fresh.train_x) == 3 * 3
    with open(_cache(dataset_dir, shots=3), "rb") as f:
        assert len(pickle.load(f)["train"]) == 9


def test_stale_cache_after_the_split_changed_is_detected(tmp_path, caplog):
    tree = build_tree("EuroSAT", tmp_path)
    first = load(make_cfg("EuroSAT", tmp_path, shots=2)).dataset
    # Re-label one sampled image in the split file: the cache no longer matches it.
    import json

    split_path = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    split = json.loads(split_path.read_text())
    sampled = os.path.relpath(first.train_x[0].impath, first.image_dir)
    split["train"] = [e for e in split["train"] if e[0] != sampled]
    split_path.write_text(json.dumps(split))
    with caplog.at_level(logging.WARNING):
        second = load(make_cfg("EuroSAT", tmp_path, shots=2)).dataset
    assert "is not in the split" in caplog.text
    assert first.train_x[0].impath not in paths(second.train_x)
    assert len(tree.classnames) * 2 == len(second.train_x)


def test_unreadable_cache_is_stale(tmp_path, caplog):
    build_tree("Food101", tmp_path)
    os.makedirs(tmp_path / "food-101" / "split_fewshot")
    (tmp_path / "food-101" / "split_fewshot" / "shot_2-seed_1.pkl").write_bytes(b"not a pickle")
    with caplog.at_level(logging.WARNING):
        dataset = load(make_cfg("Food101", tmp_path, shots=2)).dataset
    assert "cannot be unpickled" in caplog.text
    assert len(dataset.train_x) == 6


@pytest.mark.parametrize("name", ["DescribableTextures", "StanfordCars", "ImageNet"])
def test_cache_written_under_another_root_is_rerooted(name, tmp_path, caplog):
    old, new = tmp_path / "old", tmp_path / "new"
    build_tree(name, old)
    first = load(make_cfg(name, old, shots=2)).dataset
    shutil.move(str(old), str(new))
    set_random_seed(12345)
    state = random.getstate()
    with caplog.at_level(logging.INFO):
        moved = DataManager(make_cfg(name, new, shots=2)).dataset
    assert random.getstate() == state  # the cache was used, nothing was resampled
    assert "does not match" not in caplog.text
    assert "re-root" in caplog.text
    assert paths(moved.train_x) == [p.replace(str(old), str(new)) for p in paths(first.train_x)]
    assert all(os.path.isfile(p) for p in paths(moved.train_x))


def test_official_style_cache_with_foreign_absolute_paths_is_used(tmp_path):
    """A cache CoOp wrote on another machine: Datum objects with /elsewhere/... paths."""
    tree = build_tree("UCF101", tmp_path)
    image_dir = str(tmp_path / "ucf101" / "UCF-101-midframes")
    foreign = "/cluster/shared/data/ucf101/UCF-101-midframes"

    def datum(path, label, name):
        d = Datum.__new__(Datum)  # as unpickling does: no existence check
        d.__dict__.update(_impath=path.replace(image_dir, foreign), _label=label, _domain=0, _classname=name)
        return d

    train = [datum(*t) for t in tree.lists["train"][::5]]  # one per class
    val = [datum(*t) for t in tree.lists["val"][::3]]
    os.makedirs(tmp_path / "ucf101" / "split_fewshot")
    with open(_cache(str(tmp_path / "ucf101"), shots=1), "wb") as f:
        pickle.dump({"train": train, "val": val}, f)
    dataset = load(make_cfg("UCF101", tmp_path, shots=1)).dataset
    assert paths(dataset.train_x) == [t[0] for t in tree.lists["train"][::5]]
    assert paths(dataset.val) == [t[0] for t in tree.lists["val"][::3]]


def test_imagenet_preprocessed_pickle_is_reused_and_rerooted(tmp_path, monkeypatch):
    from dept.datasets.imagenet import ImageNet

    old, new = tmp_path / "old", tmp_path / "new"
    build_tree("ImageNet", old)
    first = load(make_cfg("ImageNet", old)).dataset
    assert os.path.isfile(old / "imagenet" / "preprocessed.pkl")
    shutil.move(str(old), str(new))

    def no_listing(self, split, classnames):
        raise AssertionError("the folders were listed although preprocessed.pkl exists")

    monkeypatch.setattr(ImageNet, "_read_folder", no_listing)
    moved = load(make_cfg("ImageNet", new)).dataset
    assert paths(moved.test) == [p.replace(str(old), str(new)) for p in paths(first.test)]


def test_unusable_imagenet_pickle_falls_back_to_listing(tmp_path, caplog):
    tree = build_tree("ImageNet", tmp_path)
    (tmp_path / "imagenet" / "preprocessed.pkl").write_bytes(b"\x80garbage")
    with caplog.at_level(logging.WARNING):
        dataset = load(make_cfg("ImageNet", tmp_path)).dataset
    assert "unusable" in caplog.text
    assert len(dataset.train_x) == len(tree.lists["train"])


def test_unknown_subsample_choice_is_refused(tmp_path):
    build_tree("DescribableTextures", tmp_path)
    cfg = make_cfg("DescribableTextures", tmp_path)
    cfg.DATASET.SUBSAMPLE_CLASSES = "Base"
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES"):
        load(cfg)
