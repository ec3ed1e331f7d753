"""KgCoOp (Yao et al., CVPR 2023, https://arxiv.org/abs/2303.13283) and KgCoOp + DePT.

CoOp with knowledge guidance: the learned class prompts are kept close to frozen CLIP's text
features of the hand-crafted template (the dataset's, e.g. "a photo of a {}, a type of pet."),
L = CE + W·(1 - mean_c cos(t_c, t^clip_c)). The reference features are computed once, when the
model is built, by the frozen text encoder (the official code builds a second CLIP on the GPU).
With DePT the knowledge term keeps its weight W: L = (1-λ)·CE + λ·L_CAT + W·L_kg, as officially.
"""
import torch
import torch.nn.functional as F

from dept.core.methods import Method, register_method
from dept.core.mixin import DePTMixin
from dept.core.model import PromptCLIP
from dept.core.prompts import tokenize
from dept.core.trainer import PromptTrainer


class KgCoOpCLIP(PromptCLIP):
    """CoOp's model plus the frozen hand-crafted text features of its classes (a buffer, not saved)."""

    def __init__(self, clip_model, classnames, method_cfg, template="a photo of a {}."):
        super().__init__(clip_model, classnames, method_cfg)
        self.kg_weight = method_cfg.W
        texts = [template.format(name.replace("_", " ")) for name in classnames]
        with torch.no_grad():
            reference = clip_model.encode_text(tokenize(texts).to(clip_model.logit_scale.device))
        self.register_buffer("reference_text", reference / reference.norm(dim=-1, keepdim=True), persistent=False)
        self.template = template

    def extra_losses(self, features, labels):
        """{"kg": W·(1 - mean_c cos(t_c, t^clip_c))}: cosine is scale-free, so T needs no normalising."""
        cos = F.cosine_similarity(features.text, self.reference_text.to(features.text.dtype), dim=-1, eps=1e-7)
        return {"kg": self.kg_weight * (1.0 - cos.mean())}


class KgCoOp(PromptTrainer):
    """Knowledge-guided Context Optimization."""

    model_cls = KgCoOpCLIP

    def build_custom_model(self, clip_model, classnames):
        return self.model_cls(clip_model, classnames, self.method_cfg, template=self.class_template())


class KgCoOpDePT(DePTMixin, KgCoOp):
    """KgCoOp + DePT (Zhang et al., CVPR 2024, https://arxiv.org/abs/2309.07439)."""


def kgcoop_keys(cfg):
    from dept.core.config import add_missing, coop_node

    node = coop_node()  # KgCoOp reads the CoOp node, as officially, with its two keys added
    node.W = 2.0  # W: weight of the knowledge-guidance loss (the DePT repo's value; KgCoOp's paper: 8.0)
    node.ALPHA = 1.0  # unused by KgCoOp's loss; kept so official yaml files merge
    add_missing(cfg.TRAINER, {"COOP": node})


register_method(Method("KgCoOp", configs={"base2new": "vit_b16_ep10_ctxv1_bs4_lr35"}, keys=kgcoop_keys,
                       paper_name="KgCoOp", dept_aliases=("ExtrasLinearProbeKgCoOp",), frozen_image_encoder=True),
                KgCoOp, KgCoOpDePT)
