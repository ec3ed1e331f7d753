"""ImageFolder: your own images as a dataset of the CoOp benchmark's kind (``DATASET.NAME ImageFolder``).

The folder ``<DATASET.ROOT>/<DATASET.IMAGEFOLDER.DIR>`` (default ``imagefolder``; an absolute DIR is
taken as it is) holds ``<class>/*`` (each class is split 50/20/30 into train/val/test, CoOp's
proportions and rounding for DTD, by a private RNG of fixed seed), ``{train,val,test}/<class>/*``
(kept; without ``val/``, 20% of each class's train images become val, as CoOp's ``split_trainval``
does), or a CSV (``DATASET.IMAGEFOLDER.CSV``) of ``path,label[,split]`` rows, paths relative to the
CSV (without the split column, rows are split like class folders). Labels follow the sorted folder
names (CSV: labels), so "base" is the first half; a class is named by its folder with ``_`` as a
space, or by ``classnames.txt`` (``<folder> <class name>`` per line, as ImageNet's).

The split is made once and written as a CoOp split file, ``split_ImageFolder.json``, beside the
images (with an extra ``imagefolder`` key saying how it was made, for ``data check``); later runs
reuse it. Each run compares it with the folder: images or classes added, removed or renamed since
make the run fail (its numbers would be for other images than the split's) unless
``DEPT_REBUILD_SPLIT=1`` asks for a new split. Problems with the images (an empty class folder, one
class, two folders with one class name, unreadable files, a CSV naming absent files or unknown
labels) are reported together, in one ``DatasetError``, before anything is computed or written.
"""
import collections
import csv
import json
import logging
import os
import random
from dataclasses import dataclass, field

from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register
from dept.util.files import atomic_open, sha256
from dept.util.images import IMAGE_SUFFIXES

from .base import CoOpDataset, image_check_mode
from .errors import DatasetConfigError, DatasetNotFoundError, MissingImagesError, SplitFileError, UnreadableImageError
from .fewshot import FEWSHOT_DIR
from .images import find_bad_images
from .report import FOUND, PARTIAL, Piece, Report, SplitCount, count_present
from .splits import SPLITS, entries_to_datums, read_split_entries

logger = logging.getLogger(__name__)

DEFAULT_DIR = "imagefolder"
SPLIT_FILE = "split_ImageFolder.json"
CLASSNAMES_FILE = "classnames.txt"
REBUILD_ENV = "DEPT_REBUILD_SPLIT"  # =1: make a new split even though one was written before
FRACTIONS = (0.5, 0.2)  # train, val per class; the rest is test (CoOp's DTD-style 50/20/30)
VAL_FRACTION = 0.2  # val taken from train when a split layout has none (CoOp's split_trainval)
SPLIT_SEED = 0
MIN_IMAGES = 4  # the fewest images 50/20/30 with CoOp's rounding cuts into three non-empty parts
IMAGE_EXTENSIONS = frozenset(IMAGE_SUFFIXES)
SHOWN = 10  # paths or classes a message names before it counts the rest
GUIDE = 'DATASETS.md, section "Your own images"'
LAYOUT = ("your images, one folder per class (<class>/*.jpg), or train/, val/, test/ holding such "
          f"folders, or a CSV of path,label[,split] named by DATASET.IMAGEFOLDER.CSV ({GUIDE})")


def shown(items, limit=SHOWN):
    """``a, b, c`` and, past ``limit``, ``... and N more``."""
    items = [str(i) for i in items]
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def normalise(key):
    """A folder name or CSV label as a class name: ``_`` read as a space, runs of spaces as one."""
    return " ".join(key.replace("_", " ").split())


def _rel(path, folder):
    return os.path.relpath(path, folder).replace(os.sep, "/")


def _hidden(name):  # .DS_Store, .git, our own temporary files
    return name.startswith(".")


def _is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass
class Listing:
    """What a folder (or its CSV) holds, and what is wrong with it.

    ``items``: image path relative to the folder -> ``(class key, split or None)``; ``names``:
    class key (folder name or CSV label) -> class name; labels follow the sorted keys.
    ``problems``: ``(DatasetError subclass, message)``, each fatal; ``warnings``: messages.
    """

    folder: str
    layout: str = "class folders"
    items: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def problem(self, kind, message):  # kind: the DatasetError subclass raised when it comes first
        self.problems.append((kind, message))

    @property
    def keys(self):
        return sorted(self.names)

    @property
    def val_from_train(self):
        """True when the split is given but has no val: val is then drawn from train."""
        splits = {split for _, split in self.items.values()}
        return None not in splits and "val" not in splits

    def expected(self):
        """``{relpath: (label, class name, the splits it may be in)}`` for comparing with a split file."""
        label, carved = {key: i for i, key in enumerate(self.keys)}, self.val_from_train
        allowed = {None: set(SPLITS), "train": {"train", "val"} if carved else {"train"}, "val": {"val"},
                   "test": {"test"}}
        return {rel: (label[key], self.names[key], allowed[split]) for rel, (key, split) in self.items.items()}


def read_classnames(folder, listing):
    """``{folder name: class name}`` from ``<folder>/classnames.txt``, or None without one."""
    path = os.path.join(folder, CLASSNAMES_FILE)
    if not os.path.isfile(path):
        return None
    mapping = {}
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            words = line.split()
            if not words:
                continue
            if len(words) < 2:
                listing.problem(DatasetConfigError, f"{path} line {number} ({line.strip()!r}) gives no class name: "
                                "each line is `<folder name> <class name>`")
            elif words[0] in mapping:
                listing.problem(DatasetConfigError, f"{path} line {number} names {words[0]!r} a second time")
            else:
                mapping[words[0]] = " ".join(words[1:])
    return mapping


def _class_images(folder, class_dir):
    """The image files under ``class_dir`` (any depth) and its other files, relative to ``folder``, sorted."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        for name in sorted(f for f in filenames if not _hidden(f)):
            (images if _is_image_name(name) else others).append(_rel(os.path.join(dirpath, name), folder))
    return images, others


def _subdirs(path):
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not _hidden(e.name))


def _scan_folders(listing):
    """Fill ``listing`` from class folders, or from train/ [val/] test/ holding class folders."""
    folder = listing.folder
    dirs = [d for d in _subdirs(folder) if d != FEWSHOT_DIR]
    given = "train" in dirs and "test" in dirs and set(dirs) <= set(SPLITS)
    listing.layout = "split folders" if given else "class folders"
    if not given and set(dirs) & set(SPLITS):  # train/ and val/ alone would silently be two classes
        listing.problem(DatasetConfigError, f"folders {shown(d + '/' for d in dirs)}: already split images need "
                        "train/ and test/ (and val/, optional) and nothing else beside them; class folders may not "
                        "be named train, val or test")
        return
    parts = [(s, os.path.join(folder, s)) for s in SPLITS if s in dirs] if given else [(None, folder)]
    empty, ignored, loose = [], [], []
    for split, part in parts:
        loose += [_rel(e.path, folder) for e in os.scandir(part) if e.is_file() and _is_image_name(e.name)]
        for key in (_subdirs(part) if given else dirs):
            images, others = _class_images(folder, os.path.join(part, key))
            ignored += others
            listing.names[key] = None
            if not images:
                empty.append(_rel(os.path.join(part, key), folder) + "/")
            listing.items.update((rel, (key, split)) for rel in images)
    if empty:
        listing.problem(DatasetConfigError, f"{len(empty)} class folder(s) hold no image: {shown(empty)}. "
                        "Add images or remove the folder")
    if ignored:
        listing.warnings.append(f"{len(ignored)} file(s) are not images (by their extension) and are ignored: "
                                f"{shown(ignored)}")
    if loose:
        listing.warnings.append(f"{len(loose)} image(s) lie outside any class folder and are ignored: {shown(loose)}")


def _csv_rows(path, listing):
    """``[(line number, [cells])]`` of a CSV, blank lines and a ``path,label[,split]`` header left out."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(f), 1) if any(c.strip() for c in row)]
    if rows and rows[0][1][0].lower() == "path":
        rows = rows[1:]
    bad = [n for n, cells in rows if len(cells) not in (2, 3) or not all(cells)]
    if bad:
        listing.problem(DatasetConfigError, f"{path}: line(s) {shown(bad)} are not `path,label` or "
                        "`path,label,split` with every field filled")
    elif len({len(cells) for _, cells in rows}) > 1:
        listing.problem(DatasetConfigError, f"{path}: some rows name a split and others do not; "
                        "give the split column on every row or on none")
    if not rows:
        listing.problem(DatasetConfigError, f"{path} lists no image")
    return [] if bad else rows


def _scan_csv(listing, csv_name, classnames):
    """Fill ``listing`` from the rows of the CSV ``csv_name`` (relative to the folder, or absolute)."""
    path = os.path.join(listing.folder, os.path.expanduser(csv_name))
    listing.layout = "csv"
    if not os.path.isfile(path):
        listing.problem(DatasetNotFoundError, f"the CSV {path} (DATASET.IMAGEFOLDER.CSV) does not exist")
        return
    base = os.path.dirname(path)
    missing, repeated, bad_split, unknown = [], [], [], collections.defaultdict(list)
    for number, cells in _csv_rows(path, listing):
        image, key, split = (cells + [None])[:3]
        full = os.path.normpath(os.path.join(base, os.path.expanduser(image)))
        rel = _rel(full, listing.folder)
        if split is not None and split not in SPLITS:
            bad_split.append(f"line {number} ({split!r})")
        elif classnames is not None and key not in classnames:
            unknown[key].append(number)
        elif rel in listing.items:
            repeated.append(f"line {number} ({image})")
        elif not os.path.isfile(full):
            missing.append(f"line {number}: {full}")
        else:
            listing.items[rel] = (key, split)
            listing.names[key] = None
    if missing:
        listing.problem(MissingImagesError, f"{path}: {len(missing)} listed image(s) do not exist: {shown(missing)}")
    if bad_split:
        listing.problem(DatasetConfigError, f"{path}: the split must be one of {', '.join(SPLITS)}: {shown(bad_split)}")
    if unknown:
        labels = [f"{key!r} (line {shown(lines, 3)})" for key, lines in sorted(unknown.items())]
        listing.problem(DatasetConfigError, f"{path}: {len(unknown)} label(s) are not in "
                        f"{os.path.join(listing.folder, CLASSNAMES_FILE)}: {shown(labels)}")
    if repeated:
        listing.problem(DatasetConfigError, f"{path}: {len(repeated)} image(s) listed twice: {shown(repeated)}")


def _name_classes(listing, classnames):
    """Give each class key its name; refuse missing names, empty names and names given twice."""
    if classnames is not None:
        absent = [key for key in listing.keys if key not in classnames]
        if absent and listing.layout != "csv":  # a CSV's unknown labels are already reported
            listing.problem(DatasetConfigError, f"{os.path.join(listing.folder, CLASSNAMES_FILE)} names no class "
                            f"for folder(s) {shown(absent)}: add a line `<folder> <class name>` for each")
        unused = sorted(set(classnames) - set(listing.names))
        if unused:
            listing.warnings.append(f"{CLASSNAMES_FILE} names {len(unused)} class(es) with no images: {shown(unused)}")
    for key in listing.keys:
        listing.names[key] = classnames.get(key, normalise(key)) if classnames is not None else normalise(key)
    by_name = collections.defaultdict(list)
    for key in listing.keys:
        by_name[listing.names[key].casefold()].append(key)
    twice = [f"{' and '.join(keys)} are all {listing.names[keys[0]]!r}" for keys in by_name.values() if len(keys) > 1]
    if twice:
        listing.problem(DatasetConfigError, "two classes may not share a name (`_` reads as a space, case is "
                        f"ignored): {'; '.join(twice)}. Merge or rename them, or name them apart in {CLASSNAMES_FILE}")
    if "" in by_name:
        listing.problem(DatasetConfigError, f"class {by_name[''][0]!r} has an empty name")
    if len(listing.names) == 1:
        listing.problem(DatasetConfigError, f"only one class ({listing.keys[0]!r}): classification needs two or more")
    elif not listing.names and not listing.problems:
        listing.problem(DatasetNotFoundError, f"no class folder or image found; expected {LAYOUT}")
    if listing.names and all(key.isdigit() for key in listing.names) and classnames is None:
        listing.warnings.append("the class names are numbers, so the prompts read 'a photo of a 3.': give the "
                                f"classes their names in {CLASSNAMES_FILE}")


def scan(folder, csv_name=""):
    """The ``Listing`` of ``folder``: its images, classes and class names, and every problem found."""
    listing = Listing(folder)
    classnames = read_classnames(folder, listing)
    if csv_name:
        _scan_csv(listing, csv_name, classnames)
    else:
        _scan_folders(listing)
    _name_classes(listing, classnames)
    return listing


def make_split(listing):
    """``(split, problems)``: the CoOp split ``{"train": [[relpath, label, classname], ...], ...}``.

    Classes are cut 50/20/30 when the listing gives no split (each needs ``MIN_IMAGES``); a given
    split is kept, with val drawn from train where it has none. One RNG of seed ``SPLIT_SEED``
    shuffles each class's sorted paths in label order, so the same folder always gives the same split.
    """
    rng, per_class = random.Random(SPLIT_SEED), collections.defaultdict(lambda: collections.defaultdict(list))
    for rel in sorted(listing.items):
        per_class[listing.items[rel][0]][listing.items[rel][1]].append(rel)
    split, problems, few, no_train = {s: [] for s in SPLITS}, [], [], []
    for label, key in enumerate(listing.keys):
        parts = per_class[key]
        if None in parts:
            images = parts.pop(None)
            if len(images) < MIN_IMAGES:
                few.append(f"{key} ({len(images)})")
                continue
            rng.shuffle(images)
            n_train, n_val = round(len(images) * FRACTIONS[0]), round(len(images) * FRACTIONS[1])
            parts.update(train=images[:n_train], val=images[n_train:n_train + n_val], test=images[n_train + n_val:])
        elif listing.val_from_train:
            train = parts["train"]
            rng.shuffle(train)
            n_val = round(len(train) * VAL_FRACTION)
            parts.update(val=train[:n_val], train=train[n_val:])
        no_train += [key] if not parts["train"] else []
        for s in SPLITS:
            split[s] += [[rel, label, listing.names[key]] for rel in parts[s]]
    if few:
        problems.append((DatasetConfigError, f"{len(few)} class(es) have fewer than {MIN_IMAGES} images, too few "
                         f"to split 50/20/30 into train, val and test: {shown(few)}. Add images, or split them "
                         "yourself (train/, val/, test/ folders)"))
    if no_train:
        problems.append((DatasetConfigError, f"{len(no_train)} class(es) have no training image, so no model "
                         f"learns them: {shown(no_train)}"))
    return split, problems


def split_notes(split):
    """What a reader of the results must know about a split: classes with no test image."""
    untested = sorted({e[2] for e in split["train"]} - {e[2] for e in split["test"]})
    return [f"ImageFolder: {len(untested)} class(es) have no test image and are not evaluated: {shown(untested)}"
            ] if untested else []


def raise_problems(problems, folder):
    """One error (of the first problem's kind) naming every problem, or nothing when there is none."""
    if not problems:
        return
    lines = "\n".join(f"  - {message}" for _, message in problems)
    raise problems[0][0](f"ImageFolder: {len(problems)} problem(s) with {folder} (found before anything was "
                         f"computed or written):\n{lines}\n  The layouts are in {GUIDE}.")


def changes(listing, split):
    """What differs between the folder and its split file, as phrases; ``[]`` when they agree."""
    recorded = {rel: (label, name, s) for s in SPLITS for rel, label, name in split[s]}
    current = listing.expected()
    added, removed = sorted(set(current) - set(recorded)), sorted(set(recorded) - set(current))
    both = sorted(set(current) & set(recorded))
    relabelled = [f"{rel} ({recorded[rel][1]!r} -> {current[rel][1]!r})" for rel in both
                  if current[rel][1] != recorded[rel][1]]
    moved = [f"{rel} ({recorded[rel][2]} -> {'/'.join(sorted(current[rel][2]))})" for rel in both
             if recorded[rel][2] not in current[rel][2]]
    new_classes = sorted({v[1] for v in current.values()} - {v[1] for v in recorded.values()})
    gone_classes = sorted({v[1] for v in recorded.values()} - {v[1] for v in current.values()})
    found = [(new_classes, "class(es) added"), (gone_classes, "class(es) gone"), (added, "image(s) added"),
             (removed, "image(s) removed"), (relabelled, "image(s) changed class"), (moved, "image(s) changed split")]
    out = [f"{len(items)} {what}: {shown(items, 5)}" for items, what in found if items]
    relabelled = any(current[rel][0] != recorded[rel][0] for rel in both)  # e.g. a folder renamed, same name
    return out or (["the classes' labels changed (the order of the folders)"] if relabelled else [])


def read_split(path):
    """The split file at ``path`` (``splits.read_split_entries``), its errors pointing to the rebuild."""
    try:
        return read_split_entries(path)
    except (OSError, ValueError) as err:
        raise SplitFileError(f"ImageFolder: {err}\n  This split file was made from your folder: run again with "
                             f"{REBUILD_ENV}=1 (or delete it) to make it anew.") from err


def write_split(split, source, path):
    """Write ``split`` as CoOp's ``write_json`` does (indent 4), plus how it was made, atomically."""
    data = {**{s: [list(e) for e in split[s]] for s in SPLITS}, "imagefolder": source}
    with atomic_open(path, "w") as f:
        json.dump(data, f, indent=4, separators=(",", ": "))


class ImageFolder(CoOpDataset):
    """Your own images (see the module doc), read through the shared base: few-shot, base/new, checks."""

    dataset_dir = DEFAULT_DIR  # DATASET.IMAGEFOLDER.DIR's default; ``data check`` looks here
    image_subdir = ""
    split_file = SPLIT_FILE
    pieces = (Piece("", "image folder", LAYOUT, is_dir=True),)

    def __init__(self, cfg):
        options = getattr(cfg.DATASET, "IMAGEFOLDER", None) or {}
        self.csv = options.get("CSV", "")
        self.check_mode = image_check_mode(cfg)  # the split file is written only after every image is checked
        super().__init__(cfg)

    def folder(self, cfg):
        """Every user's images have a folder of their own: DATASET.ROOT + DATASET.IMAGEFOLDER.DIR."""
        options = getattr(cfg.DATASET, "IMAGEFOLDER", None) or {}
        folder = os.path.expanduser(options.get("DIR", DEFAULT_DIR) or DEFAULT_DIR)
        return os.path.normpath(os.path.join(self.root, folder))

    def require_folder(self):
        if not os.path.isdir(self.dataset_dir):
            raise DatasetNotFoundError(f"ImageFolder: no folder {self.dataset_dir} (DATASET.ROOT + "
                                       f"DATASET.IMAGEFOLDER.DIR); it should hold {LAYOUT}")

    def read_full_splits(self):
        """The split file's lists, after checking it still matches the folder; made first if need be."""
        listing = scan(self.dataset_dir, self.csv)
        raise_problems(listing.problems, self.dataset_dir)
        for warning in listing.warnings:
            logger.warning("ImageFolder: %s", warning)
        path = os.path.join(self.dataset_dir, SPLIT_FILE)
        rebuild = os.environ.get(REBUILD_ENV, "").strip() not in ("", "0")
        split = read_split(path) if os.path.exists(path) else None
        found = changes(listing, split) if split is not None else []
        if found and not rebuild:
            raise SplitFileError(
                f"ImageFolder: {self.dataset_dir} changed since its split file {path} was written: "
                + "; ".join(found) + ".\n  Reusing that split would train and test on other images than the folder "
                f"holds. To make a new split, run again with {REBUILD_ENV}=1 (train/val/test are then drawn "
                "afresh: results made with the old split are not comparable), or restore the folder.")
        if split is None or rebuild:
            split = self.make_split_file(listing, path, found)
        else:
            logger.info("ImageFolder: reusing the split %s (it matches %s)", path, self.dataset_dir)
        # what a run's record keeps of the data it used: a new split (DEPT_REBUILD_SPLIT=1) makes every run
        # made with the old one stale (dept.store.verify), not a number reused for other images
        self.split_identity = {"split_file": path, "sha256": sha256(path)} if os.path.isfile(path) else None
        notes = split_notes(split)
        for note in notes:
            logger.warning("%s", note)
        self.notes.extend(notes)
        return tuple(entries_to_datums(split[s], self.image_dir, self.name, path, s) for s in SPLITS)

    def make_split_file(self, listing, path, found=()):
        """Split the listing, check every image (``DATASET.CHECK_IMAGES``), write the split file."""
        split, problems = make_split(listing)
        raise_problems(problems, self.dataset_dir)
        if self.check_mode != "none":
            paths = [os.path.join(self.dataset_dir, rel) for rel in sorted(listing.items)]
            bad = [f"{_rel(p, self.dataset_dir)} ({reason})" for p, reason in find_bad_images(paths, self.check_mode)]
            if bad:
                raise_problems([(UnreadableImageError, f"{len(bad)} of {len(paths)} images cannot be read "
                                 f"(DATASET.CHECK_IMAGES {self.check_mode}): {shown(bad)}. Replace or remove them")],
                               self.dataset_dir)
        if found:
            logger.warning("ImageFolder: %s=1: a new split replaces %s (%s)", REBUILD_ENV, path, "; ".join(found))
        source = {"layout": listing.layout, "csv": self.csv, "seed": SPLIT_SEED, "fractions": [*FRACTIONS, 0.3]}
        try:
            write_split(split, source, path)
        except OSError as err:
            logger.warning("ImageFolder: could not write the split file %s (%s); the same split is made "
                           "again next time", path, err)
        else:
            logger.info("ImageFolder: wrote the split %s: %s, %d classes", path,
                        ", ".join(f"{s} {len(split[s])}" for s in SPLITS), len(listing.names))
        return split

    @classmethod
    def inspect(cls, root, verify_images=False):
        """``data check``'s ``Report``: the folder's problems, whether its split file still matches
        it, and the images per split (of the split file, or of the split a run would make)."""
        folder = os.path.normpath(os.path.join(os.path.abspath(os.path.expanduser(root)), cls.dataset_dir))
        report = Report(cls.__name__, folder)
        if not os.path.isdir(folder):
            report.missing = list(cls.pieces)
            return report
        path, split, complete = os.path.join(folder, SPLIT_FILE), None, True
        if os.path.exists(path):
            try:
                split = read_split(path)
            except SplitFileError as err:
                report.warnings.append(str(err))
                complete = False
        source = (split or {}).get("imagefolder")  # how the split was made: from a CSV?
        listing = scan(folder, source.get("csv", "") if isinstance(source, dict) else "")
        report.warnings += [message for _, message in listing.problems] + listing.warnings
        complete = complete and not listing.problems
        if split is not None:
            found = changes(listing, split)
            if found:
                complete = False
                report.warnings.append(f"the folder changed since {SPLIT_FILE} was written ({'; '.join(found)}); "
                                       f"a run refuses it until {REBUILD_ENV}=1 makes a new split")
        elif not listing.problems:
            split, problems = make_split(listing)
            report.warnings += [message for _, message in problems]
            complete = complete and not problems
        for s in SPLITS if split is not None else ():
            paths = [os.path.join(folder, e[0]) for e in split[s]]
            present, absent = count_present(paths)
            report.counts.append(SplitCount(s, None, len(paths), present))
            report.missing_images.extend(absent[: 5 - len(report.missing_images)])
            complete = complete and present == len(paths)
            if verify_images:
                report.unreadable_images += find_bad_images([p for p in paths if os.path.isfile(p)], "full")
        if split is not None:
            report.num_classes = len({e[1] for s in SPLITS for e in split[s]})
        report.status = FOUND if complete and not report.unreadable_images else PARTIAL
        return report


register(DATASET_REGISTRY, ImageFolder)
