"""DePT (Decoupled Prompt Tuning, CVPR 2024) as a Dassl.pytorch plugin.

``import dept`` registers the trainers (CoOp, CoOpDePT = ExtrasLinearProbeCoOp, ...) and datasets
in Dassl's registries; ``dept.add_dept_config(cfg)`` adds the config keys they read.
"""
import logging as _logging
import os

# Dassl imports wilds, whose dependency `outdated` asks PyPI for newer versions at import time;
# that is a network call on every run (and a warning on clusters without network).
os.environ.setdefault("OUTDATED_IGNORE", "1")

from dept.config import add_dept_config  # noqa: E402

__version__ = "0.1.0"
__all__ = ["add_dept_config", "register_all"]


def register_all():
    """Import the trainers and datasets, which registers them (idempotent)."""
    import dept.datasets  # noqa: F401
    import dept.trainers  # noqa: F401


register_all()
# dassl/data/datasets/dg/wilds/wilds_base.py calls logging.disable(WARNING) at import, which
# silences every INFO line of every library in the process, ours included. Undo it.
_logging.disable(_logging.NOTSET)
