"""DePT (Decoupled Prompt Tuning, CVPR 2024) as a Dassl.pytorch plugin.

``import dept`` registers the trainers (CoOp, CoOpDePT = ExtrasLinearProbeCoOp, ...) and datasets
in Dassl's registries; ``dept.add_dept_config(cfg)`` adds the config keys they read.
"""
import logging as _logging
import os
import warnings

# Dassl imports wilds, whose dependency `outdated` asks PyPI for newer versions at import time;
# that is a network call on every run (and a warning on clusters without network).
os.environ.setdefault("OUTDATED_IGNORE", "1")
# ... and `outdated` imports pkg_resources, which warns on every run; the clip package needs it too.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message="Failed to check for latest version")

from dept.config import add_dept_config  # noqa: E402
from dept.logs import install_console_fallback  # noqa: E402

# Our INFO lines (checkpoint loaded, fused or ITM-only evaluation, fp32 fallback, ...) reach the
# console and Dassl's log.txt in a user's own train.py too, where nobody configures logging.
install_console_fallback()

__version__ = "0.1.0"
__all__ = ["add_dept_config", "register_all"]


def register_all():
    """Import the trainers and datasets, which registers them (idempotent).

    Without Dassl there is nothing to register into; the model parts (head, text encoder, CLIP
    loading) still import, and the trainers say how to install Dassl when asked for.
    """
    try:
        import dassl  # noqa: F401
    except ModuleNotFoundError:
        _logging.getLogger(__name__).warning(
            "dassl is not installed: trainers and datasets are not registered. "
            "Install it with `bash scripts/setup.sh` (see README, Install)."
        )
        return
    import dept.datasets  # noqa: F401
    import dept.trainers  # noqa: F401


register_all()
# dassl/data/datasets/dg/wilds/wilds_base.py calls logging.disable(WARNING) at import, which
# silences every INFO line of every library in the process, ours included. Undo it.
_logging.disable(_logging.NOTSET)
