"""DePT (Decoupled Prompt Tuning, CVPR 2024) as a Dassl.pytorch plugin.

``import dept`` registers the trainers (CoOp, CoOpDePT = ExtrasLinearProbeCoOp, ...) and datasets
in Dassl's registries; ``dept.add_dept_config(cfg)`` adds the config keys they read. The package's
rooms: ``dept.core`` (the model), ``dept.util`` (file and process helpers), ``dept.store`` (the
output root's layout and records), ``dept.results`` (tables, figures, the report) and ``dept.run``
(the protocol runner); the trainers and datasets are ``dept.trainers`` and ``dept.datasets``.

``DEPT_PLUGINS`` (comma-separated module names) are imported after ours: your own methods and
datasets, registered there, are then known to every process of a run (the runner's children, SLURM
tasks), as ours are.
"""
import logging as _logging
import os
import sys
import warnings

# Dassl imports wilds, whose dependency `outdated` asks PyPI for newer versions at import time;
# that is a network call on every run (and a warning on clusters without network).
os.environ.setdefault("OUTDATED_IGNORE", "1")
# ... and `outdated` imports pkg_resources, which warns on every run; the clip package needs it too.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message="Failed to check for latest version")

from dept.core.config import add_dept_config  # noqa: E402
from dept.util.logs import install_console_fallback  # noqa: E402
from dept.version import __version__  # noqa: E402

# Our INFO lines (checkpoint loaded, fused or ITM-only evaluation, fp32 fallback, ...) reach the
# console and Dassl's log.txt in a user's own train.py too, where nobody configures logging.
install_console_fallback()

__all__ = ["add_dept_config", "register_all", "__version__", "DePTMixin", "PromptTrainer", "Method", "register_method",
           "register", "load"]


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
    import importlib

    import dept.datasets  # noqa: F401
    import dept.trainers  # noqa: F401

    for name in filter(None, (m.strip() for m in os.environ.get("DEPT_PLUGINS", "").split(","))):
        importlib.import_module(name)
    # The module paths the README of dept 0.1.0 named, for scripts written against it.
    for old, new in (("mixin", "dept.core.mixin"), ("engine", "dept.core.trainer"), ("registry", "dept.core.registry")):
        sys.modules.setdefault(f"dept.{old}", sys.modules[new])


def __getattr__(name):
    """The public API, imported when first asked for (``import dept`` stays light without Dassl)."""
    if name == "DePTMixin":
        from dept.core.mixin import DePTMixin

        return DePTMixin
    if name == "PromptTrainer":
        from dept.core.trainer import PromptTrainer

        return PromptTrainer
    if name in ("Method", "register_method"):
        from dept.core import methods

        return getattr(methods, name)
    if name == "load":
        from dept.analysis.predict import load

        return load
    if name == "register":
        from dept.core.registry import register

        return register
    raise AttributeError(f"module 'dept' has no attribute {name!r}")


register_all()
# dassl/data/datasets/dg/wilds/wilds_base.py calls logging.disable(WARNING) at import, which
# silences every INFO line of every library in the process, ours included. Undo it.
_logging.disable(_logging.NOTSET)
