"""Oxford-IIIT Pets: 37 cat and dog breeds, images directly in ``oxford_pets/images/``."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import folder_piece, split_piece


class OxfordPets(CoOpDataset):
    """Oxford-IIIT Pets (Parkhi et al., CVPR 2012); class = breed from the file name, lower-cased."""

    template = "a photo of a {}, a type of pet."

    dataset_dir = "oxford_pets"
    image_subdir = "images"
    split_file = "split_zhou_OxfordPets.json"
    expected_classes = 37
    expected_sizes = {"train": 2944, "val": 736, "test": 3669}
    pieces = (
        folder_piece("images", "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz "
                     "(extract into $DATA/oxford_pets/)"),
        split_piece(split_file, "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs", Checksum(
            sha256="d7f3ffe65b3919f95132e51422894ae18686b83c331fd8c0adcdc3dc2de6301e",
            content="175852640a3b1e8d7441c6224786fd018b4d6bcdd60f4495edca8a185631729d")),
    )


register(DATASET_REGISTRY, OxfordPets)
