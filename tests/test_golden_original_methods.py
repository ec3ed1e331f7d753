"""Parity of our zero-shot CLIP, IVLP, VPT, PromptSRC and CLIP-Adapter with the originals, and their
DePT variants' loss, prediction and head against the DePT head itself (no official code exists).

The originals: KaiyangZhou/CoOp ``trainers/zsclip.py`` (ZeroshotCLIP, ZeroshotCLIP2),
muzairkhattak/multimodal-prompt-learning ``trainers/independentVL.py`` (IVLP) and ``trainers/vpt.py``
(VPT), muzairkhattak/PromptSRC ``trainers/promptsrc.py``, gaopengcuhk/CLIP-Adapter ``clip_adapter.py``
(its only public file, run with the CoOp repository's clip package). On the same tiny CLIP, class
names, images and initial state, in fp32, equal to the original's up to fp32 rounding (golden.py:
Tolerance), on every text-encoding path:

- IVLP (two files: vision-language prompts with unequal text and vision sizes and depths, and
  language-only prompts), VPT, PromptSRC, CLIP-Adapter: the training loss and each loss term the
  original computes (PromptSRC: CE and the three self-regulating terms L_SCL-text, L_SCL-image,
  L_SCL-logits), every gradient, one SGD step, the base- and new-class logits; the initialisation
  and what is encoded once (VPT's fixed text features, PromptSRC's frozen teacher text features);
  the DePT variant is the original plus exactly DePT's terms (golden.check_dept_terms).
- PromptSRC: three short epochs (two batches each, the original's warm-up and cosine schedule):
  every loss, each epoch's prompts and the Gaussian-weighted aggregate (GPA, weights 0.27 / 0.45 /
  0.27).
- ZeroshotCLIP and ZeroshotCLIP2 on OxfordPets ("a photo of a {}, a type of pet."),
  DescribableTextures ("{} texture.") and ImageNet (whose own template the ensemble leaves out),
  base and new class names: the templates, the normalised (for the ensemble: averaged and
  renormalised) text features and the logits. Nothing trains.

VPT's, CLIP-Adapter's and the zero-shot methods' text is hand-crafted and encoded by CLIP's own
``encode_text``, so no text-encoding path applies; their checks run on each all the same
(DEPT.TEXT_ENCODING must not matter). CLIP-Adapter: the original hard-codes the adapter's width as
1024 (RN50's embedding); it was run with this CLIP's, which is what ours builds. How each original's
numbers were produced: data/golden_<method>/README.md; the harness: golden.py. (The official DePT
repository's methods: test_golden_official_methods.py and test_golden_official.py.)
"""
import golden
import pytest

pytestmark = pytest.mark.dassl

#: golden file -> (folder, file name, our trainer, its DePT variant, the checks beyond the common ones).
#: The common checks (training step, base and new logits, initialisation, DePT terms) apply to every
#: row with a trainer; "gpa": three epochs and the aggregation; "zeroshot": ZERO_SHOT below.
#: PromptSRC comes first: pytest groups a module-scoped parameter's tests by its index in each test's
#: own list, and the one-entry lists of the GPA ([PromptSRC]) and zero-shot ([zsclip]) tests share
#: index 0 with PromptSRC: so each file is loaded once (``pytest --setup-plan`` shows the order).
CASES = {
    "PromptSRC": ("golden_promptsrc", "official_outputs.pt", "PromptSRC", "PromptSRCDePT", ("gpa",)),
    "IVLP-language_only": ("golden_ivlp", "official_outputs_language_only.pt", "IVLP", "IVLPDePT", ()),
    "IVLP-vl": ("golden_ivlp", "official_outputs.pt", "IVLP", "IVLPDePT", ()),
    "VPT": ("golden_vpt", "official_outputs.pt", "VPT", "VPTDePT", ()),
    "CLIPAdapter": ("golden_clip_adapter", "official_outputs.pt", "CLIPAdapter", "CLIPAdapterDePT", ()),
    "zsclip": ("golden_zsclip", "official_outputs.pt", None, None, ("zeroshot",)),
}
#: the zero-shot cases: (trainer, DATASET.NAME, class split), each a ``results`` entry of golden_zsclip
ZERO_SHOT = [(cls, dataset, split) for cls in ("ZeroshotCLIP", "ZeroshotCLIP2")
             for dataset in ("OxfordPets", "DescribableTextures", "ImageNet") for split in ("base", "new")]


def cases(check=None):
    """The golden files a check applies to (None: the common checks: every file with a trainer)."""
    if check is None:
        return [case for case, (*_, name, _, _) in CASES.items() if name]
    return [case for case, (*_, checks) in CASES.items() if check in checks]


@pytest.fixture(scope="module")
def official(request):
    """(case, its golden outputs), one file at a time (each CLIP cache released after)."""
    folder, filename, *_ = CASES[request.param]
    yield request.param, golden.load(folder, filename)
    golden.release()


def trainer(case, dept=False):
    return CASES[case][3 if dept else 2]


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("official", cases(), indirect=True)
def test_loss_gradients_and_step_match_original(encoding, official, monkeypatch, tmp_path):
    case, outputs = official
    golden.check_training_step(trainer(case), "baseline", outputs, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("official", cases(), indirect=True)
def test_base_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    case, outputs = official
    golden.check_base_logits(trainer(case), "baseline", outputs, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("official", cases(), indirect=True)
def test_new_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    case, outputs = official
    golden.check_new_logits(trainer(case), "baseline", outputs, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("official", cases(), indirect=True)
def test_initialisation_matches_original(official, monkeypatch, tmp_path):
    """The initial tensors; VPT's fixed and PromptSRC's teacher text features where recorded."""
    case, outputs = official
    golden.check_initialisation(trainer(case), outputs, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("official", cases(), indirect=True)
def test_dept_variant_adds_exactly_the_dept_terms(encoding, official, monkeypatch, tmp_path):
    case, outputs = official
    golden.check_dept_terms(trainer(case, dept=True), outputs, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("official", cases("gpa"), indirect=True)
def test_three_epochs_and_gpa_match_original(encoding, official, monkeypatch, tmp_path):
    case, outputs = official
    golden.check_gpa(trainer(case), outputs, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("name,dataset,split", ZERO_SHOT)
@pytest.mark.parametrize("official", cases("zeroshot"), indirect=True)
def test_templates_text_features_and_logits_match_original(name, dataset, split, encoding, official,
                                                           monkeypatch, tmp_path):
    _, outputs = official
    ref = outputs["results"][f"{name}_{dataset}_{split}"]
    t = golden.trainer(name, outputs, split, encoding, monkeypatch, tmp_path, dataset=dataset)
    assert t.optim is None and not any(p.requires_grad for p in t.model.parameters())
    assert list(t.templates()) == ref["templates"]
    golden.assert_close(t.model.prompt_learner.text_features, ref["text_features"], "text features")
    itm, prediction = golden.evaluate(t, outputs["images"])
    golden.assert_close(prediction, ref["logits"], "logits")
    golden.assert_close(itm, ref["logits"], "ITM logits")
