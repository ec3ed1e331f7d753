"""``CoOpDataset``: the one base every dataset of the CoOp benchmark shares.

It does, once, what each CoOp loader repeats: locate ``<DATASET.ROOT>/<dataset_dir>``, read the
full train/val/test lists (a ``split_zhou_*.json`` by default), take the few-shot subset (cached
in ``split_fewshot/``, see ``fewshot.py``), keep the base or new classes
(``DATASET.SUBSAMPLE_CLASSES``), and hand the lists to Dassl's ``DatasetBase``. A dataset file
then holds only what is particular to it: folder names, where the files come from, and, when
its lists are not a split file, how to read them (``read_full_splits``).

Config keys read: ``DATASET.ROOT``, ``DATASET.NUM_SHOTS``, ``SEED``, and
``DATASET.SUBSAMPLE_CLASSES`` ("all" when the key is absent).
"""
import os

from dassl.data.datasets import DatasetBase

from .errors import DatasetNotFoundError, format_missing
from .fewshot import FEWSHOT_DIR, VAL_SHOTS_CAP, fewshot_cache_path, load_or_sample
from .report import inspect_dataset
from .splits import SPLITS, entries_to_datums, read_split_entries, subsample_classes


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
    ``split_fewshot_dir``, and ``fewshot_cache`` (path of the few-shot cache used, or None).
    """

    dataset_dir = ""
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
        self.dataset_dir = os.path.join(self.root, type(self).dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, self.image_subdir) if self.image_subdir else self.dataset_dir
        self.split_fewshot_dir = os.path.join(self.dataset_dir, FEWSHOT_DIR)
        self.fewshot_cache = None
        self.require(self.dataset_dir, "dataset folder", sources=[p.describe_source() for p in self.pieces])
        train, val, test = self.read_full_splits()
        train, val, test = self.select(cfg, train, val, test)
        super().__init__(train_x=train, val=val, test=test)

    # -- reading -------------------------------------------------------------------------------

    @property
    def name(self):
        return type(self).__name__

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
        return tuple(entries_to_datums(entries[key], self.image_dir, self.name, split_path) for key in SPLITS)

    # -- few-shot and base/new -----------------------------------------------------------------

    def select(self, cfg, train, val, test):
        """Few-shot train (K) and val (min(K, 4)), then base/new/all classes, as in CoOp."""
        num_shots = cfg.DATASET.NUM_SHOTS
        if num_shots >= 1:
            shots = {"train": num_shots, "val": min(num_shots, VAL_SHOTS_CAP)}
            picked = self.few_shot({"train": train, "val": val}, shots, cfg.SEED)
            train, val = picked["train"], picked["val"]
        return subsample_classes(train, val, test, subsample=subsample_choice(cfg))

    def few_shot(self, splits, shots, seed):
        """The cached or freshly sampled few-shot lists (see ``fewshot.load_or_sample``)."""
        self.fewshot_cache = fewshot_cache_path(self.dataset_dir, shots["train"], seed)
        return load_or_sample(self, splits, shots, self.fewshot_cache, self.image_dir, self.name)

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

