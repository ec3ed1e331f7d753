"""Dassl trainers of this package; importing registers them in Dassl's TRAINER_REGISTRY.

One file per method, each with its DePT variant (one line: ``class XDePT(DePTMixin, X)``).
"""
from .clip_adapter import CLIPAdapter, CLIPAdapterDePT
from .cocoop import CoCoOp, CoCoOpDePT
from .coop import CoOp, CoOpDePT
from .ivlp import IVLP, IVLPDePT
from .kgcoop import KgCoOp, KgCoOpDePT
from .maple import MaPLe, MaPLeDePT
from .promptsrc import PromptSRC, PromptSRCDePT
from .vpt import VPT, VPTDePT
from .zsclip import ZeroshotCLIP, ZeroshotCLIP2

__all__ = ["CoOp", "CoOpDePT", "CoCoOp", "CoCoOpDePT", "KgCoOp", "KgCoOpDePT", "MaPLe", "MaPLeDePT",
           "ZeroshotCLIP", "ZeroshotCLIP2", "IVLP", "IVLPDePT", "VPT", "VPTDePT", "CLIPAdapter", "CLIPAdapterDePT",
           "PromptSRC", "PromptSRCDePT"]
