"""VPT, deep visual prompt tuning (Jia et al., ECCV 2022) on CLIP's image encoder, as the MaPLe
paper's baseline, and VPT + DePT.

Visual prompts only: N_CTX_VISION tokens appended after the patches and learned ones at vision
layers 1..J-1; the text is fixed, "a photo of a {}." encoded once by the frozen CLIP (the MaPLe
repository's VPT). With DePT, the CAT head reads the prompted image features and the fixed text
features (no official code: our choice, the same head as for every method).
"""
from torch import nn

from dept.core.methods import Method, register_method
from dept.core.mixin import DePTMixin
from dept.core.model import PromptCLIP
from dept.core.prompts import FixedTextPrompt, Prompts
from dept.core.trainer import PromptTrainer

from .ivlp import _normal, official_prompt_names


class VisualPrompt(FixedTextPrompt):
    """Fixed text, learned visual (and deep visual) prompts."""

    def __init__(self, classnames, clip_model, n_ctx_vision=8, depth=12):
        layers = len(clip_model.visual.transformer.resblocks)
        if not 1 <= depth <= layers or n_ctx_vision < 1:
            raise ValueError(f"PROMPT_DEPTH_VISION must be between 1 and {layers} and N_CTX_VISION >= 1; got depth "
                             f"{depth}, {n_ctx_vision} tokens")
        super().__init__(classnames, clip_model, ("a photo of a {}.",))
        width = clip_model.visual.conv1.weight.shape[0]
        self.visual = _normal(n_ctx_vision, width)
        self.deep_visual = nn.ParameterList([_normal(n_ctx_vision, width) for _ in range(depth - 1)])

    def prompts(self):
        return Prompts(text=self.text_features, visual=self.visual, deep_visual=list(self.deep_visual))


class VPTCLIP(PromptCLIP):
    def build_prompt_learner(self, clip_model, classnames, method_cfg, **kwargs):
        return VisualPrompt(classnames, clip_model, n_ctx_vision=method_cfg.N_CTX_VISION,
                            depth=method_cfg.PROMPT_DEPTH_VISION)


class VPT(PromptTrainer):
    """Deep visual prompting on CLIP, hand-crafted text."""

    model_cls = VPTCLIP
    official_checkpoint_part = ""  # the whole model
    official_names = staticmethod(official_prompt_names)


class VPTDePT(DePTMixin, VPT):
    """VPT + DePT (no official code; see the module docstring)."""


def vpt_keys(cfg):
    from yacs.config import CfgNode as CN

    from dept.core.config import add_missing

    add_missing(cfg.TRAINER, {"VPT": CN({
        "N_CTX_VISION": 8,  # visual prompt tokens per layer
        "CTX_INIT": "a photo of a",  # the fixed text's words (kept for official yaml files)
        "PREC": "fp16",  # CLIP precision: fp16 | fp32 | amp (fp16 falls back to fp32 without CUDA)
        "PROMPT_DEPTH_VISION": 12,  # J: vision layers 0..J-1 carry prompts
    })})


register_method(Method("VPT", configs={"base2new": "vit_b16_c2_ep5_batch4_4"}, node="VPT", keys=vpt_keys,
                       paper_name="VPT", official_checkpoints=("prompt_learner",), visual_prompts=True), VPT, VPTDePT)
