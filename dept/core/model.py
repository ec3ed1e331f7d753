"""The model every CoOp-family method shares: frozen CLIP encoders plus a learned prompt.

One call per batch, ``features(images)``, returns everything the losses and the prediction read
(``Features``: image and text features, ITM logits, method extras); the trainer then computes
``losses`` or ``predict`` from it. A method subclasses ``PromptCLIP`` and overrides what differs
(``build_prompt_learner``, ``encode_text`` when prompts depend on the image, ``extra_losses`` for a
regulariser). DePT adds its head as the child ``dept_head`` (see ``dept.core.mixin.DePTMixin``); the
model itself has no notion of base or new classes.
"""
import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from dept.core.head import itm_logits
from dept.core.image_encoder import encode_image
from dept.core.prompts import ContextPrompt
from dept.core.text_encoder import TextEncoder, encode_prompts


@dataclass
class Features:
    """One forward pass: what the losses and the prediction of any method read.

    ``image``: B×D image features and ``text``: C×D (or B×C×D for image-conditioned prompts) text
    features, both as the encoders give them (not normalised); ``logits``: B×C ITM logits;
    ``extras``: whatever a method's regularisers need beyond these.
    """

    image: torch.Tensor
    text: torch.Tensor
    logits: torch.Tensor
    extras: dict = field(default_factory=dict)


class PromptCLIP(nn.Module):
    """Frozen CLIP image and text encoders around a learned ``prompt_learner``.

    The prompt learner gives ``Prompts`` (``dept.core.prompts``); this model hands them to the two
    encoders. A method changes what its prompt learner gives, not this forward pass.
    """

    #: Text encoding path (DEPT.TEXT_ENCODING): auto | shared_prefix | truncated | full; all exact.
    text_encoding = "auto"

    def __init__(self, clip_model, classnames, method_cfg, **prompt_kwargs):
        super().__init__()
        self.prompt_learner = self.build_prompt_learner(clip_model, classnames, method_cfg, **prompt_kwargs)
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.embed_dim = clip_model.text_projection.shape[1]
        self.dept_head = None
        self._text_cache = None

    def build_prompt_learner(self, clip_model, classnames, method_cfg, **kwargs):
        return ContextPrompt(
            classnames, clip_model, n_ctx=method_cfg.N_CTX, ctx_init=method_cfg.CTX_INIT,
            csc=method_cfg.CSC, position=method_cfg.CLASS_TOKEN_POSITION,
        )

    def train(self, mode=True):
        """Train mode for what learns; CLIP's frozen BatchNorm layers (the ResNet towers') stay in eval
        mode, as in CLIP: their running statistics are part of the frozen weights (in train mode they
        would normalise by the batch and drift with every step, and no checkpoint would hold them)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and \
                    not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    @property
    def image_independent_text(self):
        """True when the text does not depend on the image: computed once per evaluation."""
        return not self.prompt_learner.conditional

    def encode_image(self, images, prompts=None):
        """Image features (B×D, not normalised), with the prompts' visual tokens if any.

        Without autograd when nothing before the features can learn: no visual prompts and a frozen
        encoder. Visual prompts that train need the graph through the frozen blocks.
        """
        images = images.type(self.dtype)
        visual = prompts.visual if prompts is not None else None
        deep = prompts.deep_visual if prompts is not None else ()
        trains = (visual is not None and (visual.requires_grad or any(d.requires_grad for d in deep))) \
            or any(p.requires_grad for p in self.image_encoder.parameters())
        with contextlib.nullcontext() if trains and torch.is_grad_enabled() else torch.no_grad():
            return encode_image(self.image_encoder, images, visual, deep)

    def encode_text(self, prompts=None):
        """Text features of every class (C×D, or B×C×D for conditioned prompts, not normalised);
        cached during evaluation.

        The path is ``text_encoding`` (DEPT.TEXT_ENCODING, "auto" when unset): the prefix shared
        by every class is encoded once where the prompts have one, otherwise the transformer runs
        up to the last EOT; all paths give the same features (``dept.core.text_encoder``).
        """
        if self._text_cache is not None:
            return self._text_cache
        prompts = self.prompt_learner.prompts() if prompts is None else prompts
        if prompts.text is not None:  # fixed text, encoded once when the model was built
            return prompts.text
        return encode_prompts(self.text_encoder, self.prompt_learner, self.text_encoding, prompts)

    def adapt_image(self, image_features):
        """What a method does to the image features after the encoder (CLIP-Adapter's residual
        adapter); the identity for prompt methods."""
        return image_features

    def itm_logits(self, image_features, text_features):
        return itm_logits(image_features, text_features, self.logit_scale)

    def extra_losses(self, features, labels):
        """Method-specific regularisers as named losses (none for CoOp)."""
        return {}

    @contextlib.contextmanager
    def cached_text_features(self):
        """Compute the text features once for a whole evaluation (when prompts allow it)."""
        if not self.image_independent_text:
            yield
            return
        with torch.no_grad():
            self._text_cache = self.encode_text()
        try:
            yield
        finally:
            self._text_cache = None

    def features(self, images, image_features=None):
        """The one forward pass per batch (``Features``): prompts, then both encoders.

        ``image_features``: what ``encode_image`` gives for ``images`` with no visual prompts,
        computed before (the evaluation's feature cache, ``dept.core.feature_cache``); the images
        are then not read. The method's own steps after the encoder (``adapt_image``, text
        conditioned on the image) run as they do on images.
        """
        prompts = self.prompt_learner.prompts()
        encoded = self.encode_image(images, prompts) if image_features is None else image_features
        image = self.adapt_image(encoded)
        prompts = self.prompt_learner.condition(prompts, image)
        text = self.encode_text(prompts)
        return Features(image, text, self.itm_logits(image, text))

    def forward(self, images):
        """ITM logits: the plain method's prediction (the CoOp family's convention)."""
        return self.features(images).logits
