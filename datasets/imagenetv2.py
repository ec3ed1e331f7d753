"""ImageNetV2 (matched frequency): test-only, folders ``0``..``999`` named by ImageNet label."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .imagenet_family import ImageNetTestSet, classnames_piece
from .report import folder_piece


class ImageNetV2(ImageNetTestSet):
    """ImageNetV2 (Recht et al., ICML 2019): folder ``i`` holds label i, the i-th WNID of classnames.txt."""

    dataset_dir = "imagenetv2"
    image_subdir = "imagenetv2-matched-frequency-format-val"
    expected_classes = 1000
    expected_sizes = {"test": 10000}
    pieces = (
        folder_piece(image_subdir, "https://s3-us-west-2.amazonaws.com/imagenetv2public/"
                     "imagenetv2-matched-frequency.tar.gz (see github.com/modestyachts/ImageNetV2; "
                     "extract into $DATA/imagenetv2/)"),
        classnames_piece("$DATA/imagenet/classnames.txt"),
    )

    def label_folders(self, classnames):
        return [str(label) for label in range(len(classnames))]

    def folder_wnids(self, folders, classnames):
        return list(classnames)[: len(folders)]


register(DATASET_REGISTRY, ImageNetV2)
