"""Parity of our CoCoOp, KgCoOp and MaPLe, and their DePT variants, with the official code
(Koorye/DePT: cocoop.py, kgcoop.py, maple.py and their elp_*.py).

On the same tiny CLIP, class names, images and initial state, in fp32: the training loss, every
gradient, one staged-LR SGD step, the base-class prediction (fused for DePT) and the new-class
logits equal the official ones up to fp32 rounding (golden.py: Tolerance), on every text encoding
path. The harness and the recipe-generated weights: golden.py; how the official numbers
were produced: data/golden_<method>_dept/README.md. (CoOp's: test_golden_official.py.)
"""
import golden
import pytest

pytestmark = pytest.mark.dassl

METHODS = ("CoCoOp", "KgCoOp", "MaPLe")
VARIANTS = ("baseline", "dept")


@pytest.fixture(scope="module", params=METHODS)
def official(request):
    """(method, its official outputs), one method at a time (each CLIP cache released after)."""
    yield request.param, golden.load(f"golden_{request.param.lower()}_dept")
    golden.release()


def trainer(method, variant):
    return method + ("DePT" if variant == "dept" else "")


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_gradients_and_step_match_official(variant, encoding, official, monkeypatch, tmp_path):
    method, outputs = official
    golden.check_training_step(trainer(method, variant), variant, outputs, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_base_class_prediction_matches_official(variant, encoding, official, monkeypatch, tmp_path):
    method, outputs = official
    golden.check_base_logits(trainer(method, variant), variant, outputs, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_new_class_logits_match_official(variant, encoding, official, monkeypatch, tmp_path):
    method, outputs = official
    golden.check_new_logits(trainer(method, variant), variant, outputs, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("variant", VARIANTS)
def test_initialisation_matches_official(variant, official, monkeypatch, tmp_path):
    method, outputs = official
    golden.check_initialisation(trainer(method, variant), outputs, monkeypatch, tmp_path)
