"""PromptSRC (Khattak et al., ICCV 2023, https://arxiv.org/abs/2307.06948) and PromptSRC + DePT.

IVLP prompts (4+4 context, depth 9) regularised towards the frozen CLIP they prompt:
- L_SCL-image: 10·L1(Î, Î_frozen), the normalised image features against the frozen encoder's;
- L_SCL-text: 25·L1(T̂, T̂_frozen), against the mean frozen text features of 60 ImageNet templates
  (textual diversity), computed once per run;
- L_SCL-logits: KL(softmax(Z_frozen) ‖ softmax(Z)) summed over the batch and divided by B·C;
and Gaussian-weighted prompt aggregation (GPA): after each epoch e the trained tensors, weighted by
g_e ∝ N(e; GPA_MEAN, GPA_STD) (sum 1), are added to an aggregate that replaces them after the last
epoch. The aggregate is saved in every checkpoint, so a resumed run aggregates the same way.
The frozen image features come from the same frozen encoder run without prompts, without autograd
(the original keeps a second full image encoder in its prompt learner and in every checkpoint).
With DePT: (1-λ)·CE + λ·L_CAT + L_SCL, GPA over every trained tensor, the head included (there is
no official code for PromptSRC + DePT: our choice).
"""
import logging
import math

import torch
import torch.nn.functional as F

from dept.core.methods import Method, register_method
from dept.core.mixin import DePTMixin
from dept.core.prompts import tokenize
from dept.core.templates import PROMPTSRC_TEMPLATES
from dept.core.trainer import PromptTrainer

from .ivlp import IVLPCLIP, ivlp_node, official_prompt_names, prompts_vision

logger = logging.getLogger(__name__)


def gpa_weights(epochs, mean, std):
    """g_e for e = 1..epochs: a Gaussian density at e, normalised to sum 1 (PromptSRC's)."""
    density = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for e in range(1, epochs + 1)]
    total = sum(density)
    return [d / total for d in density]


class PromptSRCCLIP(IVLPCLIP):
    def __init__(self, clip_model, classnames, method_cfg, **kwargs):
        super().__init__(clip_model, classnames, method_cfg, **kwargs)
        self.text_weight, self.image_weight = method_cfg.TEXT_LOSS_WEIGHT, method_cfg.IMAGE_LOSS_WEIGHT
        names = [name.replace("_", " ") for name in classnames]
        device = clip_model.logit_scale.device
        with torch.no_grad():
            teacher = torch.stack([clip_model.encode_text(tokenize([t.format(n) for n in names]).to(device))
                                   for t in PROMPTSRC_TEMPLATES]).mean(dim=0)
        self.register_buffer("teacher_text", teacher / teacher.norm(dim=-1, keepdim=True), persistent=False)

    def features(self, images):
        features = super().features(images)
        if self.training:  # the frozen teacher's image features, only needed by the training losses
            with torch.no_grad():
                frozen = self.encode_image(images)
            features.extras["frozen_image"] = frozen / frozen.norm(dim=-1, keepdim=True)
        return features

    def extra_losses(self, features, labels):
        image = features.image / features.image.norm(dim=-1, keepdim=True)
        text = features.text / features.text.norm(dim=-1, keepdim=True)
        frozen_image, frozen_text = features.extras["frozen_image"], self.teacher_text.to(text.dtype)
        frozen_logits = self.logit_scale.exp() * frozen_image @ frozen_text.t()
        kl = F.kl_div(F.log_softmax(features.logits.float(), dim=1), F.log_softmax(frozen_logits.float(), dim=1),
                      reduction="sum", log_target=True) / features.logits.numel()
        return {
            "scl_logits": kl,
            "scl_text": self.text_weight * F.l1_loss(text.float(), frozen_text.float()),
            "scl_image": self.image_weight * F.l1_loss(image.float(), frozen_image.float()),
        }


class PromptSRC(PromptTrainer):
    """Self-regulating prompts: IVLP prompts, three losses towards frozen CLIP, and GPA."""

    model_cls = PromptSRCCLIP
    official_checkpoint_part = ""  # the whole model
    official_names = staticmethod(official_prompt_names)

    # -- Gaussian-weighted prompt aggregation (cross-epoch state: dept.core.trainer hooks) --------------
    def _gpa(self):
        if getattr(self, "_aggregate", None) is None:
            self._aggregate = {}
        return self._aggregate

    def after_epoch(self):
        """Add this epoch's weighted tensors to the aggregate; after the last epoch, use the aggregate.
        Before the epoch's checkpoint is written, so the checkpoint holds both."""
        weights = gpa_weights(self.max_epoch, self.method_cfg.GPA_MEAN, self.method_cfg.GPA_STD)
        aggregate = self._gpa()
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if param.requires_grad:
                    weighted = param.detach().float().cpu() * weights[self.epoch]
                    aggregate[name] = aggregate[name] + weighted if name in aggregate else weighted
            if self.epoch + 1 == self.max_epoch:
                for name, param in self.model.named_parameters():
                    if name in aggregate:
                        param.copy_(aggregate[name].to(param.dtype))
                logger.info("Using the Gaussian-weighted aggregate of the prompts (GPA) from now on")
        super().after_epoch()

    def method_state(self):
        return {"gpa": dict(self._gpa())}

    def load_method_state(self, state):
        self._aggregate = dict((state or {}).get("gpa") or {})


class PromptSRCDePT(DePTMixin, PromptSRC):
    """PromptSRC + DePT (no official code; see the module docstring)."""


def promptsrc_keys(cfg):
    from dept.core.config import add_missing

    node = ivlp_node(n_ctx=4, depth=9)
    node.TEXT_LOSS_WEIGHT = 25.0  # weight of L_SCL-text (L1 to the frozen template features)
    node.IMAGE_LOSS_WEIGHT = 10.0  # weight of L_SCL-image (L1 to the frozen image features)
    node.GPA_MEAN = 15.0  # GPA: the Gaussian's mean, in epochs (1-based)
    node.GPA_STD = 1.0  # GPA: its standard deviation, in epochs
    add_missing(cfg.TRAINER, {"PROMPTSRC": node})


register_method(Method("PromptSRC", node="PROMPTSRC", keys=promptsrc_keys, paper_name="PromptSRC",
                       configs={"base2new": "vit_b16_c2_ep20_batch4_4+4ctx",
                                "cross_dataset": "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",  # also DG
                                "few_shot": "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"},
                       checkpoint="VLPromptLearner", dept_checkpoint="VLPromptLearner",  # the original's
                       official_checkpoints=("VLPromptLearner",), visual_prompts=prompts_vision),
                PromptSRC, PromptSRCDePT)
