"""What a dataset needs on disk (``Piece``) and what ``data check`` found there (``Report``).

Each dataset class lists its pieces (image folders, split files, class lists) with where they
come from; ``CoOpDataset.inspect`` turns them into a ``Report`` without building any ``Datum``,
so checking all fifteen datasets costs directory listings, not one ``stat`` per image.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field

from .checksums import Checksum

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
        if not self.gdrive_id:
            return self.source
        return (f"{self.source} {gdrive_view_url(self.gdrive_id)} "
                "(or: python -m dept data fetch-splits --root $DATA)")


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
