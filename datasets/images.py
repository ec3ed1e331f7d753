"""Reading images with errors that name the file and the dataset.

Dassl's ``DatasetWrapper`` calls ``PIL.Image.open(path).convert("RGB")``; a truncated or
non-image file then fails with a bare PIL traceback inside a DataLoader worker, after minutes
of training. ``CheckedDatasetWrapper`` re-raises such failures as ``UnreadableImageError``
naming the image and ``DATASET.NAME``; pass it to ``DataManager(cfg, dataset_wrapper=...)``.
``check_image`` is the same test, used by ``data check --verify-images`` to find bad files
before a run.
"""
from dassl.data.data_manager import DatasetWrapper
from PIL import Image

from .errors import UnreadableImageError

# What PIL raises for absent, truncated, corrupt or oversized files (UnidentifiedImageError is an
# OSError; some decoders raise SyntaxError or ValueError on broken headers).
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def check_image(path):
    """None if ``path`` decodes as an RGB image, else the reason (a short string)."""
    try:
        with Image.open(path) as img:
            img.convert("RGB")
    except IMAGE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


class CheckedDatasetWrapper(DatasetWrapper):
    """Dassl's ``DatasetWrapper`` whose image-reading failures name the file and dataset.

    Only failures that come from the image itself are translated: when ``__getitem__`` raises,
    the image is decoded again on its own, and if that succeeds the original error (from a
    transform, say) propagates unchanged.
    """

    def __getitem__(self, idx):
        try:
            return super().__getitem__(idx)
        except IMAGE_ERRORS as err:
            impath = self.data_source[idx].impath
            reason = check_image(impath)
            if reason is None:
                raise
            dataset = getattr(getattr(self.cfg, "DATASET", None), "NAME", "?")
            raise UnreadableImageError(
                f"{dataset}: cannot read image {impath} ({reason}). The file is truncated or not "
                "an image; download it again, or run `python -m dept data check --verify-images` "
                "to list every bad file."
            ) from err
