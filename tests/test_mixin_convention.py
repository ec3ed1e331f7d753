"""DePTMixin on a user's own CoOp-family trainer (not a dept PromptTrainer).

``MyCoOp`` below is written here, in the CoOp family's convention (a CustomCLIP with
``image_encoder``, ``text_encoder``, ``prompt_learner``, ``logit_scale``; ``forward`` returns the
logits; the trainer steps Dassl's optimizer through ``model_backward_and_update``). Its DePT
variant is the one line a user writes: ``class MyCoOpDePT(DePTMixin, MyCoOp)``.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, make_dtd
from torch import nn

pytestmark = pytest.mark.dassl


def _classes():
    import clip
    from dassl.engine import TrainerX
    from dassl.metrics import compute_accuracy
    from dassl.optim import build_lr_scheduler, build_optimizer
    from dassl.utils import load_checkpoint

    class TextEncoder(nn.Module):
        def __init__(self, clip_model):
            super().__init__()
            self.transformer = clip_model.transformer
            self.positional_embedding = clip_model.positional_embedding
            self.ln_final = clip_model.ln_final
            self.text_projection = clip_model.text_projection

        def forward(self, prompts, tokenized):
            x = (prompts + self.positional_embedding).permute(1, 0, 2)
            x = self.ln_final(self.transformer(x).permute(1, 0, 2))
            return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ self.text_projection

    class PromptLearner(nn.Module):
        def __init__(self, classnames, clip_model, n_ctx=4):
            super().__init__()
            width = clip_model.ln_final.weight.shape[0]
            self.ctx = nn.Parameter(torch.randn(n_ctx, width) * 0.02)
            tokens = torch.cat([clip.tokenize(" ".join(["X"] * n_ctx) + f" {name}.") for name in classnames])
            with torch.no_grad():
                embedding = clip_model.token_embedding(tokens)
            self.register_buffer("tokens", tokens, persistent=False)
            self.register_buffer("prefix", embedding[:, :1], persistent=False)
            self.register_buffer("suffix", embedding[:, 1 + n_ctx:], persistent=False)

        def forward(self):
            ctx = self.ctx.unsqueeze(0).expand(len(self.prefix), -1, -1)
            return torch.cat([self.prefix, ctx, self.suffix], dim=1)

    class CustomCLIP(nn.Module):
        def __init__(self, classnames, clip_model):
            super().__init__()
            self.prompt_learner = PromptLearner(classnames, clip_model)
            self.image_encoder = clip_model.visual
            self.text_encoder = TextEncoder(clip_model)
            self.logit_scale = clip_model.logit_scale

        def forward(self, image):
            image_features = self.image_encoder(image)
            text_features = self.text_encoder(self.prompt_learner(), self.prompt_learner.tokens)
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
            return self.logit_scale.exp() * image_features @ text_features.t()

    class MyCoOp(TrainerX):
        """A user's own CoOp, as the CoOp family writes trainers."""

        def build_model(self):
            state = torch.load(self.cfg.MODEL.BACKBONE.PATH, weights_only=True)
            clip_model = clip.model.build_model(state).float()
            self.model = CustomCLIP(self.dm.dataset.classnames, clip_model)
            for name, param in self.model.named_parameters():
                param.requires_grad_("prompt_learner" in name)
            self.model.to(self.device)
            self.optim = build_optimizer(self.model.prompt_learner, self.cfg.OPTIM)
            self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
            self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)

        def forward_backward(self, batch):
            image, label = self.parse_batch_train(batch)
            output = self.model(image)
            loss = F.cross_entropy(output, label)
            self.model_backward_and_update(loss)
            if (self.batch_idx + 1) == self.num_batches:
                self.update_lr()
            return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}

        def parse_batch_train(self, batch):
            return batch["img"].to(self.device), batch["label"].to(self.device)

        def load_model(self, directory, epoch=None):
            for name in self.get_model_names():
                checkpoint = load_checkpoint(os.path.join(directory, name, f"model.pth.tar-{epoch}"))
                self._models[name].load_state_dict(checkpoint["state_dict"])

    return MyCoOp, CustomCLIP


@pytest.fixture(scope="module")
def trainers():
    from dassl.engine import TRAINER_REGISTRY

    from dept.core.mixin import ConventionDePT, DePTMixin
    from dept.core.registry import register

    MyCoOp, CustomCLIP = _classes()

    class MyCoOpDePT(DePTMixin, MyCoOp):
        """The user's one line."""

    assert issubclass(MyCoOpDePT, ConventionDePT) and issubclass(MyCoOpDePT, DePTMixin)
    for cls in (MyCoOp, MyCoOpDePT):
        TRAINER_REGISTRY._obj_map.pop(cls.__name__, None)  # a fresh definition for this module
        register(TRAINER_REGISTRY, cls)
    return MyCoOp, MyCoOpDePT


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from dept.core.testing import save_tiny_clip

    base = tmp_path_factory.mktemp("convention")
    return make_dtd(str(base / "data")), save_tiny_clip(str(base / "clip.pt")), base


def build(trainer, data, out, subsample="base", epochs=2):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    from dept.run.train import build_parser, setup_cfg

    root, clip_file, _ = data
    args = build_parser().parse_args([
        "--root", root, "--trainer", trainer, "--output-dir", str(out),
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", "CoOpDePT", "demo_tiny.yaml"),
        "MODEL.BACKBONE.PATH", clip_file, "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", subsample,
        "OPTIM.MAX_EPOCH", str(epochs), "OPTIM.WARMUP_EPOCH", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "2"])
    set_random_seed(1)
    return build_trainer(setup_cfg(args))


@pytest.fixture(scope="module")
def trained(trainers, data):
    out = data[2] / "train"
    trainer = build("MyCoOpDePT", data, out)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    summaries = []
    forward_backward = trainer.forward_backward

    def spy(batch):
        summaries.append(forward_backward(batch))
        return summaries[-1]

    trainer.forward_backward = spy
    trainer.train()
    return trainer, before, summaries, out


def test_dept_variant_of_a_users_trainer_trains_the_head_with_both_terms(trained):
    trainer, before, summaries, out = trained
    weight = trainer.head.weight
    for summary in summaries:
        assert set(summary) >= {"loss", "acc", "itm", "cat"}
        assert summary["itm"] == pytest.approx((1 - weight) * summary["loss"], rel=1e-5)
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"prompt_learner.ctx", "dept_head.film_img.scale", "dept_head.film_img.bias",
                     "dept_head.film_text.scale", "dept_head.film_text.bias",
                     "dept_head.linear_probe.weight", "dept_head.linear_probe.bias"}
    head_lr = trainer._head_optim.param_groups[0]["lr"]
    assert head_lr == pytest.approx(trainer.get_current_lr() * 6.5)  # the staged learning rate
    head_file = torch.load(out / "DePTHead" / "model.pth.tar-2", weights_only=True)
    assert head_file["head_classes"] == ["banded", "blotchy", "braided"]
    assert torch.equal(head_file["state_dict"]["dept_head.linear_probe.weight"], trainer.head.linear_probe.weight)
    assert (out / "prompt_learner" / "model.pth.tar-2").is_file()  # the user's trainer saved its own part


def test_base_classes_are_fused_and_new_classes_are_itm_only(trained, data):
    _, _, _, out = trained
    images = torch.randn(3, 3, 32, 32)
    for subsample, fused in (("base", True), ("new", False)):
        evaluated = build("MyCoOpDePT", data, data[2] / f"eval_{subsample}", subsample)
        evaluated.load_model(str(out), epoch=2)
        evaluated.set_model_mode("eval")
        evaluated._decide_head()
        with torch.no_grad():
            itm = evaluated.model(images)
            prediction = evaluated.model_inference(images)
        assert evaluated.head_mode == ("fused (logits)" if fused else "itm")
        assert torch.equal(prediction, itm) != fused
    assert evaluated.test() >= 0


def test_a_checkpoint_without_head_is_not_fused(trainers, data):
    plain_out = data[2] / "plain"
    plain = build("MyCoOp", data, plain_out, epochs=1)
    plain.train()
    evaluated = build("MyCoOpDePT", data, data[2] / "eval_plain")
    evaluated.load_model(str(plain_out), epoch=1)
    with pytest.raises(ValueError, match="untrained CAT head.*MyCoOp"):
        evaluated.test()


def test_unusable_definitions_are_refused_when_the_class_is_defined(trainers):
    from dept.core.mixin import DePTMixin

    MyCoOp, _ = trainers
    with pytest.raises(TypeError, match="list DePTMixin before MyCoOp"):
        type("Shadowed", (MyCoOp, DePTMixin), {})
    with pytest.raises(TypeError, match="no Dassl trainer base"):
        type("NotATrainer", (DePTMixin, nn.Module), {})


def test_a_model_outside_the_convention_is_named_at_build(trainers, data, tmp_path):
    from dept.core.mixin import DePTMixin

    MyCoOp, _ = trainers

    class Odd(MyCoOp):
        def build_model(self):
            super().build_model()
            del self.model.text_encoder

    class OddDePT(DePTMixin, Odd):
        pass

    from dassl.engine import TRAINER_REGISTRY

    from dept.core.registry import register

    TRAINER_REGISTRY._obj_map.pop("OddDePT", None)
    register(TRAINER_REGISTRY, OddDePT)
    with pytest.raises(TypeError, match=r"has no \['text_encoder'\]"):
        build("OddDePT", data, tmp_path)
