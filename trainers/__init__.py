"""Dassl trainers of this package; importing registers them in Dassl's TRAINER_REGISTRY."""
from .coop import CoOp, CoOpDePT

__all__ = ["CoOp", "CoOpDePT"]
