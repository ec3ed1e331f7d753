"""Describable Textures (DTD): 47 texture classes, CoOp's fixed 60/24/36 images per class."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import folder_piece, split_piece


class DescribableTextures(CoOpDataset):
    """DTD (Cimpoi et al., CVPR 2014) as CoOp reads it: ``dtd/images/<class>/*.jpg``."""

    template = "{} texture."
    method_templates = {"KgCoOp": "a photo of a {}, a type of texture."}  # KgCoOp's own table

    dataset_dir = "dtd"
    image_subdir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    expected_classes = 47
    expected_sizes = {"train": 2820, "val": 1128, "test": 1692}
    pieces = (
        folder_piece("images", "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz "
                     "(extract into $DATA; it creates dtd/images/)"),
        split_piece(split_file, "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x", Checksum(
            sha256="f26ebeccd2b58e68d70f07a0dc39fe49bf7b69024bac34396b954dfd87969c38",
            content="0d04a9bb08938c9d435fc3c6b5030906334f6d8ccf4d80f8319e5d7f4fbdd4ba")),
    )


register(DATASET_REGISTRY, DescribableTextures)
