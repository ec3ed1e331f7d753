"""Oxford Flowers 102: images flat in ``oxford_flowers/jpg/``, names from ``cat_to_name.json``."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import Piece, folder_piece, split_piece


class OxfordFlowers(CoOpDataset):
    """Flowers102 (Nilsback & Zisserman, 2008) with CoOp's 50/20/30 split.

    The split file already holds the ``cat_to_name.json`` names (label y is key str(y + 1)); the
    json is listed so that ``data check`` and ``fetch-splits`` complete the CoOp layout.
    """

    template = "a photo of a {}, a type of flower."

    dataset_dir = "oxford_flowers"
    image_subdir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    expected_classes = 102
    expected_sizes = {"train": 4093, "val": 1633, "test": 2463}
    pieces = (
        folder_piece("jpg", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz "
                     "(extract into $DATA/oxford_flowers/)"),
        split_piece(split_file, "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT", Checksum(
            sha256="2f50c42fc1a17ca13c271cb4269b1347bdb43d2be672e34f74a4e4cbfbcca794",
            content="9bf82a401539357a181e5f0b836ae7fcd5baa38b55e264a2059df8e86adc898a")),
        Piece("cat_to_name.json", "class-name file", "CoOp's copy, on Google Drive:",
              gdrive_id="1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0", checksum=Checksum(
                  sha256="0469f1ad7fe0072d98155c49aa58649d998edbbe3326229003aa5f7228525236",
                  content="7bc4809e32737f46c37917667cd62dc25bc634c8feb6f2d693199549fa7fd69b")),
    )


register(DATASET_REGISTRY, OxfordFlowers)
