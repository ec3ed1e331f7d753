"""CoOp (Zhou et al., IJCV 2022, https://arxiv.org/abs/2109.01134) and CoOp + DePT."""
from dassl.engine import TRAINER_REGISTRY

from dept.engine import DePTMixin, PromptTrainer
from dept.registry import register


class CoOp(PromptTrainer):
    """Context Optimization: learned context vectors before the class name, ITM loss."""

    paper_method = "CoOp"


class CoOpDePT(DePTMixin, CoOp):
    """CoOp + DePT (Zhang et al., CVPR 2024, https://arxiv.org/abs/2309.07439)."""


register(TRAINER_REGISTRY, CoOp)
register(TRAINER_REGISTRY, CoOpDePT, aliases=("ExtrasLinearProbeCoOp",))
