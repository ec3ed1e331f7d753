"""MaPLe (Khattak et al., CVPR 2023, https://arxiv.org/abs/2210.03117) and MaPLe + DePT.

Multi-modal prompts, coupled: text context vectors (M = N_CTX, initialised from the first M words
of "a photo of a", the rest of the words kept as fixed tokens) and, at text layers 1..J-1, deep
text prompts replacing positions 1..M; each is projected (its own Linear, W -> vision width) to
the vision prompts of the same layer: first-layer visual tokens appended after the patches, deep
ones replacing them at vision layers 1..J-1. The deep text prompts are the same for every class,
so the shared-prefix text encoding stays exact layer by layer. Widths come from the backbone (the
official code hard-codes 512 and 768 and ``.half()``), so MaPLe runs in fp32 on CPU as well.
"""
import copy

import torch
from torch import nn

from dept.core.methods import Method, register_method
from dept.core.mixin import DePTMixin
from dept.core.model import PromptCLIP
from dept.core.prompts import ContextPrompt, Prompts
from dept.core.trainer import PromptTrainer


class MultiModalPrompt(ContextPrompt):
    """MaPLe's prompt learner: text context, deep text prompts, and their vision projections.

    Parameter names are the official ones (``ctx``, ``proj``, ``compound_prompts_text.<i>``,
    ``compound_prompt_projections.<i>``), so official checkpoints load as they are.
    """

    def __init__(self, classnames, clip_model, n_ctx=2, ctx_init="a photo of a", depth=9):
        layers = min(len(clip_model.transformer.resblocks), len(clip_model.visual.transformer.resblocks))
        if not 1 <= depth <= layers:
            raise ValueError(f"TRAINER.MAPLE.PROMPT_DEPTH must be between 1 and {layers} (the backbone's layers); "
                             f"got {depth}")
        # As officially: words initialise the context only when there are at most 4 of them to learn.
        super().__init__(classnames, clip_model, n_ctx=n_ctx, ctx_init=ctx_init if n_ctx <= 4 else "",
                         init_n_ctx=True)
        width = clip_model.ln_final.weight.shape[0]
        vision_width = clip_model.visual.conv1.weight.shape[0]
        self.proj = nn.Linear(width, vision_width).to(clip_model.dtype)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(self.n_ctx, width)) for _ in range(depth - 1)])
        for prompt in self.compound_prompts_text:
            nn.init.normal_(prompt, std=0.02)
        layer = nn.Linear(width, vision_width)  # one initialisation, copied per layer (as officially)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(layer) for _ in range(depth - 1)])

    def prompts(self):
        return Prompts(
            ctx=self.ctx,
            deep_text=list(self.compound_prompts_text),
            visual=self.proj(self.ctx),
            deep_visual=[project(prompt) for project, prompt in
                         zip(self.compound_prompt_projections, self.compound_prompts_text)],
        )


class MaPLeCLIP(PromptCLIP):
    def build_prompt_learner(self, clip_model, classnames, method_cfg, **kwargs):
        return MultiModalPrompt(classnames, clip_model, n_ctx=method_cfg.N_CTX, ctx_init=method_cfg.CTX_INIT,
                                depth=method_cfg.PROMPT_DEPTH)


class MaPLe(PromptTrainer):
    """Multi-modal Prompt Learning: coupled deep prompts on both encoders."""

    model_cls = MaPLeCLIP
    official_checkpoint_part = ""  # the whole model


class MaPLeDePT(DePTMixin, MaPLe):
    """MaPLe + DePT (Zhang et al., CVPR 2024, https://arxiv.org/abs/2309.07439)."""


def maple_keys(cfg):
    from yacs.config import CfgNode as CN

    from dept.core.config import add_missing

    add_missing(cfg.TRAINER, {"MAPLE": CN({
        "N_CTX": 2,  # number of context vectors M (text), and of visual prompt tokens
        "CTX_INIT": "a photo of a",  # its first N_CTX words initialise the context
        "PREC": "fp16",  # CLIP precision: fp16 | fp32 | amp (fp16 falls back to fp32 without CUDA)
        "PROMPT_DEPTH": 9,  # J: layers 0..J-1 carry prompts (1 = first layer only)
    })})


register_method(Method("MaPLe", node="MAPLE", keys=maple_keys, paper_name="MaPLe",
                       configs={"base2new": "vit_b16_c2_ep10_batch4_2ctx",
                                "cross_dataset": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"},  # also DG (its xd_*.sh)
                       checkpoint="MultiModalPromptLearner", dept_checkpoint="MultiModalPromptLearner",  # the official
                       official_checkpoints=("MultiModalPromptLearner",), dept_aliases=("ExtrasLinearProbeMaPLe",),
                       visual_prompts=True),
                MaPLe, MaPLeDePT)
