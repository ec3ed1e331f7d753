"""The analyses' parts on fixed inputs: the channel measure against a hand computation (the clamp and
the circular window included), the ablation table against fixed records, and every bad input refused
before any compute."""
import math
import os

import pytest
import torch
from records import CFG, key, put, put_base2new

from dept.analysis import ablation_cli, channels_cli
from dept.analysis.ablation import ablation_rows, render_markdown
from dept.analysis.channels import ChannelImportance, check_width, window_ratios
from dept.analysis.features import RunError, check_run

# 4 classes, D = 4, windows of 2 channels: base = classes 0, 1 (the first ceil(4/2)), new = 2, 3
TEXT = torch.tensor([[0.6, 0, 0, 0.8], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
IMAGES = torch.tensor([[0.6, 0.8, 0, 0], [0, 0.6, 0, -0.8], [0, 0, 0.8, 0.6]])
LABELS = torch.tensor([0, 1, 2])
# By hand, per window start s (channels {s, s+1 mod 4}); similarities clamped at 0:
#   image 0 (class 0) s0: 0.36 vs 0.8 -> 0.36/0.58; s1: true 0 -> 0; s2: all 0 -> 0; s3 {3, 0}: 0.36 vs 0 -> 2
#   image 1 (class 1) s0: 0 vs 0.6 -> 2; s1: 2; s2: class 0 is -0.64, clamped -> 0; s3: 0
#   image 2 (new, class 2 of {2, 3}) s0: 0; s1: 0.8 vs 0 -> 2; s2: 0.8 vs 0.6 -> 0.8/0.7; s3: 0 vs 0.6 -> 0
BASE = [(0.36 / 0.58 + 2) / 2, 1.0, 0.0, 1.0]
NEW = [0.0, 2.0, 0.8 / 0.7, 0.0]


def test_channel_importance_by_hand():
    measure = ChannelImportance(dim=4, n_classes=4, width=2)
    measure.add(IMAGES * 3, TEXT, LABELS)  # features are L2-normalised first: the scale changes nothing
    result = measure.result()
    assert result["base"].tolist() == pytest.approx(BASE, abs=1e-6)
    assert result["new"].tolist() == pytest.approx(NEW, abs=1e-6)
    ratio = result["ratio"].tolist()
    assert math.isinf(ratio[0]) and ratio[1] == pytest.approx(0.5) and ratio[2] == 0 and math.isinf(ratio[3])


def test_batches_and_per_image_text_give_the_same_measure():
    torch.manual_seed(0)
    image, text, labels = torch.randn(37, 16), torch.randn(6, 16), torch.randint(0, 6, (37,))
    whole = ChannelImportance(16, 6)
    whole.add(image, text, labels)
    parts = ChannelImportance(16, 6)
    for i in range(0, 37, 5):  # batch by batch, the text given per image (CoCoOp's B×C×D)
        parts.add(image[i:i + 5], text.expand(len(image[i:i + 5]), 6, 16), labels[i:i + 5])
    for k in ("base", "new"):
        assert torch.allclose(whole.result()[k], parts.result()[k], atol=1e-12)
    assert whole.width == 2  # D/8


def test_window_ratios_match_the_official_loop():
    """The official code: for each start, the channels (s .. s+w-1) mod D, similarities on them."""
    torch.manual_seed(1)
    image = torch.nn.functional.normalize(torch.randn(9, 8), dim=-1).double()
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1).double()
    labels = torch.randint(0, 3, (9,))
    fast = window_ratios(image, text, labels, 3)
    for s in range(8):
        idx = [(s + k) % 8 for k in range(3)]
        sims = (image[:, idx] @ text[:, idx].t()).clamp_min(0)
        expected = sims.gather(1, labels[:, None])[:, 0] / (sims.mean(1) + 1e-12)
        assert torch.allclose(fast[:, s], expected, atol=1e-12)


def test_a_window_larger_than_the_features_is_refused_with_what_to_pass():
    with pytest.raises(ValueError, match="larger than the features' 4 channels: pass --window"):
        check_width(5, 4)
    with pytest.raises(ValueError, match="positive"):
        check_width(0, 4)


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "out")


def test_runs_that_cannot_be_analysed_are_refused_before_any_compute(root, capsys):
    unfinished = put(root, key("train_base", "dtd", "CoOp"), 70.0, status="running")
    put(root, key("train_base", "dtd", "CoOp", seed=2), 70.0)
    evaluation = put(root, key("test_new", "dtd", "CoOp", seed=2), 60.0)
    with pytest.raises(RunError, match="not finished .status running.: run the command that started it again"):
        check_run(os.path.join(root, unfinished))
    with pytest.raises(RunError, match="evaluated a model trained elsewhere: pass the training run"):
        check_run(os.path.join(root, evaluation))
    with pytest.raises(RunError, match="not a run folder"):
        check_run(root)
    # the CLI checks every folder first: a bad last one fails before the first is built
    good = os.path.join(root, Layout_path(root, key("train_base", "dtd", "CoOp", seed=2)))
    assert channels_cli.main([good, os.path.join(root, unfinished), "--out", str(root)]) == 2
    assert "not finished" in capsys.readouterr().err
    assert channels_cli.main([good, "--window", "4096"]) == 2
    assert "larger than the features' 512 channels" in capsys.readouterr().err


def Layout_path(root, k):
    from dept.store.layout import Layout

    return Layout(root).relative(k)


def test_the_ablation_table_from_fixed_records(root, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for seed, (b, n) in {1: (80.0, 70.0), 2: (82.0, 74.0)}.items():  # λ 0.3 (its own variant folder)
        put_base2new(root, "dtd", seed, b, n, trainer="CoOpDePT", variant=f"{CFG}+DEPT.WEIGHT=0.3",
                     options=("DEPT.WEIGHT", "0.3"))
    for seed, (b, n) in {1: (84.0, 68.0), 2: (86.0, 70.0)}.items():  # λ 0.7: the config's own value
        put_base2new(root, "dtd", seed, b, n, trainer="CoOpDePT")
    args = ablation_cli.build_parser().parse_args(
        ["DEPT.WEIGHT", "0.3", "0.7", "--trainers", "CoOpDePT", "--datasets", "dtd", "--seeds", "1", "2",
         "--config", CFG, "--output", root, "--root", str(data)])
    grids = ablation_cli.plan(args, [], [])
    rows = ablation_rows("DEPT.WEIGHT", ablation_cli.results(args, grids))
    by_value = {r["value"]: r for r in rows if r["dataset"] == "dtd"}
    assert by_value["0.3"]["base"] == pytest.approx(81.0) and by_value["0.3"]["new"] == pytest.approx(72.0)
    assert by_value["0.3"]["hm"] == pytest.approx(2 * 81 * 72 / 153)
    assert by_value["0.7"]["base"] == pytest.approx(85.0) and by_value["0.7"]["new"] == pytest.approx(69.0)
    assert by_value["0.3"]["seeds"] == by_value["0.7"]["seeds"] == 2
    assert by_value["0.3"]["base_std"] == pytest.approx(math.sqrt(2))
    text = render_markdown("DEPT.WEIGHT", rows)
    assert "| 0.3 | CoOpDePT | dtd | 2 | 81.00 ± 1.41 | 72.00 ± 2.83 | 76.24 |" in text


@pytest.mark.parametrize("argv, message", [
    (["DEPT.WEIGHTT", "0.1"], "unknown config key DEPT.WEIGHTT: did you mean DEPT.WEIGHT"),
    (["DEPT.WEIGHT", "0.1", "1.5"], "DEPT.WEIGHT=1.5: .*must be in \\[0, 1\\]"),
    (["DEPT.FUSION", "logits", "sum"], "DEPT.FUSION=sum: .*must be one of"),
    (["DATASET.NAME", "DTD"], "DATASET.NAME is set by the runner"),
    (["shots", "4", "0"], "shots '0': a number of images per class"),
    (["DEPT.WEIGHT", "0.1", "0.1"], "a value is given twice"),
])
def test_a_sweep_that_cannot_run_is_refused_before_anything_runs(tmp_path, capsys, argv, message):
    import re

    out = tmp_path / "out"
    assert ablation_cli.main([*argv, "--demo", "--seeds", "1", "--output", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() or not any(p.name == "dept_run.json" for p in out.rglob("*"))
