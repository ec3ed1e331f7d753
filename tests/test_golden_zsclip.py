"""Parity of our ZeroshotCLIP and ZeroshotCLIP2 with the originals (KaiyangZhou/CoOp, trainers/zsclip.py).

On the same tiny CLIP, class names and images, in fp32, for OxfordPets ("a photo of a {}, a type
of pet."), DescribableTextures ("{} texture.") and ImageNet (whose own template the ensemble
leaves out), base and new class names: the templates, the normalised (for the ensemble: averaged
and renormalised) text features and the logits equal the original's to 1e-5 (relative to the
largest value for logits). Nothing trains. The text is hand-crafted and encoded by CLIP's own
``encode_text`` when the model is built, so no text-encoding path applies; the logits are checked
on each all the same. The harness: golden.py; how the original's numbers were produced:
data/golden_zsclip/README.md.
"""
import golden
import pytest

pytestmark = pytest.mark.dassl

CASES = [(cls, dataset, split) for cls in ("ZeroshotCLIP", "ZeroshotCLIP2")
         for dataset in ("OxfordPets", "DescribableTextures", "ImageNet") for split in ("base", "new")]


@pytest.fixture(scope="module")
def official():
    yield golden.load("golden_zsclip")
    golden.release()


@pytest.mark.parametrize("encoding", golden.ENCODINGS)
@pytest.mark.parametrize("name,dataset,split", CASES)
def test_templates_text_features_and_logits_match_original(name, dataset, split, encoding, official,
                                                           monkeypatch, tmp_path):
    ref = official["results"][f"{name}_{dataset}_{split}"]
    t = golden.trainer(name, official, split, encoding, monkeypatch, tmp_path, dataset=dataset)
    assert t.optim is None and not any(p.requires_grad for p in t.model.parameters())
    assert list(t.templates()) == ref["templates"]
    golden.assert_close(t.model.prompt_learner.text_features, ref["text_features"], "text features")
    itm, prediction = golden.evaluate(t, official["images"])
    golden.assert_close(prediction, ref["logits"], "logits")
    golden.assert_close(itm, ref["logits"], "ITM logits")
