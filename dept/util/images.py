"""Opening image files with the decoders a dataset of photos needs, and no other.

``PIL.Image.open`` hands a file to whichever of its ~40 decoders claims it: PostScript (run through
Ghostscript when it is installed), FITS, PSD, ICNS, ... A data folder is often shared by a whole lab,
and a crafted file in it would reach those parsers in every user's run. Every image the package reads
(training and test images, ``data check``, ImageFolder datasets, predictions) is opened with
``formats=IMAGE_FORMATS``: any other file is "not an image" to us, whatever PIL could make of it.
"""

#: the formats of the benchmark datasets' files and of photos people have (PIL's names; a camera's
#: multi-picture JPEG opens as JPEG); everything else is refused before a decoder sees it
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
#: the file names those formats go by: what a folder of images is listed by (ImageFolder, predictions)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                  ".pbm", ".pnm")


def open_image(path):
    """``PIL.Image.open(path)`` limited to ``IMAGE_FORMATS`` (lazy: reads the header only).

    Raises ``PIL.UnidentifiedImageError`` (an ``OSError``) for any other file, naming the formats read.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise UnidentifiedImageError(f"cannot identify image file {str(path)!r} as one of "
                                     f"{', '.join(IMAGE_FORMATS)} (other formats are not read)") from None
