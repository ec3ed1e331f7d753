"""Files that are whole or absent, and locks that die with their holder.

Everything a run leaves behind (checkpoints, run records, results tables, prepared data) is
written to a temporary file beside its target, flushed to disk and renamed over it: a crash, a
full disk or a SIGKILL leaves the previous version or nothing, never half a file. Temporary
names are unique per process and call, so concurrent writers never touch each other's files.

Locks are ``flock`` locks on a file: the kernel drops them when the holding process dies, so a
killed run never leaves a stale lock behind.
"""
import contextlib
import errno
import fcntl
import json
import os
import tempfile

from dept.util import faults


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # read once: os.umask can only be read by setting it


def share_mode(fd):
    """Give the open file ``fd`` the permissions ``open()`` would have given it (mkstemp's are 0600,
    which on a lab's shared data root or output root would lock every other user out)."""
    os.fchmod(fd, 0o666 & ~UMASK)


class DiskFull(OSError):
    """No space left (ENOSPC) while writing ``path``. Nothing is lost: the file is left as it was
    (the write went to a temporary file, removed), so freeing space and running the same command
    again continues (a run resumes from its last checkpoint; the runner skips finished runs)."""

    PREFIX = "no space left on the device while writing"  # how the runner tells it in a run's stderr

    def __init__(self, path):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        self.path = path

    def __str__(self):
        return (f"{self.PREFIX} {self.path}. Nothing already written was lost (that "
                "file is left as it was). Free some space (df -h shows where), then run the same command again: "
                "it continues where it stopped")


def _commit(f, path):
    """Flush ``f`` (written for ``path``) to the disk: where a full disk shows up, if the writes did not."""
    faults.reached("write", path)
    f.flush()
    os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Open a temporary file beside ``path``; on success it replaces ``path``, on error it is removed.

    The file gets the permissions a plain ``open(path, "w")`` would give it. A full disk raises
    ``DiskFull`` naming ``path``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        share_mode(fd)
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            _commit(f, path)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC and not isinstance(err, DiskFull):
            raise DiskFull(path) from err
        raise


def write_text(path, text):
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path, obj):
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def torch_save(obj, path):
    """``torch.save`` through a temporary file: the target is the old file or the new one, whole."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def sha256(path, chunk=1 << 20):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class Busy(RuntimeError):
    """The lock is held by another process."""


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if needed), holding the owner's pid inside.

    ``acquire(blocking=False)`` raises ``Busy`` naming the holder. The lock belongs to the open file
    description, so a child started with ``pass_fds=(lock.fd,)`` keeps it held after the parent dies;
    it is released when the last process holding it exits.
    """

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self, blocking=True):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise Busy(f"{self.path} is locked by {self.holder() or 'another process'}") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\n".encode())
        self.fd = fd
        return self

    def holder(self):
        """What the lock file says of its holder ('pid N'), or '' when unknown."""
        try:
            with open(self.path) as f:
                return f.read().strip()
        except OSError:
            return ""

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def holds_lock(fd, path):
    """True when descriptor ``fd`` (inherited from a parent) is an open lock on ``path``."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
