"""The real CoOp split files (``../shared/reference/splits`` next to the repository, when present).

Each one is read as is: class count, class names (and the naming rule behind them), split sizes,
pinned checksums; and loaded through the dataset class and Dassl's DataManager (its images
existing only for ``os.path.isfile``), with the real few-shot and base/new counts.
"""
import csv
import json
import math
import os

import pytest

pytest.importorskip("dassl")

import dept.datasets as ds  # noqa: E402
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data import DataManager  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from dept.datasets.caltech101 import IGNORED_FOLDERS  # noqa: E402
from dept.datasets.caltech101 import RENAMED_FOLDERS as CALTECH_RENAMED
from dept.datasets.checksums import verify_file  # noqa: E402
from dept.datasets.eurosat import RENAMED_FOLDERS as EUROSAT_RENAMED  # noqa: E402
from dept.datasets.imagenet_family import CLASSNAMES_CHECKSUM, read_classnames  # noqa: E402
from dept.datasets.sun397 import sun397_classname  # noqa: E402
from dept.datasets.ucf101 import ucf101_classname  # noqa: E402

pytestmark = pytest.mark.dassl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = os.path.join(REPO, "..", "shared", "reference", "splits")
RECONSTRUCTED = os.path.join(SPLITS, "reconstructed")

REAL = [ds.Caltech101, ds.DescribableTextures, ds.EuroSAT, ds.OxfordFlowers, ds.OxfordPets, ds.StanfordCars,
        ds.UCF101]


def reference(name):
    path = os.path.join(SPLITS, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not there (the shared reference splits are optional)")
    return path


def read(cls):
    with open(reference(cls.split_file)) as f:
        return json.load(f)


def classnames_by_label(split):
    names = {}
    for key in ("train", "val", "test"):
        for _, label, name in split[key]:
            assert names.setdefault(label, name) == name, f"label {label} has two names"
    return [names[label] for label in sorted(names)]


@pytest.mark.parametrize("cls", REAL, ids=lambda c: c.__name__)
def test_real_split_sizes_classes_and_checksum(cls):
    split = read(cls)
    assert {key: len(split[key]) for key in ("train", "val", "test")} == cls.expected_sizes
    names = classnames_by_label(split)
    assert len(names) == cls.expected_classes
    piece = next(p for p in cls.pieces if p.path == cls.split_file)
    assert verify_file(reference(cls.split_file), piece.checksum) is True


def folder_of(relpath):
    return relpath.split("/")[0]


def test_caltech101_names_follow_coops_rule():
    split = read(ds.Caltech101)
    for relpath, _, name in split["train"] + split["val"] + split["test"]:
        assert folder_of(relpath) not in IGNORED_FOLDERS
        assert name == CALTECH_RENAMED.get(folder_of(relpath), folder_of(relpath))
    assert classnames_by_label(split)[:4] == ["face", "leopard", "motorbike", "accordion"]


def test_eurosat_uses_coops_renamed_classes():
    split = read(ds.EuroSAT)
    assert classnames_by_label(split) == list(EUROSAT_RENAMED.values())
    for relpath, _, name in split["test"]:
        assert name == EUROSAT_RENAMED[folder_of(relpath)]


def test_ucf101_names_are_the_camel_case_rule():
    split = read(ds.UCF101)
    for relpath, _, name in split["train"] + split["test"]:
        assert name == folder_of(relpath) == ucf101_classname(folder_of(relpath).replace("_", ""))


def test_flowers_names_come_from_cat_to_name():
    with open(reference("cat_to_name.json")) as f:
        cat_to_name = json.load(f)
    split = read(ds.OxfordFlowers)
    assert all(name == cat_to_name[str(label + 1)] for _, label, name in split["train"] + split["test"])
    piece = next(p for p in ds.OxfordFlowers.pieces if p.path == "cat_to_name.json")
    assert verify_file(reference("cat_to_name.json"), piece.checksum) is True


def test_pets_names_are_lower_cased_breeds_and_cars_start_with_the_year():
    for relpath, _, name in read(ds.OxfordPets)["test"]:
        assert name == relpath.rsplit("_", 1)[0].lower()
    for relpath, _, name in read(ds.StanfordCars)["train"]:
        assert relpath.startswith("cars_train/") and name.split(" ")[0].isdigit()


def test_sun397_names_follow_coops_rule():
    with open(reference(os.path.join("reconstructed", "sun397_classnames_by_label.tsv"))) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == ds.SUN397.expected_classes
    assert all(sun397_classname(r["folder"]) == r["coop_classname"] for r in rows)


def test_imagenet_classnames_and_fgvc_variants():
    path = reference(os.path.join("reconstructed", "imagenet_classnames.txt"))
    classnames = read_classnames(path)
    assert len(classnames) == 1000 and list(classnames) == sorted(classnames)
    assert list(classnames.values()).count("missile") == 2  # CLIP's list has two
    assert verify_file(path, CLASSNAMES_CHECKSUM) is True
    variants = reference(os.path.join("reconstructed", "fgvc_aircraft_variants.txt"))
    piece = next(p for p in ds.FGVCAircraft.pieces if p.path == "variants.txt")
    assert verify_file(variants, piece.checksum) is True


def _fake_tree(cls, root, split, monkeypatch):
    """The split file for real, its 5,000 to 27,000 images only as far as ``isfile`` can tell
    (loading checks that images exist; creating that many files would dominate the test time)."""
    dataset_dir = os.path.join(root, cls.dataset_dir)
    image_dir = os.path.join(dataset_dir, cls.image_subdir) if cls.image_subdir else dataset_dir
    os.makedirs(dataset_dir)
    with open(os.path.join(dataset_dir, cls.split_file), "w") as f:
        json.dump(split, f)
    listed = {os.path.join(image_dir, e[0]) for key in ("train", "val", "test") for e in split[key]}
    real_isfile = os.path.isfile
    monkeypatch.setattr(os.path, "isfile", lambda p: p in listed or real_isfile(p))


@pytest.mark.parametrize("cls", REAL, ids=lambda c: c.__name__)
def test_real_split_through_the_datamanager(cls, tmp_path, monkeypatch):
    split = read(cls)
    _fake_tree(cls, str(tmp_path), split, monkeypatch)
    names = classnames_by_label(split)
    m = math.ceil(len(names) / 2)
    for subsample, expected_names in (("all", names), ("base", names[:m]), ("new", names[m:])):
        cfg = get_cfg_default()
        cfg.DATASET.SUBSAMPLE_CLASSES = subsample
        cfg.DATASET.NAME = cls.__name__
        cfg.DATASET.ROOT = str(tmp_path)
        cfg.DATASET.NUM_SHOTS = 16
        cfg.SEED = 1
        cfg.VERBOSE = False
        cfg.DATALOADER.NUM_WORKERS = 0
        cfg.DATASET.CHECK_IMAGES = "none"  # the images exist only for os.path.isfile
        set_random_seed(1)
        dataset = DataManager(cfg).dataset
        assert dataset.classnames == expected_names
        assert dataset.notes == []  # 16 shots: no class of these splits falls short
        k = len(expected_names)
        assert len(dataset.train_x) == 16 * k  # every class of these splits has >= 16 train images
        assert len(dataset.val) == 4 * k
        if subsample == "all":
            assert len(dataset.test) == cls.expected_sizes["test"]
