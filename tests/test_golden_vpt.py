"""Parity of our VPT with the original (muzairkhattak/multimodal-prompt-learning, trainers/vpt.py), and
VPTDePT's loss, prediction and head against the DePT head itself.

On the same tiny CLIP, class names, images and initial state, in fp32: the fixed text features
("a photo of a {}.", encoded once), the training loss, every gradient, one SGD step, the base- and
new-class logits equal the original's to 1e-5 (relative to the largest value for logits). The
text is hand-crafted and encoded by CLIP's own ``encode_text`` when the model is built, so no
text-encoding path applies; the tests run on each all the same (DEPT.TEXT_ENCODING must not
matter). The harness: golden.py; how the original's numbers were produced:
data/golden_vpt/README.md.
"""
import golden
import pytest

pytestmark = pytest.mark.dassl


@pytest.fixture(scope="module")
def official():
    yield golden.load("golden_vpt")
    golden.release()


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_loss_gradients_and_step_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_training_step("VPT", "baseline", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_base_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_base_logits("VPT", "baseline", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_new_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_new_logits("VPT", "baseline", official, encoding, monkeypatch, tmp_path)


def test_initialisation_and_fixed_text_match_original(official, monkeypatch, tmp_path):
    golden.check_initialisation("VPT", official, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_dept_variant_adds_exactly_the_dept_terms(encoding, official, monkeypatch, tmp_path):
    golden.check_dept_terms("VPTDePT", official, encoding, monkeypatch, tmp_path)
