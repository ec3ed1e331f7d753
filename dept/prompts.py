"""CoOp's learned context: prompt embeddings "[SOS] ctx_1 ... ctx_M classname . [EOT]".

Shared by every CoOp-family method; a method that conditions or deepens the context subclasses
``ContextPrompt`` and overrides only what differs.
"""
import logging

import torch
from torch import nn

from dept.text_encoder import SharedPrefix

logger = logging.getLogger(__name__)


def tokenize(texts):
    import clip

    return torch.cat([clip.tokenize(t) for t in texts])


def name_lengths(classnames):
    from clip.simple_tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    return [len(tokenizer.encode(name)) for name in classnames]


class ContextPrompt(nn.Module):
    """Learned context vectors (generic M×W or class-specific C×M×W) around the class name.

    ``CTX_INIT`` words initialise the context from their token embeddings (and fix M); otherwise
    N(0, 0.02²), as CoOp. The fixed token embeddings (SOS; class name, '.', EOT, padding) are
    buffers rebuilt from the current class names, never saved.
    """

    def __init__(self, classnames, clip_model, n_ctx=16, ctx_init="", csc=False, position="end"):
        super().__init__()
        dtype = clip_model.dtype
        width = clip_model.ln_final.weight.shape[0]
        if position not in ("end", "middle", "front"):
            raise ValueError(f"CLASS_TOKEN_POSITION must be end, middle or front; got '{position}'")
        if ctx_init:
            ctx_init = ctx_init.replace("_", " ")
            n_ctx = len(ctx_init.split(" "))
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

    def context(self):
        """The context per class (C×M×W); subclasses condition it (e.g. on the image)."""
        ctx = self.ctx
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
