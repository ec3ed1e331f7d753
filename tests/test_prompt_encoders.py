"""Deep prompts on both encoders: every text-encoding path agrees, and the image encoder is CLIP's own."""
import pytest
import torch


@pytest.fixture
def clip_model():
    from dept.core.testing import tiny_clip

    return tiny_clip(vision_layers=3, transformer_layers=3)


def prompt_learner(clip_model, names=("dog", "golden retriever", "sea lion", "x-ray machine")):
    from dept.core.prompts import ContextPrompt

    torch.manual_seed(0)
    return ContextPrompt(list(names), clip_model, n_ctx=2)


def test_deep_text_prompts_give_the_same_features_on_every_path(clip_model):
    from dept.core.prompts import Prompts
    from dept.core.text_encoder import TextEncoder, encode_prompts

    learner = prompt_learner(clip_model)
    encoder = TextEncoder(clip_model)
    deep = [torch.randn(2, 64, requires_grad=True) for _ in range(2)]  # layers 1 and 2
    results = {}
    for mode in ("full", "truncated", "shared_prefix"):
        features = encode_prompts(encoder, learner, mode, Prompts(ctx=learner.ctx, deep_text=deep))
        grads = torch.autograd.grad(features.square().sum(), [learner.ctx, *deep])
        results[mode] = (features, grads)
    reference = results["full"]
    for mode in ("truncated", "shared_prefix"):
        for a, b in zip((results[mode][0], *results[mode][1]), (reference[0], *reference[1])):
            # 1e-5 relative to the largest value: fp32 rounding of another, exact order of operations
            torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-5)
    plain = encode_prompts(encoder, learner, "full")
    assert not torch.allclose(plain, reference[0])  # the deep prompts do change the features


def test_deep_text_prompts_replace_the_context_positions_at_each_layer(clip_model):
    """Against a direct computation: positions 1..M overwritten at the input of layers 1..J-1."""
    from dept.core.text_encoder import TextEncoder

    learner = prompt_learner(clip_model)
    encoder = TextEncoder(clip_model)
    deep = [torch.randn(2, 64)]
    prompts, tokens = learner(), learner.tokenized_prompts
    x = (prompts + clip_model.positional_embedding).permute(1, 0, 2)
    blocks = clip_model.transformer.resblocks
    x = blocks[0](x)
    x = torch.cat([x[:1], deep[0].unsqueeze(1).expand(-1, x.shape[1], -1), x[3:]])
    for block in blocks[1:]:
        x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    expected = x[torch.arange(len(x)), tokens.argmax(-1)] @ clip_model.text_projection
    torch.testing.assert_close(encoder(prompts, tokens, truncate=False, deep=deep), expected, atol=1e-5, rtol=1e-5)


def test_image_encoder_without_prompts_is_clips_and_with_prompts_appends_and_replaces(clip_model):
    from dept.core.image_encoder import encode_image

    visual = clip_model.visual
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(encode_image(visual, images), visual(images))
    first, deep = torch.randn(3, 64), [torch.randn(3, 64), torch.randn(3, 64)]
    # direct computation
    x = visual.conv1(images).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(torch.cat([x, first.expand(2, -1, -1)], dim=1)).permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if i >= 1:
            x = torch.cat([x[:-3], deep[i - 1].unsqueeze(1).expand(-1, 2, -1)])
        x = block(x)
    expected = visual.ln_post(x[0]) @ visual.proj
    torch.testing.assert_close(encode_image(visual, images, first, deep), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="need first-layer visual prompts"):
        encode_image(visual, images, None, deep)
