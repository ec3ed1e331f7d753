"""DePT head maths against hand-computed values, fusion modes, and where the head applies."""
import math

import pytest
import torch
import torch.nn.functional as F

from dept.core.head import ChannelTransform, DePTHead, itm_logits


def make_head(**kw):
    head = DePTHead(2, ["a", "b", "c"], **kw)
    with torch.no_grad():
        head.linear_probe.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.linear_probe.bias.copy_(torch.tensor([0.0, 0.5, -1.0]))
    return head


def test_cwt_is_identity_at_init_and_scales_per_channel():
    cwt = ChannelTransform(3)
    x = torch.randn(5, 3)
    torch.testing.assert_close(cwt(x), x)
    with torch.no_grad():
        cwt.scale.copy_(torch.tensor([2.0, 1.0, 0.0]))
        cwt.bias.copy_(torch.tensor([0.0, 1.0, 3.0]))
    assert cwt(torch.tensor([[1.0, 1.0, 1.0]])).tolist() == [[2.0, 2.0, 3.0]]


def test_cat_logits_concatenate_text_of_label_then_images_with_duplicated_labels():
    head = make_head()
    img = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    txt = torch.tensor([[10.0, 0.0], [0.0, 10.0], [5.0, 5.0]])
    labels = torch.tensor([2, 0])
    logits, targets = head.cat_logits(img, txt, labels)
    # rows: T[2], T[0], I[0], I[1] through W·x + b
    expected = torch.tensor([
        [5.0, 5.5, 9.0], [10.0, 0.5, 9.0], [1.0, 2.5, 2.0], [3.0, 4.5, 6.0],
    ])
    torch.testing.assert_close(logits, expected)
    assert targets.tolist() == [2, 0, 2, 0]


def test_cat_uses_each_images_own_text_features_when_prompts_depend_on_the_image():
    head = make_head()
    img = torch.zeros(2, 2)
    txt = torch.stack([torch.eye(3, 2), 2 * torch.eye(3, 2)])  # B×C×D
    logits, _ = head.cat_logits(img, txt, torch.tensor([1, 1]))
    # image 0 picks row 1 of its own T ([0, 1]); image 1 picks row 1 of its T ([0, 2])
    torch.testing.assert_close(logits[:2], torch.tensor([[0.0, 1.5, 0.0], [0.0, 2.5, 1.0]]))


def test_loss_is_lambda_weighted_sum_of_itm_and_cat_cross_entropies():
    head = make_head(weight=0.7)
    img = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    txt = torch.tensor([[10.0, 0.0], [0.0, 10.0], [5.0, 5.0]])
    labels = torch.tensor([2, 0])
    itm = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]])
    losses = head.losses(itm, img, txt, labels, logit_scale=torch.tensor(0.0))
    cat, targets = head.cat_logits(img, txt, labels)
    assert losses["itm"].item() == pytest.approx(0.3 * F.cross_entropy(itm, labels).item())
    assert losses["cat"].item() == pytest.approx(0.7 * F.cross_entropy(cat, targets).item())
    # hand value of the ITM part: mean of CE over two rows
    ce0 = -math.log(math.exp(2) / (1 + math.e + math.exp(2)))
    ce1 = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert losses["itm"].item() == pytest.approx(0.3 * (ce0 + ce1) / 2, rel=1e-6)


@pytest.mark.parametrize("fusion", ["logits", "probs", "cat"])
def test_fusion_modes(fusion):
    head = make_head(weight=0.25, fusion=fusion)
    img = torch.tensor([[1.0, 2.0]])
    itm = torch.tensor([[4.0, 0.0, 0.0]])
    cat = torch.tensor([[1.0, 2.5, 2.0]])
    out = head.predict(itm, img, None, logit_scale=torch.tensor(0.0))
    expected = {
        "logits": 0.75 * itm + 0.25 * cat,
        "probs": 0.75 * itm.softmax(-1) + 0.25 * cat.softmax(-1),
        "cat": cat,
    }[fusion]
    torch.testing.assert_close(out, expected)


def test_logit_and_probability_fusion_can_disagree():
    """Why FUSION is a choice: the official logit sum and the paper's probability sum differ."""
    head = DePTHead(3, ["a", "b", "c"], weight=0.5)
    with torch.no_grad():  # identity classifier: CAT logits = image features
        head.linear_probe.weight.copy_(torch.eye(3))
        head.linear_probe.bias.zero_()
    itm = torch.tensor([[8.0, 0.0, 0.0]])
    img = torch.tensor([[-2.3, 3.3, 6.0]])
    assert head.predict(itm, img, None, torch.tensor(0.0)).argmax().item() == 2
    head.fusion = "probs"
    assert head.predict(itm, img, None, torch.tensor(0.0)).argmax().item() == 0


def test_head_stays_fp32_with_fp16_features():
    head = make_head()
    img = torch.randn(2, 2).half()
    txt = torch.randn(3, 2).half()
    logits, _ = head.cat_logits(img, txt, torch.tensor([0, 1]))
    assert logits.dtype == torch.float32 and head.linear_probe.weight.dtype == torch.float32


def test_rows_for_decides_where_the_head_applies():
    head = DePTHead(4, ["n01", "n02", "n03", "n04"])
    assert head.rows_for(["n01", "n02", "n03", "n04"]) == [0, 1, 2, 3]  # base: trained classes
    assert head.rows_for(["n04", "n02"]) == [3, 1]  # a subset (ImageNet-A/R of ImageNet)
    assert head.rows_for(["x", "y"]) is None  # new classes
    assert head.rows_for(["n01", "x"]) is None  # partly unknown: ITM only


def test_selected_rows_give_the_subset_logits():
    head = make_head()
    img = torch.tensor([[1.0, 2.0]])
    full, _ = head.cat_logits(img)
    head.rows = head.rows_for(["c", "a"])
    sub, _ = head.cat_logits(img)
    torch.testing.assert_close(sub, full[:, [2, 0]])


def test_itm_logits_are_scaled_cosines():
    img = torch.tensor([[3.0, 4.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    out = itm_logits(img, txt, torch.tensor(math.log(100.0)))
    torch.testing.assert_close(out, torch.tensor([[60.0, 80.0]]))
