"""ImageNet-Sketch: test-only, 50,889 sketches in ``imagenet-sketch/images/<wnid>/``."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .imagenet_family import ImageNetTestSet, classnames_piece
from .report import folder_piece


class ImageNetSketch(ImageNetTestSet):
    """ImageNet-Sketch (Wang et al., NeurIPS 2019), all 1,000 classes."""

    dataset_dir = "imagenet-sketch"
    image_subdir = "images"
    expected_classes = 1000
    expected_sizes = {"test": 50889}
    pieces = (
        folder_piece("images", "https://github.com/HaohanWang/ImageNet-Sketch (the archive's sketch/ "
                     "folder, renamed to $DATA/imagenet-sketch/images/)"),
        classnames_piece("$DATA/imagenet/classnames.txt"),
    )


register(DATASET_REGISTRY, ImageNetSketch)
