"""CoCoOp (Zhou et al., CVPR 2022, https://arxiv.org/abs/2203.05557) and CoCoOp + DePT.

Conditional context: a meta-net maps each image's (normalised) feature to a bias added to every
context vector, so each image has its own prompts and its own text features (B×C×D). The context
is still shared by the classes of an image, so the text encoder runs that image's prefix once and
each class only its name positions (``dept.core.text_encoder``, one prefix per image). With DePT, the
CAT head's text rows are each image's own text features of its label.
"""
from collections import OrderedDict

from torch import nn

from dept.core.methods import Method, register_method
from dept.core.mixin import DePTMixin
from dept.core.model import PromptCLIP
from dept.core.prompts import ContextPrompt, Prompts
from dept.core.trainer import PromptTrainer


class ConditionalPrompt(ContextPrompt):
    """CoCoOp's prompt learner: context ``ctx`` (M×W) plus ``meta_net(image)`` for each image."""

    conditional = True

    def __init__(self, classnames, clip_model, n_ctx=4, ctx_init="a photo of a"):
        super().__init__(classnames, clip_model, n_ctx=n_ctx, ctx_init=ctx_init)
        vis_dim = clip_model.visual.output_dim
        width = clip_model.ln_final.weight.shape[0]
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, width)),
        ])).to(clip_model.dtype)

    def condition(self, prompts, image_features):
        """π = meta_net(f / |f|) per image; the context of image b is ctx + π_b (B×M×W)."""
        f = image_features / image_features.norm(dim=-1, keepdim=True)
        bias = self.meta_net(f.to(self.meta_net.linear1.weight.dtype))
        return Prompts(ctx=self.ctx.unsqueeze(0) + bias.unsqueeze(1).to(self.ctx.dtype))


class CoCoOpCLIP(PromptCLIP):
    def build_prompt_learner(self, clip_model, classnames, method_cfg, **kwargs):
        return ConditionalPrompt(classnames, clip_model, n_ctx=method_cfg.N_CTX, ctx_init=method_cfg.CTX_INIT)


class CoCoOp(PromptTrainer):
    """Conditional Context Optimization: the context conditioned on each image by a meta-net."""

    model_cls = CoCoOpCLIP


class CoCoOpDePT(DePTMixin, CoCoOp):
    """CoCoOp + DePT (Zhang et al., CVPR 2024, https://arxiv.org/abs/2309.07439)."""


def cocoop_keys(cfg):
    from yacs.config import CfgNode as CN

    from dept.core.config import add_missing

    add_missing(cfg.TRAINER, {"COCOOP": CN({
        "N_CTX": 4,  # number of context vectors M
        "CTX_INIT": "a photo of a",  # words that initialise the context ("" = random N(0, 0.02²))
        "PREC": "fp16",  # CLIP precision: fp16 | fp32 | amp (fp16 falls back to fp32 without CUDA)
    })})


register_method(Method("CoCoOp", configs={"base2new": "vit_b16_c4_ep10_batch1_ctxv1"}, node="COCOOP",
                       keys=cocoop_keys, paper_name="CoCoOp", dept_aliases=("ExtrasLinearProbeCoCoOp",),
                       frozen_image_encoder=True),  # the text is conditioned on the frozen image feature
                CoCoOp, CoCoOpDePT)
