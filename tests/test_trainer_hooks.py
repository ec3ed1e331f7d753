"""The steps of a training batch a method may override: ``backward`` (term by term) and
``after_backward`` (gradient surgery, on the gradients the optimizer will apply), under plain
fp32 and under a real loss scaler; and DePT's mixin, which weighs a method's main loss by 1-λ
instead of replacing it."""
import os

import pytest
import torch
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl


@pytest.fixture(scope="module")
def data_and_clip(tmp_path_factory):
    from dept.core.testing import save_tiny_clip

    base = tmp_path_factory.mktemp("hooks")
    return make_dtd(str(base / "data")), save_tiny_clip(str(base / "clip.pt"))


def build(trainer, data_and_clip, out, config="KgCoOp"):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    from dept.run.train import build_parser, setup_cfg

    root, clip_file = data_and_clip
    args = build_parser().parse_args([
        "--root", root, "--trainer", trainer, "--output-dir", str(out),
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", config, "demo_tiny.yaml"),
        "MODEL.BACKBONE.PATH", clip_file, "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base",
        "OPTIM.MAX_EPOCH", "1"])
    set_random_seed(1)
    return build_trainer(setup_cfg(args))


def batch(t):
    torch.manual_seed(3)
    return {"img": torch.randn(4, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0])}


def prograd(t):
    """ProGrad's rule on a KgCoOp trainer: the cross-entropy's gradient, its part that conflicts with
    the knowledge term's gradient projected out, plus the knowledge term's own gradient."""
    kept = {}

    def backward(self, losses):
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.scaled(losses["kg"]).backward(retain_graph=True)
        kept["kg"] = [p.grad.detach().clone() / self.loss_scale() for p in params]
        for p in params:
            p.grad = None
        self.scaled(losses["itm"]).backward()
        return sum(losses.values())

    def after_backward(self, losses):
        params = [p for p in self.model.parameters() if p.requires_grad]
        kept["seen"] = [p.grad.detach().clone() for p in params]
        for p, g_kg in zip(params, kept["kg"]):
            g = p.grad
            dot = (g * g_kg).sum()
            if dot < 0:
                g = g - dot / (g_kg * g_kg).sum() * g_kg
            p.grad = g + g_kg
        kept["applied"] = [p.grad.detach().clone() for p in params]

    t.backward = backward.__get__(t)
    t.after_backward = after_backward.__get__(t)
    return kept


@pytest.mark.parametrize("scale", [None, 2.0 ** 10])
def test_gradient_surgery_sees_and_sets_the_gradients_the_optimizer_applies(data_and_clip, tmp_path, scale):
    t = build("KgCoOp", data_and_clip, tmp_path)
    reference = build("KgCoOp", data_and_clip, tmp_path / "ref")
    if scale is not None:  # a real loss scaler (torch's, on the CPU): gradients carry the scale until unscaled
        t.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    kept = prograd(t)
    params = [p for p in t.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    t.set_model_mode("train")
    t.batch_idx, t.num_batches = 0, 2
    summary = t.forward_backward(batch(t))
    assert set(summary) >= {"loss", "itm", "kg"}
    # what after_backward saw is the cross-entropy's own gradient, unscaled
    ref_params = [p for p in reference.model.parameters() if p.requires_grad]
    reference.set_model_mode("train")
    images, labels = reference.parse_batch_train(batch(reference))
    losses = reference.losses(reference.model.features(images), labels)
    expected = torch.autograd.grad(losses["itm"], ref_params)
    for seen, want in zip(kept["seen"], expected):
        torch.testing.assert_close(seen, want, rtol=1e-5, atol=1e-7)
    # and the step applied the surgery's gradient (SGD with momentum 0.9 from zero: lr·(g + wd·w))
    lr, wd = t.optim.param_groups[0]["lr"], t.optim.param_groups[0]["weight_decay"]
    for p, start, applied in zip(params, before, kept["applied"]):
        torch.testing.assert_close(p.detach(), start - lr * (applied + wd * start), rtol=1e-5, atol=1e-7)


def test_dept_weighs_the_methods_own_main_loss_instead_of_replacing_it(data_and_clip, tmp_path):
    """A method whose main loss is its own (label smoothing here): DePT's mixin keeps it, weighted by
    1-λ, beside λ·L_CAT and the method's regulariser, unweighted."""
    import torch.nn.functional as F
    from dept.trainers.kgcoop import KgCoOp

    t = build("KgCoOpDePT", data_and_clip, tmp_path, config="KgCoOpDePT")
    original = KgCoOp.losses

    def smoothed(self, features, labels):
        out = original(self, features, labels)
        out["itm"] = F.cross_entropy(features.logits.float(), labels, label_smoothing=0.3)
        return out

    t.set_model_mode("train")
    images, labels = t.parse_batch_train(batch(t))
    features = t.model.features(images)
    plain = original(t, features, labels)
    try:
        KgCoOp.losses = smoothed
        losses = t.losses(features, labels)
    finally:
        KgCoOp.losses = original
    lam = t.head.weight
    want = F.cross_entropy(features.logits.float(), labels, label_smoothing=0.3)
    torch.testing.assert_close(losses["itm"], (1 - lam) * want)
    torch.testing.assert_close(losses["kg"], plain["kg"])
    assert set(losses) == {"itm", "kg", "cat"}


def test_a_method_without_a_main_loss_named_itm_is_told_so(data_and_clip, tmp_path):
    from dept.trainers.kgcoop import KgCoOp

    t = build("KgCoOpDePT", data_and_clip, tmp_path, config="KgCoOpDePT")
    t.set_model_mode("train")
    images, labels = t.parse_batch_train(batch(t))
    features = t.model.features(images)
    original = KgCoOp.losses
    try:
        KgCoOp.losses = lambda self, f, y: {"ce": original(self, f, y)["itm"]}
        with pytest.raises(TypeError, match="DePT weighs the method's main loss, named 'itm'.*returned \\['ce'\\]"):
            t.losses(features, labels)
    finally:
        KgCoOp.losses = original
