"""EuroSAT: 10 land-use classes of Sentinel-2 RGB tiles in ``eurosat/2750/<Class>/*.jpg``."""
from dassl.data.datasets import DATASET_REGISTRY

from dept.core.registry import register

from .base import CoOpDataset
from .checksums import Checksum
from .report import folder_piece, split_piece

# CoOp's readable names for the folder names (the split file carries them already).
RENAMED_FOLDERS = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


class EuroSAT(CoOpDataset):
    """EuroSAT RGB (Helber et al., 2019) with CoOp's renamed classes and 50/20/30 split."""

    template = "a centered satellite photo of {}."

    dataset_dir = "eurosat"
    image_subdir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    expected_classes = 10
    expected_sizes = {"train": 13500, "val": 5400, "test": 8100}
    pieces = (
        folder_piece("2750", "http://madm.dfki.de/files/sentinel/EuroSAT.zip "
                     "(extract into $DATA/eurosat/; it creates 2750/)"),
        split_piece(split_file, "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o", Checksum(
            sha256="541503a77d0b26b735d85ec7a3e672804fe0aa466c2e5f07da772cc6c0af8ad2",
            content="b9db23fedd13a2d3374107fe494f4fa814e7837c771660c850aab95ec391ad1a")),
    )


register(DATASET_REGISTRY, EuroSAT)
