"""Parity with the official DePT code (Koorye/DePT, CoOp + DePT) on the same weights and inputs.

``data/golden_coop_dept`` holds a tiny CLIP (fp16-exact weights), the inputs, the context and head
parameters, and what the official ``elp_coop.CustomCLIP`` computed from them in fp32: the training
loss, its gradients, the parameters after one step of the official staged-LR optimizer (Dassl's
default, Adam: golden.py, ``COOP_ADAM``), the fused base logits and the new-class logits. How they
were produced: data/golden_coop_dept/README.md.

The file predates the layout of the other golden files; ``golden.coop_dept`` reads it into that
layout, so that our CoOpDePT trainer runs through the same checks as the other methods (golden.py:
the trainer as a run builds it, ``forward_backward``, one step of our staged-LR optimizer,
``model_inference``; equal up to fp32 rounding, golden.py: Tolerance), on every text-encoding path.
(CoCoOp, KgCoOp, MaPLe: test_golden_official_methods.py.)
"""
import golden
import pytest

pytestmark = pytest.mark.dassl


@pytest.fixture(scope="module")
def official():
    yield golden.coop_dept()
    golden.release()


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_training_loss_gradients_and_step_match_official(encoding, official, monkeypatch, tmp_path):
    golden.check_training_step("CoOpDePT", "dept", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_fused_base_logits_match_official(encoding, official, monkeypatch, tmp_path):
    golden.check_base_logits("CoOpDePT", "dept", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_new_class_logits_match_official(encoding, official, monkeypatch, tmp_path):
    golden.check_new_logits("CoOpDePT", "dept", official, encoding, monkeypatch, tmp_path)
