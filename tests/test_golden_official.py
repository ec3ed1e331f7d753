"""Parity with the official DePT code (Koorye/DePT, CoOp + DePT) on the same weights and inputs.

``data/golden_coop_dept`` holds a tiny CLIP (fp16-exact weights), the inputs, the context and head
parameters, and what the official ``elp_coop.CustomCLIP`` computed from them in fp32: the training
loss, its gradients, the parameters after one step of the official staged-LR SGD, the fused base
logits and the new-class logits. How they were produced: data/golden_coop_dept/README.md.
"""
import os

import pytest
import torch
from conftest import DATA, coop_cfg

GOLDEN = os.path.join(DATA, "golden_coop_dept")
TOL = dict(atol=1e-5, rtol=1e-5)
# official parameter names -> ours
NAMES = {
    "prompt_learner.ctx": "prompt_learner.ctx",
    "film_lp_img.scale": "dept_head.film_img.scale", "film_lp_img.bias": "dept_head.film_img.bias",
    "film_lp_text.scale": "dept_head.film_text.scale", "film_lp_text.bias": "dept_head.film_text.bias",
    "linear_probe_proj.weight": "dept_head.linear_probe.weight",
    "linear_probe_proj.bias": "dept_head.linear_probe.bias",
}


def golden_clip():
    from clip.model import CLIP

    model = CLIP(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=16, transformer_heads=2,
                 transformer_layers=2)
    state = torch.load(os.path.join(GOLDEN, "clip_fp16.pt"), weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.float().eval()


@pytest.fixture(scope="module")
def golden():
    return torch.load(os.path.join(GOLDEN, "official_outputs.pt"), weights_only=True)


def build(golden, classnames, with_head=True):
    from dept.config import dept_options
    from dept.head import DePTHead
    from dept.model import PromptCLIP

    cfg = coop_cfg()
    model = PromptCLIP(golden_clip(), classnames, cfg.TRAINER.COOP)
    if with_head:
        model.dept_head = DePTHead.from_options(model.embed_dim, classnames, dept_options(cfg))
    params = dict(model.named_parameters())
    with torch.no_grad():
        params["prompt_learner.ctx"].copy_(golden["ctx"])
        for name, value in golden["head"].items():
            if with_head:
                params[NAMES[name]].copy_(value)
    for name, p in params.items():
        p.requires_grad_(name in NAMES.values())
    return model, cfg


def training_loss(model, images, labels):
    img = model.encode_image(images)
    txt = model.encode_text()
    losses = model.dept_head.losses(model.itm_logits(img, txt), img, txt, labels, model.logit_scale)
    return sum(losses.values())


@pytest.mark.dassl
def test_training_loss_gradients_and_step_match_official(golden):
    from dept.config import dept_options
    from dept.optim import build_optimizer

    model, cfg = build(golden, golden["base_classnames"])
    model.train()
    loss = training_loss(model, golden["images"], golden["labels"])
    torch.testing.assert_close(loss, golden["loss"], **TOL)

    cfg.OPTIM.LR = golden["lr"]
    optim = build_optimizer(model, cfg.OPTIM, dept_options(cfg))
    assert sorted(g["lr"] for g in optim.param_groups) == pytest.approx([0.0035, 0.02275])
    optim.zero_grad()
    loss.backward()
    params = dict(model.named_parameters())
    for official, ours in NAMES.items():
        torch.testing.assert_close(params[ours].grad, golden["grads"][official], atol=1e-5, rtol=1e-4)
    optim.step()
    for official, ours in NAMES.items():
        torch.testing.assert_close(params[ours].detach(), golden["after_step"][official], **TOL)


@pytest.mark.dassl
def test_fused_base_logits_match_official(golden):
    model, _ = build(golden, golden["base_classnames"])
    model.eval()
    with torch.no_grad():
        img = model.encode_image(golden["images"])
        txt = model.encode_text()
        fused = model.dept_head.predict(model.itm_logits(img, txt), img, txt, model.logit_scale)
    torch.testing.assert_close(fused, golden["fused_base_logits"], **TOL)


@pytest.mark.dassl
def test_new_class_logits_match_official(golden):
    model, _ = build(golden, golden["new_classnames"], with_head=False)
    model.eval()
    with torch.no_grad():
        logits = model(golden["images"])
    torch.testing.assert_close(logits, golden["new_logits"], **TOL)
