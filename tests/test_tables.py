"""One table builder for the runner and the report: the rules that used to differ between them, and
the records that used to give wrong-looking numbers without a word.

Records are written by hand (``records.py``) as ``dept.run.train`` writes them. The runner's tables
are built here through ``dept.results.grid_tables`` with the report's expectation of a folder
(what a runner with the package's configs expects, minus the settings no folder names)."""
import csv
import os

import pytest
from records import CFG, TINY, key, put, put_base2new

from dept.core.build_config import CONFIGS_DIR
from dept.results import report
from dept.results.collect import FolderExpectation, collect
from dept.results.grid_tables import write_grid_tables
from dept.results.tables import build_tables

pytestmark = pytest.mark.dassl


def one(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, len(found), [(r["dataset"], r["trainer"]) for r in rows])
    return found[0]


def report_tables(root):
    return report.write_report(str(root), os.path.join(str(root), "report"), figures=False)


def grid_table(root, protocol, cells, source=None, requested=None):
    """The runner's tables of ``cells`` (as the runner writes them), read back from their CSV files."""
    write_grid_tables(str(root), protocol, cells, FolderExpectation(CONFIGS_DIR), requested or {}, source=source)
    folder = os.path.join(str(root), protocol, "results")
    return {name: list(csv.DictReader(open(os.path.join(folder, name)))) for name in os.listdir(folder)
            if name.endswith(".csv")}


# 1. DePT's gain over the seeds both sides have ----------------------------------------------------------

def test_dept_gain_is_over_the_seeds_both_sides_have_and_says_which(tmp_path):
    """CoOp finished for seed 1, CoOpDePT for seeds 1-3: the gain is CoOpDePT's seed 1 minus CoOp's
    seed 1 (not its 3-seed mean minus CoOp's seed 1), and the row and its note say so."""
    put_base2new(str(tmp_path), "dtd", 1, 80.0, 60.0, trainer="CoOp")
    for seed, (base, new) in {1: (82.0, 61.0), 2: (90.0, 70.0), 3: (91.0, 72.0)}.items():
        put_base2new(str(tmp_path), "dtd", seed, base, new, trainer="CoOpDePT")
    rows = report_tables(tmp_path)[0]["base2new"]
    dept = one(rows, dataset="dtd", trainer="CoOpDePT")
    assert dept["base"] == pytest.approx((82 + 90 + 91) / 3)  # the row itself: every seed it has
    assert (dept["dept_gain_base"], dept["dept_gain_new"]) == (pytest.approx(2.0), pytest.approx(1.0))
    hm = 2 * 82 * 61 / (82 + 61) - 2 * 80 * 60 / 140
    assert dept["dept_gain_hm"] == pytest.approx(hm)
    assert dept["gain_over"] == "1" and dept["gain_partial"]
    assert "DePT gain over seed(s) 1 only, the seeds both have (CoOp: 1; CoOpDePT: 1 2 3)" in dept["note"]
    md = open(tmp_path / "report" / "base2new.md").read()
    assert "+2.00 / +1.00 / " in md and "(over seeds 1)" in md
    # the runner's side-by-side table is the same row
    summary = grid_table(tmp_path, "base2new", [("CoOp", CFG, 16), ("CoOpDePT", CFG, 16)])["summary_shots16.csv"]
    row = next(r for r in summary if r["dataset"] == "dtd" and r["trainer"] == "CoOpDePT")
    assert float(row["dept_gain_base"]) == 2.0 and row["gain_over"] == "1"


def test_no_seed_in_common_gives_no_gain_and_says_why(tmp_path):
    put_base2new(str(tmp_path), "dtd", 1, 80.0, 60.0, trainer="CoOp")
    put_base2new(str(tmp_path), "dtd", 2, 82.0, 61.0, trainer="CoOpDePT")
    dept = one(report_tables(tmp_path)[0]["base2new"], dataset="dtd", trainer="CoOpDePT")
    assert dept["dept_gain_hm"] is None and "DePT gain not computed: no seed both have" in dept["note"]


# 2. Transfer tables of another source: no paper figure beside any cell -----------------------------------

def test_a_source_other_than_imagenet_gets_no_paper_figures_in_the_runners_table_or_the_reports(tmp_path):
    root = str(tmp_path)
    for seed in (1, 2):
        put(root, key("train", "caltech101", seed=seed), 90.0 + seed)
        for target in ("imagenet", "dtd"):
            put(root, key("eval", target, seed=seed, source="caltech101"), 50.0 + seed)
    tables = grid_table(tmp_path, "cross_dataset", [("CoOp", CFG, 16)], source="caltech101")
    rows = tables[f"CoOp_{CFG}_shots16_from_caltech101.csv"]
    assert {(r["dataset"], r["role"]) for r in rows} == {("caltech101", "source"), ("imagenet", "target"),
                                                         ("dtd", "target"), ("average", "average")}
    for row in rows:
        assert row["paper"] == "" and row["vs_paper"] == "", row
        assert "trained on caltech101 (paper: imagenet)" in row["note"], row
    report_rows = report_tables(tmp_path)[0]["cross_dataset"]
    assert all(r["paper"] is None for r in report_rows)


# 3. One seed: no spread ---------------------------------------------------------------------------------

def test_one_seed_shows_no_spread_in_the_runners_table_and_the_reports(tmp_path):
    put_base2new(str(tmp_path), "dtd", 1, 80.0, 60.0)
    put(str(tmp_path), key("train", "dtd", shots=2), 70.0)
    runner = grid_table(tmp_path, "base2new", [("CoOp", CFG, 16)])[f"CoOp_{CFG}_shots16.csv"]
    assert runner[0]["base_std"] == "" and runner[0]["new_std"] == ""
    tables, *_ = report_tables(tmp_path)
    assert tables["base2new"][0]["base_std"] is None and tables["few_shot"][0]["std"] is None
    for name in ("base2new.md", "few_shot.md"):
        row = next(line for line in open(tmp_path / "report" / name) if line.startswith("| dtd |"))
        assert "±" not in row, row
    md = open(os.path.join(tmp_path, "base2new", "results", f"CoOp_{CFG}_shots16.md")).read()
    row = next(line for line in md.splitlines() if line.startswith("| dtd |"))
    assert "| 80.00 (paper" in row and "±" not in row


# 4. Few-shot: one rule for the runner and the report -----------------------------------------------------

def test_the_runners_few_shot_table_is_the_reports_restricted_to_its_cell(tmp_path):
    """A cross-dataset ImageNet run at 16 shots beside few-shot runs at 1 and 2 shots: neither the
    runner's few-shot table nor the report's counts it (no few-shot run at 16 shots); beside a
    16-shot few-shot run, both do."""
    root = str(tmp_path)
    put(root, key("train", "imagenet"), 70.0)
    put(root, key("eval", "caltech101"), 90.0)
    for shots in (1, 2):
        put(root, key("train", "dtd", shots=shots), 40.0 + shots)

    def runner_rows():
        return [(r["dataset"], r["shots"], r["accuracy"]) for r in
                grid_table(tmp_path, "few_shot", [("CoOp", CFG, 1), ("CoOp", CFG, 2)])[f"CoOp_{CFG}.csv"]]

    def report_rows():
        return [(r["dataset"], str(r["shots"]), str(round(r["accuracy"], 2)) if r["accuracy"] is not None else "")
                for r in report_tables(tmp_path)[0]["few_shot"]]

    assert runner_rows() == report_rows() == [("dtd", "1", "41.0"), ("dtd", "2", "42.0")]
    put(root, key("train", "dtd", shots=16), 50.0)
    assert ("imagenet", "16", "70.0") in runner_rows()
    assert ("imagenet", "16", "70.0") in report_rows()


# 8. A damaged record is one run not counted ---------------------------------------------------------------

@pytest.mark.parametrize("result, why", [
    ({"split": "test", "accuracy": float("nan")}, "its accuracy is not a percentage (nan)"),
    ({"split": "test", "accuracy": "85.3"}, "its accuracy is not a number ('85.3')"),
    ({"split": "test", "accuracy": 185.0}, "its accuracy is not a percentage (185.0)"),
    ("85.3", "its result is not a mapping (str)"),
])
def test_a_damaged_accuracy_is_one_run_not_counted_and_listed_with_why(tmp_path, result, why):
    put_base2new(str(tmp_path), "dtd", 1, 80.0, 60.0)
    put_base2new(str(tmp_path), "dtd", 2, 82.0, 62.0)
    put(str(tmp_path), key("test_new", "dtd", seed=2), None, result=result)
    assert report.main([str(tmp_path), "--no-figures"]) == 0
    tables, runs, *_ = report_tables(tmp_path)
    dtd = one(tables["base2new"], dataset="dtd")
    assert (dtd["seeds"], dtd["base"], dtd["new"]) == (1, 80.0, 60.0)
    assert why in dtd["note"]
    missing = open(tmp_path / "report" / "missing.md").read()
    assert "base2new/test_new/dtd/shots_16/CoOp/vit_b16_ep10_bs4_lr35/seed2" in missing and why in missing


# 9. One verification: a record copied into another config's folder is not counted --------------------------

def test_a_record_with_other_settings_than_its_folder_is_not_counted_by_the_report(tmp_path):
    """Runs trained with DEPT.WEIGHT 0.2, copied into the plain config's folder: the report refuses
    them as the runner does (their settings name another variant)."""
    put_base2new(str(tmp_path), "dtd", 1, 80.0, 60.0, trainer="CoOpDePT")
    put_base2new(str(tmp_path), "dtd", 2, 95.0, 40.0, trainer="CoOpDePT", options=("DEPT.WEIGHT", "0.2"))
    dtd = one(report_tables(tmp_path)[0]["base2new"], dataset="dtd")
    assert (dtd["seeds"], dtd["seed_ids"], dtd["base"]) == (1, "1", 80.0)
    assert "its record has other settings than its folder stands for: options: '+DEPT.WEIGHT=0.2' in its " \
           "record, '(none)' for its folder" in dtd["note"]


def test_a_yaml_edited_since_a_run_makes_it_other_settings(tmp_path):
    configs = tmp_path / "configs"
    import shutil

    shutil.copytree(CONFIGS_DIR, configs)
    put_base2new(str(tmp_path / "out"), "dtd", 1, 80.0, 60.0)
    path = configs / "trainers" / "CoOp" / f"{CFG}.yaml"
    path.write_text(path.read_text().replace("LR: 0.0035", "LR: 0.01"))
    runs, _ = collect(str(tmp_path / "out"), str(configs))
    assert all("OPTIM.LR" in r.problem for r in runs), [r.problem for r in runs]
    runs, _ = collect(str(tmp_path / "out"))
    assert all(r.counted for r in runs)


def test_an_unverifiable_folder_says_how_to_verify_it(tmp_path):
    put_base2new(str(tmp_path), "dtd", 1, 80.0, 60.0)
    runs, _ = collect(str(tmp_path), str(tmp_path / "no_configs"))
    assert all("its settings cannot be checked (no config file" in r.problem and "--configs-dir" in r.problem
               for r in runs)


def test_the_runners_tables_show_what_it_asked_for_that_is_missing(tmp_path):
    put_base2new(str(tmp_path), "dtd", 1, 80.0, 60.0, clip=TINY)
    rows = grid_table(tmp_path, "base2new", [("CoOp", CFG, 16)],
                      requested={"seeds": [1, 2], "datasets": ["dtd", "eurosat"]})[f"CoOp_{CFG}_shots16.csv"]
    assert [(r["dataset"], r["seeds"], r["missing_seeds"]) for r in rows] == [
        ("dtd", "1", "2"), ("eurosat", "0", "1 2"), ("average", "1", "")]
    tables, absent = build_tables(collect(str(tmp_path))[0], str(tmp_path))
    assert [r["dataset"] for r in tables["base2new"]] == ["dtd"] and not absent  # the report asks for nothing


# Found by review: what else could give a wrong-looking number without a word ---------------------------

def test_a_config_edited_under_its_own_name_gets_no_paper_figures(tmp_path):
    """A --configs-dir copy of the paper's config with other settings: its runs verify against it,
    but they are not the paper's setting, whatever the config's name."""
    import shutil

    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS_DIR, configs)
    path = configs / "trainers" / "CoOp" / f"{CFG}.yaml"
    path.write_text(path.read_text().replace("MAX_EPOCH: 10", "MAX_EPOCH: 1"))
    out = tmp_path / "out"
    put_base2new(str(out), "dtd", 1, 96.0, 70.0, options=("OPTIM.MAX_EPOCH", "1"))
    runs, _ = collect(str(out), str(configs))
    assert all(r.counted for r in runs)
    row = build_tables(runs, str(out))[0]["base2new"][0]
    assert row["paper_base"] is None
    assert "settings not the package's vit_b16_ep10_bs4_lr35.yaml (OPTIM.MAX_EPOCH: 1 here, 10 there)" in row["note"]


def test_no_dept_gain_between_runs_on_other_clip_files(tmp_path):
    from records import VIT_B16

    root = str(tmp_path)
    for trainer, path in (("CoOp", "/weights/openai.pt"), ("CoOpDePT", "/weights/finetuned.pt")):
        put_base2new(root, "dtd", 1, 80.0, 60.0, trainer=trainer, clip=dict(VIT_B16, path=path),
                     options=("MODEL.BACKBONE.PATH", path))
    dept = one(report_tables(tmp_path)[0]["base2new"], dataset="dtd", trainer="CoOpDePT")
    assert dept["dept_gain_hm"] is None
    assert "DePT gain not computed: CoOp and CoOpDePT ran on other CLIPs (ViT-B/16 /weights/openai.pt / " \
           "ViT-B/16 /weights/finetuned.pt)" in dept["note"]


@pytest.mark.parametrize("field, value, says", [
    ("status", ["finished"], "status is a list"),
    ("checkpoint", "model.pth.tar-10", "checkpoint is a str"),
    ("notes", "UNTRAINED", "notes is a str"),
    ("config", {"SEED": 1}, "config is a dict"),
])
def test_a_record_of_odd_shape_is_one_run_not_counted(tmp_path, field, value, says):
    import json

    put_base2new(str(tmp_path), "dtd", 1, 80.0, 60.0)
    put_base2new(str(tmp_path), "dtd", 2, 82.0, 62.0)
    path = os.path.join(str(tmp_path), "base2new", "test_new", "dtd", "shots_16", "CoOp", CFG, "seed2", "dept_run.json")
    record = json.load(open(path))
    record[field] = value
    json.dump(record, open(path, "w"))
    tables, runs, *_ = report_tables(tmp_path)
    dtd = one(tables["base2new"], dataset="dtd")
    assert dtd["seeds"] == 1 and says in dtd["note"]
    assert "| unreadable record |" in open(tmp_path / "report" / "missing.md").read()


def test_a_config_folder_with_a_broken_yaml_leaves_its_runs_unverified_not_the_report_dead(tmp_path):
    import shutil

    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS_DIR, configs)
    (configs / "trainers" / "CoOp" / f"{CFG}.yaml").write_text("OPTIM: [unclosed\n")
    put_base2new(str(tmp_path / "out"), "dtd", 1, 80.0, 60.0)
    runs, _ = collect(str(tmp_path / "out"), str(configs))
    assert runs and all("its settings cannot be checked" in r.problem for r in runs)
