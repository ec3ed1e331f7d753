"""What ImageNet and its four test-only variants share: ``classnames.txt`` and WNID bookkeeping.

Every member reads CoOp's ``classnames.txt`` (``<wnid> <class name>`` per line, the CLIP names,
in sorted-WNID order) from its own folder. ImageNet-A and -R hold only 200 of the 1,000 classes,
so a model trained on ImageNet must pick its head rows by WNID; the family exposes
``source_wnids`` / ``source_classnames`` (all of ``classnames.txt``, file order) and, per label
of the loaded dataset, ``wnids`` and ``source_labels`` (the ImageNet label, i.e. the index in
sorted WNID order, which is how ImageNet's labels are assigned).
"""
import collections
import os

from dassl.utils import listdir_nohidden

from .base import CoOpDataset, subsample_choice
from .checksums import Checksum
from .report import Piece
from .splits import entries_to_datums, selected_labels, subsample_classes

CLASSNAMES_FILE = "classnames.txt"
# CoOp's copy of the CLIP class names; the checksum is of its content (the reconstruction in
# shared/reference/splits agrees with CoOp-made caches on all 1,000 names).
CLASSNAMES_GDRIVE_ID = "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"
CLASSNAMES_CHECKSUM = Checksum(content="51b5b1d8b800502030c5556eb206abaafdd682ef363ff7a7077591ea3c9befa5")
IGNORED = ("README.txt",)


def classnames_piece(copy_hint=""):
    source = "CoOp's classnames.txt (CLIP's ImageNet names), on Google Drive:"
    if copy_hint:
        source = f"copy {copy_hint}, or get {source}"
    return Piece(CLASSNAMES_FILE, "class-name file", source,
                 gdrive_id=CLASSNAMES_GDRIVE_ID, checksum=CLASSNAMES_CHECKSUM)


def read_classnames(path):
    """``OrderedDict`` wnid -> class name from ``<wnid> <name words>`` lines, in file order."""
    classnames = collections.OrderedDict()
    with open(path, "r") as f:
        for line in f:
            words = line.strip().split(" ")
            if words[0]:
                classnames[words[0]] = " ".join(words[1:])
    return classnames


def class_folders(image_dir):
    """The class folders of ``image_dir``, sorted (README.txt and other files ignored)."""
    return sorted(f for f in listdir_nohidden(image_dir)
                  if f not in IGNORED and os.path.isdir(os.path.join(image_dir, f)))


def folder_entries(image_dir, folders, names):
    """``[relpath, label, classname]`` for every image, label = index in ``folders``.

    Images keep ``os.listdir`` order within a folder, as CoOp reads them: few-shot sampling
    draws from that order, so sorting here would change which images a seed picks.
    """
    entries = []
    for label, (folder, name) in enumerate(zip(folders, names)):
        for imname in listdir_nohidden(os.path.join(image_dir, folder)):
            entries.append((os.path.join(folder, imname), label, name))
    return entries


class ImageNetFamily(CoOpDataset):
    """Base of ImageNet and its variants: class names by WNID and the source-label mapping.

    Attributes after construction: ``source_wnids``, ``source_classnames`` (``classnames.txt``
    in file order), ``wnids`` and ``source_labels`` (one per label of this dataset, after
    base/new subsampling).
    """

    lists_from_folders = True

    def read_classnames(self):
        path = os.path.join(self.dataset_dir, CLASSNAMES_FILE)
        self.require(path, "class-name file")
        classnames = read_classnames(path)
        self.source_wnids = list(classnames)
        self.source_classnames = list(classnames.values())
        return classnames

    def set_label_wnids(self, wnid_of_label, labels, subsample):
        """Record ``wnids`` / ``source_labels`` for the labels kept by ``subsample``."""
        imagenet_label = {wnid: i for i, wnid in enumerate(sorted(self.source_wnids))}
        self.wnids = [wnid_of_label[y] for y in selected_labels(labels, subsample)]
        self.source_labels = [imagenet_label[w] for w in self.wnids]


class ImageNetTestSet(ImageNetFamily):
    """A test-only variant: one folder per class under ``image_subdir``, no split file.

    As in the official DePT code, the same list serves as train_x and test, and
    ``DATASET.SUBSAMPLE_CLASSES`` applies (the upstream CoOp loaders ignore it; "all" is the same).
    ``NUM_SHOTS`` is ignored: these sets are only evaluated.
    """

    def read_full_splits(self):
        classnames = self.read_classnames()
        self.require(self.image_dir, "image folder")
        folders = self.label_folders(classnames)
        self._wnid_of_label = dict(enumerate(self.folder_wnids(folders, classnames)))
        names = [classnames[w] for w in self._wnid_of_label.values()]
        entries = folder_entries(self.image_dir, folders, names)
        data = entries_to_datums(entries, self.image_dir, self.name, self.image_dir)
        return data, None, data

    def label_folders(self, classnames):
        """The folder of each label, in label order (default: sorted WNID folders)."""
        return class_folders(self.image_dir)

    def folder_wnids(self, folders, classnames):
        """The WNID of each label's folder (default: the folder name is the WNID)."""
        unknown = [f for f in folders if f not in classnames]
        if unknown:
            raise ValueError(f"{self.name}: class folders {unknown[:5]} of {self.image_dir} are not "
                             f"WNIDs listed in {os.path.join(self.dataset_dir, CLASSNAMES_FILE)}")
        return list(folders)

    def select(self, cfg, train, val, test):
        subsample = subsample_choice(cfg)
        self.set_label_wnids(self._wnid_of_label, (item.label for item in train), subsample)
        train, test = subsample_classes(train, test, subsample=subsample)
        return train, None, test

    @classmethod
    def list_images(cls, dataset_dir):
        image_dir = os.path.join(dataset_dir, cls.image_subdir)
        folders = class_folders(image_dir)
        paths = [os.path.join(image_dir, rel) for rel, _, _ in folder_entries(image_dir, folders, folders)]
        return {"test": paths}, len(folders)
