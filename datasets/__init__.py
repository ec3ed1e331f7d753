"""The CoOp benchmark datasets (and the Digits demo), registered in Dassl's ``DATASET_REGISTRY``.

Importing this package (``import dept.datasets``) registers every dataset under the name the CoOp
family uses (``DescribableTextures``, ``ImageNet``, ...), idempotently and next to a user's own
CoOp datasets (see ``dept.core.registry``). The shared machinery lives in ``base`` (``CoOpDataset``),
``splits``, ``fewshot``, ``images``, ``report``, ``checksums`` and ``check`` (``python -m dept
data``); each other module holds one dataset (``imagenet_family`` what ImageNet and its variants
share; ``imagefolder`` the user's own images, ``DATASET.NAME ImageFolder``). The imports below load
every dataset module, which is what registers them.
"""
from .base import CoOpDataset
from .caltech101 import Caltech101
from .digits import Digits, DigitsInverted, prepare_digits
from .dtd import DescribableTextures
from .errors import DatasetError, DatasetNotFoundError, MissingImagesError, UnreadableImageError
from .eurosat import EuroSAT
from .fgvc_aircraft import FGVCAircraft
from .food101 import Food101
from .imagefolder import ImageFolder
from .imagenet import ImageNet
from .imagenet_a import ImageNetA
from .imagenet_family import ImageNetFamily, ImageNetTestSet
from .imagenet_r import ImageNetR
from .imagenet_sketch import ImageNetSketch
from .imagenetv2 import ImageNetV2
from .images import CheckedDatasetWrapper, check_image
from .oxford_flowers import OxfordFlowers
from .oxford_pets import OxfordPets
from .splits import subsample_classes
from .stanford_cars import StanfordCars
from .sun397 import SUN397
from .ucf101 import UCF101

# The benchmark in the order of CoOp's DATASETS.md: the 11 few-shot datasets, then the 4 ImageNet
# variants used for domain generalization. ``data check`` walks this tuple.
BENCHMARK = (
    ImageNet, Caltech101, OxfordPets, StanfordCars, OxfordFlowers, Food101, FGVCAircraft, SUN397,
    DescribableTextures, EuroSAT, UCF101, ImageNetV2, ImageNetSketch, ImageNetA, ImageNetR,
)

__all__ = [
    "BENCHMARK", "CoOpDataset", "ImageNetFamily", "ImageNetTestSet", "CheckedDatasetWrapper", "check_image",
    "DatasetError", "DatasetNotFoundError", "MissingImagesError", "UnreadableImageError",
    "subsample_classes", "prepare_digits", "Digits", "DigitsInverted", "ImageFolder",
    *(cls.__name__ for cls in BENCHMARK),
]
