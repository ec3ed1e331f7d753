"""ImageNet-A: test-only, 7,500 natural adversarial images of 200 ImageNet classes."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .imagenet_family import ImageNetTestSet, classnames_piece
from .report import folder_piece


class ImageNetA(ImageNetTestSet):
    """ImageNet-A (Hendrycks et al., CVPR 2021): ``imagenet-adversarial/imagenet-a/<wnid>/``.

    Labels 0..199 follow the sorted WNID folders; ``source_labels`` maps them to ImageNet labels.
    """

    dataset_dir = "imagenet-adversarial"
    image_subdir = "imagenet-a"
    expected_classes = 200
    expected_sizes = {"test": 7500}
    pieces = (
        folder_piece("imagenet-a", "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar "
                     "(see github.com/hendrycks/natural-adv-examples; extract into $DATA/imagenet-adversarial/)"),
        classnames_piece("$DATA/imagenet/classnames.txt"),
    )


register(DATASET_REGISTRY, ImageNetA)
