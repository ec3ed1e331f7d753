"""Exact shortcuts of the encoders: fixed words every class shares join the shared prefix; the last
vision block runs at the class token only. Same features and gradients as the full computation."""
import torch

from dept.core.prompts import ContextPrompt, Prompts
from dept.core.testing import tiny_clip
from dept.core.text_encoder import TextEncoder, encode_prompts, extend_prefix

NAMES = ["dog", "golden retriever", "sea lion", "X-ray machine", "a"]
TOL = 1e-5


def assert_relative(actual, expected, tol=TOL):
    error = (actual - expected).abs().max().item()
    assert error <= tol * expected.abs().max().item(), f"max error {error:.3g} vs max |b| {expected.abs().max():.3g}"


def maple_like(clip_model, names=NAMES):
    """Two learned vectors from "a photo", then the fixed words "of a" before each name (MaPLe, IVLP)."""
    torch.manual_seed(0)
    return ContextPrompt(list(names), clip_model, n_ctx=2, ctx_init="a photo of a", init_n_ctx=True)


def test_fixed_words_after_the_context_join_the_prefix():
    clip_model = tiny_clip()
    learner = maple_like(clip_model)
    parts = learner.shared_prefix()
    extended = extend_prefix(parts)
    assert parts.prefix.shape[0] == 3 and extended.prefix.shape[0] == 5  # SOS, 2 learned, "of", "a"
    assert extended.lengths.tolist() == [n - 2 for n in parts.lengths.tolist()]
    torch.testing.assert_close(extended.prefix[3:], learner.token_suffix[0, :2])
    # nothing shared after a generic context: the names differ from their first position
    plain = ContextPrompt(NAMES, clip_model, n_ctx=4).shared_prefix()
    assert extend_prefix(plain) is plain
    # a learned suffix keeps its per-class gradient: never shared
    learned = parts._replace(suffix=parts.suffix.clone().requires_grad_())
    assert extend_prefix(learned) is learned


def test_each_class_keeps_its_end_of_text():
    """One class: every position but its EOT is "shared"; the feature is still read at the EOT."""
    clip_model = tiny_clip()
    learner = maple_like(clip_model, ["golden retriever"])
    extended = extend_prefix(learner.shared_prefix())
    assert extended.lengths.tolist() == [1]
    encoder = TextEncoder(clip_model)
    shared = encode_prompts(encoder, learner, "shared_prefix")
    full = encode_prompts(encoder, learner, "full")
    torch.testing.assert_close(shared, full, atol=TOL, rtol=TOL)


def test_extended_prefix_with_deep_prompts_equals_the_full_computation():
    clip_model = tiny_clip(transformer_layers=3, transformer_heads=2)
    learner = maple_like(clip_model)
    encoder = TextEncoder(clip_model)
    deep = [(0.02 * torch.randn(2, 64)).requires_grad_() for _ in range(2)]
    weights = torch.randn(len(NAMES), 32)
    results = {}
    for mode in ("full", "shared_prefix"):
        features = encode_prompts(encoder, learner, mode, Prompts(ctx=learner.ctx, deep_text=deep))
        results[mode] = (features, torch.autograd.grad((features * weights).sum(), [learner.ctx, *deep]))
    torch.testing.assert_close(results["shared_prefix"][0], results["full"][0], atol=TOL, rtol=TOL)
    for a, b in zip(results["shared_prefix"][1], results["full"][1]):
        assert_relative(a, b)


def test_extended_per_image_prefix_equals_per_image_full_prompts():
    """CoCoOp-style B×M×W context (one per image) followed by fixed words."""
    clip_model = tiny_clip(transformer_heads=2)
    learner = maple_like(clip_model)
    encoder = TextEncoder(clip_model)
    ctx = (learner.ctx.detach() + 0.02 * torch.randn(3, 2, 64)).requires_grad_()
    weights = torch.randn(3, len(NAMES), 32)
    shared = encoder.encode_shared(learner.shared_prefix(ctx))
    (grad_shared,) = torch.autograd.grad((shared * weights).sum(), ctx)
    full = torch.stack([encoder(learner.assemble(c.expand(len(NAMES), -1, -1)), learner.tokenized_prompts,
                                truncate=False) for c in ctx])
    (grad_full,) = torch.autograd.grad((full * weights).sum(), ctx)
    torch.testing.assert_close(shared, full, atol=TOL, rtol=TOL)
    assert_relative(grad_shared, grad_full)


def test_prompted_image_encoder_gradients_equal_the_stock_blocks():
    """The last block at the class token only: the feature and the prompts' gradients are unchanged."""
    from dept.core.image_encoder import encode_image

    clip_model = tiny_clip(vision_layers=3)
    visual = clip_model.visual
    images = torch.randn(2, 3, 32, 32)
    first = torch.randn(3, 64, requires_grad=True)
    deep = [torch.randn(3, 64, requires_grad=True) for _ in range(2)]  # layers 1 and 2 (the last)
    ours = encode_image(visual, images, first, deep)
    grads = torch.autograd.grad(ours.square().sum(), [first, *deep])

    x = visual.conv1(images).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(torch.cat([x, first.expand(2, -1, -1)], dim=1)).permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if i >= 1:
            x = torch.cat([x[:-3], deep[i - 1].unsqueeze(1).expand(-1, 2, -1)])
        x = block(x)
    expected = visual.ln_post(x[0]) @ visual.proj
    expected_grads = torch.autograd.grad(expected.square().sum(), [first, *deep])
    torch.testing.assert_close(ours, expected, atol=TOL, rtol=TOL)
    for a, b in zip(grads, expected_grads):
        assert_relative(a, b)
