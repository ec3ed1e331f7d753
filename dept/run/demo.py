"""The embedded demo: scikit-learn's digits and a tiny CLIP pretrained on them, under ``<output>/demo``.

With no dataset root configured, every protocol runs on it: the digits stand for each dataset (and
the source), their colour-inverted copy for the target domain. The CLIP is the tiny architecture
trained image-against-caption on the digits' train split (``dept.run.demo_clip``): zero-shot it
recognises the new classes far above chance, so base, new and H mean something, on a toy.
"""
import contextlib
import os
import shutil
import tempfile

from dept.store.layout import DEMO_DIR, Layout
from dept.util.files import FileLock

BANNER = (
    "DEMO: no dataset root configured (--root or $DATA), so this runs the embedded demo: scikit-learn's "
    "handwritten digits (base 0-4, new 5-9) on a tiny CLIP pretrained on the digits' train split. A toy that "
    "shows every step working, not the paper's setting or its claims. Point --root at real data for real numbers."
)
CONFIG = "demo_digits"  # every trainer's demo config: demo_tiny's settings with the pretrained CLIP's name


def clip_file(output):
    """Where a demo keeps its CLIP: named by the build's version, so a new recipe is a new file (and
    runs of the old one are not reused as if they were the new one's)."""
    from dept.run.demo_clip import FILE

    return os.path.join(Layout(output).folder(DEMO_DIR), FILE)


def prepare_demo(output, dry_run=False):
    """The digits data and the pretrained tiny CLIP under ``<output>/demo`` (written once, under a
    lock, so two runners starting together on a fresh root do not race; the CLIP is built once per
    machine, ``dept.run.demo_clip.digits_clip``, and copied here); returns (data root, CLIP path)."""
    demo_dir = Layout(output).folder(DEMO_DIR)
    root, clip_path = os.path.join(demo_dir, "data"), clip_file(output)
    if dry_run:
        return root, clip_path
    from dept.datasets.digits import prepare_digits
    from dept.run.demo_clip import digits_clip, intact

    with FileLock(os.path.join(demo_dir, ".prepare.lock")):
        prepare_digits(root)
        if not intact(clip_path):
            built = digits_clip()
            fd, tmp = tempfile.mkstemp(prefix=".tiny_clip.", suffix=".tmp", dir=demo_dir)
            os.close(fd)
            try:
                shutil.copyfile(built, tmp)
                shutil.copyfile(built + ".sha256", tmp + ".sha256")
                os.replace(tmp + ".sha256", clip_path + ".sha256")
                os.replace(tmp, clip_path)
            finally:
                for leftover in (tmp, tmp + ".sha256"):
                    with contextlib.suppress(OSError):
                        os.remove(leftover)
    return root, clip_path
