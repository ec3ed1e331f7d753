"""The embedded demo: scikit-learn's digits and a tiny random CLIP, under ``<output>/demo``.

With no dataset root configured, every protocol runs on it: the digits stand for each dataset (and
the source), their colour-inverted copy for the target domain. The CLIP's weights are random, so
its accuracies only show that the pipeline works; they say nothing about DePT.
"""
import contextlib
import os
import tempfile

from dept.store.layout import DEMO_DIR, Layout
from dept.util.files import FileLock

BANNER = (
    "DEMO: no dataset root configured (--root or $DATA), so this runs the embedded demo: scikit-learn's "
    "handwritten digits (base 0-4, new 5-9) on a tiny CLIP with RANDOM weights. Its accuracies only show "
    "that the pipeline works; they say nothing about DePT. Point --root at real data for real numbers."
)


def prepare_demo(output, dry_run=False):
    """The digits data and a tiny CLIP file under ``<output>/demo`` (written once, under a lock, so
    two runners starting together on a fresh root do not race); returns (data root, CLIP path)."""
    demo_dir = Layout(output).folder(DEMO_DIR)
    root, clip_path = os.path.join(demo_dir, "data"), os.path.join(demo_dir, "tiny_clip.pt")
    if dry_run:
        return root, clip_path
    from dept.datasets.digits import prepare_digits

    with FileLock(os.path.join(demo_dir, ".prepare.lock")):
        prepare_digits(root)
        if not _loads(clip_path):
            from dept.core.testing import save_tiny_clip

            fd, tmp = tempfile.mkstemp(prefix=".tiny_clip.", suffix=".tmp", dir=demo_dir)
            os.close(fd)
            try:
                save_tiny_clip(tmp)
                os.replace(tmp, clip_path)
            finally:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
    return root, clip_path


def _loads(path):
    if not os.path.isfile(path):
        return False
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated by an older, non-atomic writer: write it again
        return False
    return True
