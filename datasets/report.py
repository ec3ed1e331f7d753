"""What a dataset needs on disk (``Piece``) and what ``data check`` found there (``Report``).

Each dataset class lists its pieces (image folders, split files, class lists) with where they
come from; ``CoOpDataset.inspect`` turns them into a ``Report`` without building any ``Datum``,
so checking all fifteen datasets costs directory listings, not one ``stat`` per image.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field

from .checksums import Checksum, describe, verify_file

FOUND, PARTIAL, MISSING = "found", "partial", "missing"


def gdrive_view_url(file_id):
    return f"https://drive.google.com/file/d/{file_id}/view"


@dataclass(frozen=True)
class Piece:
    """A file or folder a dataset needs: where it belongs and where to get it.

    ``path`` is relative to the dataset folder. ``gdrive_id`` marks small files (split files,
    class lists) that ``python -m dept data fetch-splits`` downloads with gdown and verifies
    against ``checksum``.
    """

    path: str
    what: str
    source: str
    gdrive_id: str = ""
    checksum: Checksum = Checksum()
    is_dir: bool = False

    def describe_source(self):
        """Where to get it, for a reader who has not yet tried ``fetch-splits``."""
        if not self.gdrive_id:
            return self.source
        return f"{self.manual_source()} (or: python -m dept data fetch-splits --root $DATA)"

    def manual_source(self):
        """Where to get it by hand (no pointer back to ``fetch-splits``: for when that failed)."""
        if not self.gdrive_id:
            return self.source
        return f"{self.source} {gdrive_view_url(self.gdrive_id)}"


@dataclass
class SplitCount:
    """Images of one split: officially expected, listed by the split source, present on disk."""

    split: str
    expected: int | None
    listed: int
    found: int


@dataclass
class Report:
    """The state of one dataset under a data root."""

    name: str
    dataset_dir: str
    status: str = MISSING
    missing: list = field(default_factory=list)  # Pieces not on disk
    counts: list = field(default_factory=list)  # SplitCounts
    num_classes: int | None = None
    expected_classes: int | None = None
    missing_images: list = field(default_factory=list)  # a few absolute paths, for the message
    unreadable_images: list = field(default_factory=list)  # (path, reason)
    warnings: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def count_present(paths):
    """How many of ``paths`` exist, and up to five that do not; one ``listdir`` per folder."""
    by_dir = collections.defaultdict(list)
    for path in paths:
        by_dir[os.path.dirname(path)].append(os.path.basename(path))
    found, absent = 0, []
    for folder, names in by_dir.items():
        try:
            present = set(os.listdir(folder))
        except OSError:
            present = set()
        for name in names:
            if name in present:
                found += 1
            elif len(absent) < 5:
                absent.append(os.path.join(folder, name))
    return found, absent


def split_piece(filename, gdrive_id, checksum=None):
    """The ``Piece`` for a CoOp split file distributed on Google Drive."""
    return Piece(filename, "split file", "CoOp's fixed train/val/test split, on Google Drive:",
                 gdrive_id=gdrive_id, checksum=checksum or Checksum())


def folder_piece(path, source):
    """The ``Piece`` for an image folder."""
    return Piece(path, "image folder", source, is_dir=True)


def _check_pieces(cls, dataset_dir, report):
    for piece in cls.pieces:
        path = os.path.join(dataset_dir, piece.path)
        if not os.path.exists(path):
            report.missing.append(piece)
        elif piece.checksum and os.path.isfile(path):
            if verify_file(path, piece.checksum):
                report.notes.append(f"{piece.path}: matches the official file")
            else:
                report.warnings.append(f"{piece.path} differs from the official file ({describe(path)}); "
                                       "results will not be comparable with published numbers")


def _count(cls, split, paths, report, verify_images):
    """Add the ``SplitCount`` of one split; True if the split is complete."""
    from .images import find_bad_images  # needs Dassl; the rest of this module does not

    found, absent = count_present(paths)
    expected = cls.expected_sizes.get(split)
    report.counts.append(SplitCount(split, expected, len(paths), found))
    report.missing_images.extend(absent[: 5 - len(report.missing_images)])
    if cls.lists_from_folders:
        complete = expected is None or found >= expected
    else:
        complete = found == len(paths)
        if expected is not None and len(paths) != expected:
            report.warnings.append(f"{split} lists {len(paths)} images, the official split has {expected}")
    if verify_images:
        bad = find_bad_images([p for p in paths if os.path.isfile(p)], "full")  # absent ones: counted above
        report.unreadable_images.extend(bad)
        complete = complete and not bad
    return complete


def inspect_dataset(cls, root, verify_images=False):
    """The ``Report`` of dataset class ``cls`` under the data root ``root``.

    missing: no dataset folder. found: every piece present, every listed image present (and, for
    folder-listed datasets, at least the official number), and with ``verify_images`` every image
    decodes. partial: anything else. Split files that differ from the official ones are warnings.
    """
    root = os.path.abspath(os.path.expanduser(root))
    dataset_dir = os.path.join(root, cls.dataset_dir)
    report = Report(cls.__name__, dataset_dir, expected_classes=cls.expected_classes)
    if not os.path.isdir(dataset_dir):
        report.missing = list(cls.pieces)
        return report
    _check_pieces(cls, dataset_dir, report)
    try:
        listed, report.num_classes = cls.list_images(dataset_dir)
    except (OSError, ValueError, KeyError, IndexError) as err:
        listed = None
        if not report.missing:  # otherwise the absent piece already explains it
            report.warnings.append(f"cannot list the images: {err}")
    complete = not report.missing and listed is not None
    for split, paths in (listed or {}).items():
        complete = _count(cls, split, paths, report, verify_images) and complete
    if report.num_classes is not None and cls.expected_classes and report.num_classes != cls.expected_classes:
        report.warnings.append(f"{report.num_classes} classes, the official dataset has {cls.expected_classes}")
    report.status = FOUND if complete else PARTIAL
    return report
