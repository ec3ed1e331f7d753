"""Food-101: 101 dishes in ``food-101/images/<dish>/*.jpg`` (the tarball's own layout)."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import folder_piece, split_piece


class Food101(CoOpDataset):
    """Food-101 (Bossard et al., ECCV 2014) with CoOp's 50/20/30 split of all 101,000 images."""

    template = "a photo of {}, a type of food."

    dataset_dir = "food-101"
    image_subdir = "images"
    split_file = "split_zhou_Food101.json"
    expected_classes = 101
    expected_sizes = {"train": 50500, "val": 20200, "test": 30300}
    pieces = (
        folder_piece("images", "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/food-101.tar.gz "
                     "(extract into $DATA; it creates food-101/images/)"),
        # Only the git blob id of the public copy in linzhiqiu/cross_modal_adaptation is known.
        split_piece(split_file, "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl",
                    Checksum(git_blob="39557040ee6501bd32aa8b5dfd75f7941a32f0a7")),
    )


register(DATASET_REGISTRY, Food101)
