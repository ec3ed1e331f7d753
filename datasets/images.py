"""Reading images with errors that name the file and the dataset.

Dassl's ``DatasetWrapper`` calls ``PIL.Image.open(path).convert("RGB")``; a truncated or
non-image file then fails with a bare PIL traceback inside a DataLoader worker, after minutes
of training. ``CheckedDatasetWrapper`` re-raises such failures as ``UnreadableImageError``
naming the image and ``DATASET.NAME``; pass it to ``DataManager(cfg, dataset_wrapper=...)``.
``check_image`` is the same test, used by ``data check --verify-images`` to find bad files
before a run.

``find_bad_images`` checks many files before a run, in a thread pool (the work is file I/O and
PIL's C code). Its "quick" mode costs a ``stat``, a header parse and a read of the file's last
bytes, no decode: the usual damage is a truncated download, whose JPEG lacks its end-of-image
marker or whose PNG lacks its IEND chunk. A file that ends in other bytes is then decoded, and
only reported if decoding fails too: some writers append data after a complete image. One that
ends in zero bytes with no marker before them is reported without decoding (a cut download in a
preallocated file decodes "successfully" as grey). "full" runs the same tests and decodes every
image, so it reports everything "quick" does, and more.
"""
import os
import stat
from concurrent.futures import ThreadPoolExecutor

from dassl.data.data_manager import DatasetWrapper
from PIL import Image

from dept.util.images import open_image

from .errors import UnreadableImageError

# What PIL raises for absent, truncated, corrupt or oversized files (UnidentifiedImageError is an
# OSError; some decoders raise SyntaxError or ValueError on broken headers).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# DATASET.CHECK_IMAGES: what ``CoOpDataset`` checks before training.
CHECK_MODES = ("quick", "full", "none")
TAIL_BYTES = 4096  # read from the end of a file (further back only through NUL padding)
JPEG_EOI = b"\xff\xd9"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type IEND, its (fixed) CRC
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: several JPEGs in one file (some cameras); ends like a JPEG


def check_image(path):
    """None if ``path`` decodes as an RGB image, else the reason (a short string)."""
    try:
        with open_image(path) as img:
            img.convert("RGB")
    except IMAGE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


def _end_of_content(f, size):
    """``(the last bytes before any trailing NULs, how many trailing NULs)`` of the open file ``f``.

    Reads ``TAIL_BYTES`` from the end, and further back only while all it read is NUL padding.
    """
    padding, end = 0, size
    while end > 0:
        start = max(0, end - TAIL_BYTES)
        f.seek(start)
        block = f.read(end - start)
        stripped = block.rstrip(b"\x00")
        padding += len(block) - len(stripped)
        if stripped:
            return stripped, padding
        end = start
    return b"", padding


def _ends_problem(image_format, content, padding):
    """``(hard, soft)`` reasons from a JPEG's / PNG's last bytes (other formats: no check).

    hard: the file ends in zero bytes with no end marker before them, i.e. a download cut short
    into a preallocated file; the decoder reads the zeros as image data and succeeds, so only
    this test catches it. soft: it ends with something other than its end marker: usually cut
    short, but some writers append data after a complete image, so the caller decodes to decide.
    """
    if image_format in JPEG_FORMATS:
        marker, name = JPEG_EOI, "JPEG end-of-image marker (FF D9)"
    elif image_format == "PNG":
        marker, name = PNG_IEND, "PNG IEND chunk"
    else:
        return None, None
    if content.endswith(marker):  # NUL padding after the end marker is harmless
        return None, None
    if padding:
        return f"no {name} before the {padding} zero bytes that end the file: a truncated download", None
    return None, f"no {name} at the end of the file: a truncated download?"


def _inspect(path):
    """``(hard, soft)``: why ``path`` is unreadable without decoding it, and a doubt decoding settles."""
    try:
        info = os.stat(path)
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}", None
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file", None
    if info.st_size == 0:
        return "empty file (0 bytes)", None
    try:
        with open_image(path) as img:  # by path, so that PIL's messages name the file
            image_format = img.format
        with open(path, "rb") as f:
            content, padding = _end_of_content(f, info.st_size)
    except IMAGE_ERRORS as err:
        return f"{type(err).__name__}: {err}", None
    return _ends_problem(image_format, content, padding)


def quick_check_image(path):
    """None if ``path`` looks whole without decoding it, else the reason (a short string).

    Checks: a non-empty regular file; PIL parses its header; a JPEG ends with FF D9 and a PNG
    with its IEND chunk (trailing NULs allowed). A file ending in other bytes is decoded
    (``check_image``) and passes if that succeeds.
    """
    hard, soft = _inspect(path)
    if hard or not soft:
        return hard
    reason = check_image(path)
    return None if reason is None else f"{soft} ({reason})"


def full_check_image(path):
    """``quick_check_image``'s tests, then a full decode of every image (``check_image``)."""
    hard, soft = _inspect(path)
    if hard:
        return hard
    reason = check_image(path)
    return f"{soft} ({reason})" if reason and soft else reason


def find_bad_images(paths, mode="quick", workers=None):
    """``[(path, reason)]`` for the unreadable files among ``paths``, in their order (each path once).

    ``mode``: "quick" (``quick_check_image``: header and end marker, no decode) or "full"
    (``full_check_image``: the same, and decode every image). ``workers``: threads (default: 4 per CPU, at most 32,
    since the work waits on the disk more than on the CPU).
    """
    checks = {"quick": quick_check_image, "full": full_check_image}
    if mode not in checks:
        raise ValueError(f"image check mode must be one of {tuple(checks)}, got {mode!r}")
    unique = list(dict.fromkeys(paths))
    if not unique:
        return []
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=min(workers, len(unique))) as pool:
        reasons = list(pool.map(checks[mode], unique))
    return [(path, reason) for path, reason in zip(unique, reasons) if reason]


class CheckedDatasetWrapper(DatasetWrapper):
    """Dassl's ``DatasetWrapper`` whose image-reading failures name the file and dataset.

    Only failures that come from the image itself are translated: when ``__getitem__`` raises,
    the image is decoded again on its own, and if that succeeds the original error (from a
    transform, say) propagates unchanged.
    """

    def __getitem__(self, idx):
        try:
            with open_image(self.data_source[idx].impath):  # header only: Dassl's reader opens it next
                pass
            return super().__getitem__(idx)
        except IMAGE_ERRORS as err:
            impath = self.data_source[idx].impath
            reason = check_image(impath)
            if reason is None:
                raise
            dataset = getattr(getattr(self.cfg, "DATASET", None), "NAME", "?")
            raise UnreadableImageError(
                f"{dataset}: cannot read image {impath} ({reason}). The file is truncated or not "
                "an image; download it again, or run `python -m dept data check --verify-images` "
                "to list every bad file."
            ) from err
