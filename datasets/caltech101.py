"""Caltech101: 100 object classes; CoOp drops BACKGROUND_Google and Faces_easy."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import folder_piece, split_piece

# How CoOp turned the folder names into class names when it built the split (the split file
# already carries the result; kept here as the documented rule).
IGNORED_FOLDERS = ("BACKGROUND_Google", "Faces_easy")
RENAMED_FOLDERS = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


class Caltech101(CoOpDataset):
    """Caltech101 (Fei-Fei et al., 2004): ``caltech-101/101_ObjectCategories/<folder>/*.jpg``."""

    dataset_dir = "caltech-101"
    image_subdir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    expected_classes = 100
    expected_sizes = {"train": 4128, "val": 1649, "test": 2465}
    pieces = (
        folder_piece("101_ObjectCategories", "https://data.caltech.edu/records/mzrjq-6wc02 (formerly "
                     "http://www.vision.caltech.edu/Image_Datasets/Caltech101/) "
                     "(101_ObjectCategories.tar.gz, extract into $DATA/caltech-101/)"),
        split_piece(split_file, "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN", Checksum(
            sha256="52ce83205ff8ff8a1a18119aad6376120ae35c36e783a984bc560cbf10e73fa5",
            content="266b016abdaeeb65436a3273abb64b9c02633d8d97988b66592f0fd28b2659a4")),
    )


register(DATASET_REGISTRY, Caltech101)
