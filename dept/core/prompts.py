"""Prompts as data, and CoOp's learned context "[SOS] ctx_1 ... ctx_M classname . [EOT]".

A prompt learner hands the two encoders a ``Prompts`` value per forward pass: the text context,
per-layer deep text prompts, first-layer visual tokens and per-layer deep visual tokens, each
optional. The encoders (``dept.core.text_encoder``, ``dept.core.image_encoder``) know nothing of methods;
a method is what it puts in ``Prompts`` (CoOp: a context; CoCoOp: a context per image; MaPLe: all
four, the visual ones projected from the text ones).

``ContextPrompt`` is the context every CoOp-family method shares; a method that conditions or
deepens it subclasses it and overrides only what differs.
"""
import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from dept.core.text_encoder import SharedPrefix

logger = logging.getLogger(__name__)


def tokenize(texts):
    import clip

    return torch.cat([clip.tokenize(t) for t in texts])


def name_lengths(classnames):
    from clip.simple_tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    return [len(tokenizer.encode(name)) for name in classnames]


@dataclass
class Prompts:
    """What a prompt learner gives the encoders for one forward pass.

    ``ctx``: the text context, M×W (every class), C×M×W (class-specific) or B×M×W (per image, so
    the text features are B×C×D); ``deep_text``: per-layer M×W prompts replacing positions 1..M at
    the input of text layers 1..J-1; ``visual``: K×Wv tokens appended after the patch tokens;
    ``deep_visual``: per-layer K×Wv tokens replacing them at the input of visual layers 1..J-1;
    ``text``: C×D text features already computed (fixed, hand-crafted text: VPT, CLIP-Adapter,
    zero-shot CLIP), so the text encoder does not run.
    """

    ctx: Optional[torch.Tensor] = None
    deep_text: Sequence[torch.Tensor] = ()
    visual: Optional[torch.Tensor] = None
    deep_visual: Sequence[torch.Tensor] = ()
    text: Optional[torch.Tensor] = None


class ContextPrompt(nn.Module):
    """Learned context vectors (generic M×W or class-specific C×M×W) around the class name.

    ``CTX_INIT`` words initialise the context from their token embeddings (and fix M); otherwise
    N(0, 0.02²), as CoOp. With ``init_n_ctx`` (MaPLe, IVLP) M stays ``n_ctx`` and only the first M
    words become learned vectors: "a photo of a" with M = 2 learns "a photo" and keeps "of a" as
    fixed tokens after it. The fixed token embeddings (SOS; class name, '.', EOT, padding) are
    buffers rebuilt from the current class names, never saved.
    """

    #: True when the context depends on the image (``condition``), so text is encoded per image.
    conditional = False

    def __init__(self, classnames, clip_model, n_ctx=16, ctx_init="", csc=False, position="end",
                 init_n_ctx=False):
        super().__init__()
        dtype = clip_model.dtype
        width = clip_model.ln_final.weight.shape[0]
        if position not in ("end", "middle", "front"):
            raise ValueError(f"CLASS_TOKEN_POSITION must be end, middle or front; got '{position}'")
        if ctx_init:
            ctx_init = ctx_init.replace("_", " ")
            n_ctx = n_ctx if init_n_ctx else len(ctx_init.split(" "))
            with torch.no_grad():
                embedding = clip_model.token_embedding(tokenize([ctx_init])).type(dtype)
            ctx = embedding[0, 1:1 + n_ctx, :].clone()
            prefix_text = ctx_init
        else:
            shape = (len(classnames), n_ctx, width) if csc else (n_ctx, width)
            ctx = torch.empty(*shape, dtype=dtype)
            nn.init.normal_(ctx, std=0.02)
            prefix_text = " ".join(["X"] * n_ctx)
        logger.info('Initial context: "%s" (%d tokens, %s)', prefix_text, n_ctx,
                    "class-specific" if csc else "generic")
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = n_ctx
        self.position = position
        self.set_classnames(classnames, clip_model, prefix_text)

    def set_classnames(self, classnames, clip_model, prefix_text):
        classnames = [name.replace("_", " ") for name in classnames]
        self.n_cls = len(classnames)
        self.name_lens = name_lengths(classnames)
        tokenized = tokenize([f"{prefix_text} {name}." for name in classnames])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized).type(clip_model.dtype)
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        # Each class's positions after the context, up to its EOT: fixed by the class names, so kept
        # on the CPU once rather than read back from the device at every step.
        self.suffix_lengths = tokenized.argmax(dim=-1) - self.n_ctx
        self.register_buffer("token_prefix", embedding[:, :1, :], persistent=False)  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + self.n_ctx:, :], persistent=False)

    def context(self, ctx=None):
        """The context per class (C×M×W) of ``ctx`` (default: the learned one)."""
        ctx = self.ctx if ctx is None else ctx
        return ctx.unsqueeze(0).expand(self.n_cls, -1, -1) if ctx.dim() == 2 else ctx

    def assemble(self, ctx):
        """Concatenate SOS, context and class-name tokens in the configured order (C×77×W)."""
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        half = self.n_ctx // 2
        prompts = []
        for i, n in enumerate(self.name_lens):
            name, rest = suffix[i:i + 1, :n], suffix[i:i + 1, n:]
            c = ctx[i:i + 1]
            parts = ([prefix[i:i + 1], c[:, :half], name, c[:, half:], rest] if self.position == "middle"
                     else [prefix[i:i + 1], name, c, rest])
            prompts.append(torch.cat(parts, dim=1))
        return torch.cat(prompts, dim=0)

    def forward(self):
        return self.assemble(self.context())

    def prompts(self):
        """This learner's ``Prompts`` (CoOp: the context alone)."""
        return Prompts(ctx=self.ctx)

    def condition(self, prompts, image_features):
        """``Prompts`` for these images (only ``conditional`` learners change them)."""
        return prompts

    def shared_prefix(self, ctx=None):
        """The prompts as the prefix every class shares plus each class's rest, or None.

        With a generic context and the class name at the end, positions 0..M ("[SOS] ctx_1..ctx_M")
        are the same for every class, so the text encoder runs them once
        (``TextEncoder.encode_shared``). ``ctx`` replaces the learned context: M×W, or B×M×W for a
        context conditioned on each image (CoCoOp), which gives one prefix per image.

        None where the prefix is not shared, and the caller runs the whole prompts: class-specific
        context (CSC: each class has its own ctx) or the class name before ("front") or inside
        ("middle") the context (the positions after the name differ between classes).
        """
        if self.position != "end" or self.ctx.dim() != 2:
            return None
        ctx = self.ctx if ctx is None else ctx
        sos = self.token_prefix[0]  # 1×W: the SOS embedding, the same in every prompt
        if ctx.dim() == 2:
            prefix = torch.cat([sos, ctx])
        else:
            prefix = torch.cat([sos.expand(ctx.shape[0], -1, -1), ctx], dim=1)
        return SharedPrefix(prefix, self.token_suffix, self.suffix_lengths)


class FixedTextPrompt(nn.Module):
    """Hand-crafted text ("a photo of a {}.", one template or an ensemble), encoded once by the frozen
    CLIP when built: the text side of zero-shot CLIP, VPT and CLIP-Adapter.

    With several templates, each class's feature is the mean of its normalised template features,
    normalised again (zero-shot CLIP's ensemble). ``visual`` / ``deep_visual``: learned visual
    prompts for a subclass (VPT); none here.
    """

    conditional = False

    def __init__(self, classnames, clip_model, templates=("a photo of a {}.",)):
        super().__init__()
        templates = [templates] if isinstance(templates, str) else list(templates)
        device = clip_model.logit_scale.device
        names = [name.replace("_", " ") for name in classnames]
        with torch.no_grad():
            per_template = []
            for template in templates:
                features = clip_model.encode_text(tokenize([template.format(n) for n in names]).to(device))
                per_template.append(features / features.norm(dim=-1, keepdim=True))
            text = torch.stack(per_template).mean(dim=0) if len(templates) > 1 else per_template[0]
            if len(templates) > 1:
                text = text / text.norm(dim=-1, keepdim=True)
        self.templates = templates
        self.register_buffer("text_features", text, persistent=False)

    def prompts(self):
        return Prompts(text=self.text_features)

    def condition(self, prompts, image_features):
        return prompts
