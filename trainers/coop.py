"""CoOp (Zhou et al., IJCV 2022, https://arxiv.org/abs/2109.01134) and CoOp + DePT."""
from dept.core.methods import Method, register_method
from dept.core.mixin import DePTMixin
from dept.core.trainer import PromptTrainer


class CoOp(PromptTrainer):
    """Context Optimization: learned context vectors before the class name, ITM loss."""


class CoOpDePT(DePTMixin, CoOp):
    """CoOp + DePT (Zhang et al., CVPR 2024, https://arxiv.org/abs/2309.07439)."""


def coop_keys(cfg):
    """TRAINER.COOP (``dept.core.config.coop_node``: also the node of KgCoOp and zero-shot CLIP)."""
    from dept.core.config import add_missing, coop_node

    add_missing(cfg.TRAINER, {"COOP": coop_node()})


register_method(Method("CoOp", configs={"base2new": "vit_b16_ep10_bs4_lr35"}, keys=coop_keys, paper_name="CoOp",
                       dept_aliases=("ExtrasLinearProbeCoOp",), frozen_image_encoder=True), CoOp, CoOpDePT)
