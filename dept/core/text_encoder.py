"""CLIP's text transformer over learned prompt embeddings, run only as far as it must.

CLIP's text transformer is causal: position i attends to positions <= i. Two exact savings follow.

* **Truncation** (``TextEncoder.forward``). The feature we read is the one at the end-of-text (EOT)
  token, so positions after the last EOT of the batch cannot change any feature. The official code
  runs all 77 positions; we stop at the longest prompt's EOT (typically 20-30 positions).
* **Shared prefix** (``TextEncoder.encode_shared``). With a generic context and the class name at
  the end, the prompts "[SOS] ctx_1 .. ctx_M name . [EOT]" of all C classes begin with the same
  P = M + 1 embeddings, so at every layer the hidden states, keys and values of positions 0..M are
  the same for every class. They are computed once (``encode_prefix``, which keeps each layer's
  keys and values); then only the class-name positions (name, '.', EOT) run per class
  (``encode_suffix``), attending to the shared keys and values and causally to themselves. The
  shared keys and values enter every class's attention as the same tensor (never copied per
  class), so the backward pass sums the gradient of all classes into them and runs the prefix
  once. Activations kept for backward scale with the number of class-name positions (about 4 per
  ImageNet class), not with 77 × C. Per-image prefixes (CoCoOp: the context depends on the image
  but is shared by the classes) are the same computation with one prefix per image; deep prompts
  (MaPLe, PromptSRC: learned vectors replace the context positions at each layer's input) enter
  through ``prefix_hook``. Fixed words after the learned context that every class shares (MaPLe:
  "a photo" learned, "of a" fixed) are encoded with the prefix (``extend_prefix``).

The blocks are the stock ``clip.model.ResidualAttentionBlock`` modules. ``forward`` calls them;
the shared-prefix path drives their own weights (``ln_1``, ``attn.in_proj_weight/bias``,
``attn.out_proj``, ``ln_2``, ``mlp``), computing queries, keys and values itself so that the
prefix's keys and values can be kept and reused. Nothing of CLIP is copied.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class SharedPrefix(NamedTuple):
    """Prompts split where the classes start to differ (see ``ContextPrompt.shared_prefix``).

    ``prefix``: P×W embeddings of positions 0..P-1, the same for every class ("[SOS] ctx_1..ctx_M"),
    or G×P×W for one prefix per group (per image, CoCoOp), giving G×C×D features.
    ``suffix``: C×S×W embeddings of positions P..P+S-1 (class name, '.', EOT, padding).
    ``lengths``: C positions of each class's suffix up to and including its EOT token.
    """

    prefix: torch.Tensor
    suffix: torch.Tensor
    lengths: torch.Tensor


class PrefixState(NamedTuple):
    """The shared prefix after the transformer: each layer's keys and values, G×P×H×Dh each."""

    keys: list
    values: list
    length: int  # P: the suffix starts at this position
    grouped: bool  # the prefix was G×P×W (features come out G×C×D) rather than P×W


def causal_mask(length, dtype, device):
    """Additive mask: -inf above the diagonal, as CLIP's ``build_attention_mask``."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu_(1)


def run_block(block, x, mask):
    """One stock ``clip.model.ResidualAttentionBlock`` with an explicit mask (LND layout)."""
    h = block.ln_1(x)
    x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
    return x + block.mlp(block.ln_2(x))


def _softmax(scores):
    # fp32 softmax whatever the activations' precision; a no-op cast in fp32.
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)


def _attend(q, k, v, past=None):
    """Causal attention of G×N×L×H×Dh queries (scaled) over their own sequence's keys and values,
    and over ``past`` = (keys, values), each G×P×H×Dh, shared by the N sequences of a group."""
    length = q.shape[2]
    own = torch.einsum("gnlhd,gnmhd->gnhlm", q, k) + causal_mask(length, q.dtype, q.device)
    if past is None:
        return torch.einsum("gnhlm,gnmhd->gnlhd", _softmax(own), v)
    past_k, past_v = past
    n_past = past_k.shape[1]
    probs = _softmax(torch.cat([torch.einsum("gnlhd,gphd->gnhlp", q, past_k), own], dim=-1))
    return (torch.einsum("gnhlp,gphd->gnlhd", probs[..., :n_past], past_v)
            + torch.einsum("gnhlm,gnmhd->gnlhd", probs[..., n_past:], v))


def run_block_with_past(block, x, past=None):
    """One stock residual block on G×N×L×W hidden states that may attend to shared keys/values.

    Every position of ``x`` sees all of ``past`` = (keys, values), each G×P×H×Dh (the prefix, the
    same for all N sequences of a group), and the positions of its own sequence up to itself.
    Returns the block's output and this call's own (keys, values), G×N×L×H×Dh.

    The scores against ``past`` are one batched product over all N·L query positions with the one
    G×P×H×Dh tensor: neither the prefix's keys nor values are expanded or copied per sequence, so
    their gradient is accumulated from every sequence in that one product.
    """
    attn = block.attn
    heads = attn.num_heads
    width = x.shape[-1]
    h = block.ln_1(x)
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    split = (*x.shape[:-1], heads, width // heads)  # G×N×L×H×Dh
    q, k, v = q.reshape(split), k.reshape(split), v.reshape(split)
    q = q * (width // heads) ** -0.5
    out = _attend(q, k, v, past)
    x = x + attn.out_proj(out.reshape(x.shape))
    return x + block.mlp(block.ln_2(x)), (k, v)


def run_block_packed(block, x, past, layout):
    """``run_block_with_past`` for sequences of several lengths at once, packed in G×T×W.

    ``layout``: (offset, N, L) per bucket: N sequences of L positions each, one after another from
    position ``offset`` of ``x``'s T. The position-wise parts (projections, MLP) run once over all
    T positions, so each weight matrix is read once per layer rather than once per bucket; the
    attention runs per bucket, each sequence over ``past`` and causally over itself.
    """
    attn = block.attn
    heads = attn.num_heads
    groups, _, width = x.shape
    h = [block.ln_1(x[:, o:o + n * length].reshape(groups, n, length, width)) for o, n, length in layout]
    h = torch.cat([part.reshape(groups, -1, width) for part in h], dim=1) if len(h) > 1 else h[0].flatten(1, 2)
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    out = []
    for o, n, length in layout:
        split = (groups, n, length, heads, width // heads)
        rows = slice(o, o + n * length)
        q_b, k_b, v_b = q[:, rows].reshape(split), k[:, rows].reshape(split), v[:, rows].reshape(split)
        out.append(_attend(q_b * (width // heads) ** -0.5, k_b, v_b, past).reshape(groups, n * length, width))
    x = x + attn.out_proj(torch.cat(out, dim=1) if len(out) > 1 else out[0])
    return x + block.mlp(block.ln_2(x))


class TextEncoder(nn.Module):
    """Prompt embeddings -> text features at each prompt's EOT token.

    ``forward``: N×77×W prompts -> N×D (all positions, or up to the last EOT).
    ``encode_shared``: a ``SharedPrefix`` -> C×D (or G×C×D), the prefix run once.
    """

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts, truncate=True, deep=()):
        """``deep``: per-layer M×W prompts replacing positions 1..M at the input of layers 1..len(deep)."""
        eot = tokenized_prompts.argmax(dim=-1)  # EOT has the largest token id
        length = int(eot.max()) + 1 if truncate else prompts.shape[1]
        x = prompts[:, :length] + self.positional_embedding[:length].type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        mask = causal_mask(length, x.dtype, x.device)
        for i, block in enumerate(self.transformer.resblocks):
            if 1 <= i <= len(deep):
                layer = deep[i - 1].to(x.dtype)
                x = torch.cat([x[:1], layer.unsqueeze(1).expand(-1, x.shape[1], -1), x[1 + len(layer):]])
            x = run_block(block, x, mask)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection

    # -- shared prefix -----------------------------------------------------------------------
    def encode_shared(self, parts: SharedPrefix, prefix_hook=None, bucket=True, deep=()):
        """Text features of prompts whose first P positions every class shares (exact).

        ``parts.prefix`` P×W gives C×D features; G×P×W (one prefix per image) gives G×C×D.
        ``deep``: per-layer prompts, as in ``forward`` (they replace prefix positions, so the
        prefix stays shared). ``prefix_hook`` and ``bucket``: see ``encode_prefix`` and ``encode_suffix``.
        """
        if deep:
            if prefix_hook is not None:
                raise ValueError("pass deep prompts or a prefix_hook, not both")
            prefix_hook = deep_prompt_hook(deep)
        parts = extend_prefix(parts)
        state = self.encode_prefix(parts.prefix, prefix_hook)
        return self.encode_suffix(state, parts.suffix, parts.lengths, bucket=bucket)

    def encode_prefix(self, prefix, prefix_hook=None) -> PrefixState:
        """Run the shared positions 0..P-1 through every layer once, keeping keys and values.

        ``prefix``: P×W, or G×P×W for one prefix per group (image). ``prefix_hook(i, x)``, if
        given, is called with the prefix's G×P×W hidden states before layer i and returns the
        states layer i reads. It is the hook for deep prompts: MaPLe and PromptSRC replace the
        context positions 1..M at the input of layers 1..J-1 by learned vectors ``deep[i]``
        (M×W, the same for every class), which keeps the prefix shared::

            def hook(i, x):
                if 1 <= i < depth:
                    return torch.cat([x[:, :1], deep[i - 1].expand(len(x), -1, -1), x[:, 1 + M:]], 1)
                return x
        """
        grouped = prefix.dim() == 3
        x = prefix if grouped else prefix.unsqueeze(0)
        length = x.shape[1]
        x = (x + self.positional_embedding[:length].type(self.dtype)).unsqueeze(1)  # G×1×P×W
        keys, values = [], []
        for i, block in enumerate(self.transformer.resblocks):
            if prefix_hook is not None:
                x = prefix_hook(i, x.squeeze(1)).unsqueeze(1)
            x, (k, v) = run_block_with_past(block, x)
            keys.append(k.squeeze(1))
            values.append(v.squeeze(1))
        return PrefixState(keys, values, length, grouped)

    def encode_suffix(self, state: PrefixState, suffix, lengths, bucket=True):
        """Run each class's own positions (name, '.', EOT) on top of an encoded prefix.

        ``suffix``: C×S×W embeddings of positions P.., ``lengths``: C positions up to each EOT.
        Positions after a class's EOT are never computed: with ``bucket`` (default) the classes
        are grouped by length and each group runs at its own length, so the work is exactly
        sum(lengths) positions; ``bucket=False`` pads every class to the longest (one group). The
        groups run packed together (``run_block_packed``). Returns C×D features, or G×C×D when the
        prefix was grouped.
        """
        lengths = lengths.tolist() if torch.is_tensor(lengths) else list(lengths)
        if bucket:
            groups = {}
            for c, n in enumerate(lengths):
                groups.setdefault(n, []).append(c)
            groups = sorted(groups.items())
        else:
            groups = [(max(lengths), list(range(len(lengths))))]
        n_groups = state.keys[0].shape[0]
        positions = self.positional_embedding[state.length:state.length + groups[-1][0]].type(self.dtype)
        pieces, layout, eot, order, offset = [], [], [], [], 0
        for length, classes in groups:
            index = torch.tensor(classes, device=suffix.device)
            pieces.append((suffix[:, :length].index_select(0, index) + positions[:length]).flatten(0, 1))
            layout.append((offset, len(classes), length))
            eot.extend(offset + i * length + lengths[c] - 1 for i, c in enumerate(classes))
            order.extend(classes)
            offset += len(classes) * length
        x = torch.cat(pieces) if len(pieces) > 1 else pieces[0]
        x = x.unsqueeze(0).expand(n_groups, -1, -1)  # G×T×W (a view)
        for block, k, v in zip(self.transformer.resblocks, state.keys, state.values):
            x = run_block_packed(block, x, (k, v), layout)
        x = x[:, torch.tensor(eot, device=x.device)]  # G×C×W at each EOT, in bucket order
        features = self.ln_final(x).type(self.dtype) @ self.text_projection
        if order != sorted(order):
            features = features[:, torch.tensor(order, device=features.device).argsort()]
        return features if state.grouped else features.squeeze(0)


def extend_prefix(parts: SharedPrefix) -> SharedPrefix:
    """Move the suffix positions that every class shares into the prefix (exact).

    Fixed words after the learned context ("[SOS] a photo of a dog." with "a photo" learned, as
    MaPLe and IVLP initialise it) are the same embeddings at the same positions in every prompt, so,
    the transformer being causal, their hidden states are the same for every class too: they are
    encoded once with the prefix instead of once per class. Each class keeps at least its EOT.
    Only a suffix without gradient (fixed token embeddings) is shared this way: the gradient of a
    learned suffix differs between classes.
    """
    suffix, lengths = parts.suffix, parts.lengths
    limit = int(min(lengths)) - 1
    if suffix.requires_grad or limit <= 0:
        return parts
    same = (suffix[:, :limit] == suffix[:1, :limit]).all(dim=-1).all(dim=0)
    n = int(same.long().cumprod(0).sum())  # leading positions equal in every class
    if n == 0:
        return parts
    common = suffix[0, :n].to(parts.prefix.dtype)
    if parts.prefix.dim() == 2:
        prefix = torch.cat([parts.prefix, common])
    else:
        prefix = torch.cat([parts.prefix, common.expand(len(parts.prefix), -1, -1)], dim=1)
    lengths = lengths - n if torch.is_tensor(lengths) else [length - n for length in lengths]
    return SharedPrefix(prefix, suffix[:, n:], lengths)


def deep_prompt_hook(deep):
    """The ``prefix_hook`` that puts ``deep[i-1]`` (M×W) at positions 1..M before layer i."""
    def hook(i, x):
        if 1 <= i <= len(deep):
            layer = deep[i - 1].to(x.dtype)
            return torch.cat([x[:, :1], layer.expand(len(x), -1, -1), x[:, 1 + len(layer):]], dim=1)
        return x

    return hook


def encode_prompts(text_encoder, prompt_learner, mode="auto", prompts=None):
    """Text features of a prompt learner's ``Prompts``, by the path ``mode`` names (all exact).

    ``prompts`` (default: ``prompt_learner.prompts()``) gives the context (M×W; B×M×W when the
    learner is ``conditional``, giving B×C×D features) and the per-layer deep prompts.
    "auto": the shared prefix where ``prompt_learner.shared_prefix(ctx)`` has one (generic context,
    class name at the end), else the truncated path (class-specific context, name in the middle or
    front: the prefix differs between classes); "shared_prefix" insists on the former;
    "truncated" runs up to the last EOT; "full" runs all 77 positions as the official code does.
    """
    if mode not in TEXT_ENCODINGS:
        raise ValueError(f"DEPT.TEXT_ENCODING must be one of {TEXT_ENCODINGS}; got '{mode}'")
    prompts = prompt_learner.prompts() if prompts is None else prompts
    deep = prompts.deep_text
    parts = prompt_learner.shared_prefix(prompts.ctx) if mode in ("auto", "shared_prefix") else None
    if parts is not None:
        return text_encoder.encode_shared(parts, deep=deep)
    if mode == "shared_prefix":
        raise ValueError("DEPT.TEXT_ENCODING is shared_prefix but these prompts share no prefix across "
                         "classes (class-specific context, or the class name is not at the end): use auto.")
    tokens, truncate = prompt_learner.tokenized_prompts, mode != "full"
    if not prompt_learner.conditional:
        return text_encoder(prompt_learner.assemble(prompt_learner.context(prompts.ctx)), tokens, truncate, deep)
    n_cls = len(tokens)  # one context per image: every class's prompt for every image, in one batch
    sequences = torch.cat([prompt_learner.assemble(c.unsqueeze(0).expand(n_cls, -1, -1)) for c in prompts.ctx])
    features = text_encoder(sequences, tokens.repeat(len(prompts.ctx), 1), truncate, deep)
    return features.view(len(prompts.ctx), n_cls, -1)


TEXT_ENCODINGS = ("auto", "shared_prefix", "truncated", "full")
