"""A tiny random CLIP, built with the clip package's own classes, for tests and the demo.

Real CLIP weights cannot be downloaded everywhere (CI, air-gapped clusters). This model has the
real architecture and tokenizer (so every code path is the production one) at a size that
trains in seconds on a CPU. Its weights are random: accuracies it gives mean nothing.
"""
import torch

TINY = dict(
    embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
    context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
    transformer_layers=2,
)


def tiny_clip(seed=0, **overrides):
    """A fp32 ``clip.model.CLIP`` with random weights drawn from ``seed``.

    Defaults keep widths at 64 so that ``clip.model.build_model`` (which derives heads as
    width // 64) rebuilds it from a saved state dict, exactly as it rebuilds the real ViT-B/16.
    """
    from clip.model import CLIP

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIP(**{**TINY, **overrides})
        model.initialize_parameters()
        with torch.no_grad():
            # initialize_parameters leaves the vision tower at its constructor init and the
            # embeddings small; nothing else is needed for a well-conditioned random model.
            model.logit_scale.fill_(torch.log(torch.tensor(100.0)))
    finally:
        torch.random.set_rng_state(generator_state)
    return model.float().eval()


def save_tiny_clip(path, seed=0, **overrides):
    """Write a tiny CLIP (``tiny_clip(seed, **overrides)``) as a state dict file, loadable through
    MODEL.BACKBONE.PATH.

    Written atomically (``dept.util.files.torch_save``): tests and demo runs in parallel may write and
    load the same file, and a reader must see the old file or the new one, never half of one.
    """
    from dept.util.files import torch_save

    torch_save(tiny_clip(seed, **overrides).state_dict(), path)
    return path
