"""CoOp split files (``split_zhou_<Name>.json``) and base/new class subsampling.

A split file is ``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``
with paths relative to the dataset's image folder and 0-based labels over all classes. The CoOp
family (CoOp, CoCoOp, MaPLe, PromptSRC, the official DePT) all read the same files, so results
are comparable only if we read them the same way: join the relative path onto the image folder,
keep the label and class name as written.
"""
import json
import logging
import math
import os

from dassl.data.datasets import Datum

from dept.util.files import atomic_open

from .errors import DatasetConfigError, MissingImagesError, SplitFileError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SUBSAMPLE_CHOICES = ("all", "base", "new")


ENTRY_FORM = "[relative image path (str), label (int >= 0), class name (str)]"
_REPLACE_HINT = ("The file is damaged or was edited: replace it with CoOp's original "
                 "(`python -m dept data fetch-splits --force`, or by hand as DATASETS.md describes).")


def read_split_entries(path):
    """The ``{"train": [...], "val": [...], "test": [...]}`` dict of a split file, validated.

    Raises ``SplitFileError`` (a ``ValueError``) naming the file when it is not valid JSON, lacks
    a split, holds an entry that is not ``[relpath, label, classname]`` (named by split and index,
    so a half-edited file does not surface as an unpacking error somewhere later), or gives one
    label two class names or one class name two labels anywhere across train/val/test (which
    would silently train one class under another's name).
    """
    try:
        with open(path, "r") as f:
            split = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SplitFileError(f"split file {path} is not valid JSON ({err}); download it again") from err
    if not isinstance(split, dict):
        raise SplitFileError(f"split file {path} holds a JSON {type(split).__name__}, not an object with "
                             f"{list(SPLITS)} lists; it is not a CoOp split file")
    missing = [key for key in SPLITS if key not in split]
    if missing:
        raise SplitFileError(f"split file {path} has no {missing} list; it is not a CoOp split file")
    for key in SPLITS:
        validate_entries(split[key], path, key)
    check_label_names(split, path)
    return split


def _entry_problem(entry):
    """What is wrong with one ``[relpath, label, classname]`` entry, or None."""
    if not isinstance(entry, (list, tuple)):
        return f"it is a {type(entry).__name__}, not a list"
    if len(entry) != 3:
        return f"it has {len(entry)} fields, not 3"
    relpath, label, classname = entry
    if not isinstance(relpath, str) or not relpath:
        return "the image path is not a non-empty string"
    if isinstance(label, bool) or not isinstance(label, int):
        return f"the label is a {type(label).__name__}, not an integer"
    if label < 0:
        return "the label is negative"
    if not isinstance(classname, str) or not classname:
        return "the class name is not a non-empty string"
    return None


def validate_entries(entries, source, split=None):
    """Raise ``SplitFileError`` naming ``source``, ``split`` and the index of the first bad entry."""
    where = f"the {split!r} list" if split else "the list"
    if not isinstance(entries, list):
        raise SplitFileError(f"{source}: {where} is a {type(entries).__name__}, not a list of {ENTRY_FORM} "
                             f"entries. {_REPLACE_HINT}")
    for index, entry in enumerate(entries):
        problem = _entry_problem(entry)
        if problem:
            raise SplitFileError(f"{source}: entry {index} of {where} is {entry!r}: {problem}; every entry must "
                                 f"be {ENTRY_FORM}. {_REPLACE_HINT}")


def check_label_names(split, source):
    """Raise ``SplitFileError`` if a label has two class names or a class name two labels.

    Labels index the classifier and class names build the prompts, so the two must agree one to one
    over the whole file; the error names both conflicting entries (split, index, content).
    """
    by_label, by_name = {}, {}
    for key in SPLITS:
        for index, entry in enumerate(split[key]):
            _, label, classname = entry
            seen = (key, index, entry)
            first = by_label.setdefault(label, seen)
            if first[2][2] != classname:
                raise SplitFileError(_conflict(source, f"label {label} has two class names", first, seen))
            first = by_name.setdefault(classname, seen)
            if first[2][1] != label:
                raise SplitFileError(_conflict(source, f"class name {classname!r} has two labels", first, seen))


def _conflict(source, what, first, second):
    def describe(seen):
        key, index, entry = seen
        return f"{key} entry {index} {list(entry)!r}"

    return f"{source}: {what}: {describe(first)} and {describe(second)}. {_REPLACE_HINT}"


def write_split_entries(split, path):
    """Write ``split`` as CoOp's ``write_json`` does (indent 4), atomically (unique temporary name)."""
    with atomic_open(path, "w") as f:
        json.dump({key: [list(e) for e in split[key]] for key in SPLITS}, f, indent=4, separators=(",", ": "))


def entries_to_datums(entries, image_dir, dataset_name, source, split=None):
    """Dassl ``Datum`` objects for ``[relpath, label, classname]`` entries under ``image_dir``.

    Entries are validated first (``SplitFileError`` naming ``source``, ``split`` and the entry).
    Dassl's ``Datum`` asserts that its file exists, which gives a bare ``AssertionError`` on the
    first absent image. We check all of them first and raise one ``MissingImagesError`` that
    names the dataset, the split file and the first few absent images.
    """
    validate_entries(entries, source, split)
    paths = [os.path.join(image_dir, relpath) for relpath, _, _ in entries]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = "\n".join(f"    {p}" for p in missing[:5])
        more = f"\n    ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MissingImagesError(
            f"{dataset_name}: {len(missing)} of {len(paths)} images listed in {source} are missing "
            f"under {image_dir}:\n{shown}{more}\n"
            "  The image folder is incomplete or the data root points to the wrong place."
        )
    return [
        Datum(impath=path, label=int(label), classname=classname)
        for path, (_, label, classname) in zip(paths, entries)
    ]


def selected_labels(labels, subsample):
    """The labels "base" / "new" / "all" keeps, in the order they are relabelled 0, 1, ...

    ``labels``: the labels present in the first list. Sorted; m = ceil(n / 2); "base" keeps
    the first m, "new" the rest, "all" every one.
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise DatasetConfigError(f"DATASET.SUBSAMPLE_CLASSES must be one of {SUBSAMPLE_CHOICES}, got {subsample!r}")
    labels = sorted(set(labels))
    m = math.ceil(len(labels) / 2)
    return {"all": labels, "base": labels[:m], "new": labels[m:]}[subsample]


def subsample_classes(*datasets, subsample="all"):
    """Keep the base (first half) or new (second half) classes, relabelled from 0.

    Exactly CoOp's ``OxfordPets.subsample_classes``: the labels present in the *first* list are
    sorted, m = ceil(n / 2); "base" keeps ``labels[:m]``, "new" keeps ``labels[m:]``; the kept
    labels become 0..k-1 in sorted order, in every list; "all" returns the lists unchanged.
    Sampling few-shot data *before* this call is what lets one cache serve base, new and all.
    """
    selected = selected_labels((item.label for item in datasets[0]), subsample)
    if subsample == "all":
        return datasets
    relabel = {old: new for new, old in enumerate(selected)}
    logger.info("Keeping the %s classes: %d of %d", subsample, len(selected),
                len({item.label for item in datasets[0]}))
    return [
        [
            Datum(impath=item.impath, label=relabel[item.label], domain=item.domain, classname=item.classname)
            for item in data
            if item.label in relabel
        ]
        for data in datasets
    ]
