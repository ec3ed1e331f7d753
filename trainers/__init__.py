"""Dassl trainers of this package; importing registers them in Dassl's TRAINER_REGISTRY.

One file per method, each with its DePT variant (one line: ``class XDePT(DePTMixin, X)``).
"""
from .cocoop import CoCoOp, CoCoOpDePT
from .coop import CoOp, CoOpDePT
from .kgcoop import KgCoOp, KgCoOpDePT
from .maple import MaPLe, MaPLeDePT

__all__ = ["CoOp", "CoOpDePT", "CoCoOp", "CoCoOpDePT", "KgCoOp", "KgCoOpDePT", "MaPLe", "MaPLeDePT"]
