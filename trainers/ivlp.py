"""IVLP, independent vision-language prompting (Khattak et al., CVPR 2023, the MaPLe paper's
baseline; the base of PromptSRC), its language-only variant (a config), and IVLP + DePT.

Deep prompts on both encoders, not coupled: a text context of N_CTX_TEXT vectors (from the first
words of "a photo of a") plus learned text prompts at layers 1..J_t-1, and N_CTX_VISION visual
tokens appended after the patches plus learned ones at vision layers 1..J_v-1. The text prompts are
the same for every class, so the shared-prefix text encoding applies layer by layer (exact).
Officially the deep prompts live inside CLIP's blocks (``*.VPT_shallow``, ``image_encoder.VPT``);
here the prompt learner holds them, and official checkpoints are mapped (``official_state``).
"""
import re

import torch
from torch import nn

from dept.core.methods import Method, register_method
from dept.core.mixin import DePTMixin
from dept.core.model import PromptCLIP
from dept.core.prompts import ContextPrompt, Prompts
from dept.core.trainer import PromptTrainer


def _normal(*shape):
    tensor = torch.empty(*shape)
    nn.init.normal_(tensor, std=0.02)
    return nn.Parameter(tensor)


class IndependentPrompt(ContextPrompt):
    """Text context and deep text prompts, and (independently) visual and deep visual prompts."""

    def __init__(self, classnames, clip_model, n_ctx_text=2, n_ctx_vision=2, ctx_init="a photo of a",
                 depth_text=12, depth_vision=12):
        # the language-only config (depth 0) reads nothing of the image tower: it runs on a ResNet too
        text_layers = len(clip_model.transformer.resblocks)
        vision_layers = len(clip_model.visual.transformer.resblocks) if depth_vision else 0
        if not 1 <= depth_text <= text_layers:
            raise ValueError(f"PROMPT_DEPTH_TEXT must be between 1 and {text_layers} (for vision prompts alone, use "
                             f"the VPT trainer); got {depth_text}")
        if not 0 <= depth_vision <= vision_layers or (depth_vision and n_ctx_vision < 1):
            raise ValueError(f"PROMPT_DEPTH_VISION must be between 0 and {vision_layers}, with N_CTX_VISION >= 1 when "
                             f"it is not 0; got depth {depth_vision}, {n_ctx_vision} tokens")
        super().__init__(classnames, clip_model, n_ctx=n_ctx_text, ctx_init=ctx_init if n_ctx_text <= 4 else "",
                         init_n_ctx=True)
        width = clip_model.ln_final.weight.shape[0]
        self.deep_text = nn.ParameterList([_normal(self.n_ctx, width) for _ in range(depth_text - 1)])
        vision_width = clip_model.visual.conv1.weight.shape[0] if depth_vision else 0
        self.visual = _normal(n_ctx_vision, vision_width) if depth_vision else None
        deep_layers = max(depth_vision - 1, 0)
        self.deep_visual = nn.ParameterList([_normal(n_ctx_vision, vision_width) for _ in range(deep_layers)])

    def prompts(self):
        return Prompts(ctx=self.ctx, deep_text=list(self.deep_text), visual=self.visual,
                       deep_visual=list(self.deep_visual))


def official_prompt_names(state):
    """The MaPLe/PromptSRC repositories' names of IVLP and VPT prompts -> ours."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"(text_encoder|image_encoder)\.transformer\.resblocks\.(\d+)\.VPT_shallow", key)
        if m:
            kind = "deep_text" if m.group(1) == "text_encoder" else "deep_visual"
            key = f"prompt_learner.{kind}.{int(m.group(2)) - 1}"
        elif key == "image_encoder.VPT":
            key = "prompt_learner.visual"
        out[key] = value
    return out


class IVLPCLIP(PromptCLIP):
    def build_prompt_learner(self, clip_model, classnames, method_cfg, **kwargs):
        return IndependentPrompt(classnames, clip_model, n_ctx_text=method_cfg.N_CTX_TEXT,
                                 n_ctx_vision=method_cfg.N_CTX_VISION, ctx_init=method_cfg.CTX_INIT,
                                 depth_text=method_cfg.PROMPT_DEPTH_TEXT, depth_vision=method_cfg.PROMPT_DEPTH_VISION)


def prompts_vision(node):
    """Whether an IVLP/PromptSRC config prompts the image encoder (not the language-only one)."""
    return node.PROMPT_DEPTH_VISION > 0


def ivlp_node(n_ctx=2, depth=12):
    from yacs.config import CfgNode as CN

    return CN({
        "N_CTX_TEXT": n_ctx,  # text context vectors M_t (from the first words of CTX_INIT)
        "N_CTX_VISION": n_ctx,  # visual prompt tokens M_v (0 with depth 0: language only)
        "CTX_INIT": "a photo of a",
        "PREC": "fp16",  # CLIP precision: fp16 | fp32 | amp (fp16 falls back to fp32 without CUDA)
        "PROMPT_DEPTH_TEXT": depth,  # J_t: text layers 0..J_t-1 carry prompts (>= 1)
        "PROMPT_DEPTH_VISION": depth,  # J_v: vision layers 0..J_v-1 carry prompts (0 = none)
    })


class IVLP(PromptTrainer):
    """Independent vision-language prompting (deep, both encoders, uncoupled)."""

    model_cls = IVLPCLIP
    official_checkpoint_part = ""  # the whole model
    official_names = staticmethod(official_prompt_names)


class IVLPDePT(DePTMixin, IVLP):
    """IVLP + DePT (no official code: the DePT head on IVLP's features, as on every method)."""


def ivlp_keys(cfg):
    from dept.core.config import add_missing

    add_missing(cfg.TRAINER, {"IVLP": ivlp_node()})


register_method(Method("IVLP", configs={"base2new": "vit_b16_c2_ep5_batch4_2+2ctx"}, node="IVLP", keys=ivlp_keys,
                       paper_name="IVLP", checkpoint="VLPromptLearner", dept_checkpoint="VLPromptLearner",
                       official_checkpoints=("VLPromptLearner",), visual_prompts=prompts_vision), IVLP, IVLPDePT)
