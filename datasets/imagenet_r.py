"""ImageNet-R: test-only, 30,000 renditions (art, cartoons, ...) of 200 ImageNet classes."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .imagenet_family import ImageNetTestSet, classnames_piece
from .report import folder_piece


class ImageNetR(ImageNetTestSet):
    """ImageNet-R (Hendrycks et al., ICCV 2021): ``imagenet-rendition/imagenet-r/<wnid>/``.

    Labels 0..199 follow the sorted WNID folders; ``source_labels`` maps them to ImageNet labels.
    """

    dataset_dir = "imagenet-rendition"
    image_subdir = "imagenet-r"
    expected_classes = 200
    expected_sizes = {"test": 30000}
    pieces = (
        folder_piece("imagenet-r", "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar "
                     "(see github.com/hendrycks/imagenet-r; extract into $DATA/imagenet-rendition/)"),
        classnames_piece("$DATA/imagenet/classnames.txt"),
    )


register(DATASET_REGISTRY, ImageNetR)
