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

from .errors import MissingImagesError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SUBSAMPLE_CHOICES = ("all", "base", "new")


def read_split_entries(path):
    """The raw ``{"train": [...], "val": [...], "test": [...]}`` dict of a split file.

    Raises ``ValueError`` naming the file if it is not valid JSON or lacks a split, so a
    half-downloaded file does not surface as a ``KeyError`` somewhere later.
    """
    try:
        with open(path, "r") as f:
            split = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"split file {path} is not valid JSON ({err}); download it again") from err
    missing = [key for key in SPLITS if key not in split]
    if missing:
        raise ValueError(f"split file {path} has no {missing} list; it is not a CoOp split file")
    return split


def write_split_entries(split, path):
    """Write ``split`` as CoOp's ``write_json`` does (indent 4), atomically."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({key: [list(e) for e in split[key]] for key in SPLITS}, f, indent=4, separators=(",", ": "))
    os.replace(tmp, path)


def entries_to_datums(entries, image_dir, dataset_name, source):
    """Dassl ``Datum`` objects for ``[relpath, label, classname]`` entries under ``image_dir``.

    Dassl's ``Datum`` asserts that its file exists, which gives a bare ``AssertionError`` on the
    first absent image. We check all of them first and raise one ``MissingImagesError`` that
    names the dataset, the split file and the first few absent images.
    """
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
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be one of {SUBSAMPLE_CHOICES}, got {subsample!r}")
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
