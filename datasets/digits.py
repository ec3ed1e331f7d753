"""Digits: a ten-class demo dataset written from scikit-learn's bundled copy, in the CoOp layout.

It lets the whole pipeline (split file, few-shot cache, base/new classes, training, evaluation)
run anywhere in seconds with no download: ``prepare_digits(root)`` writes the 1,797 8x8
handwritten digits of ``sklearn.datasets.load_digits`` as 32x32 RGB PNGs plus a CoOp split file,
and the ``Digits`` dataset reads them through the shared base like any benchmark dataset.
Classes are "zero".."nine" with labels 0..9, so base = zero..four and new = five..nine.

``DigitsInverted`` is the same images with inverted grey levels (white digits on black become
black on white), the same split: the demo's target domain for the cross-dataset and
domain-generalisation protocols (same classes, another look), as ImageNet-Sketch is to ImageNet.
"""
import contextlib
import logging
import os
import random
import tempfile

from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register
from dept.util.files import Busy, FileLock, share_mode

from .base import CoOpDataset
from .report import Piece
from .splits import SPLITS, read_split_entries, write_split_entries

logger = logging.getLogger(__name__)

CLASSNAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FOLDER = "digits"
SPLIT_FILE = "split_zhou_Digits.json"
INVERTED_FOLDER = "digits_inverted"
INVERTED_SPLIT_FILE = "split_zhou_DigitsInverted.json"
FRACTIONS = (0.5, 0.2)  # train, val per class; the rest is test (CoOp's DTD-style 50/20/30)
SPLIT_SEED = 0  # a private RNG, so preparing the data never touches the global random stream
IMAGE_SIZE = 32
LOCK_FILE = ".prepare.lock"
_PREPARE = "python -m dept data prepare-demo --root $DATA (no download; from scikit-learn)"


def _split_indices(labels):
    """Per class, shuffled with a fixed private RNG and cut 50/20/30 (CoOp's rounding)."""
    rng = random.Random(SPLIT_SEED)
    split = {key: [] for key in SPLITS}
    for label in range(len(CLASSNAMES)):
        idxs = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(idxs)
        n_train = round(len(idxs) * FRACTIONS[0])
        n_val = round(len(idxs) * FRACTIONS[1])
        split["train"] += idxs[:n_train]
        split["val"] += idxs[n_train:n_train + n_val]
        split["test"] += idxs[n_train + n_val:]
    return split


def _relpath(index, label):
    name = CLASSNAMES[label]
    return f"{name}/{name}_{index:04d}.png"


def _is_prepared(dataset_dir, split_file=SPLIT_FILE):
    """True when the split file (written last) is there and every image it lists is non-empty."""
    split_path = os.path.join(dataset_dir, split_file)
    if not os.path.isfile(split_path):
        return False
    try:
        entries = read_split_entries(split_path)
    except ValueError:
        return False
    image_dir = os.path.join(dataset_dir, "images")

    def whole(relpath):
        try:
            return os.path.getsize(os.path.join(image_dir, relpath)) > 0
        except OSError:
            return False

    return all(whole(e[0]) for key in SPLITS for e in entries[key])


def _remove_leftovers(dataset_dir):
    """Delete the temporary files a killed writer left (named ``.<name>.<random>.tmp``, as
    ``dept.util.files.atomic_open`` names them) in ``images/`` and beside the split file. Called under
    the lock, when no other prepare is writing; ``split_fewshot/`` (runs' caches) is not touched."""
    folders = [dataset_dir] + [folder for folder, _, _ in os.walk(os.path.join(dataset_dir, "images"))]
    for folder in folders:
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                if name.startswith(".") and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(folder, name))


def _save_png(img, path):
    """Save ``img`` under a unique temporary name beside ``path`` (``atomic_open``'s pattern, so
    ``_remove_leftovers`` finds it), then rename it into place.

    Unlike ``dept.util.files.atomic_open`` there is no fsync per image: 1,797 of them would cost seconds
    on a slow disk. Concurrent readers and killed writers are safe without it (rename is atomic);
    only a power cut can leave an empty image behind, which ``_is_prepared`` treats as unprepared
    and the dataset's image check reports. The split file, the completion marker, is fsynced.
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        share_mode(fd)
        with os.fdopen(fd, "wb") as f:
            img.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def prepare_digits(root, inverted=None):
    """Write ``<root>/digits/images/<class>/*.png`` and ``<root>/digits/split_zhou_Digits.json``,
    and the same for ``digits_inverted`` (``inverted`` True or False: only that one).

    Idempotent: returns at once if both are already complete. Returns the absolute data root,
    the value for ``DATASET.ROOT``.

    Safe to run concurrently (two runs, or two ``prepare-demo`` commands, on a fresh root): the
    writer holds a ``FileLock`` on ``digits/.prepare.lock`` (released by the kernel if it dies);
    a second process waits for it and then finds the data prepared. Every file is written to a
    unique temporary name and renamed into place, so a reader never sees half an image, and the
    split file comes last: it marks the dataset complete.
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    for flag in ((False, True) if inverted is None else (inverted,)):
        _prepare(root, flag)
    return root


def digit_image(digits, index, inverted=False):
    """The 32x32 RGB image the demo writes for sample ``index`` of ``digits`` (``load_digits()``).

    One function for the pixels, so that whatever else learns from the demo's images (the tiny
    CLIP pretrained on them, ``dept.run.demo_clip``) sees exactly what the written PNGs hold.
    """
    import numpy as np
    from PIL import Image

    # 0..16 grey levels -> 0..255, upscaled so that CLIP-style transforms have pixels to work on.
    pixels = (digits.images[index] * (255.0 / 16.0)).round().astype(np.uint8)
    if inverted:
        pixels = 255 - pixels
    img = Image.fromarray(pixels, mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.NEAREST)
    return img.convert("RGB")


def _prepare(root, inverted):
    from sklearn.datasets import load_digits

    folder, split_file = (INVERTED_FOLDER, INVERTED_SPLIT_FILE) if inverted else (FOLDER, SPLIT_FILE)
    dataset_dir = os.path.join(root, folder)
    if _is_prepared(dataset_dir, split_file):
        return root
    lock = FileLock(os.path.join(dataset_dir, LOCK_FILE))
    try:
        lock.acquire(blocking=False)
    except Busy as err:
        logger.info("Waiting for another process writing the Digits demo dataset (%s)", err)
        lock.acquire()
    try:
        if _is_prepared(dataset_dir, split_file):  # the process we waited for finished it
            return root
        _remove_leftovers(dataset_dir)
        digits = load_digits()
        labels = [int(y) for y in digits.target]
        image_dir = os.path.join(dataset_dir, "images")
        for index, label in enumerate(labels):
            _save_png(digit_image(digits, index, inverted), os.path.join(image_dir, _relpath(index, label)))
        split = {
            key: [[_relpath(i, labels[i]), labels[i], CLASSNAMES[labels[i]]] for i in idxs]
            for key, idxs in _split_indices(labels).items()
        }
        write_split_entries(split, os.path.join(dataset_dir, split_file))  # last: marks completion
    finally:
        lock.release()
    logger.info("Wrote the %s demo dataset (%d images) to %s", folder, len(labels), dataset_dir)
    return root


class Digits(CoOpDataset):
    """The embedded demo: scikit-learn's handwritten digits, prepared by ``prepare_digits``."""

    dataset_dir = FOLDER
    image_subdir = "images"
    split_file = SPLIT_FILE
    expected_classes = 10
    expected_sizes = {"train": 898, "val": 359, "test": 540}
    pieces = (
        Piece("images", "image folder", _PREPARE, is_dir=True),
        Piece(SPLIT_FILE, "split file", _PREPARE),
    )


register(DATASET_REGISTRY, Digits)


class DigitsInverted(Digits):
    """The demo's target domain: the digits with inverted grey levels (``prepare_digits``)."""

    dataset_dir = INVERTED_FOLDER
    split_file = INVERTED_SPLIT_FILE
    pieces = (
        Piece("images", "image folder", _PREPARE, is_dir=True),
        Piece(INVERTED_SPLIT_FILE, "split file", _PREPARE),
    )


register(DATASET_REGISTRY, DigitsInverted)
