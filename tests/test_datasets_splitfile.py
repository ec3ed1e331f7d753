"""Split files whose entries are malformed or contradict each other are refused, naming the file,
the split, the entry's index and the entry itself."""
import io
import json

import pytest

pytest.importorskip("dassl")

import dept.datasets  # noqa: E402,F401
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data.datasets import build_dataset  # noqa: E402
from dept.datasets import DatasetError, DescribableTextures  # noqa: E402
from dept.datasets import check as data_check  # noqa: E402
from dept.datasets.splits import entries_to_datums, read_split_entries  # noqa: E402
from dept.datasets.testing import build_tree  # noqa: E402

pytestmark = pytest.mark.dassl

SPLIT_FILE = "split_zhou_DescribableTextures.json"


def make_cfg(root):
    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.DATASET.NAME = "DescribableTextures"
    cfg.DATASET.ROOT = str(root)
    cfg.VERBOSE = False
    return cfg


def edit(root, change):
    """Apply ``change(split_dict)`` to the tiny DTD's split file; return the file's path."""
    path = root / "dtd" / SPLIT_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize("bad, problem", [
    (lambda e: e[:2], "it has 2 fields, not 3"),
    (lambda e: [e[0], str(e[1]), e[2]], "the label is a str, not an integer"),
    (lambda e: [e[0], 1.0, e[2]], "the label is a float, not an integer"),
    (lambda e: [e[0], -1, e[2]], "the label is negative"),
    (lambda e: [e[0], e[1], None], "the class name is not a non-empty string"),
    (lambda e: [None, e[1], e[2]], "the image path is not a non-empty string"),
    (lambda e: {"path": e[0]}, "it is a dict, not a list"),
])
def test_a_malformed_entry_names_the_file_split_index_and_entry(bad, problem, tmp_path):
    build_tree("DescribableTextures", tmp_path)
    replaced = {}

    def change(data):
        replaced["entry"] = data["val"][4] = bad(data["val"][4])

    path = edit(tmp_path, change)
    with pytest.raises(ValueError) as err:
        build_dataset(make_cfg(tmp_path))
    assert isinstance(err.value, DatasetError)
    message = str(err.value)
    assert path in message and "entry 4 of the 'val' list" in message
    assert repr(replaced["entry"]) in message and problem in message


def test_a_label_with_two_class_names_names_both_entries(tmp_path):
    build_tree("DescribableTextures", tmp_path)
    seen = {}

    def change(data):
        first = next(i for i, e in enumerate(data["train"]) if e[1] == 1)
        seen["first"] = (first, data["train"][first])
        index = next(i for i, e in enumerate(data["test"]) if e[1] == 1)
        data["test"][index][2] = "dotted"  # label 1 is "blotchy" everywhere else
        seen["second"] = (index, data["test"][index])

    path = edit(tmp_path, change)
    with pytest.raises(ValueError) as err:
        read_split_entries(path)
    message = str(err.value)
    assert path in message and "label 1 has two class names" in message
    assert f"train entry {seen['first'][0]} {seen['first'][1]!r}" in message
    assert f"test entry {seen['second'][0]} {seen['second'][1]!r}" in message


def test_a_class_name_with_two_labels_is_refused(tmp_path):
    build_tree("DescribableTextures", tmp_path)

    def change(data):
        index = next(i for i, e in enumerate(data["val"]) if e[2] == "braided")
        data["val"][index][1] = 7

    path = edit(tmp_path, change)
    with pytest.raises(ValueError, match="class name 'braided' has two labels: train entry"):
        build_dataset(make_cfg(tmp_path))
    with pytest.raises(ValueError, match=path):
        read_split_entries(path)


def test_a_split_that_is_not_a_list_or_not_an_object(tmp_path):
    build_tree("DescribableTextures", tmp_path)
    path = edit(tmp_path, lambda data: data.update(test={"a": 1}))
    with pytest.raises(ValueError, match="the 'test' list is a dict, not a list"):
        read_split_entries(path)
    with open(path, "w") as f:
        json.dump([["a.jpg", 0, "a"]], f)
    with pytest.raises(ValueError, match="holds a JSON list, not an object"):
        read_split_entries(path)


def test_data_check_reports_the_bad_entry_instead_of_crashing(tmp_path):
    build_tree("DescribableTextures", tmp_path)
    edit(tmp_path, lambda data: data["train"].__setitem__(0, data["train"][0][:2]))
    out = io.StringIO()
    (report,) = data_check.check(str(tmp_path), [DescribableTextures], out=out)
    assert report.status == "partial"
    assert "entry 0 of the 'train' list" in out.getvalue()


def test_entries_to_datums_validates_lists_that_are_not_split_files(tmp_path):
    with pytest.raises(ValueError, match=r"variants\.txt: entry 1 of the list is \('b\.jpg', 0\)"):
        entries_to_datums([("a.jpg", 0, "a"), ("b.jpg", 0)], str(tmp_path), "X", "variants.txt")
