"""The results table from run records: every seed found, notes, and the paper's figures only in its setting."""
import csv
import io
import os

import pytest

from dept.results import (
    PAPER_DATASETS,
    VIT_B16_ARCH,
    SeedRuns,
    build_table,
    paper_base2new,
    render_csv,
    render_markdown,
    write_tables,
)

VIT_B16 = {"name": "ViT-B/16", "path": None, "arch": dict(VIT_B16_ARCH)}
TINY = {"name": "tiny-random", "path": "/x/tiny_clip.pt",
        "arch": {"embed_dim": 32, "vision_width": 64, "vision_layers": 2, "vision_patch_size": 16,
                 "image_resolution": 32, "transformer_width": 64, "transformer_layers": 2}}
PAPER_CFG = "vit_b16_ep10_bs4_lr35"


def record(accuracy, clip=VIT_B16, notes=()):
    return {"status": "finished", "result": {"split": "test", "accuracy": accuracy}, "clip": clip,
            "notes": list(notes)}


def seed(s, base, new, clip=VIT_B16, notes=(), problems=()):
    return SeedRuns.from_records(s, record(base, clip, notes), None if new is None else record(new, clip),
                                 problems)


def row(rows, dataset):
    return next(r for r in rows if r["dataset"] == dataset)


def test_rows_are_seed_means_and_say_how_many_seeds_and_which():
    rows = build_table({"dtd": [seed(1, 80.0, 50.0), seed(2, 82.0, 54.0), seed(3, 84.0, 58.0)],
                        "eurosat": [seed(1, 90.0, 70.0)]}, "CoOpDePT", 16, PAPER_CFG, PAPER_CFG,
                       requested_seeds=[1])
    dtd = row(rows, "dtd")
    assert (dtd["seeds"], dtd["seed_ids"], dtd["base"], dtd["new"]) == (3, "1 2 3", 82.0, 54.0)
    assert dtd["hm"] == pytest.approx(2 * 82 * 54 / (82 + 54))
    avg = row(rows, "average")
    assert (avg["base"], avg["new"], avg["seeds"]) == (86.0, 62.0, 1)
    assert "datasets have different seeds" in avg["note"]


def test_a_seed_with_base_but_no_new_and_a_missing_requested_seed_are_noted():
    rows = build_table({"dtd": [seed(1, 80.0, 50.0), seed(2, 70.0, None, problems=["test_new: interrupted"])]},
                       "CoOpDePT", 16, PAPER_CFG, PAPER_CFG, requested_seeds=[1, 2, 3])
    dtd = row(rows, "dtd")
    assert (dtd["seeds"], dtd["base"], dtd["new"]) == (1, 80.0, 50.0)  # H from seeds with both
    assert "seed 2: base 70.00 but no new result (test_new: interrupted)" in dtd["note"]
    assert "requested seed 3 not finished" in dtd["note"]


def test_average_row_says_when_it_averages_fewer_datasets_than_requested():
    rows = build_table({"dtd": [seed(1, 80.0, 50.0)], "eurosat": []}, "CoOpDePT", 16, PAPER_CFG, PAPER_CFG)
    assert row(rows, "eurosat")["base"] is None and "no finished seed" in row(rows, "eurosat")["note"]
    avg = row(rows, "average")
    assert avg["base"] == 80.0
    assert "averages 1 of 2 requested datasets (no result: eurosat)" in avg["note"]


def test_record_notes_go_into_the_note_column_and_loudly_into_the_markdown():
    untrained = "UNTRAINED: evaluated as initialised (--untrained), no checkpoint loaded"
    rows = build_table({"dtd": [seed(1, 80.0, 50.0, notes=[untrained]), seed(2, 80.0, 50.0, notes=[untrained])]},
                       "CoOpDePT", 16, PAPER_CFG, PAPER_CFG)
    assert f"{untrained} (seed 1 train_base, seed 2 train_base)" in row(rows, "dtd")["note"]
    md = render_markdown(rows, "t")
    assert "**WARNING" in md and f"- **dtd**: {untrained}" in md
    assert untrained in next(line for line in md.splitlines() if line.startswith("| dtd |"))


def test_paper_figures_appear_in_the_paper_setting():
    paper = paper_base2new()
    per_dataset = {d: [seed(s, 80.0 + s, 60.0 + s) for s in (1, 2, 3)] for d in PAPER_DATASETS}
    rows = build_table(per_dataset, "CoOpDePT", 16, PAPER_CFG, PAPER_CFG, requested_seeds=[1, 2, 3])
    dtd = row(rows, "dtd")
    assert (dtd["paper_base"], dtd["paper_new"], dtd["paper_hm"]) == (83.20, 56.13, 67.04)
    assert (dtd["paper_base"], dtd["paper_new"], dtd["paper_hm"]) == paper[("CoOp", 1, "dtd")]
    avg = row(rows, "average")
    assert (avg["paper_base"], avg["paper_new"], avg["paper_hm"]) == paper[("CoOp", 1, "average")]
    assert "omitted" not in avg["note"] and "omitted" not in dtd["note"]
    coop = build_table({"dtd": [seed(1, 80.0, 60.0)]}, "CoOp", 16, PAPER_CFG, PAPER_CFG)
    assert row(coop, "dtd")["paper_base"] == paper[("CoOp", 0, "dtd")][0]


@pytest.mark.parametrize("change, reason", [
    (dict(shots=2), "2 shots (paper: 16)"),
    (dict(cfg_name="demo_tiny"), "config demo_tiny (paper: vit_b16_ep10_bs4_lr35)"),
    (dict(variant_options=[("DEPT.WEIGHT", 0.2)]), "options DEPT.WEIGHT=0.2 (paper: none)"),
    (dict(clip=TINY), "CLIP is not ViT-B/16 (tiny-random)"),
    (dict(clip={**VIT_B16, "arch": {**VIT_B16_ARCH, "vision_layers": 2}}),
     "CLIP named ViT-B/16 does not have its shape (vision_layers 2)"),
    (dict(clip=None), "the CLIP used was not recorded"),
    (dict(trainer="MyMethod"), "the paper has no MyMethod row"),
])
def test_paper_figures_are_omitted_outside_the_paper_setting_and_the_table_says_why(change, reason):
    setting = dict(trainer="CoOpDePT", shots=16, cfg_name=PAPER_CFG, variant_options=())
    clip = change.pop("clip", VIT_B16)
    setting.update(change)
    rows = build_table({"dtd": [seed(1, 80.0, 60.0, clip=clip)]}, setting["trainer"], setting["shots"],
                       setting["cfg_name"], PAPER_CFG, setting["variant_options"])
    dtd = row(rows, "dtd")
    assert (dtd["paper_base"], dtd["paper_new"], dtd["paper_hm"]) == (None, None, None)
    assert "paper figures omitted: " in dtd["note"] and reason in dtd["note"]
    assert reason in render_markdown(rows, "t")


def test_paper_average_needs_all_eleven_datasets():
    rows = build_table({"dtd": [seed(1, 80.0, 60.0)], "eurosat": [seed(1, 90.0, 70.0)]}, "CoOpDePT", 16,
                       PAPER_CFG, PAPER_CFG)
    assert row(rows, "dtd")["paper_base"] == 83.20  # a dataset row in the paper's setting keeps its figures
    avg = row(rows, "average")
    assert avg["paper_base"] is None
    assert "averages 2 datasets, not the paper's 11 (missing: imagenet" in avg["note"]


def test_a_dataset_the_paper_does_not_have_gets_no_paper_figures():
    rows = build_table({"digits": [seed(1, 80.0, 60.0)]}, "CoOpDePT", 16, PAPER_CFG, PAPER_CFG)
    assert row(rows, "digits")["paper_base"] is None
    assert "the paper has no digits row" in row(rows, "digits")["note"]


def test_tables_are_written_whole_over_a_truncated_one(tmp_path):
    csv_path, md_path = tmp_path / "r" / "t.csv", tmp_path / "r" / "t.md"
    os.makedirs(csv_path.parent)
    csv_path.write_text("dataset,seeds,ba")  # an old table cut short
    rows = build_table({"dtd": [seed(1, 80.0, 60.0, clip=TINY, notes=["a note, with a comma | and a bar"])]},
                       "CoOpDePT", 2, "demo_tiny", PAPER_CFG)
    text = write_tables(rows, str(csv_path), str(md_path), "title")
    assert md_path.read_text() == text and csv_path.read_text() == render_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert parsed[0]["dataset"] == "dtd" and parsed[0]["seeds"] == "1" and parsed[0]["seed_ids"] == "1"
    assert "a note, with a comma | and a bar" in parsed[0]["note"]
    assert "and a bar" in text and "\\|" in text  # the bar cannot break the markdown row
    assert sorted(os.listdir(csv_path.parent)) == ["t.csv", "t.md"]  # no temporary files left


def test_the_summary_puts_every_method_side_by_side_with_the_paper_and_the_zero_shot_row_first():
    import dept  # noqa: F401  (registers the trainers, whose classes say which method each is)
    from dept.results import SUMMARY_COLUMNS, build_summary

    datasets = ("dtd", "eurosat")

    def table(trainer, base, new):
        return build_table({d: [seed(1, base, new), seed(2, base, new), seed(3, base, new)] for d in datasets},
                           trainer, 16, PAPER_CFG, PAPER_CFG, requested_seeds=[1, 2, 3])

    tables = {"CoOp": table("CoOp", 80.0, 60.0), "CoOpDePT": table("CoOpDePT", 84.0, 62.0),
              "ZeroshotCLIP": table("ZeroshotCLIP", 70.0, 72.0)}
    rows = build_summary(tables)
    assert [(r["dataset"], r["method"]) for r in rows] == [
        ("dtd", "ZeroshotCLIP"), ("dtd", "CoOp"), ("eurosat", "ZeroshotCLIP"), ("eurosat", "CoOp"),
        ("average", "ZeroshotCLIP"), ("average", "CoOp")]
    coop = rows[1]
    assert (coop["base"], coop["new"], coop["dept_base"], coop["dept_new"]) == (80.0, 60.0, 84.0, 62.0)
    assert coop["dept_gain_hm"] == pytest.approx(coop["dept_hm"] - coop["hm"])
    paper = paper_base2new()
    assert coop["paper_hm"] == paper[("CoOp", 0, "dtd")][2] and coop["paper_dept_hm"] == paper[("CoOp", 1, "dtd")][2]
    assert coop["dept_hm_vs_paper"] == pytest.approx(coop["dept_hm"] - coop["paper_dept_hm"])
    zs = rows[0]
    assert zs["hm"] == pytest.approx(2 * 70 * 72 / 142) and zs["dept_hm"] is None and zs["paper_hm"] is None
    assert "ZeroshotCLIP: paper figures omitted: the paper has no ZeroshotCLIP row" in zs["note"]
    avg = rows[-1]
    assert avg["paper_hm"] is None and "averages 2 datasets, not the paper's 11" in avg["note"]
    text = render_markdown(rows, "summary", SUMMARY_COLUMNS)
    assert text.splitlines()[2] == "| " + " | ".join(SUMMARY_COLUMNS) + " |"
