"""Parity of our CLIPAdapter with the original (gaopengcuhk/CLIP-Adapter, clip_adapter.py: its only
public file, run with the CoOp repository's clip package), and CLIPAdapterDePT's loss, prediction and
head against the DePT head itself.

On the same tiny CLIP, class names, images and initial adapter, in fp32: the training loss, both
adapter gradients, one SGD step, the base- and new-class logits equal the original's to 1e-5
(relative to the largest value for logits). The original hard-codes the adapter's width as 1024
(RN50's embedding); it was run with this CLIP's (see data/golden_clip_adapter/README.md), which is
what ours builds. The text is the dataset's hand-crafted template, encoded by CLIP's own
``encode_text`` (the original re-encodes it at every forward; ours once): no text-encoding path
applies, and the tests run on each all the same. The harness: golden.py.
"""
import golden
import pytest

pytestmark = pytest.mark.dassl


@pytest.fixture(scope="module")
def official():
    yield golden.load("golden_clip_adapter")
    golden.release()


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_loss_gradients_and_step_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_training_step("CLIPAdapter", "baseline", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_base_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_base_logits("CLIPAdapter", "baseline", official, encoding, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_new_class_logits_match_original(encoding, official, monkeypatch, tmp_path):
    golden.check_new_logits("CLIPAdapter", "baseline", official, encoding, monkeypatch, tmp_path)


def test_initialisation_matches_original(official, monkeypatch, tmp_path):
    golden.check_initialisation("CLIPAdapter", official, monkeypatch, tmp_path)


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
def test_dept_variant_adds_exactly_the_dept_terms(encoding, official, monkeypatch, tmp_path):
    golden.check_dept_terms("CLIPAdapterDePT", official, encoding, monkeypatch, tmp_path)
