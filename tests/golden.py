"""Parity harness for the golden outputs of the official CoCoOp, KgCoOp and MaPLe code (Koorye/DePT
d4ff416, plain and ExtrasLinearProbe = DePT variants), used by test_golden_{cocoop,kgcoop,maple}.py.

Each ``data/golden_<method>_dept/official_outputs.pt`` holds the inputs (class names, images, labels,
every trained tensor's initial value, the config) and what the official trainers computed in fp32
on CPU: the training loss, the gradient of every trained tensor, the tensors after one step of the
official staged-LR SGD, the base-class logits (fused for DePT) and the new-class logits. How they
were produced: that folder's README.md.

**Weights from a recipe.** MaPLe's official code hard-codes text width 512 and vision width 768, so
even a 4-layer CLIP for it has 66M weights (130 MB in fp16): too big to commit. The golden files
keep a recipe instead: tensor by tensor, value = offset + k·2^-e with integers k drawn uniformly
from [-K, K] by NumPy's legacy ``RandomState`` (a stream NumPy keeps unchanged) and |k| <= 1024, so
every value is fp16-exact and its fp32 copy exact; with the sha256 of the weights, which
``materialize`` checks. The same recipe gives MaPLe's three 768×512 projections their initial
weights; their gradients are kept as the two factors autograd multiplies (grad_W = Gᵀ·X, G the
gradient at the layer's output, X its input), their step as SGD's closed form on the first step.

Our side runs the trainers as a run does (``PromptTrainer.__init__``: config, model, freezing,
optimizer), with the data manager replaced by the golden class names (and our OxfordPets dataset's
template, which KgCoOp reads) and CLIP loading by the golden CLIP; the recorded initial state is
loaded through the checkpoint path (``apply_state``); training is ``forward_backward``, evaluation
``before_test`` + ``model_inference``, as in ``test()``.
"""
import copy
import hashlib
import os
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
REPO = os.path.dirname(HERE)
#: the text-encoding paths to check (all must give the official numbers; "auto" is one of them)
ENCODINGS = ("full", "truncated", "shared_prefix")
#: official module names -> ours (the prompt learners' names are the official ones)
RENAME = {"film_lp_img.": "dept_head.film_img.", "film_lp_text.": "dept_head.film_text.",
          "linear_probe_proj.": "dept_head.linear_probe."}


# -- weights ---------------------------------------------------------------------------------------
def materialize(recipe):
    """The fp32 weights a recipe describes: {name: tensor}, checked against its sha256."""
    rs = np.random.RandomState(recipe["seed"])
    state = {}
    for name, shape, bound, exponent, offset in recipe["tensors"]:
        size = int(np.prod(shape, dtype=np.int64))
        if bound:
            k = torch.from_numpy(rs.randint(-bound, bound + 1, size=size, dtype=np.int32))
            value = k.float() * 2.0 ** -exponent + offset
        else:
            value = torch.full((size,), float(offset))
        state[name] = value.reshape(tuple(shape))
    found = digest(state, recipe["tensors"])
    if found != recipe["sha256"]:
        raise AssertionError(f"golden weights differ from the recorded ones (sha256 {found}, recorded "
                             f"{recipe['sha256']}): NumPy's RandomState stream or this file changed")
    return state


def digest(state, tensors):
    """sha256 of the weights as fp16, in recipe order (fp16 holds them exactly)."""
    h = hashlib.sha256()
    for name, *_ in tensors:
        value = state[name]
        if not torch.equal(value.half().float(), value):
            raise AssertionError(f"{name} is not fp16-exact")
        h.update(name.encode())
        h.update(value.half().contiguous().numpy().tobytes())
    return h.hexdigest()


_CLIPS = {}


def golden_clip(golden):
    """A fresh fp32 ``clip.model.CLIP`` holding the golden weights (built once per file, then copied)."""
    from clip.model import CLIP

    key = golden["clip_recipe"]["sha256"]
    if key not in _CLIPS:
        _CLIPS.clear()  # one file's CLIP at a time (MaPLe's is 260 MB in fp32)
        model = CLIP(**golden["clip_spec"])
        model.load_state_dict(materialize(golden["clip_recipe"]))
        _CLIPS[key] = model.float().eval()
    return copy.deepcopy(_CLIPS[key])


def release():
    """Drop the cached CLIP (a test module's teardown)."""
    _CLIPS.clear()


def load(folder):
    return torch.load(os.path.join(DATA, folder, "official_outputs.pt"), weights_only=True)


def ours(name):
    for official, mine in RENAME.items():
        if name.startswith(official):
            return mine + name[len(official):]
    return name


def initial_state(golden, head=True):
    """Every trained tensor's recorded initial value, in our names."""
    state = dict(golden["init"])
    if "param_recipe" in golden:
        state.update(materialize(golden["param_recipe"]))
    return {ours(k): v for k, v in state.items() if head or not k.startswith(tuple(RENAME))}


# -- our trainers ----------------------------------------------------------------------------------
def trainer(name, golden, split, encoding, monkeypatch, tmp_path):
    """Our registered trainer ``name`` as a run builds it, on the golden CLIP and class names."""
    from dept.datasets.oxford_pets import OxfordPets

    from dept.engine import PromptTrainer
    from dept.registry import dept_trainers
    from dept.train import build_parser, setup_cfg

    cls = dept_trainers()[name]
    config = os.path.join(REPO, "configs", "trainers", name, f"{cls.default_config}.yaml")
    cfg = setup_cfg(build_parser().parse_args(["--config-file", config, "--output-dir", str(tmp_path)]))
    cfg.defrost()
    for key, value in golden["config"].items():
        cfg.merge_from_list([key, value])
    cfg.merge_from_list(["INPUT.SIZE", (32, 32), "DATASET.NAME", golden["dataset_name"],
                         "DATASET.SUBSAMPLE_CLASSES", split, "DEPT.TEXT_ENCODING", encoding, "USE_CUDA", False,
                         # the official step was taken at the staged LRs themselves (no scheduler):
                         # without warm-up the first epoch's cosine factor is exactly 1
                         "OPTIM.WARMUP_EPOCH", 0])
    cfg.freeze()
    assert golden["dataset_name"] == "OxfordPets"
    classnames = golden["base_classnames"] if split == "base" else golden["new_classnames"]

    def data(self):
        dataset = types.SimpleNamespace(classnames=list(classnames), template=OxfordPets.template,
                                        method_templates=dict(OxfordPets.method_templates), notes=[])
        self.dm = types.SimpleNamespace(dataset=dataset, num_classes=len(classnames))
        self.lab2cname = dict(enumerate(classnames))
        self.num_classes, self.num_source_domains = len(classnames), 1
        self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = None

    monkeypatch.setattr(PromptTrainer, "build_data_loader", data)
    monkeypatch.setattr("dept.engine.load_clip", lambda cfg, prec, device: (golden_clip(golden), "fp32"))
    return cls(cfg)


def check_official_settings(t, golden):
    """The settings the golden numbers were computed with are this trainer's."""
    fixed = golden["config_fixed"]
    cfg, opts = t.cfg, t.opts
    assert (cfg.OPTIM.NAME, cfg.OPTIM.MOMENTUM, cfg.OPTIM.WEIGHT_DECAY, cfg.OPTIM.SGD_DAMPNING,
            cfg.OPTIM.SGD_NESTEROV) == (fixed["OPTIM.NAME"], fixed["OPTIM.MOMENTUM"], fixed["OPTIM.WEIGHT_DECAY"],
                                        fixed["OPTIM.SGD_DAMPNING"], fixed["OPTIM.SGD_NESTEROV"])
    assert opts.weight == fixed["TRAINER.LINEAR_PROBE.WEIGHT"]
    assert opts.lr_mult == fixed["OPTIM.LR_EXP"] and opts.base_lr_mult == fixed["OPTIM.BASE_LR_MULT"]
    assert opts.staged_lr is fixed["OPTIM.STAGED_LR"]
    assert opts.fusion == ("logits" if fixed["TRAINER.LINEAR_PROBE.TEST_TIME_FUSION"] else "cat")
    assert opts.head == fixed["TRAINER.LINEAR_PROBE.TYPE"] and opts.cwt is fixed["TRAINER.FILM.LINEAR_PROBE"]


def assert_close(actual, expected, what):
    """fp32 parity: 1e-5, relative to the largest expected value where values are large (logits)."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual.detach().float(), expected.float(), atol=1e-5 * scale, rtol=1e-5,
                               msg=lambda m: f"{what}: {m}")


def _result(golden, variant, split):
    return golden["results"][f"{variant}_{split}"]


# -- the checks ------------------------------------------------------------------------------------
def check_training_step(name, variant, golden, encoding, monkeypatch, tmp_path):
    """Loss, every gradient and one staged-LR SGD step, through ``forward_backward``."""
    ref = _result(golden, variant, "base")
    t = trainer(name, golden, "base", encoding, monkeypatch, tmp_path)
    check_official_settings(t, golden)
    t.apply_state(initial_state(golden, head=variant == "dept"), {})
    model = t.model
    params = dict(model.named_parameters())
    trained = sorted(n for n, p in params.items() if p.requires_grad)
    assert trained == sorted(ours(n) for n in ref["trainable"] if n not in ref["idle"])

    official_group = {ours(n): g for g in ref["param_groups"] for n in g["params"]}
    for group in t.optim.param_groups:
        for p in group["params"]:
            n = next(k for k, q in params.items() if q is p)
            g = official_group[n]
            assert abs(group["lr"] - g["lr"]) <= 1e-12 * g["lr"], (n, group["lr"], g["lr"])
            assert (group["momentum"], group["weight_decay"], group["dampening"], group["nesterov"]) == \
                (g["momentum"], g["weight_decay"], g["dampening"], g["nesterov"]), n

    before = {n: params[n].detach().clone() for n in trained}
    grads = {}
    step = t.optim.step

    def capture(*args, **kwargs):
        grads.update({n: params[n].grad.detach().clone() for n in trained if params[n].grad is not None})
        return step(*args, **kwargs)

    t.optim.step = capture
    t.set_model_mode("train")
    t.batch_idx, t.num_batches = 0, 2  # not an epoch's last batch: the LR schedule does not move
    summary = t.forward_backward({"img": golden["images"].clone(), "label": golden["labels"].clone()})
    assert_close(torch.tensor(summary["loss"]), ref["loss"], "loss")

    expected = {ours(n): g for n, g in ref["grads"].items()}
    after = {ours(n): v for n, v in ref["after_step"].items()}
    for layer, f in ref["grad_factors"].items():  # MaPLe's 768×512 projections
        w, b = ours(layer) + ".weight", ours(layer) + ".bias"
        expected[w] = f["grad_output"].t() @ f["input"]
        g = official_group[w]
        after[w] = before[w] - g["lr"] * (expected[w] + g["weight_decay"] * before[w])
        assert b in expected
    assert sorted(grads) == sorted(expected) == trained
    for n in trained:
        assert_close(grads[n], expected[n], f"gradient of {n}")
    for n in trained:
        assert_close(params[n], after[n], f"{n} after one step")


def evaluate(t, images):
    """What ``test()`` computes for a batch: (ITM logits, prediction)."""
    t.set_model_mode("eval")
    t.before_test()
    with torch.no_grad(), t.model.cached_text_features():
        itm = t.model.features(images).logits
        return itm, t.model_inference(images)


def check_base_logits(name, variant, golden, encoding, monkeypatch, tmp_path):
    """Base classes: ITM logits, and the prediction (DePT: fused with the CAT head)."""
    ref = _result(golden, variant, "base")
    t = trainer(name, golden, "base", encoding, monkeypatch, tmp_path)
    t.apply_state(initial_state(golden, head=variant == "dept"), {})
    itm, prediction = evaluate(t, golden["images"])
    if variant == "dept":
        assert_close(itm, ref["itm_logits"], "ITM logits (base)")
        assert t.head_mode.startswith("fused")
    assert_close(prediction, ref["logits"], "prediction (base)")


def check_new_logits(name, variant, golden, encoding, monkeypatch, tmp_path):
    """New classes: ITM only, with the base-trained state loaded (head included for DePT)."""
    ref = _result(golden, variant, "new")
    t = trainer(name, golden, "new", encoding, monkeypatch, tmp_path)
    t.apply_state(initial_state(golden, head=variant == "dept"), {})
    itm, prediction = evaluate(t, golden["images"])
    if variant == "dept":
        assert t.head_mode == "itm"
    assert_close(prediction, ref["logits"], "prediction (new)")
    assert_close(itm, ref["logits"], "ITM logits (new)")


def check_initialisation(name, golden, monkeypatch, tmp_path):
    """What our prompt learner builds from the config equals what the official one built (CTX_INIT)."""
    t = trainer(name, golden, "base", "auto", monkeypatch, tmp_path)
    params = dict(t.model.named_parameters())
    for n, value in golden["official_init"].items():
        if n == "prompt_learner.ctx":  # from the CTX_INIT words' token embeddings: exact
            assert torch.equal(params[n].detach(), value), n
        else:  # random draws: same shape
            assert params[n].shape == value.shape, n
    if "template" in golden:  # KgCoOp: the dataset's hand-crafted template and its frozen CLIP features
        assert t.class_template() == golden["template"]
        assert_close(t.model.reference_text, golden["reference_text"], "KgCoOp's reference text features")
    return t
