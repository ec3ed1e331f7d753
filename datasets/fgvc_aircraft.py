"""FGVC-Aircraft: 100 variants; lists from the dataset's own ``images_variant_*.txt`` files."""
import os

from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import Piece, folder_piece
from .splits import entries_to_datums

_TARBALL = ("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz "
            "(keep its data/ folder and rename it to $DATA/fgvc_aircraft/)")
LIST_FILES = {"train": "images_variant_train.txt", "val": "images_variant_val.txt",
              "test": "images_variant_test.txt"}


def read_variants(path):
    """The variant names in file order; a variant's label is its line index."""
    with open(path, "r") as f:
        return [line.strip() for line in f if line.strip()]


def read_variant_list(path):
    """``[(image id, variant)]`` from a line ``<image id> <variant name with spaces>``."""
    with open(path, "r") as f:
        rows = [line.strip().split(" ") for line in f if line.strip()]
    return [(row[0], " ".join(row[1:])) for row in rows]


class FGVCAircraft(CoOpDataset):
    """FGVC-Aircraft 2013b (Maji et al., 2013) at the variant level, with its official splits."""

    template = "a photo of a {}, a type of aircraft."

    dataset_dir = "fgvc_aircraft"
    image_subdir = "images"
    expected_classes = 100
    expected_sizes = {"train": 3334, "val": 3333, "test": 3333}
    pieces = (
        folder_piece("images", _TARBALL),
        Piece("variants.txt", "class list", _TARBALL, checksum=Checksum(
            content="e1c9e72060e63d526dce032008262a95f573b02e802be7be42f0cb6ccd5b4217")),
        *(Piece(name, f"{split} list", _TARBALL) for split, name in LIST_FILES.items()),
    )

    def read_full_splits(self):
        variants_path = os.path.join(self.dataset_dir, "variants.txt")
        self.require(variants_path, "class list")
        label_of = {name: label for label, name in enumerate(read_variants(variants_path))}
        lists = []
        for name in LIST_FILES.values():
            path = os.path.join(self.dataset_dir, name)
            self.require(path, "split list")
            rows = read_variant_list(path)
            unknown = sorted({v for _, v in rows if v not in label_of})
            if unknown:
                raise ValueError(f"{self.name}: {path} names variants absent from {variants_path}: {unknown[:5]}")
            entries = [(f"{image_id}.jpg", label_of[v], v) for image_id, v in rows]
            lists.append(entries_to_datums(entries, self.image_dir, self.name, path))
        return tuple(lists)

    @classmethod
    def list_images(cls, dataset_dir):
        image_dir = os.path.join(dataset_dir, cls.image_subdir)
        lists = {split: [os.path.join(image_dir, f"{i}.jpg") for i, _ in
                         read_variant_list(os.path.join(dataset_dir, name))]
                 for split, name in LIST_FILES.items()}
        return lists, len(read_variants(os.path.join(dataset_dir, "variants.txt")))


register(DATASET_REGISTRY, FGVCAircraft)
