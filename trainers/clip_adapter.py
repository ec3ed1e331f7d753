"""CLIP-Adapter (Gao et al., IJCV 2023, https://arxiv.org/abs/2110.04544) and CLIP-Adapter + DePT.

A residual bottleneck adapter on the frozen image features, f' = α·A(f) + (1-α)·f with
A = ReLU∘Linear(c/4 -> c)∘ReLU∘Linear(c -> c/4) (no biases), α = 0.2; the text is the dataset's
hand-crafted template, encoded once (the original re-encodes it at every forward). The width c is
the backbone's embedding (the original hard-codes 1024, RN50's; ViT-B/16 has 512). With DePT the
ITM and CAT heads both read the adapted image features (no official code: our choice).
"""
from torch import nn

from dept.core.methods import Method, register_method
from dept.core.mixin import DePTMixin
from dept.core.model import PromptCLIP
from dept.core.prompts import FixedTextPrompt
from dept.core.trainer import PromptTrainer


class Adapter(nn.Module):
    def __init__(self, c_in, reduction=4):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(c_in, c_in // reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(c_in // reduction, c_in, bias=False), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.fc(x)


class AdapterCLIP(PromptCLIP):
    def __init__(self, clip_model, classnames, method_cfg, templates=("a photo of a {}.",)):
        super().__init__(clip_model, classnames, method_cfg, templates=templates)
        self.adapter = Adapter(self.embed_dim, method_cfg.REDUCTION).to(clip_model.dtype)
        self.ratio = method_cfg.RATIO

    def build_prompt_learner(self, clip_model, classnames, method_cfg, templates=("a photo of a {}.",)):
        return FixedTextPrompt(classnames, clip_model, templates)

    def adapt_image(self, image_features):
        return self.ratio * self.adapter(image_features) + (1 - self.ratio) * image_features


class CLIPAdapter(PromptTrainer):
    """CLIP-Adapter: a residual adapter on the image features."""

    model_cls = AdapterCLIP
    trainable = ("adapter.",)
    official_checkpoint_part = "adapter"  # the original saves the adapter alone (fc.0.weight, ...)

    def build_custom_model(self, clip_model, classnames):
        return self.model_cls(clip_model, classnames, self.method_cfg, templates=(self.class_template(),))


class CLIPAdapterDePT(DePTMixin, CLIPAdapter):
    """CLIP-Adapter + DePT (no official code; see the module docstring)."""


def clip_adapter_keys(cfg):
    from yacs.config import CfgNode as CN

    from dept.core.config import add_missing

    add_missing(cfg.TRAINER, {"CLIP_ADAPTER": CN({
        "RATIO": 0.2,  # α: f' = α·A(f) + (1-α)·f
        "REDUCTION": 4,  # the bottleneck is c / REDUCTION wide
        "PREC": "fp32",  # the original runs CLIP in fp32
    })})


register_method(Method("CLIPAdapter", configs={"base2new": "vit_b16_ep10_bs4_lr35"}, node="CLIP_ADAPTER",
                       keys=clip_adapter_keys, paper_name="CLIP-Adapter", aliases=("CLIP_Adapter",),
                       frozen_image_encoder=True,  # the adapter comes after the frozen feature
                       checkpoint="clip_adapter", dept_checkpoint="clip_adapter",  # the original's
                       official_checkpoints=("clip_adapter",)), CLIPAdapter, CLIPAdapterDePT)
