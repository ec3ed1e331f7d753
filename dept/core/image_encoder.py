"""CLIP's image tower with visual prompts, driving the stock ``clip.model.VisionTransformer``.

Deep visual prompting (VPT, IVLP, MaPLe, PromptSRC) adds K learned tokens to the sequence of a
ViT: the first-layer tokens are appended after the class and patch tokens (after the positional
embedding, before ``ln_pre``), and at the input of each deeper layer i = 1..J-1 the last K tokens,
which are what layer i-1 made of the previous prompts, are replaced by that layer's own prompts.
The class token's output after ``ln_post`` and the projection is the image feature, as in CLIP.

Nothing of CLIP is copied: ``encode_image`` runs the tower's own modules (``conv1``,
``class_embedding``, ``positional_embedding``, ``ln_pre``, each ``resblocks`` block, ``ln_post``,
``proj``); the last block is computed at the class token only (``class_token_of_last_block``).
Without prompts it is exactly ``visual(images)``.
"""
import torch

from dept.core.backbones import is_vit as supports_prompts  # visual prompts need a ViT's token sequence


def encode_image(visual, images, prompts=None, deep=()):
    """Image features B×D of ``images`` through ``visual``, with optional visual prompts.

    ``prompts``: K×W first-layer tokens (or B×K×W, one set per image), appended after the patches.
    ``deep``: per-layer K×W tokens for layers 1..len(deep), each replacing the last K tokens at the
    input of its layer (layers beyond keep what the previous layer made of them).
    """
    if prompts is None:
        if deep:
            raise ValueError("deep visual prompts need first-layer visual prompts (the tokens they replace)")
        return visual(images)
    if not supports_prompts(visual):
        raise ValueError(f"visual prompts need a ViT image encoder; {type(visual).__name__} has no token sequence")
    dtype = visual.conv1.weight.dtype
    x = visual.conv1(images.type(dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # B×N×W
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    batch = x.shape[0]
    prompts = prompts.to(x.dtype)
    prompts = prompts.expand(batch, -1, -1) if prompts.dim() == 2 else prompts
    k = prompts.shape[1]
    x = visual.ln_pre(torch.cat([x, prompts], dim=1))
    x = x.permute(1, 0, 2)  # NLD -> LND
    blocks = visual.transformer.resblocks
    for i, block in enumerate(blocks):
        if 1 <= i <= len(deep):
            layer = deep[i - 1].to(x.dtype)
            layer = layer.unsqueeze(1).expand(-1, batch, -1) if layer.dim() == 2 else layer.permute(1, 0, 2)
            x = torch.cat([x[:-k], layer], dim=0)
        x = block(x) if i < len(blocks) - 1 else class_token_of_last_block(block, x)
    x = visual.ln_post(x[0])
    return x @ visual.proj if visual.proj is not None else x


def class_token_of_last_block(block, x):
    """The last residual block's output at the class token only (1×B×W), which is all the feature
    reads: its query alone attends to every token's keys and values, and only its row goes through
    the projection and the MLP. Exact (the other rows of the last block are never read); it skips
    about 5/6 of the last block. A block with an attention mask runs whole."""
    if getattr(block, "attn_mask", None) is not None:
        return block(x)[:1]
    h = block.ln_1(x)
    cls = x[:1] + block.attn(h[:1], h, h, need_weights=False)[0]
    return cls + block.mlp(block.ln_2(cls))
