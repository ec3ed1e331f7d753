"""Parity of our KgCoOp and KgCoOpDePT with the official code (Koorye/DePT: kgcoop.py, elp_kgcoop.py).

On the same tiny CLIP, class names, images and initial state, in fp32: the training loss, every
gradient, one staged-LR SGD step, the base-class prediction (fused for DePT) and the new-class
logits equal the official ones to 1e-5 (relative to the largest value for logits), on every text
encoding path. The harness and the recipe-generated weights: golden.py; how the official numbers
were produced: data/golden_kgcoop_dept/README.md.
"""
import golden
import pytest

pytestmark = pytest.mark.dassl

METHOD = "KgCoOp"
VARIANTS = {"baseline": METHOD, "dept": METHOD + "DePT"}


@pytest.fixture(scope="module")
def official():
    yield golden.load("golden_kgcoop_dept")
    golden.release()


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_loss_gradients_and_step_match_official(variant, encoding, official, monkeypatch, tmp_path):
    golden.check_training_step(VARIANTS[variant], variant, official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_base_class_prediction_matches_official(variant, encoding, official, monkeypatch, tmp_path):
    golden.check_base_logits(VARIANTS[variant], variant, official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_new_class_logits_match_official(variant, encoding, official, monkeypatch, tmp_path):
    golden.check_new_logits(VARIANTS[variant], variant, official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_initialisation_matches_official(variant, official, monkeypatch, tmp_path):
    golden.check_initialisation(VARIANTS[variant], official, monkeypatch, tmp_path)
