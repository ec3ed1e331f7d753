"""The shared-prefix text encoding equals the truncated and the full 77-position computation.

Features to 1e-5 and gradients of the learned parameters to 1e-5 of their largest magnitude (fp32),
over a table of context lengths, initialisations, class-name lengths and class counts; per-image
prefixes (CoCoOp); the deep-prompt hook (MaPLe); the fallbacks; the work and memory it saves; and
one training step of CoOp + DePT.
"""
import pytest
import torch

from dept.core.prompts import ContextPrompt
from dept.core.testing import tiny_clip
from dept.core.text_encoder import TextEncoder

TOL = 1e-5
VARIED = ["a", "X-ray machine", "Herbaceous Vegetation Land", "dog", "golden retriever"]
LONG = ["Mexican hairless dog (xoloitzcuintli)", "military hat (bearskin or shako)", "a",
        "Apply Eye Makeup", "Annual Crop Land", "tench"]
MANY = VARIED + LONG + ["sea_lion", "Industrial Buildings", "bald eagle", "tabby", "Yorkshire terrier"]

# (n_ctx, ctx_init, class names, attention heads of the tiny model)
CASES = {
    "ctx1": (1, "", VARIED, 1),
    "ctx4": (4, "", VARIED, 4),
    "ctx16-long-names": (16, "", LONG, 2),
    "ctx-init-words": (4, "a photo of a", VARIED, 1),
    "one-class": (2, "", ["X-ray machine"], 1),
    "16-classes": (4, "", MANY, 4),
}


def assert_relative(actual, expected, tol=TOL):
    """max|a - b| <= tol · max|b| (fp32 summation order differs between the paths)."""
    error = (actual - expected).abs().max().item()
    assert error <= tol * expected.abs().max().item(), f"max error {error:.3g} vs max |b| {expected.abs().max():.3g}"


def features_and_grad(encode, prompt, weights):
    """Features of ``encode(prompt)`` and the gradient of a fixed random projection of them w.r.t. ctx."""
    prompt.ctx.grad = None
    features = encode(prompt)
    (features * weights).sum().backward()
    return features.detach(), prompt.ctx.grad.clone()


PATHS = {
    "full": lambda enc: lambda p: enc(p(), p.tokenized_prompts, truncate=False),
    "truncated": lambda enc: lambda p: enc(p(), p.tokenized_prompts),
    "shared": lambda enc: lambda p: enc.encode_shared(p.shared_prefix()),
    "shared-padded": lambda enc: lambda p: enc.encode_shared(p.shared_prefix(), bucket=False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_shared_prefix_equals_truncated_and_full(case):
    n_ctx, ctx_init, names, heads = CASES[case]
    clip_model = tiny_clip(transformer_heads=heads)
    torch.manual_seed(0)
    prompt = ContextPrompt(names, clip_model, n_ctx=n_ctx, ctx_init=ctx_init)
    encoder = TextEncoder(clip_model)
    weights = torch.randn(len(names), clip_model.text_projection.shape[1])
    results = {name: features_and_grad(path(encoder), prompt, weights) for name, path in PATHS.items()}
    full_features, full_grad = results["full"]
    for name, (features, grad) in results.items():
        torch.testing.assert_close(features, full_features, atol=TOL, rtol=TOL, msg=name)
        assert_relative(grad, full_grad)


@pytest.mark.parametrize("batch", [1, 3])
def test_per_image_prefix_equals_per_image_full_prompts(batch):
    """CoCoOp: a B×M×W context (one per image) gives B×C×D features, each image's own prompts."""
    clip_model = tiny_clip(transformer_heads=2)
    torch.manual_seed(0)
    prompt = ContextPrompt(VARIED, clip_model, n_ctx=4)
    encoder = TextEncoder(clip_model)
    ctx = (0.02 * torch.randn(batch, 4, 64)).requires_grad_()
    weights = torch.randn(batch, len(VARIED), 32)

    shared = encoder.encode_shared(prompt.shared_prefix(ctx))
    (grad_shared,) = torch.autograd.grad((shared * weights).sum(), ctx)

    full = torch.stack([encoder(prompt.assemble(c.expand(len(VARIED), -1, -1)), prompt.tokenized_prompts,
                                truncate=False) for c in ctx])
    (grad_full,) = torch.autograd.grad((full * weights).sum(), ctx)

    assert shared.shape == (batch, len(VARIED), 32)
    torch.testing.assert_close(shared, full, atol=TOL, rtol=TOL)
    assert_relative(grad_shared, grad_full)


def test_deep_prompt_hook_equals_replacing_the_context_in_every_layer():
    """MaPLe-style deep prompts: learned vectors replace positions 1..M at the input of layers 1..J-1."""
    clip_model = tiny_clip(transformer_layers=4, transformer_heads=2)
    torch.manual_seed(0)
    n_ctx, depth = 3, 3
    prompt = ContextPrompt(VARIED, clip_model, n_ctx=n_ctx)
    encoder = TextEncoder(clip_model)
    deep = [(0.02 * torch.randn(n_ctx, 64)).requires_grad_() for _ in range(depth - 1)]
    weights = torch.randn(len(VARIED), 32)

    def hook(i, x):
        if 1 <= i < depth:
            return torch.cat([x[:, :1], deep[i - 1].expand(len(x), -1, -1), x[:, 1 + n_ctx:]], dim=1)
        return x

    shared = encoder.encode_shared(prompt.shared_prefix(), prefix_hook=hook)
    grads_shared = torch.autograd.grad((shared * weights).sum(), [prompt.ctx, *deep])

    # Reference: the stock blocks over all 77 positions, replacing the context as MaPLe's encoder does.
    from dept.core.text_encoder import causal_mask, run_block

    x = (prompt() + clip_model.positional_embedding).permute(1, 0, 2)
    mask = causal_mask(77, x.dtype, x.device)
    for i, block in enumerate(clip_model.transformer.resblocks):
        if 1 <= i < depth:
            x = torch.cat([x[:1], deep[i - 1].unsqueeze(1).expand(-1, len(VARIED), -1), x[1 + n_ctx:]])
        x = run_block(block, x, mask)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    full = x[torch.arange(len(VARIED)), prompt.tokenized_prompts.argmax(-1)] @ clip_model.text_projection
    grads_full = torch.autograd.grad((full * weights).sum(), [prompt.ctx, *deep])

    torch.testing.assert_close(shared, full, atol=TOL, rtol=TOL)
    for a, b in zip(grads_shared, grads_full):
        assert_relative(a, b)


@pytest.mark.parametrize("csc, position", [(True, "end"), (False, "middle"), (False, "front"), (True, "front")])
def test_fallback_where_the_prefix_is_not_shared(csc, position):
    """Class-specific context or the name before/inside the context: no shared prefix, truncated path."""
    from types import SimpleNamespace

    from dept.core.model import PromptCLIP

    clip_model = tiny_clip()
    cfg = SimpleNamespace(N_CTX=4, CTX_INIT="", CSC=csc, CLASS_TOKEN_POSITION=position)
    torch.manual_seed(0)
    model = PromptCLIP(clip_model, VARIED, cfg)
    assert model.prompt_learner.shared_prefix() is None
    auto = model.encode_text()
    model.text_encoding = "full"
    torch.testing.assert_close(auto, model.encode_text(), atol=TOL, rtol=TOL)
    model.text_encoding = "truncated"
    torch.testing.assert_close(auto, model.encode_text(), atol=0, rtol=0)
    model.text_encoding = "shared_prefix"
    with pytest.raises(ValueError, match="share no prefix"):
        model.encode_text()


def test_encode_text_takes_the_shared_path_by_default_and_rejects_unknown_modes():
    from types import SimpleNamespace

    from dept.core.model import PromptCLIP

    clip_model = tiny_clip()
    cfg = SimpleNamespace(N_CTX=4, CTX_INIT="", CSC=False, CLASS_TOKEN_POSITION="end")
    model = PromptCLIP(clip_model, VARIED, cfg)
    calls = []
    original = model.text_encoder.encode_shared
    model.text_encoder.encode_shared = lambda *a, **k: calls.append(1) or original(*a, **k)
    auto = model.encode_text()
    assert calls == [1]
    model.text_encoding = "full"
    torch.testing.assert_close(auto, model.encode_text(), atol=TOL, rtol=TOL)
    model.text_encoding = "77"
    with pytest.raises(ValueError, match="TEXT_ENCODING"):
        model.encode_text()


def test_prefix_runs_once_and_each_class_runs_only_its_own_positions():
    """Per layer: one call over the P prefix positions, then calls covering exactly sum(lengths) positions."""
    clip_model = tiny_clip()
    prompt = ContextPrompt(MANY, clip_model, n_ctx=16)
    encoder = TextEncoder(clip_model)
    seen = {i: [] for i in range(len(clip_model.transformer.resblocks))}
    handles = [block.ln_1.register_forward_pre_hook(lambda mod, args, i=i: seen[i].append(tuple(args[0].shape)))
               for i, block in enumerate(clip_model.transformer.resblocks)]
    try:
        encoder.encode_shared(prompt.shared_prefix()).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    parts = prompt.shared_prefix()
    lengths = parts.lengths.tolist()
    assert parts.prefix.shape[0] == 17
    for shapes in seen.values():
        assert shapes[0] == (1, 1, 17, 64)  # the prefix, once, for all classes
        assert sum(n * length for _, n, length, _ in shapes[1:]) == sum(lengths)
        assert sorted(length for _, _, length, _ in shapes[1:]) == sorted(set(lengths))


def saved_bytes(fn):
    """Bytes of the tensors autograd keeps for backward while running ``fn`` (each storage counted once)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())


def test_activations_kept_for_backward_scale_with_class_name_positions():
    """Doubling the classes adds memory in proportion to their name positions, not to 77 (or P) × C."""
    clip_model = tiny_clip()
    encoder = TextEncoder(clip_model)

    def cost(names, path):
        prompt = ContextPrompt(names, clip_model, n_ctx=16)
        return saved_bytes(lambda: PATHS[path](encoder)(prompt)), prompt

    names = [f"{name} {i}" for i, name in enumerate(MANY)]
    shared_1, prompt = cost(names, "shared")
    shared_2, _ = cost(names + [f"{name} two" for name in names], "shared")
    full_1, _ = cost(names, "full")
    full_2, _ = cost(names + [f"{name} two" for name in names], "full")
    name_positions = int(prompt.shared_prefix().lengths.sum())
    per_class_shared = (shared_2 - shared_1) / len(names)
    per_class_full = (full_2 - full_1) / len(names)
    # Per class, the shared path keeps about (name positions / 77) of what the full path keeps.
    assert per_class_shared < 1.5 * per_class_full * name_positions / (77 * len(names))
    assert per_class_shared < per_class_full / 8


@pytest.mark.dassl
def test_one_training_step_is_identical_across_paths():
    """CoOp + DePT, staged-LR SGD: the loss and every parameter's update agree (relative to 1e-5)."""
    from conftest import coop_cfg

    from dept.core.config import dept_options
    from dept.core.head import DePTHead
    from dept.core.model import PromptCLIP
    from dept.core.optim import build_optimizer

    cfg = coop_cfg(**{"TRAINER.COOP.N_CTX": 16})
    opts = dept_options(cfg)
    torch.manual_seed(0)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 3])
    updates, losses = {}, {}
    for mode in ("full", "truncated", "shared_prefix"):
        torch.manual_seed(1)
        model = PromptCLIP(tiny_clip(), MANY, cfg.TRAINER.COOP)
        model.dept_head = DePTHead.from_options(model.embed_dim, MANY, opts)
        model.text_encoding = mode
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(("prompt_learner.", "dept_head.")))
        optim = build_optimizer(model, cfg.OPTIM, opts)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        model.train()
        image_features = model.encode_image(images)
        text_features = model.encode_text()
        loss = sum(model.dept_head.losses(model.itm_logits(image_features, text_features), image_features,
                                          text_features, labels, model.logit_scale).values())
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses[mode] = loss.detach()
        updates[mode] = {n: p.detach() - before[n] for n, p in model.named_parameters() if p.requires_grad}
    assert set(updates["full"]) == {"prompt_learner.ctx", "dept_head.film_img.scale", "dept_head.film_img.bias",
                                  "dept_head.film_text.scale", "dept_head.film_text.bias",
                                  "dept_head.linear_probe.weight", "dept_head.linear_probe.bias"}
    for mode in ("truncated", "shared_prefix"):
        torch.testing.assert_close(losses[mode], losses["full"], atol=TOL, rtol=TOL)
        for name, update in updates["full"].items():
            assert update.abs().max() > 0, name
            assert_relative(updates[mode][name], update)
