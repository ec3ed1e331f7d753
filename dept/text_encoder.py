"""CLIP's text transformer over learned prompt embeddings, run only as far as it must.

CLIP's text transformer is causal: position i attends to positions <= i. The feature we read is
the one at the end-of-text (EOT) token, so positions after the last EOT of the batch cannot
change any feature. The official code runs all 77 positions; we stop at the longest prompt's EOT
(typically 20-30 positions), which is exact. The blocks are the stock ``clip`` modules, driven
one by one so that the causal mask can be sized to the truncated sequence.
"""
import torch
from torch import nn


def causal_mask(length, dtype, device):
    """Additive mask: -inf above the diagonal, as CLIP's ``build_attention_mask``."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu_(1)


def run_block(block, x, mask):
    """One stock ``clip.model.ResidualAttentionBlock`` with an explicit mask (LND layout)."""
    h = block.ln_1(x)
    x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
    return x + block.mlp(block.ln_2(x))


class TextEncoder(nn.Module):
    """Prompt embeddings (N×77×W) -> text features (N×D) at each prompt's EOT token."""

    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts, truncate=True):
        eot = tokenized_prompts.argmax(dim=-1)  # EOT has the largest token id
        length = int(eot.max()) + 1 if truncate else prompts.shape[1]
        x = prompts[:, :length] + self.positional_embedding[:length].type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        mask = causal_mask(length, x.dtype, x.device)
        for block in self.transformer.resblocks:
            x = run_block(block, x, mask)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
