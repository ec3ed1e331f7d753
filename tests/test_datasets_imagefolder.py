"""ImageFolder, your own images: three layouts, a split made once and guarded, every protocol, bad input.

Everything runs the real pipeline (Dassl's DataManager, ``dept.run.train``, the runner) on folders
of tiny generated images.
"""
import csv
import json
import logging
import os
import subprocess
import sys

import pytest

pytest.importorskip("dassl")

import dept.datasets  # noqa: E402,F401
from conftest import REPO  # noqa: E402
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data import DataManager  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from dept.datasets import CheckedDatasetWrapper, DatasetError, ImageFolder, MissingImagesError  # noqa: E402
from dept.datasets import check as data_check  # noqa: E402
from dept.datasets.errors import DatasetConfigError, SplitFileError, UnreadableImageError  # noqa: E402
from dept.datasets.imagefolder import REBUILD_ENV, SPLIT_FILE  # noqa: E402
from dept.datasets.testing import write_image  # noqa: E402

pytestmark = pytest.mark.dassl
CLASSES = {"golden_retriever": 10, "cat": 7, "zebra": 5, "ant": 4}  # sorted: ant, cat, golden retriever, zebra


def make_folder(root, classes=CLASSES, folder="imagefolder", split=None):
    """``<root>/<folder>/[<split>/]<class>/<i>.png``, one colour per class; returns the folder."""
    path = os.path.join(str(root), folder)
    for c, (name, count) in enumerate(sorted(classes.items())):
        for i in range(count):
            write_image(os.path.join(path, *([split] if split else []), name, f"{i}.png"), seed=100 * c + i)
    return path


def make_cfg(root, subsample="all", shots=-1, **options):
    from dept.core.config import add_dept_config

    cfg = add_dept_config(get_cfg_default())
    cfg.DATASET.NAME = "ImageFolder"
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    for key, value in options.items():
        cfg.DATASET.IMAGEFOLDER[key] = value
    cfg.SEED = 1
    cfg.INPUT.SIZE = (8, 8)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.VERBOSE = False
    return cfg


def load(root, subsample="all", shots=-1, **options):
    set_random_seed(1)
    return DataManager(make_cfg(root, subsample, shots, **options), dataset_wrapper=CheckedDatasetWrapper).dataset


def split_of(folder):
    with open(os.path.join(folder, SPLIT_FILE)) as f:
        return json.load(f)


def snapshot(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            out[path] = os.stat(path).st_mtime_ns
    return out


# -- layouts, and the split made once ----------------------------------------------------------------


def test_class_folders_split_50_20_30_per_class_once_and_reused(tmp_path):
    folder = make_folder(tmp_path)
    dataset = load(tmp_path)
    assert dataset.classnames == ["ant", "cat", "golden retriever", "zebra"]  # sorted folders, `_` as space
    split = split_of(folder)
    counts = {s: {name: sum(e[2] == name for e in split[s]) for name in dataset.classnames}
              for s in ("train", "val", "test")}
    # CoOp's rounding per class: n=4 -> 2/1/1, 5 -> 2/1/2, 7 -> 4/1/2, 10 -> 5/2/3
    assert counts == {"train": {"ant": 2, "cat": 4, "golden retriever": 5, "zebra": 2},
                      "val": {"ant": 1, "cat": 1, "golden retriever": 2, "zebra": 1},
                      "test": {"ant": 1, "cat": 2, "golden retriever": 3, "zebra": 2}}
    assert {e[0] for s in split if s in ("train", "val", "test") for e in split[s]} == {
        f"{c}/{i}.png" for c, n in CLASSES.items() for i in range(n)}
    assert split["imagefolder"]["layout"] == "class folders"
    assert [(d.impath, d.label) for d in dataset.train_x] == [(os.path.join(folder, e[0]), e[1])
                                                              for e in split["train"]]
    before = os.stat(os.path.join(folder, SPLIT_FILE)).st_mtime_ns
    again = load(tmp_path)  # reused, not rewritten, the same lists
    assert os.stat(os.path.join(folder, SPLIT_FILE)).st_mtime_ns == before
    assert [d.impath for d in again.test] == [d.impath for d in dataset.test]
    other = tmp_path / "copy"  # the same images elsewhere give the same split: a fixed seed
    make_folder(other)
    load(other)
    assert split_of(str(other / "imagefolder")) == split


def test_classnames_txt_names_the_classes(tmp_path):
    folder = make_folder(tmp_path, {"n01": 4, "n02": 4, "n03": 4})
    with open(os.path.join(folder, "classnames.txt"), "w") as f:
        f.write("n01 tench\nn02 great white shark\nn03 goldfish\nn99 not here\n")
    assert load(tmp_path).classnames == ["tench", "great white shark", "goldfish"]  # label order: the folders


@pytest.mark.parametrize("with_val", [True, False])
def test_split_folders_are_kept(tmp_path, with_val):
    make_folder(tmp_path, {"a": 6, "b": 5}, split="train")
    make_folder(tmp_path, {"a": 2, "b": 3}, split="test")
    if with_val:
        make_folder(tmp_path, {"a": 1, "b": 1}, split="val")
    dataset = load(tmp_path)
    assert dataset.classnames == ["a", "b"]
    assert all("/test/" in d.impath for d in dataset.test) and len(dataset.test) == 5
    if with_val:
        assert len(dataset.train_x) == 11 and all("/val/" in d.impath for d in dataset.val)
    else:  # 20% of each class's train images (CoOp's split_trainval): round(1.2) + round(1.0)
        assert len(dataset.val) == 2 and all("/train/" in d.impath for d in dataset.val)
        assert len(dataset.train_x) == 9
    assert load(tmp_path).classnames == ["a", "b"]  # the split layout with its val matches the file


def write_csv(path, rows, header=("path", "label", "split")):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header[:len(rows[0])])
        writer.writerows(rows)


def test_csv_with_and_without_a_split_column(tmp_path):
    folder = str(tmp_path / "imagefolder")
    rows = []
    for c, name in enumerate(("dog", "bird", "fish")):
        for i in range(5):
            write_image(os.path.join(folder, "pics", f"{name}{i}.png"), seed=10 * c + i)
            rows.append([f"pics/{name}{i}.png", name, ("train", "train", "val", "test", "test")[i]])
    write_csv(os.path.join(folder, "lists", "given.csv"), [[f"../{p}", y, s] for p, y, s in rows])
    given = load(tmp_path, CSV="lists/given.csv")  # paths relative to the CSV's folder
    assert given.classnames == ["bird", "dog", "fish"]
    assert sorted(os.path.basename(d.impath) for d in given.val) == ["bird2.png", "dog2.png", "fish2.png"]
    assert len(given.train_x) == 6 and len(given.test) == 6
    os.remove(os.path.join(folder, SPLIT_FILE))
    write_csv(os.path.join(folder, "labels.csv"), [r[:2] for r in rows])
    drawn = load(tmp_path, CSV="labels.csv")
    assert (len(drawn.train_x), len(drawn.val), len(drawn.test)) == (6, 3, 6)  # 5 per class -> 2/1/2
    assert split_of(folder)["imagefolder"]["csv"] == "labels.csv"


# -- the split file is guarded --------------------------------------------------------------------------


def test_a_changed_folder_is_refused_until_a_rebuild_is_asked(tmp_path, monkeypatch):
    folder = make_folder(tmp_path)
    load(tmp_path)
    write_image(os.path.join(folder, "cat", "new.png"))
    os.remove(os.path.join(folder, "golden_retriever", "0.png"))
    with pytest.raises(SplitFileError) as err:
        load(tmp_path)
    message = str(err.value)
    assert "1 image(s) added: cat/new.png" in message and "1 image(s) removed: golden_retriever/0.png" in message
    assert f"{REBUILD_ENV}=1" in message
    make_folder(tmp_path, {"yak": 4})
    with pytest.raises(SplitFileError, match=r"class\(es\) added: yak"):
        load(tmp_path)
    monkeypatch.setenv(REBUILD_ENV, "1")
    dataset = load(tmp_path)
    assert dataset.classnames == ["ant", "cat", "golden retriever", "yak", "zebra"]
    listed = json.dumps(split_of(folder))
    assert "cat/new.png" in listed and "golden_retriever/0.png" not in listed
    monkeypatch.delenv(REBUILD_ENV)
    assert load(tmp_path).classnames == dataset.classnames  # the new split is reused


def test_renaming_a_class_in_classnames_txt_is_a_change(tmp_path):
    folder = make_folder(tmp_path, {"a": 4, "b": 4})
    load(tmp_path)
    with open(os.path.join(folder, "classnames.txt"), "w") as f:
        f.write("a apple\nb banana\n")
    with pytest.raises(SplitFileError, match=r"8 image\(s\) changed class: a/0.png \('a' -> 'apple'\)"):
        load(tmp_path)


# -- every protocol: base/new, few-shot, cross-dataset target, data check --------------------------------------


@pytest.mark.parametrize("subsample, names", [("base", ["ant", "cat"]), ("new", ["golden retriever", "zebra"])])
def test_base_new_and_few_shot_through_the_datamanager(tmp_path, subsample, names, caplog):
    make_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        dataset = load(tmp_path, subsample, shots=3)
    assert dataset.classnames == names and {d.label for d in dataset.test} == {0, 1}
    train = {n: sum(d.classname == n for d in dataset.train_x) for n in names}
    # 3 shots, or all a class has (ant has 2 training images: a note, not a silent 3-shot claim)
    assert train == ({"ant": 2, "cat": 3} if subsample == "base" else {"golden retriever": 3, "zebra": 2})
    assert any("fewer than 3 training images" in note for note in dataset.notes)
    assert os.path.isfile(os.path.join(str(tmp_path), "imagefolder", "split_fewshot", "shot_3-seed_1.pkl"))


def test_more_shots_than_any_class_has_is_refused(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(DatasetConfigError, match="NUM_SHOTS 6 is more than the largest class has"):
        load(tmp_path, shots=6)


def test_data_check_covers_it(tmp_path, capsys):
    folder = make_folder(tmp_path)
    assert data_check._datasets([], str(tmp_path))[-1] is ImageFolder  # found without asking, beside the benchmark
    (report,) = data_check.check(str(tmp_path), [ImageFolder], verify_images=True)
    assert report.status == "found" and report.num_classes == 4  # before any run: the split a run would make
    assert [(c.split, c.listed) for c in report.counts] == [("train", 13), ("val", 5), ("test", 8)]
    assert not os.path.exists(os.path.join(folder, SPLIT_FILE))  # data check writes nothing
    load(tmp_path)
    write_image(os.path.join(folder, "zebra", "x.png"))
    with open(os.path.join(folder, "cat", "0.png"), "wb") as f:
        f.write(b"not an image")
    (report,) = data_check.check(str(tmp_path), [ImageFolder], verify_images=True)
    assert report.status == "partial"
    assert any("1 image(s) added: zebra/x.png" in w for w in report.warnings)
    assert [p for p, _ in report.unreadable_images] == [os.path.join(folder, "cat", "0.png")]
    make_folder(tmp_path, folder="mine")
    assert data_check.main(["check", "--root", str(tmp_path), "--dataset", "ImageFolder:mine"]) == 0
    assert "[found  ] ImageFolder          mine/" in capsys.readouterr().out


# -- bad input: one clear error before anything is written ---------------------------------------------------


def refused(tmp_path, kind, *patterns, **options):
    folder = os.path.join(str(tmp_path), options.pop("folder", "imagefolder"))
    before = snapshot(folder)
    with pytest.raises(kind) as err:
        load(tmp_path, **options)
    assert isinstance(err.value, DatasetError)
    for pattern in patterns:
        assert pattern in str(err.value), str(err.value)
    assert snapshot(folder) == before  # nothing written, not even the split file
    return str(err.value)


def test_empty_class_folder(tmp_path):
    folder = make_folder(tmp_path)
    os.makedirs(os.path.join(folder, "empty_one"))
    refused(tmp_path, DatasetConfigError, "1 class folder(s) hold no image: empty_one/")


def test_one_class_only(tmp_path):
    make_folder(tmp_path, {"cat": 8})
    refused(tmp_path, DatasetConfigError, "only one class ('cat')")


def test_a_class_too_small_to_split(tmp_path):
    make_folder(tmp_path, {"cat": 8, "dog": 3})
    refused(tmp_path, DatasetConfigError, "fewer than 4 images", "dog (3)")


def test_unreadable_images_are_named_and_counted_and_other_files_ignored(tmp_path, caplog):
    folder = make_folder(tmp_path)
    for name, content in (("cat/broken.jpg", b"\xff\xd8 not really a jpeg"), ("zebra/empty.png", b"")):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)
    with open(os.path.join(folder, "cat", "notes.txt"), "w") as f:
        f.write("shot on a sunny day")
    with caplog.at_level(logging.WARNING):
        message = refused(tmp_path, UnreadableImageError, "2 of 28 images cannot be read", "cat/broken.jpg",
                          "zebra/empty.png (empty file (0 bytes))")
    assert "notes.txt" not in message
    assert "1 file(s) are not images (by their extension) and are ignored: cat/notes.txt" in caplog.text


def test_class_names_that_collide_after_normalisation(tmp_path):
    make_folder(tmp_path, {"golden_retriever": 4, "Golden Retriever": 4, "cat": 4})
    refused(tmp_path, DatasetConfigError, "Golden Retriever and golden_retriever are all 'Golden Retriever'")


def test_train_and_val_without_test_are_not_taken_for_two_classes(tmp_path):
    make_folder(tmp_path, {"a": 4, "b": 4}, split="train")
    make_folder(tmp_path, {"a": 1, "b": 1}, split="val")
    refused(tmp_path, DatasetConfigError, "folders train/, val/: already split images need train/ and test/")


def test_classnames_txt_must_name_every_folder(tmp_path):
    folder = make_folder(tmp_path, {"a": 4, "b": 4})
    with open(os.path.join(folder, "classnames.txt"), "w") as f:
        f.write("a apple\n")
    refused(tmp_path, DatasetConfigError, "names no class for folder(s) b")


def test_csv_with_unknown_labels_and_missing_files(tmp_path):
    folder = make_folder(tmp_path, {"a": 4, "b": 4})
    with open(os.path.join(folder, "classnames.txt"), "w") as f:
        f.write("a apple\nb banana\n")
    rows = [[f"{c}/{i}.png", c] for c in "ab" for i in range(4)] + [["a/gone.png", "a"], ["b/1.png", "c"]]
    write_csv(os.path.join(folder, "labels.csv"), rows)
    message = refused(tmp_path, MissingImagesError, "1 label(s) are not in", "'c' (line 11)",
                      "1 listed image(s) do not exist: line 10:", CSV="labels.csv")
    assert "a/gone.png" in message
    os.remove(os.path.join(folder, "classnames.txt"))  # then "c" is a class, and b/1.png is listed twice
    refused(tmp_path, MissingImagesError, "a/gone.png", "1 image(s) listed twice: line 11 (b/1.png)", CSV="labels.csv")
    refused(tmp_path, DatasetError, "labels.txt (DATASET.IMAGEFOLDER.CSV) does not exist", CSV="labels.txt")


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder .*elsewhere"):
        load(tmp_path, DIR="elsewhere")


# -- one command: the runner's base-to-new on your folder, then its model on another folder (cross-dataset) -----


def runner(protocol, tmp_path, clip_file, *flags):
    """``python -m dept <protocol>`` on ``<tmp_path>/data/imagefolder`` (seed 1, 2 shots, one epoch of the tiny
    config) into ``<tmp_path>/output``; asserts it succeeded."""
    proc = subprocess.run(
        [sys.executable, "-m", "dept", protocol, "--root", str(tmp_path / "data"), "--datasets", "imagefolder",
         "--seeds", "1", "--shots", "2", "--config", "demo_tiny", "--output", str(tmp_path / "output"), *flags,
         "--", "MODEL.BACKBONE.PATH", clip_file, "OPTIM.MAX_EPOCH", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_base_to_new_through_the_runner_then_cross_dataset(tmp_path, tiny_clip_file, restore_stdout):
    make_folder(tmp_path / "data")
    make_folder(tmp_path / "data", {"tulip": 4, "rose": 5, "daisy": 4}, folder="flowers")
    out = tmp_path / "output"
    proc = runner("base2new", tmp_path, tiny_clip_file)
    runs = os.path.join(str(out), "base2new", "{}", "imagefolder", "shots_2", "CoOpDePT", "demo_tiny+OPTIM.MAX_EPOCH=1",
                        "seed1")
    for stage in ("train_base", "test_new"):
        with open(os.path.join(runs.format(stage), "dept_run.json")) as f:
            record = json.load(f)
        assert record["status"] == "finished" and record["result"]["accuracy"] is not None, record
    with open(os.path.join(str(out), "base2new", "results", "CoOpDePT_demo_tiny+OPTIM.MAX_EPOCH=1_shots2.csv")) as f:
        (row,) = csv.DictReader(f)
    assert row["dataset"] == "imagefolder" and row["base"] and row["new"] and row["hm"]
    from dept.run.train import main

    trainer = main(["--root", str(tmp_path / "data"), "--trainer", "CoOpDePT", "--seed", "1",
                    "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "imagefolder.yaml"),
                    "--config-file", os.path.join(REPO, "configs", "trainers", "CoOpDePT", "demo_tiny.yaml"),
                    "--output-dir", str(tmp_path / "eval_flowers"), "--eval-only", "--model-dir",
                    runs.format("train_base"), "MODEL.BACKBONE.PATH", tiny_clip_file, "DATASET.NUM_SHOTS", "16",
                    "DATASET.IMAGEFOLDER.DIR", "flowers"])
    assert trainer.dm.dataset.classnames == ["daisy", "rose", "tulip"] and not trainer._head_active
    assert trainer.test_result is not None
    # a target is only evaluated: 16 shots, more than any of its classes has, is neither refused nor noted
    assert not any("shots" in note or "fewer than" in note for note in trainer.notes)

    # runs are tied to the split they used: after a new split, the old model is not evaluated on it, and the
    # runner runs its runs again instead of reusing numbers made on other images
    with open(os.path.join(runs.format("train_base"), "dept_run.json")) as f:
        old = json.load(f)["data"]
    assert old["split_file"] == os.path.join(str(tmp_path / "data"), "imagefolder", SPLIT_FILE)
    assert len(old["sha256"]) == 64
    for i in range(3):
        write_image(os.path.join(str(tmp_path / "data"), "imagefolder", "cat", f"new{i}.png"), seed=900 + i)
    os.environ[REBUILD_ENV] = "1"
    try:
        with pytest.raises(ValueError, match="trained on another split of these images"):
            main(["--root", str(tmp_path / "data"), "--trainer", "CoOpDePT", "--seed", "1",
                  "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "imagefolder.yaml"),
                  "--config-file", os.path.join(REPO, "configs", "trainers", "CoOpDePT", "demo_tiny.yaml"),
                  "--output-dir", str(tmp_path / "eval_new_split"), "--eval-only", "--model-dir",
                  runs.format("train_base"), "MODEL.BACKBONE.PATH", tiny_clip_file, "DATASET.NUM_SHOTS", "2",
                  "DATASET.SUBSAMPLE_CLASSES", "base"])
    finally:
        del os.environ[REBUILD_ENV]
    proc = runner("base2new", tmp_path, tiny_clip_file)
    assert "it ran on another split of its images" in proc.stdout + proc.stderr
    for stage in ("train_base", "test_new"):
        with open(os.path.join(runs.format(stage), "dept_run.json")) as f:
            record = json.load(f)
        assert record["status"] == "finished" and record["data"]["sha256"] != old["sha256"]


def test_few_shot_with_a_visual_prompt_method_through_the_runner(tmp_path, tiny_clip_file):
    """The few-shot protocol on your folder with a method that prompts the image encoder (MaPLe + DePT)."""
    make_folder(tmp_path / "data")
    out = tmp_path / "output"
    runner("few-shot", tmp_path, tiny_clip_file, "--trainers", "MaPLeDePT")
    (record_path,) = [os.path.join(here, "dept_run.json") for here, _, files in os.walk(str(out / "imagefolder"))
                      if "dept_run.json" in files]
    with open(record_path) as f:
        record = json.load(f)
    assert record["trainer"] == "MaPLeDePT" and record["status"] == "finished"
    assert record["head"] == "fused (logits)" and record["result"]["accuracy"] is not None  # all classes: fused
    assert record["data"]["split_file"].endswith(SPLIT_FILE)
