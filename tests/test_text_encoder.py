"""Truncating the text transformer at the last EOT token is exact (features and gradients)."""
import pytest
import torch

from dept.core.prompts import ContextPrompt
from dept.core.text_encoder import TextEncoder


def assert_close_relative(actual, expected, tol=1e-5):
    """Equal up to ``tol`` of the largest magnitude (fp32 summation order differs with length)."""
    error = (actual - expected).abs().max().item()
    assert error <= tol * expected.abs().max().item(), f"max error {error:.3g}"


NAMES = ["dog", "golden retriever", "Herbaceous Vegetation Land", "X-ray machine", "a"]


@pytest.mark.parametrize("position", ["end", "middle", "front"])
@pytest.mark.parametrize("csc", [False, True])
def test_truncated_equals_full_77_positions(tiny_clip, position, csc):
    torch.manual_seed(0)
    prompt = ContextPrompt(NAMES, tiny_clip, n_ctx=4, csc=csc, position=position)
    encoder = TextEncoder(tiny_clip)
    tokens = prompt.tokenized_prompts
    assert int(tokens.argmax(-1).max()) + 1 < 77  # the truncation really drops positions

    full = encoder(prompt(), tokens, truncate=False)
    grad_full = torch.autograd.grad(full.square().sum(), prompt.ctx)[0]
    short = encoder(prompt(), tokens, truncate=True)
    grad_short = torch.autograd.grad(short.square().sum(), prompt.ctx)[0]

    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)
    assert_close_relative(grad_short, grad_full)


def test_full_path_equals_clip_encode_text(tiny_clip):
    """Our block loop is CLIP's own text tower: with plain token embeddings it gives encode_text."""
    import clip

    tokens = clip.tokenize(["a photo of a dog.", "a photo of a golden retriever."])
    encoder = TextEncoder(tiny_clip)
    with torch.no_grad():
        ours = encoder(tiny_clip.token_embedding(tokens), tokens)
        theirs = tiny_clip.encode_text(tokens)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_ctx_init_words_become_the_context(tiny_clip):
    import clip

    prompt = ContextPrompt(["dog"], tiny_clip, n_ctx=16, ctx_init="a photo of a")
    assert prompt.n_ctx == 4
    with torch.no_grad():
        words = tiny_clip.token_embedding(clip.tokenize(["a photo of a"]))[0, 1:5]
    torch.testing.assert_close(prompt.ctx.detach(), words)
    with torch.no_grad():
        expected = tiny_clip.token_embedding(clip.tokenize(["a photo of a dog."]))
    torch.testing.assert_close(prompt(), expected)
