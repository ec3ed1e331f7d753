"""``classes.md`` and ``prompts.md`` of the report: per-class accuracy of DePT beside its method, and
the words nearest to each learned context vector, from a fixed root of run records
(``records.py``: every record as ``dept.run.train`` writes it, so it verifies as a real one does).

The root, with per-class numbers chosen by hand:

* base-to-new dtd, base classes: CoOp seeds 1 2 3, CoOpDePT seeds 1 2 (seed 3 is CoOp's only);
  over seeds 1 2, DePT gains on six classes (the top five are listed, in order), loses on two,
  ties on none;
* dtd new classes: CoOpDePT's seed 1 record has no per-class accuracies (an older run), so only
  seed 2 is paired;
* cross-dataset: ImageNet models (old records, no per-class accuracies) evaluated on caltech101;
* CoOp's train_base seed 1 has prompt words (one with a "|" in a token), seed 2 none.
"""
import os

import pytest
from records import TINY, key, put

from dept.results import classes, report

pytestmark = pytest.mark.dassl

BASE_CLASSES = ["banded", "braided", "cracked", "dotted", "frilly", "grid", "honeycombed", "interlaced"]
# {trainer: {seed: accuracy per class}}; CoOp's mean over seeds 1 2 is 51 61 71 81 89 41 31 21, and
# CoOpDePT's (seeds 1 2) 61 63 77 77 90 33 34 21.5: deltas +10 +2 +6 -4 +1 -8 +3 +0.5.
BASE = {
    "CoOp": {1: [50, 60, 70, 80, 90, 40, 30, 20], 2: [52, 62, 72, 82, 88, 42, 32, 22],
             3: [100] * 8},  # seed 3: CoOp only, so left out (it would move every CoOp mean)
    "CoOpDePT": {1: [60, 62, 76, 76, 89, 32, 33, 20.5], 2: [62, 64, 78, 78, 91, 34, 35, 22.5]},
}
NEW_CLASSES = ["knitted", "lacy"]
NEW = {"CoOp": {1: [10, 10], 2: [40, 50]}, "CoOpDePT": {1: None, 2: [45, 50]}}  # None: a record without
WORDS = [[{"token": "photo", "distance": 0.5123}, {"token": "a|b", "distance": 0.6}],
         [{"token": "texture", "distance": 0.25}, {"token": "`", "distance": 0.75}]]


def per_class(names, values, n=40):
    return [{"class": c, "n": n, "accuracy": float(v)} for c, v in zip(names, values)]


def mean(values):
    return sum(values) / len(values)


def build_root(root):
    for trainer, seeds in BASE.items():
        for seed, values in seeds.items():
            put(root, key("train_base", "dtd", trainer, seed), mean(values), per_class=per_class(BASE_CLASSES, values),
                prompt_words=WORDS if (trainer, seed) == ("CoOp", 1) else None)
    for trainer, seeds in NEW.items():
        for seed, values in seeds.items():
            put(root, key("test_new", "dtd", trainer, seed), 50.0 if values is None else mean(values),
                per_class=None if values is None else per_class(NEW_CLASSES, values))
    for trainer in ("CoOp", "CoOpDePT"):
        put(root, key("train", "imagenet", trainer, 1), 70.0)  # old records: no per_class, no prompt words
        put(root, key("eval", "caltech101", trainer, 1), 90.0,
            per_class=per_class(["face", "leopard"], [90, 80] if trainer == "CoOp" else [85, 95], n=10))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("output"))
    build_root(root)
    out = os.path.join(root, "report")
    runs = report.write_report(root, out, figures=False)[1]
    return root, out, runs


def one(comparisons, **match):
    found = [c for c in comparisons if all(c.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(c["stage"], c["dataset"]) for c in comparisons])
    return found[0]


def read(out, name):
    with open(os.path.join(out, name)) as f:
        return f.read()


def test_gains_and_losses_in_order_paired_over_the_common_seeds(built):
    comparisons, _ = classes.compare_classes(built[2])
    base = one(comparisons, stage="train_base", dataset="dtd")
    assert (base["plain"], base["dept"], base["method"], base["shots"]) == ("CoOp", "CoOpDePT", "CoOp", 16)
    assert base["seeds"] == [1, 2] and base["left_out"] == ["seed 3 (only CoOp has it)"]
    by_class = {c["class"]: c for c in base["classes"]}
    assert [c["class"] for c in base["classes"]] == BASE_CLASSES  # label order kept
    assert (by_class["banded"]["plain"], by_class["banded"]["dept"]) == (pytest.approx(51.0), pytest.approx(61.0))
    assert [(c["class"], round(c["delta"], 6)) for c in base["gains"]] == [
        ("banded", 10), ("cracked", 6), ("honeycombed", 3), ("braided", 2), ("frilly", 1)]  # interlaced +0.5: 6th
    assert [(c["class"], round(c["delta"], 6)) for c in base["losses"]] == [("grid", -8), ("dotted", -4)]


def test_a_record_without_per_class_is_skipped_and_said(built):
    comparisons, notes = classes.compare_classes(built[2])
    new = one(comparisons, stage="test_new", dataset="dtd")
    assert new["seeds"] == [2] and new["left_out"] == ["seed 1 (no per-class accuracies in CoOpDePT's record)"]
    assert [(c["class"], c["delta"]) for c in new["classes"]] == [("knitted", 5.0), ("lacy", 0.0)]
    assert [c["class"] for c in new["gains"]] == ["knitted"] and new["losses"] == []
    # the DePT test_new seed 1 and the two ImageNet training runs: counted, without per_class
    assert notes == ["3 counted evaluation record(s) have no per-class accuracies (runs from before dept recorded "
                     "them) and are skipped"]
    assert not [c for c in comparisons if c["dataset"] == "imagenet"]  # neither side has any: only the note
    transfer = one(comparisons, stage="eval", dataset="caltech101")
    assert [c["class"] for c in transfer["gains"]] == ["leopard"] and transfer["losses"][0]["delta"] == -5.0


def test_classes_md(built):
    md = read(built[1], "classes.md")
    assert md.startswith("# Per-class accuracy: where DePT gains and loses")
    assert "- 3 counted evaluation record(s) have no per-class accuracies" in md
    base = md[md.index("## Base-to-new generalisation: dtd, base classes"):md.index("## Base-to-new generalisation: "
                                                                                    "dtd, new classes")]
    assert "### CoOp → CoOpDePT, vit_b16_ep10_bs4_lr35, 16 shots, 2 seed(s) (1 2)" in base
    assert "Left out: seed 3 (only CoOp has it)." in base
    assert "8 classes: DePT higher on 6, lower on 2, equal on 0; mean over classes 55.75 → 57.06." in base
    rows = [line for line in base.splitlines() if line.startswith(("| gain", "| loss"))]
    assert rows[0] == "| gain | banded | 40 | 51.00 | 61.00 | +10.00 |"
    assert [r.split(" | ")[1] for r in rows] == ["banded", "cracked", "honeycombed", "braided", "frilly", "grid",
                                                 "dotted"]
    assert "## Cross-dataset transfer: caltech101, model trained on imagenet" in md
    assert "seed 1 (no per-class accuracies in CoOpDePT's record)" in md
    index = read(built[1], "README.md")
    assert "[Per-class accuracy: where DePT gains and loses](classes.md): 3 comparisons" in index
    assert "(prompts.md): 1 run" in index


def test_prompts_md(built):
    md = read(built[1], "prompts.md")
    assert "## CoOp, vit_b16_ep10_bs4_lr35, 16 shots" in md
    assert "| dtd (base classes) | 1 | 1 | `photo` 0.512, `a\\|b` 0.600 |" in md
    assert "| dtd (base classes) | 1 | 2 | `texture` 0.250, `` ` `` 0.750 |" in md
    assert "CoOpDePT" not in md  # no prompt words recorded for it
    assert "- 6 counted training run(s) have no prompt words" in md  # CoOp 2 3, CoOpDePT 1 2, ImageNet x2


def test_old_records_only_give_files_that_say_why_they_are_empty(tmp_path):
    for trainer in ("CoOp", "CoOpDePT"):
        put(str(tmp_path), key("train", "dtd", trainer, 1, shots=4), 70.0)
    report.write_report(str(tmp_path), str(tmp_path / "report"), figures=False)
    md = read(tmp_path / "report", "classes.md")
    assert md.splitlines()[-1] == ("Empty: no evaluation record has per-class accuracies: runs from before "
                                   "dept recorded them (result.per_class) have none; re-run or re-evaluate them "
                                   "to get them.")
    assert read(tmp_path / "report", "prompts.md").splitlines()[-1].startswith(
        "Empty: no training record has prompt words: only methods with a learned text context record them")
    index = read(tmp_path / "report", "README.md")
    assert "(classes.md): empty: no evaluation record has per-class accuracies" in index


def test_two_sides_on_other_clips_are_not_compared(tmp_path):
    for trainer, clip in (("CoOp", None), ("CoOpDePT", TINY)):
        extra = {"clip": clip} if clip else {}
        put(str(tmp_path), key("train", "dtd", trainer, 1, shots=4), 70.0, per_class=per_class(["a"], [70]), **extra)
    report.write_report(str(tmp_path), str(tmp_path / "report"), figures=False)
    md = read(tmp_path / "report", "classes.md")
    assert "Not compared: the two sides ran on other CLIPs (ViT-B/16 (by name) / tiny-random " \
           "/x/tiny_clip.pt)." in md
    assert "DEMO" in md


def test_the_report_command_writes_both_files(tmp_path, capsys):
    build_root(str(tmp_path))
    out = tmp_path / "elsewhere"
    assert report.main([str(tmp_path), "--out", str(out), "--no-figures"]) == 0
    assert {"classes.md", "prompts.md"} <= set(os.listdir(out))
    assert "| gain | banded | 40 | 51.00 | 61.00 | +10.00 |" in read(out, "classes.md")
    assert "`photo` 0.512" in read(out, "prompts.md")
    assert "| gain | banded" not in capsys.readouterr().out  # written, not printed
