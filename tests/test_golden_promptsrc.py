"""Parity of our PromptSRC with the original (muzairkhattak/PromptSRC, trainers/promptsrc.py), and
PromptSRCDePT's loss, prediction and head against the DePT head itself.

On the same tiny CLIP, class names, images and initial state, in fp32: each loss term (CE, the
three self-regulating terms L_SCL-text, L_SCL-image, L_SCL-logits), every gradient, one SGD step,
the frozen teacher's text features, the base- and new-class logits equal the original's to 1e-5
(relative to the largest value for logits); and after three short epochs (two batches each, the
original's warm-up and cosine schedule) every loss, each epoch's prompts and the Gaussian-weighted
aggregate (GPA, weights 0.27 / 0.45 / 0.27), on every text-encoding path. The harness: golden.py;
how the original's numbers were produced: data/golden_promptsrc/README.md.
"""
import golden
import pytest

pytestmark = pytest.mark.dassl


@pytest.fixture(scope="module")
def official():
    yield golden.load("golden_promptsrc")
    golden.release()


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_loss_terms_gradients_and_step_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_training_step("PromptSRC", "baseline", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_base_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_base_logits("PromptSRC", "baseline", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_new_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_new_logits("PromptSRC", "baseline", official, encoding, monkeypatch, tmp_path)


def test_initialisation_and_teacher_match_original(official, monkeypatch, tmp_path):
    golden.check_initialisation("PromptSRC", official, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_three_epochs_and_gpa_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_gpa("PromptSRC", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_dept_variant_adds_exactly_the_dept_terms(encoding, official, monkeypatch, tmp_path):
    golden.check_dept_terms("PromptSRCDePT", official, encoding, monkeypatch, tmp_path)
