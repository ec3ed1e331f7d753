"""Atomic writes for files in the data root, with the permissions a plain ``open`` would give.

``dept.files.atomic_open`` writes through ``tempfile.mkstemp``, whose files are private (0600).
A data root is often shared (a lab's ``$DATA``): a few-shot cache, split file or prepared image
that only its writer can read breaks every other user's runs. So the temporary file gets
``0666 & ~umask`` before it is renamed into place, as ``open(path, "w")`` would have made it.
"""
import contextlib
import os

from dept.files import atomic_open


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # read once: os.umask can only be read by setting it


def share_mode(fd):
    """Give the open file ``fd`` the permissions ``open()`` would have given it."""
    os.fchmod(fd, 0o666 & ~UMASK)


@contextlib.contextmanager
def atomic_write(path, mode="w", **kwargs):
    """``dept.files.atomic_open`` (unique temporary name, fsync, rename), with ``open()``'s permissions."""
    with atomic_open(path, mode, **kwargs) as f:
        share_mode(f.fileno())
        yield f
