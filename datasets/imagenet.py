"""ImageNet (ILSVRC-2012): 1,000 classes; the val set serves as val and test, as in CoOp.

There is no split file: the lists are the class folders of ``images/train`` and ``images/val``
(labels = sorted WNID order, names from ``classnames.txt``), cached like CoOp in
``imagenet/preprocessed.pkl`` (``{"train": [Datum], "test": [Datum]}``, absolute paths) because
listing 1.28M files takes minutes. A cache made under another data root is re-rooted in memory.
Few-shot caches hold only ``{"train": [...]}``. Both caches are read by ``safe_cache.load_cache``
(``Datum`` records and plain values only, nothing in them runs); a refused one is set aside as
``*.stale`` and rebuilt, and ``classnames.txt`` is read as text lines.
"""
import copy
import logging
import os
import pickle

from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register
from dept.util.files import atomic_open

from .base import subsample_choice
from .fewshot import StaleCache
from .imagenet_family import ImageNetFamily, class_folders, classnames_piece, folder_entries
from .report import folder_piece
from .safe_cache import RefusedCache, load_cache, set_aside
from .splits import entries_to_datums, subsample_classes

logger = logging.getLogger(__name__)

PREPROCESSED = "preprocessed.pkl"
_IMAGES = ("ILSVRC-2012 from https://image-net.org (registration required): extract {what} into "
           "$DATA/imagenet/images/{split}/ with one folder per WNID{extra} (a symlink to an existing copy works)")


class ImageNet(ImageNetFamily):
    """ImageNet as CoOp reads it: train = ``images/train``, val = test = ``images/val``."""

    template_in_ensemble = False  # zero-shot CLIP's ensemble replaces ImageNet's own template

    dataset_dir = "imagenet"
    image_subdir = "images"
    expected_classes = 1000
    expected_sizes = {"train": 1281167, "test": 50000}
    pieces = (
        folder_piece("images/train", _IMAGES.format(what="the training set", split="train", extra="")),
        folder_piece("images/val", _IMAGES.format(
            what="the validation set", split="val",
            extra=" (the val archive is flat: sort it into WNID folders, e.g. with valprep.sh from "
                  "github.com/soumith/imagenetloader.torch)")),
        classnames_piece(),
    )

    def read_full_splits(self):
        classnames = self.read_classnames()
        cache = os.path.join(self.dataset_dir, PREPROCESSED)
        data = self._load_preprocessed(cache) if os.path.exists(cache) else None
        if data is None:
            data = {split: self._read_folder(split, classnames) for split in ("train", "test")}
            self._save_preprocessed(data, cache)
        train, test = data["train"], data["test"]
        self._wnid_of_label = {}
        for item in train:
            self._wnid_of_label.setdefault(item.label, os.path.basename(os.path.dirname(item.impath)))
        return train, None, test

    def select(self, cfg, train, val, test):
        """Few-shot train only (val is the test set), then base/new/all on train and test."""
        subsample = subsample_choice(cfg)
        shots = self.plan_shots(cfg.DATASET.NUM_SHOTS, train, None, subsample)
        if shots:
            train = self.few_shot({"train": train}, shots, cfg.SEED)["train"]
        self.set_label_wnids(self._wnid_of_label, (item.label for item in train), subsample)
        train, test = subsample_classes(train, test, subsample=subsample)
        return train, test, test

    def _read_folder(self, split, classnames):
        folder = "train" if split == "train" else "val"
        split_dir = os.path.join(self.image_dir, folder)
        self.require(split_dir, "image folder")
        wnids = class_folders(split_dir)
        unknown = [w for w in wnids if w not in classnames]
        if unknown:
            raise ValueError(f"{self.name}: folders {unknown[:5]} of {split_dir} are not WNIDs listed in "
                             f"{os.path.join(self.dataset_dir, 'classnames.txt')}")
        logger.info("%s: listing %s (done once, then cached in %s)", self.name, split_dir, PREPROCESSED)
        entries = folder_entries(split_dir, wnids, [classnames[w] for w in wnids])
        return entries_to_datums(entries, split_dir, self.name, split_dir)

    def _load_preprocessed(self, path):
        """The cached lists, re-rooted to ``image_dir``; None (with a warning) if unusable."""
        try:
            data = load_cache(path)
            if not isinstance(data, dict) or not all(isinstance(data.get(k), list) and data[k]
                                                     for k in ("train", "test")):
                raise StaleCache("expected a dict with non-empty 'train' and 'test' lists")
            return {split: self._reroot(data[split]) for split in ("train", "test")}
        except RefusedCache as err:
            logger.warning("%s: %s. It is %s and rebuilt: the image folders are listed again.",
                           self.name, err, set_aside(path))
            return None
        except Exception as err:  # any other failure means: list the folders again
            logger.warning("%s: %s is unusable (%s); listing the image folders instead", self.name, path, err)
            return None

    def _reroot(self, items):
        """``items`` with paths ``<image_dir>/<train|val>/<wnid>/<file>`` (the last three parts kept)."""
        def current(path):
            return os.path.join(self.image_dir, *path.replace("\\", "/").split("/")[-3:])

        if current(items[0].impath) != items[0].impath:
            logger.info("%s: %s was written under another data root; re-rooting to %s",
                        self.name, PREPROCESSED, self.image_dir)
            moved = []
            for item in items:
                new = copy.copy(item)
                new._impath = current(item.impath)  # Datum has no setter; pickles restore this attribute
                moved.append(new)
            items = moved
        for item in (items[0], items[-1]):
            if not os.path.isfile(item.impath):
                raise StaleCache(f"{item.impath} does not exist")
        return items

    def _save_preprocessed(self, data, path):
        try:
            with atomic_open(path, "wb") as f:  # unique temporary name: concurrent first runs do not collide
                pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        except OSError as err:
            logger.warning("%s: could not write %s (%s); the folders will be listed again next time",
                           self.name, path, err)

    @classmethod
    def list_images(cls, dataset_dir):
        image_dir = os.path.join(dataset_dir, cls.image_subdir)
        lists, wnids = {}, set()
        for split, folder in (("train", "train"), ("test", "val")):
            split_dir = os.path.join(image_dir, folder)
            folders = class_folders(split_dir) if os.path.isdir(split_dir) else []
            wnids.update(folders)
            lists[split] = [os.path.join(split_dir, rel) for rel, _, _ in folder_entries(split_dir, folders, folders)]
        return lists, len(wnids)


register(DATASET_REGISTRY, ImageNet)
