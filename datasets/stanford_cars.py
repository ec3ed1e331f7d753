"""Stanford Cars: 196 car models; the split's paths are relative to the dataset folder itself."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import folder_piece, split_piece

_IMAGES = ("the original Stanford links are dead (CoOp#61); use a full copy of {name} with the "
           "original file names, e.g. the one the MaPLe authors host (multimodal-prompt-learning#48)")


class StanfordCars(CoOpDataset):
    """Stanford Cars (Krause et al., 2013): ``cars_train/*.jpg`` (train+val), ``cars_test/*.jpg``.

    Class names put the year first ("2012 Audi TTS Coupe"), as CoOp wrote them into the split.
    """

    dataset_dir = "stanford_cars"
    image_subdir = ""
    split_file = "split_zhou_StanfordCars.json"
    expected_classes = 196
    expected_sizes = {"train": 6509, "val": 1635, "test": 8041}
    pieces = (
        folder_piece("cars_train", _IMAGES.format(name="cars_train.tgz")),
        folder_piece("cars_test", _IMAGES.format(name="cars_test.tgz")),
        split_piece(split_file, "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT", Checksum(
            sha256="40acee7aa65c8e4727a32d90e884b7c3f8960b523422317e163f7af65432959d",
            content="bffbe347fbf93ad532133ff506d15606ac007812cfac9933551a5877f5263dd3")),
    )


register(DATASET_REGISTRY, StanfordCars)
