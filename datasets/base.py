"""``CoOpDataset``: the one base every dataset of the CoOp benchmark shares.

It does, once, what each CoOp loader repeats: locate ``<DATASET.ROOT>/<dataset_dir>``, read the
full train/val/test lists (a ``split_zhou_*.json`` by default), take the few-shot subset (cached
in ``split_fewshot/``, see ``fewshot.py``), keep the base or new classes
(``DATASET.SUBSAMPLE_CLASSES``), and hand the lists to Dassl's ``DatasetBase``. A dataset file
then holds only what is particular to it: folder names, where the files come from, and, when
its lists are not a split file, how to read them (``read_full_splits``).

Before training starts, every image the run will read (the selected train, val and test lists)
is checked cheaply (``images.find_bad_images``), so a truncated test image fails the run at
once, not after the training epochs.

Config keys read: ``DATASET.ROOT``, ``DATASET.NUM_SHOTS``, ``SEED``,
``DATASET.SUBSAMPLE_CLASSES`` ("all" when the key is absent) and ``DATASET.CHECK_IMAGES``
("quick" when absent).
"""
import logging
import os

from dassl.data.datasets import DatasetBase

from .errors import DatasetConfigError, DatasetNotFoundError, UnreadableImageError, format_missing
from .fewshot import FEWSHOT_DIR, fewshot_cache_path, load_or_sample, plan_shots
from .images import CHECK_MODES, CheckedDatasetWrapper, find_bad_images
from .report import inspect_dataset
from .splits import SPLITS, entries_to_datums, read_split_entries, selected_labels, subsample_classes

logger = logging.getLogger(__name__)
SHOWN_BAD_IMAGES = 5  # the error lists this many unreadable images; data check lists them all


class CoOpDataset(DatasetBase):
    """A few-shot classification dataset in the CoOp layout, read as the CoOp family reads it.

    Class attributes a dataset sets:
        dataset_dir: its folder under ``DATASET.ROOT`` (on an instance, as in CoOp, the attribute
            becomes the absolute path).
        image_subdir: the folder the split paths are relative to ("" = the dataset folder).
        split_file: the CoOp split file in the dataset folder ("" when the lists come from
            elsewhere; then ``read_full_splits`` is overridden).
        pieces: the ``Piece`` s it needs on disk, for error messages and ``data check``.
        expected_classes, expected_sizes: the official numbers, for ``data check``.

    Instance attributes beyond Dassl's: ``root``, ``dataset_dir``, ``image_dir``,
    ``split_fewshot_dir``, ``fewshot_cache`` (path of the few-shot cache used, or None), and
    ``notes``: what a reader of this run's results must know about its data (e.g. classes with
    fewer than K images), a list of strings, empty when there is nothing to say; each one is also
    logged as a warning, and the run record copies them into the results tables.
    """

    dataset_dir = ""
    #: how the trainer's data loaders read its images (``PromptTrainer.build_data_loader`` asks):
    #: naming the file and the dataset when one is missing or corrupt
    dataset_wrapper = CheckedDatasetWrapper
    #: the hand-crafted prompt of zero-shot CLIP for this dataset (CoOp's CUSTOM_TEMPLATES); methods
    #: that differ name theirs in ``method_templates`` ({trainer paper name: template}).
    template = "a photo of a {}."
    method_templates = {}
    image_subdir = "images"
    split_file = ""
    pieces = ()
    expected_classes = None
    expected_sizes = {}
    # data check: True when the lists are read from folders (so absent images show as a shortfall
    # against ``expected_sizes``), False when a file lists them (absent = listed but not on disk).
    lists_from_folders = False

    def __init__(self, cfg):
        self.root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = self.folder(cfg)
        self.image_dir = os.path.join(self.dataset_dir, self.image_subdir) if self.image_subdir else self.dataset_dir
        self.split_fewshot_dir = os.path.join(self.dataset_dir, FEWSHOT_DIR)
        self.fewshot_cache = None
        self.notes = []
        check_mode = image_check_mode(cfg)  # a bad value fails here, before any reading
        self.require_folder()
        train, val, test = self.read_full_splits()
        train, val, test = self.select(cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)
        self.check_images(check_mode)

    # -- reading -------------------------------------------------------------------------------

    @property
    def name(self):
        return type(self).__name__

    def folder(self, cfg):
        """The dataset's folder: ``dataset_dir`` under the root (a user's own data: from its config)."""
        return os.path.join(self.root, type(self).dataset_dir)

    def require_folder(self):
        """Raise, saying where to get it, when the dataset's folder is absent."""
        self.require(self.dataset_dir, "dataset folder", sources=[p.describe_source() for p in self.pieces])

    def require(self, path, what, sources=None):
        """Raise ``DatasetNotFoundError`` naming ``path`` and where to get it, if it is absent."""
        if os.path.exists(path):
            return
        if sources is None:
            sources = [p.describe_source() for p in self.pieces if os.path.join(self.dataset_dir, p.path) == path]
        raise DatasetNotFoundError(format_missing(self.name, what, path, sources, root=self.root))

    def read_full_splits(self):
        """The full (train, val, test) lists of ``Datum``; by default from ``split_file``."""
        split_path = os.path.join(self.dataset_dir, self.split_file)
        self.require(split_path, "split file")
        entries = read_split_entries(split_path)
        return tuple(entries_to_datums(entries[key], self.image_dir, self.name, split_path, key) for key in SPLITS)

    # -- few-shot and base/new -----------------------------------------------------------------

    def select(self, cfg, train, val, test):
        """Few-shot train (K) and val (min(K, 4)), then base/new/all classes, as in CoOp."""
        subsample = subsample_choice(cfg)
        shots = self.plan_shots(cfg.DATASET.NUM_SHOTS, train, val, subsample)
        if shots:
            picked = self.few_shot({"train": train, "val": val}, shots, cfg.SEED)
            train, val = picked["train"], picked.get("val", val)  # no "val" in shots when val is None
        return subsample_classes(train, val, test, subsample=subsample)

    def plan_shots(self, num_shots, train, val, subsample):
        """The shots per list for ``DATASET.NUM_SHOTS`` (None = all images), checked against the
        classes this run keeps (see ``fewshot.plan_shots``); shortfalls become ``notes``."""
        labels = selected_labels((item.label for item in train), subsample)
        shots, notes = plan_shots(self.name, num_shots, train, val, labels, "" if subsample == "all" else subsample)
        for note in notes:
            logger.warning("%s", note)
        self.notes.extend(notes)
        return shots

    def few_shot(self, splits, shots, seed):
        """The cached or freshly sampled few-shot lists (see ``fewshot.load_or_sample``)."""
        self.fewshot_cache = fewshot_cache_path(self.dataset_dir, shots["train"], seed)
        return load_or_sample(self, splits, shots, self.fewshot_cache, self.image_dir, self.name)

    # -- image check -----------------------------------------------------------------------------

    def check_images(self, mode):
        """Raise one ``UnreadableImageError`` if any image of train_x / val / test is unreadable.

        Runs after few-shot selection and base/new subsampling, so it costs what the run reads,
        not the whole dataset. ``mode`` is ``DATASET.CHECK_IMAGES``: "quick" (header and end
        marker; see ``images.find_bad_images``), "full" (decode every image) or "none".
        """
        if mode == "none":
            return
        paths = [item.impath for items in (self.train_x, self.val, self.test) for item in items or ()]
        bad = find_bad_images(paths, mode)
        if not bad:
            return
        shown = "\n".join(f"    {path}: {reason}" for path, reason in bad[:SHOWN_BAD_IMAGES])
        more = f"\n    ... and {len(bad) - SHOWN_BAD_IMAGES} more" if len(bad) > SHOWN_BAD_IMAGES else ""
        raise UnreadableImageError(
            f"{self.name}: {len(bad)} of {len(set(paths))} images this run would read are unreadable "
            f"(DATASET.CHECK_IMAGES {mode}, checked before training):\n{shown}{more}\n"
            "  Download these files again. `python -m dept data check --verify-images "
            f"--root {self.root} --dataset {self.name}` lists every bad file of the dataset "
            "(DATASET.CHECK_IMAGES none skips this check)."
        )

    # -- data check ------------------------------------------------------------------------------

    @classmethod
    def list_images(cls, dataset_dir):
        """``({split: [absolute image path]}, number of classes)`` from the split source, with no
        ``Datum`` built; raises ``OSError`` / ``ValueError`` when the source is absent or broken."""
        entries = read_split_entries(os.path.join(dataset_dir, cls.split_file))
        image_dir = os.path.join(dataset_dir, cls.image_subdir) if cls.image_subdir else dataset_dir
        lists = {key: [os.path.join(image_dir, e[0]) for e in entries[key]] for key in SPLITS}
        num_classes = len({e[1] for key in SPLITS for e in entries[key]})
        return lists, num_classes

    @classmethod
    def inspect(cls, root, verify_images=False):
        """A ``Report`` on this dataset under ``root`` (found / partial / missing, and why)."""
        return inspect_dataset(cls, root, verify_images)


def subsample_choice(cfg):
    """``DATASET.SUBSAMPLE_CLASSES``, or "all" when the config does not define it."""
    return getattr(cfg.DATASET, "SUBSAMPLE_CLASSES", "all")


def image_check_mode(cfg):
    """``DATASET.CHECK_IMAGES`` ("quick" when the config does not define it), validated."""
    mode = getattr(cfg.DATASET, "CHECK_IMAGES", "quick")
    if mode not in CHECK_MODES:
        raise DatasetConfigError(f"DATASET.CHECK_IMAGES must be one of {CHECK_MODES}, got {mode!r}")
    return mode
