"""SUN397: 397 scene classes under ``sun397/SUN397/<letter>/<scene>[/<sub>]/*.jpg``."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import folder_piece, split_piece


def sun397_classname(folder):
    """CoOp's class name of a SUN397 folder: drop the letter, reverse the rest, join by spaces.

    ``a/apse/indoor`` -> "indoor apse"; underscores stay ("airplane_cabin"). The split file
    already carries these names; the rule documents (and tests) where they come from.
    """
    return " ".join(folder.strip("/").split("/")[1:][::-1])


class SUN397(CoOpDataset):
    """SUN397 (Xiao et al., CVPR 2010) with CoOp's split (test = the official Testing_01 list)."""

    dataset_dir = "sun397"
    image_subdir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    expected_classes = 397
    expected_sizes = {"train": 15880, "val": 3970, "test": 19850}
    pieces = (
        folder_piece("SUN397", "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz "
                     "(extract into $DATA/sun397/)"),
        # Only the git blob id of the public copy in linzhiqiu/cross_modal_adaptation is known.
        split_piece(split_file, "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq",
                    Checksum(git_blob="8d5725db8f70bcf02245665304f863e68f96a24c")),
    )


register(DATASET_REGISTRY, SUN397)
