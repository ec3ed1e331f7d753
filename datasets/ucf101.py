"""UCF101: 101 actions, one middle frame per video in ``ucf101/UCF-101-midframes/<Action>/``."""
import re

from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import folder_piece, split_piece


def ucf101_classname(action):
    """CoOp's class (and folder) name of a UCF101 action: CamelCase split by "_".

    ``ApplyEyeMakeup`` -> "Apply_Eye_Makeup"; the split file already carries these names.
    """
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


class UCF101(CoOpDataset):
    """UCF101 (Soomro et al., 2012) as still images: CoOp's extracted middle frames."""

    template = "a photo of a person doing {}."

    dataset_dir = "ucf101"
    image_subdir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    expected_classes = 101
    expected_sizes = {"train": 7639, "val": 1898, "test": 3783}
    pieces = (
        folder_piece("UCF-101-midframes", "CoOp's UCF-101-midframes.zip (Google Drive "
                     "https://drive.google.com/file/d/10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O/view), "
                     "extract into $DATA/ucf101/"),
        split_piece(split_file, "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y", Checksum(
            sha256="d78cb834f7c5792ceaff2c5ee2d7c76a9e4086e48a3a6b01232989d29cbefdd8",
            content="29a5dc239824943e473244fc18abf1b43734213fc748cffa25ccd773fbe7271a")),
    )


register(DATASET_REGISTRY, UCF101)
