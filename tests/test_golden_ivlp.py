"""Parity of our IVLP with the original (muzairkhattak/multimodal-prompt-learning, trainers/independentVL.py),
and IVLPDePT's loss, prediction and head against the DePT head itself.

On the same tiny CLIP, class names, images and initial state, in fp32: the training loss, every
gradient, one SGD step, the base- and new-class logits equal the original's to 1e-5 (relative to
the largest value for logits), on every text-encoding path; for independent vision-language
prompts with unequal text and vision sizes and depths, and for language-only prompts. The harness:
golden.py; how the original's numbers were produced: data/golden_ivlp/README.md.
"""
import golden
import pytest

pytestmark = pytest.mark.dassl

FILES = {"vl": "official_outputs.pt", "language_only": "official_outputs_language_only.pt"}


@pytest.fixture(scope="module", params=sorted(FILES))
def official(request):
    yield golden.load("golden_ivlp", FILES[request.param])
    golden.release()


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_loss_gradients_and_step_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_training_step("IVLP", "baseline", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_base_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_base_logits("IVLP", "baseline", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_new_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_new_logits("IVLP", "baseline", official, encoding, monkeypatch, tmp_path)


def test_initialisation_matches_original(official, monkeypatch, tmp_path):
    golden.check_initialisation("IVLP", official, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_dept_variant_adds_exactly_the_dept_terms(encoding, official, monkeypatch, tmp_path):
    golden.check_dept_terms("IVLPDePT", official, encoding, monkeypatch, tmp_path)
