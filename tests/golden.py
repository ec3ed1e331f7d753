"""Parity harness for the golden outputs of the official CoOp + DePT, CoCoOp, KgCoOp and MaPLe code
(Koorye/DePT d4ff416, plain and ExtrasLinearProbe = DePT variants), used by test_golden_official.py
(CoOp + DePT, whose older file ``coop_dept`` reads into the layout below) and
test_golden_official_methods.py.

Each ``data/golden_<method>_dept/official_outputs.pt`` holds the inputs (class names, images, labels,
every trained tensor's initial value, the config) and what the official trainers computed in fp32
on CPU: the training loss, the gradient of every trained tensor, the tensors after one step of the
official staged-LR SGD, the base-class logits (fused for DePT) and the new-class logits. How they
were produced: that folder's README.md.

The same layout holds the outputs of the baselines' original code (``data/golden_<method>/``:
zero-shot CLIP from KaiyangZhou/CoOp, IVLP and VPT from muzairkhattak/multimodal-prompt-learning,
PromptSRC from muzairkhattak/PromptSRC, CLIP-Adapter from gaopengcuhk/CLIP-Adapter; Dassl's plain
SGD, one group), used by test_golden_original_methods.py (one table of the files), with each loss
term the original computes (``loss_terms``), the original's parameter names mapped to ours
(``rename``: their prompts live inside CLIP's blocks), and for PromptSRC three epochs of its
Gaussian-weighted prompt aggregation (``check_gpa``). These methods' DePT variants have no official
code: ``check_dept_terms`` checks that each is the original plus exactly DePT's terms.

**Weights from a recipe.** MaPLe's official code hard-codes text width 512 and vision width 768, so
even a 4-layer CLIP for it has 66M weights (130 MB in fp16): too big to commit. The golden files
keep a recipe instead: tensor by tensor, value = offset + k·2^-e with integers k drawn uniformly
from [-K, K] by NumPy's legacy ``RandomState`` (a stream NumPy keeps unchanged) and |k| <= 1024, so
every value is fp16-exact and its fp32 copy exact; with the sha256 of the weights, which
``materialize`` checks. The same recipe gives MaPLe's three 768×512 projections their initial
weights; their gradients are kept as the two factors autograd multiplies (grad_W = Gᵀ·X, G the
gradient at the layer's output, X its input), their step as SGD's closed form on the first step.

Our side runs the trainers as a run does (``PromptTrainer.__init__``: config, model, freezing,
optimizer), with the data manager replaced by the golden class names (and our dataset's templates,
which KgCoOp and the fixed-text methods read) and CLIP loading by the golden CLIP; the recorded initial state is
loaded through the checkpoint path (``apply_state``); training is ``forward_backward``, evaluation
``before_test`` + ``model_inference``, as in ``test()``.

**Tolerance: fp32 rounding, nothing else.** Every input is exact in fp32 (fp16-exact weights,
recorded inputs and states), so the official result and ours differ only by rounding: the same
operations, accumulated in other orders (BLAS blocking and vector width, fused or explicit
attention, our truncated and shared-prefix text paths). ``assert_close`` allows, element by element,

    |ours - official| <= c * eps * M,    eps = 2^-23 (fp32's machine epsilon), c = 512 (``EPS_MULT``),

M the largest magnitude in the expected tensor (a scalar's own magnitude). The bound is absolute at
the tensor's scale, not relative per element: the entries of a tensor come out of the same
accumulations, so a small entry computed from large terms carries an error the size of the large
ones (the ctx gradient of CoOp + DePT: largest entry 51.5, one entry near 1e-2 off by 1.5e-5, i.e.
relative 1.4e-3 but 2.4 eps of M). Normwise, c * eps = 6.1e-5 is the relative tolerance; no
elementwise relative term is added. Where c comes from: a sum of n fp32 terms errs by at most about
lambda * sqrt(n) * u relative to its terms (u = eps / 2; the probabilistic bound of Higham and Mary,
SIAM J. Sci. Comput. 41(5), 2019, which fails with probability below 2n exp(-lambda^2 / 2));
the longest sums here have n = 768 (the 3x16x16 patch embedding, the vision MLP's 4 x 192, MaPLe's
768-wide projections), and lambda = 6 (failure below 3e-5 per sum) gives 6 * 28 * u = 83 eps; a
gradient or a logit is the last of several such stages in a row whose errors add (forward and back
through the blocks: about sqrt(9) = 3 for ~9 independent stages of comparable size), and two
independent fp32 results (theirs and ours) each carry such an error: 2 * 3 * 83 = 500, so c = 2^9.
Measured (torch 2.14.1, CUDA wheel on CPU, AVX-512): the largest error of any comparison is 88 eps M
(0.17 of the bound; CLIP-Adapter's adapter gradient, where a float64 run of our code shows the
official result itself 107 eps M from exact and ours 26-35); with ATen and MKL forced to scalar or
SSE kernels and one thread (other summation orders, as another CPU or a CPU-only build may take) the
largest is 161 eps M (0.31). A real discrepancy is larger: a change of 1e-3 relative on a tensor's
largest entry is 8389 eps M, 16 times the bound (``test_golden_tolerance.py`` checks that such a
change, and a term of the wrong sign, fail). A change well under c * eps * M in a small entry passes:
it cannot be told from rounding at this precision. Python floats (learning rates, GPA weights) are
fp64 results of a few operations: the same rule with fp64's eps (``approx``). Set
``DEPT_GOLDEN_ERRORS`` to a file to log every comparison's error in units of eps * M.
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
    """A fresh fp32 ``clip.model.CLIP`` holding the golden weights (built once per file, then copied): from
    the file's recipe, or (CoOp + DePT's, recorded before the recipes) from a stored fp16 state dict."""
    from clip.model import CLIP

    recipe = golden.get("clip_recipe")
    key = recipe["sha256"] if recipe else golden["clip_file"]
    if key not in _CLIPS:
        _CLIPS.clear()  # one file's CLIP at a time (MaPLe's is 260 MB in fp32)
        model = CLIP(**golden["clip_spec"])
        if recipe:
            state = materialize(recipe)
        else:
            stored = torch.load(os.path.join(DATA, golden["clip_file"]), weights_only=True)
            state = {k: v.float() for k, v in stored.items()}
        model.load_state_dict(state)
        _CLIPS[key] = model.float().eval()
    return copy.deepcopy(_CLIPS[key])


def release():
    """Drop the cached CLIP (a test module's teardown)."""
    _CLIPS.clear()


def load(folder, name="official_outputs.pt"):
    return torch.load(os.path.join(DATA, folder, name), weights_only=True)


def ours(name, rename=None):
    """An official parameter name in ours: the DePT head's modules (``RENAME``), and the names a golden
    file maps explicitly (``rename``: IVLP's, VPT's and PromptSRC's prompts live inside CLIP's blocks
    there, ``text_encoder.transformer.resblocks.<i>.VPT_shallow``, and in our prompt learner here)."""
    if rename and name in rename:
        return rename[name]
    for official, mine in RENAME.items():
        if name.startswith(official):
            return mine + name[len(official):]
    return name


def initial_state(golden, head=True):
    """Every trained tensor's recorded initial value, in our names."""
    state = dict(golden["init"])
    if "param_recipe" in golden:
        state.update(materialize(golden["param_recipe"]))
    rename = golden.get("rename")
    return {ours(k, rename): v for k, v in state.items() if head or not k.startswith(tuple(RENAME))}


# -- CoOp + DePT's file, read into the layout of the others -------------------------------------
#: the optimizer of the official run: the file keeps LR, LR_EXP (staged: head and cwT at LR x LR_EXP)
#: and λ; its ``after_step`` is the first step of Dassl's default optimizer, Adam (betas 0.9, 0.999,
#: eps 1e-8, L2 weight decay 5e-4; the step is LR x sign(grad + 5e-4 x param) to 6e-8, where SGD's would
#: be LR x (grad + ...)), as data/golden_coop_dept/README.md says. Dassl's other defaults: momentum
#: 0.9, dampening 0, no Nesterov (unused by Adam).
COOP_ADAM = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-4, amsgrad=False)
COOP_CLIP_SPEC = dict(embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                      context_length=77, vocab_size=49408, transformer_width=16, transformer_heads=2,
                      transformer_layers=2)


def coop_dept():
    """data/golden_coop_dept (CoOp + DePT; recorded before the recipe layout: its own keys, the CLIP
    weights in a file) in the layout of the other golden files, so that the same checks run on it."""
    raw = load("golden_coop_dept")
    trained = ["prompt_learner.ctx", *raw["head"]]
    groups = [dict(params=[n for n in trained if n.startswith(tuple(g["layers"]))], lr=g["lr"], **COOP_ADAM)
              for g in raw["lr_groups"]]
    assert sorted(n for g in groups for n in g["params"]) == sorted(trained)
    return {
        "clip_spec": COOP_CLIP_SPEC, "clip_file": "golden_coop_dept/clip_fp16.pt",
        # 4 generic context vectors (CTX_INIT empty: the official context is drawn, recorded in init)
        "config": {"TRAINER.COOP.N_CTX": 4, "TRAINER.COOP.CTX_INIT": "", "TRAINER.COOP.PREC": "fp32",
                   "OPTIM.NAME": "adam", "OPTIM.LR": raw["lr"]},
        "config_fixed": {"OPTIM.NAME": "adam", "OPTIM.WEIGHT_DECAY": COOP_ADAM["weight_decay"], "OPTIM.MOMENTUM": 0.9,
                         "OPTIM.SGD_DAMPNING": 0, "OPTIM.SGD_NESTEROV": False, "OPTIM.STAGED_LR": True,
                         "OPTIM.LR_EXP": raw["lr_mult"], "OPTIM.BASE_LR_MULT": 1.0,
                         "TRAINER.LINEAR_PROBE.WEIGHT": raw["weight"], "TRAINER.LINEAR_PROBE.TYPE": "linear",
                         "TRAINER.LINEAR_PROBE.TEST_TIME_FUSION": True, "TRAINER.FILM.LINEAR_PROBE": True},
        "dataset_name": "OxfordPets",  # CoOp's context is learned: no template is read
        **{k: raw[k] for k in ("base_classnames", "new_classnames", "images", "labels")},
        "init": {"prompt_learner.ctx": raw["ctx"], **raw["head"]},
        "results": {
            # the file keeps the fused base logits only (no ITM logits apart)
            "dept_base": {"trainable": trained, "idle": [], "param_groups": groups, "loss": raw["loss"],
                          "grads": raw["grads"], "after_step": raw["after_step"], "grad_factors": {},
                          "logits": raw["fused_base_logits"]},
            "dept_new": {"logits": raw["new_logits"]},
        },
    }


# -- our trainers ----------------------------------------------------------------------------------
def dataset_class(name):
    """Our dataset class of an official DATASET.NAME (its templates are what zero-shot methods read)."""
    from dept.datasets.dtd import DescribableTextures
    from dept.datasets.imagenet import ImageNet
    from dept.datasets.oxford_pets import OxfordPets

    return {"OxfordPets": OxfordPets, "DescribableTextures": DescribableTextures, "ImageNet": ImageNet}[name]


def _merge(cfg, key, value):
    """``cfg.merge_from_list([key, value])``, an original's integer taken where our key is a float
    (PromptSRC's GPA_MEAN / GPA_STD are integers in its config)."""
    node = cfg
    for part in key.split(".")[:-1]:
        node = node[part]
    current = node.get(key.split(".")[-1])
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    cfg.merge_from_list([key, value])


def trainer(name, golden, split, encoding, monkeypatch, tmp_path, dataset=None, opts=()):
    """Our registered trainer ``name`` as a run builds it, on the golden CLIP and class names.

    ``dataset``: the DATASET.NAME (default the golden file's); ``opts``: config options merged last."""
    from dept.core.methods import trainers as dept_trainers
    from dept.core.trainer import PromptTrainer
    from dept.run.train import build_parser, setup_cfg

    cls = dept_trainers()[name]
    config = os.path.join(REPO, "configs", "trainers", name, f"{cls.method.config()}.yaml")
    cfg = setup_cfg(build_parser().parse_args(["--config-file", config, "--output-dir", str(tmp_path)]))
    cfg.defrost()
    for key, value in golden["config"].items():
        _merge(cfg, key, value)
    dataset_name = dataset or golden["dataset_name"]
    cfg.merge_from_list(["INPUT.SIZE", (32, 32), "DATASET.NAME", dataset_name,
                         "DATASET.SUBSAMPLE_CLASSES", split, "DEPT.TEXT_ENCODING", encoding, "USE_CUDA", False,
                         # the official step was taken at the staged LRs themselves (no scheduler):
                         # without warm-up the first epoch's cosine factor is exactly 1
                         "OPTIM.WARMUP_EPOCH", 0])
    for key, value in zip(opts[::2], opts[1::2]):
        _merge(cfg, key, value)
    cfg.freeze()
    source = dataset_class(dataset_name)
    classnames = golden["base_classnames"] if split == "base" else golden["new_classnames"]

    def data(self):
        dataset = types.SimpleNamespace(classnames=list(classnames), template=source.template,
                                        method_templates=dict(source.method_templates), notes=[],
                                        template_in_ensemble=getattr(source, "template_in_ensemble", True))
        self.dm = types.SimpleNamespace(dataset=dataset, num_classes=len(classnames))
        self.lab2cname = dict(enumerate(classnames))
        self.num_classes, self.num_source_domains = len(classnames), 1
        self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = None

    monkeypatch.setattr(PromptTrainer, "build_data_loader", data)
    monkeypatch.setattr("dept.core.trainer.load_clip", lambda cfg, prec, device: (golden_clip(golden), "fp32"))
    return cls(cfg)


def check_official_settings(t, golden):
    """The settings the golden numbers were computed with are this trainer's."""
    fixed = golden["config_fixed"]
    cfg, opts = t.cfg, t.opts
    assert (cfg.OPTIM.NAME, cfg.OPTIM.MOMENTUM, cfg.OPTIM.WEIGHT_DECAY, cfg.OPTIM.SGD_DAMPNING,
            cfg.OPTIM.SGD_NESTEROV) == (fixed["OPTIM.NAME"], fixed["OPTIM.MOMENTUM"], fixed["OPTIM.WEIGHT_DECAY"],
                                        fixed["OPTIM.SGD_DAMPNING"], fixed["OPTIM.SGD_NESTEROV"])
    if "TRAINER.LINEAR_PROBE.WEIGHT" not in fixed:  # an original without DePT: Dassl's plain optimizer
        assert not fixed["OPTIM.STAGED_LR"]
        return
    assert opts.weight == fixed["TRAINER.LINEAR_PROBE.WEIGHT"]
    assert opts.lr_mult == fixed["OPTIM.LR_EXP"] and opts.base_lr_mult == fixed["OPTIM.BASE_LR_MULT"]
    assert opts.staged_lr is fixed["OPTIM.STAGED_LR"]
    assert opts.fusion == ("logits" if fixed["TRAINER.LINEAR_PROBE.TEST_TIME_FUSION"] else "cat")
    assert opts.head == fixed["TRAINER.LINEAR_PROBE.TYPE"] and opts.cwt is fixed["TRAINER.FILM.LINEAR_PROBE"]


#: fp32's machine epsilon (2^-23) and the tolerance in units of eps * M (module docstring: Tolerance)
EPS = torch.finfo(torch.float32).eps
EPS_MULT = 512


def tolerance(expected):
    """The largest error ``assert_close`` allows on ``expected``: c * eps * M, M its largest magnitude."""
    return EPS_MULT * EPS * (float(expected.detach().abs().max()) if expected.numel() else 0.0)


def assert_close(actual, expected, what):
    """fp32 parity up to rounding: |actual - expected| <= c * eps * max|expected| in every entry."""
    actual, expected = actual.detach().float(), expected.detach().float()
    atol = tolerance(expected)
    _log(what, actual, expected)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0,
                               msg=lambda m: f"{what}: {m} (the bound: {EPS_MULT} eps x max|expected|)")


def _log(what, actual, expected):
    """With ``DEPT_GOLDEN_ERRORS`` set, append a line: the test, what, the error in units of eps * M, M."""
    path = os.environ.get("DEPT_GOLDEN_ERRORS")
    if not path or actual.shape != expected.shape or not expected.numel():
        return
    scale = float(expected.abs().max())
    error = float((actual - expected).abs().max())
    units = error / (EPS * scale) if scale else error
    with open(path, "a") as f:
        f.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]}\t{what}\t{units:.2f}\t{scale:.4g}\n")


def approx(values):
    """Python floats (fp64, a few operations: learning rates, GPA weights) to c * eps of fp64, relative."""
    import pytest

    return pytest.approx(values, rel=EPS_MULT * torch.finfo(torch.float64).eps, abs=0)


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
    rename = golden.get("rename")
    assert trained == sorted(ours(n, rename) for n in ref["trainable"] if n not in ref["idle"])

    official_group = {ours(n, rename): g for g in ref["param_groups"] for n in g["params"]}
    for group in t.optim.param_groups:
        for p in group["params"]:
            n = next(k for k, q in params.items() if q is p)
            g = official_group[n]
            assert group["lr"] == approx(g["lr"]), (n, group["lr"], g["lr"])
            settings = {k: v for k, v in g.items() if k not in ("params", "lr")}  # SGD's momentum, ...
            assert {k: group[k] for k in settings} == settings, n

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
    for term, value in ref.get("loss_terms", {}).items():  # each named loss, as the original weighs it
        assert_close(torch.tensor(summary.get(term, summary["loss"])), value, f"loss term {term}")
    if "loss_terms" in ref:
        assert set(summary) - {"loss", "acc"} <= set(ref["loss_terms"]), summary

    expected = {ours(n, rename): g for n, g in ref["grads"].items()}
    after = {ours(n, rename): v for n, v in ref["after_step"].items()}
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
        if "itm_logits" in ref:  # (CoOp + DePT's file keeps the fused logits only)
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
    rename = golden.get("rename")
    if rename:  # every trained tensor was recorded (the files of the DePT repository's methods keep fewer)
        assert sorted(n for n, p in params.items() if p.requires_grad and not n.startswith("dept_head.")) == \
            sorted(ours(n, rename) for n in golden["official_init"])
    for official, value in golden["official_init"].items():
        n = ours(official, rename)
        if n == "prompt_learner.ctx":  # from the CTX_INIT words' token embeddings: exact
            assert torch.equal(params[n].detach(), value), n
        else:  # random draws: same shape
            assert params[n].shape == value.shape, n
    if rename:  # our trainer maps the official checkpoint names as the golden file does
        assert type(t).official_state(dict.fromkeys(rename)).keys() == set(rename.values())
    if "template" in golden:  # KgCoOp: the dataset's hand-crafted template and its frozen CLIP features
        assert t.class_template() == golden["template"]
        assert_close(t.model.reference_text, golden["reference_text"], "KgCoOp's reference text features")
    if "teacher_text" in golden:  # PromptSRC: the mean frozen text features of its 60 templates
        assert_close(t.model.teacher_text, golden["teacher_text"], "PromptSRC's frozen teacher text features")
    if "fixed_text" in golden:  # VPT: the hand-crafted text features, encoded once
        assert_close(t.model.prompt_learner.text_features, golden["fixed_text"], "fixed text features")
    return t


# -- DePT variants without official code ----------------------------------------------------------
def perturbed_head_state(t, seed=5):
    """The DePT head's tensors (our names), cwT away from identity so that every term is non-trivial."""
    g = torch.Generator().manual_seed(seed)
    state = {f"dept_head.{k}": v.detach().clone() for k, v in t.head.state_dict().items()}
    for side in ("img", "text"):
        d = state[f"dept_head.film_{side}.scale"].numel()
        state[f"dept_head.film_{side}.scale"] = 1 + 0.1 * torch.randn(d, generator=g)
        state[f"dept_head.film_{side}.bias"] = 0.05 * torch.randn(d, generator=g)
    return state


def reference_head(t, state):
    """The default DePT head (dept.core.head.DePTHead: λ 0.7, linear CAT head, cwT, fused logits) holding
    ``state``: the terms below are computed with it, not through the trainer."""
    from dept.core.head import DePTHead

    head = DePTHead(t.model.embed_dim, list(t.head.classes))
    head.load_state_dict({k[len("dept_head."):]: v for k, v in state.items()})
    assert (t.head.weight, t.head.fusion, t.head.head) == (head.weight, head.fusion, head.head) == (0.7, "logits",
                                                                                                    "linear")
    return head


def check_dept_terms(name, golden, encoding, monkeypatch, tmp_path, opts=()):
    """A method's DePT variant (no official code exists) is the original method plus exactly DePT's
    terms: loss (1-λ)·CE(Z_ITM) + λ·CE(Z_CAT, [y; y]) + the method's own terms unweighted, with CE and
    the method's terms the original's (golden) and Z_CAT from ``dept.core.head.DePTHead`` on the same
    features; the base prediction (1-λ)·Z_ITM + λ·Z_CAT with Z_ITM the original's logits; on new
    classes the original's logits alone."""
    import torch.nn.functional as F

    ref, ref_new = golden["results"]["baseline_base"], golden["results"]["baseline_new"]
    images, labels = golden["images"].clone(), golden["labels"].clone()
    t = trainer(name, golden, "base", encoding, monkeypatch, tmp_path, opts=opts)
    head_state = perturbed_head_state(t)
    t.apply_state({**initial_state(golden), **head_state}, {})
    head = reference_head(t, head_state)
    lam = head.weight

    # base classes: fused prediction
    itm, prediction = evaluate(t, images)
    assert t.head_mode.startswith("fused")
    assert_close(itm, ref["logits"], "ITM logits (base)")
    with torch.no_grad():
        cat = head.cat_logits(t.model.features(images).image)[0]
    assert_close(prediction, (1 - lam) * ref["logits"] + lam * cat, "fused prediction (base)")

    # training: the terms
    t.set_model_mode("train")
    with torch.no_grad():
        features = t.model.features(images)
        cat_logits, targets = head.cat_logits(features.image, features.text, labels, t.model.logit_scale)
    terms = {k: v for k, v in ref["loss_terms"].items() if k != "itm"}
    terms.update(itm=(1 - lam) * ref["loss_terms"]["itm"], cat=lam * F.cross_entropy(cat_logits, targets))
    params = dict(t.model.named_parameters())
    trained = sorted(n for n, p in params.items() if p.requires_grad)
    assert trained == sorted([*initial_state(golden), *head_state])
    t.batch_idx, t.num_batches = 0, 2
    summary = t.forward_backward({"img": images, "label": labels})
    assert set(summary) - {"loss", "acc"} == set(terms), summary
    for term, value in terms.items():
        assert_close(torch.tensor(summary[term]), value, f"loss term {term}")
    assert_close(torch.tensor(summary["loss"]), sum(terms.values()), "loss")
    for n in trained:
        assert params[n].grad is not None and params[n].grad.abs().sum() > 0, f"{n} got no gradient"

    # new classes: the original's logits, the CAT head left out
    t = trainer(name, golden, "new", encoding, monkeypatch, tmp_path, opts=opts)
    t.apply_state({**initial_state(golden), **head_state}, {})
    itm, prediction = evaluate(t, images)
    assert t.head_mode == "itm"
    assert_close(prediction, ref_new["logits"], "prediction (new)")


# -- PromptSRC's Gaussian-weighted prompt aggregation ----------------------------------------------
def check_gpa(name, golden, encoding, monkeypatch, tmp_path):
    """Three short epochs through our epoch loop (``run_epoch``, ``after_epoch``) on the original's
    batches: every batch's loss, each epoch's learning rate (our scheduler against Dassl's), the
    prompts after each epoch, the GPA weights, and the aggregate that replaces the prompts after the
    last epoch (the original aggregates its whole state dict, frozen weights too; ours the trained
    tensors: the prompts are compared), and the base-class logits with it."""
    from dept.trainers.promptsrc import gpa_weights

    gpa, rename = golden["gpa"], golden["rename"]
    opts = [x for item in gpa["config"].items() for x in item]
    t = trainer(name, golden, "base", encoding, monkeypatch, tmp_path, opts=opts)
    t.apply_state(initial_state(golden), {})
    assert t.max_epoch == len(gpa["batches"]) == 3
    cfg = t.method_cfg
    assert gpa_weights(t.max_epoch, cfg.GPA_MEAN, cfg.GPA_STD) == approx(gpa["weights"])
    params = dict(t.model.named_parameters())
    trained = sorted(n for n, p in params.items() if p.requires_grad)
    assert trained == sorted(ours(n, rename) for n in gpa["aggregate"])
    losses, lrs = [], []
    forward_backward = t.forward_backward

    def record(batch):
        summary = forward_backward(batch)
        losses.append(summary["loss"])
        return summary

    t.forward_backward = record
    for epoch, batches in enumerate(gpa["batches"]):
        t.epoch = epoch
        t.train_loader_x = [{"img": images.clone(), "label": labels.clone()} for images, labels in batches]
        lrs.append(t.optim.param_groups[0]["lr"])
        t.run_epoch()
        for official, value in gpa["epoch_states"][epoch].items():  # what this epoch trained
            assert_close(params[ours(official, rename)], value, f"{ours(official, rename)} after epoch {epoch + 1}")
        t.after_epoch()
    assert_close(torch.tensor(losses), gpa["losses"], "losses of the six batches")
    assert lrs == approx(gpa["lrs"]), (lrs, gpa["lrs"])
    for official, value in gpa["aggregate"].items():
        assert_close(params[ours(official, rename)], value, f"{ours(official, rename)} after GPA")
    _, prediction = evaluate(t, golden["images"])
    assert_close(prediction, gpa["logits"], "base-class logits after GPA")

