"""Errors raised while reading a dataset, each naming the dataset, the exact path and the fix.

Every error derives from ``DatasetError`` and from the builtin a caller would expect
(``FileNotFoundError`` for absent files, ``ValueError`` for bad content or settings,
``RuntimeError`` for unreadable images), so existing ``except FileNotFoundError`` /
``except ValueError`` handlers keep working. Messages end with a pointer to
``python -m dept data check``, which reports every missing piece at once.
"""

CHECK_HINT = "Run `python -m dept data check --root {root}` for a full report; DATASETS.md shows the layout."


class DatasetError(Exception):
    """Base class of the errors in this package."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder or one of its required files (split file, class list, ...) is absent."""


class MissingImagesError(DatasetNotFoundError):
    """Images referenced by a split file (or a cache) are absent from the disk."""


class DatasetConfigError(DatasetError, ValueError):
    """A config value the dataset cannot honour (``DATASET.NUM_SHOTS``, ``DATASET.CHECK_IMAGES``, ...)."""


class SplitFileError(DatasetError, ValueError):
    """A split file (or list) whose content is malformed or contradicts itself; names the file and entry."""


class UnreadableImageError(DatasetError, RuntimeError):
    """An image exists but cannot be decoded (truncated download, wrong format, ...).

    Takes a single message argument so that PyTorch can re-raise it unchanged in the main process
    when it happens inside a DataLoader worker.
    """


def format_missing(name, what, path, sources=(), root=None):
    """The message for an absent ``path``: which dataset needs it, what it is, where to get it."""
    lines = [f"{name}: {what} not found: {path}"]
    for source in sources:
        lines.append(f"  get it: {source}")
    if root is not None:
        lines.append("  " + CHECK_HINT.format(root=root))
    return "\n".join(lines)
