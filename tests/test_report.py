"""``python -m dept report``: tables and figures from a fixed output root of run records.

The root is written record by record (no training; ``records.py``: every record as
``dept.run.train`` writes it, so it verifies as a real one does): base-to-new CoOp and CoOpDePT on
two datasets and three seeds, with a failed test_new, a seed that never ran and a CLIP that is not
ViT-B/16 elsewhere; cross-dataset and DG evaluations with an evaluation of another checkpoint and a
run still "running"; few-shot runs at 1, 2 and 4 shots. Every number is checked against what it
must be by hand.
"""
import csv
import math
import os
import statistics
import subprocess
import sys

import pytest
from conftest import REPO
from records import CFG, VIT_B16, key, put, put_base2new

from dept.results import paper, report
from dept.results.render import TITLES
from dept.results.tables import COLUMNS, stats
from dept.store.protocols import CROSS_DATASET_TARGETS, DG_TARGETS
from dept.store.record import write_record

pytestmark = pytest.mark.dassl

# base2new: {(trainer, dataset): {seed: (base, new)}}. CoOp dtd seed 2's test_new fails; CoOpDePT
# eurosat has no seed 3 at all.
BASE2NEW = {
    ("CoOp", "dtd"): {1: (80.0, 50.0), 2: (81.0, None), 3: (82.0, 54.0)},
    ("CoOp", "eurosat"): {1: (90.0, 60.0), 2: (91.0, 62.0), 3: (92.0, 64.0)},
    ("CoOpDePT", "dtd"): {1: (83.0, 55.0), 2: (84.0, 56.0), 3: (85.0, 57.0)},
    ("CoOpDePT", "eurosat"): {1: (93.0, 65.0), 2: (95.0, 67.0)},
}
# Trained on ImageNet (16 shots), then evaluated: {(trainer, dataset): [seed 1, 2, 3]}.
SOURCE = {"CoOp": [71.0, 72.0, 73.0], "CoOpDePT": [72.0, 73.0, 74.0]}
TARGETS = {
    ("CoOp", "caltech101"): [93.0, 94.0, 95.0], ("CoOpDePT", "caltech101"): [94.0, 94.0, 94.0],
    ("CoOp", "oxford_pets"): [89.0, 90.0, 91.0], ("CoOpDePT", "oxford_pets"): [90.0, 91.0, 99.0],  # seed 3: bad sha
    ("CoOp", "imagenetv2"): [64.0, 64.0, 64.0], ("CoOpDePT", "imagenetv2"): [65.0, 65.0, 65.0],
    ("CoOp", "imagenet_sketch"): [48.0, 49.0, None], ("CoOpDePT", "imagenet_sketch"): [50.0, 50.0, 50.0],  # running
}
FEW_SHOTS = (1, 2, 4)


def build_root(root):
    for (trainer, dataset), seeds in BASE2NEW.items():
        for seed, (base, new) in seeds.items():
            put(root, key("train_base", dataset, trainer, seed), base)
            if new is None:
                put(root, key("test_new", dataset, trainer, seed), None, status="failed",
                    error="RuntimeError: CUDA out of memory")
            else:
                put(root, key("test_new", dataset, trainer, seed), new)
    for trainer, accuracies in SOURCE.items():
        for seed, accuracy in enumerate(accuracies, 1):
            put(root, key("train", "imagenet", trainer, seed), accuracy)
    for (trainer, dataset), accuracies in TARGETS.items():
        for seed, accuracy in enumerate(accuracies, 1):
            bad = (trainer, dataset, seed) == ("CoOpDePT", "oxford_pets", 3)
            put(root, key("eval", dataset, trainer, seed), accuracy, sha="another-checkpoint" if bad else None,
                status="running" if accuracy is None else "finished")
    for trainer, gain in (("CoOp", 0.0), ("CoOpDePT", 2.0)):
        for dataset, start in (("dtd", 40.0), ("eurosat", 60.0)):
            for i, shots in enumerate(FEW_SHOTS):
                for seed in (1, 2, 3):
                    put(root, key("train", dataset, trainer, seed, shots=shots), start + 5 * i + gain + (seed - 2))
    # Not runs of any table: a record outside the layouts, the demo's folder, the runner's own tables.
    write_record(os.path.join(root, "misc", "copied"), {"status": "finished"})
    write_record(os.path.join(root, "demo", "CoOp", "demo_tiny_16shots", "seed1"), {"status": "finished"})
    write_record(os.path.join(root, "dtd", "results", "x_16shots", "seed1"), {"status": "finished"})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The report of the fixed root, written once for the module: (root, out, tables, printed text)."""
    root = str(tmp_path_factory.mktemp("output"))
    build_root(root)
    out = os.path.join(root, "report")
    tables, runs, absent, text = report.write_report(root, out)
    return root, out, tables, text


def one(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, len(found))
    return found[0]


def hm(base, new):
    return 2 * base * new / (base + new)


def write(root, figures=False):
    return report.write_report(str(root), os.path.join(str(root), "report"), figures=figures)[0]


# -- base to new -------------------------------------------------------------------------------------

def test_base2new_cells_are_seed_means_with_std_and_h(built):
    rows = built[2]["base2new"]
    dtd = one(rows, dataset="dtd", trainer="CoOp")
    assert (dtd["method"], dtd["dept"], dtd["config"], dtd["shots"]) == ("CoOp", 0, CFG, 16)
    assert (dtd["seeds"], dtd["expected_seeds"], dtd["seed_ids"], dtd["missing_seeds"]) == (2, 3, "1 3", "2")
    assert dtd["base"] == pytest.approx(81.0) and dtd["base_std"] == pytest.approx(math.sqrt(2))
    assert dtd["new"] == pytest.approx(52.0) and dtd["new_std"] == pytest.approx(math.sqrt(8))
    assert dtd["hm"] == pytest.approx(hm(81, 52))
    eurosat = one(rows, dataset="eurosat", trainer="CoOp")
    assert (eurosat["seeds"], eurosat["base"], eurosat["base_std"], eurosat["new"], eurosat["new_std"]) == \
        (3, pytest.approx(91.0), pytest.approx(1.0), pytest.approx(62.0), pytest.approx(2.0))
    dept = one(rows, dataset="eurosat", trainer="CoOpDePT")
    assert (dept["method"], dept["dept"], dept["seeds"], dept["seed_ids"]) == ("CoOp", 1, 2, "1 2")
    assert dept["base"] == pytest.approx(94.0) and dept["new"] == pytest.approx(66.0)


def test_base2new_averages_are_the_papers_mean_of_means_and_h_of_the_means(built):
    rows = built[2]["base2new"]
    coop = one(rows, dataset="average", trainer="CoOp")
    assert (coop["base"], coop["new"]) == (pytest.approx(86.0), pytest.approx(57.0))
    assert coop["hm"] == pytest.approx(hm(86, 57))  # not the mean of the datasets' H
    assert coop["seeds"] == 2 and coop["expected_seeds"] == 3
    assert "includes datasets with fewer seeds: dtd (2/3)" in coop["note"]
    dept = one(rows, dataset="average", trainer="CoOpDePT")
    assert (dept["base"], dept["new"]) == (pytest.approx(89.0), pytest.approx(61.0))
    assert "includes datasets with fewer seeds: eurosat (2/3)" in dept["note"]


def test_base2new_dept_gain_is_paired_over_the_seeds_both_have(built):
    rows = built[2]["base2new"]
    dtd = one(rows, dataset="dtd", trainer="CoOpDePT")  # CoOp counts seeds 1 3 there, CoOpDePT 1 2 3
    assert (dtd["dept_gain_base"], dtd["dept_gain_new"]) == (pytest.approx(84.0 - 81.0), pytest.approx(56.0 - 52.0))
    assert dtd["dept_gain_hm"] == pytest.approx(hm(84, 56) - hm(81, 52))
    assert dtd["gain_over"] == "1 3" and "DePT gain over seed(s) 1 3 only" in dtd["note"]
    eurosat = one(rows, dataset="eurosat", trainer="CoOpDePT")  # CoOp 1 2 3, CoOpDePT 1 2
    assert eurosat["dept_gain_base"] == pytest.approx(94.0 - 90.5) and eurosat["gain_over"] == "1 2"
    avg = one(rows, dataset="average", trainer="CoOpDePT")
    base = statistics.fmean([84.0 - 81.0, 94.0 - 90.5])
    assert avg["dept_gain_base"] == pytest.approx(base)
    assert avg["dept_gain_hm"] == pytest.approx(hm((84 + 94) / 2, (56 + 66) / 2) - hm((81 + 90.5) / 2, (52 + 61) / 2))
    assert one(rows, dataset="dtd", trainer="CoOp")["dept_gain_hm"] is None
    md = open(os.path.join(built[1], "base2new.md")).read()
    line = next(x for x in md.splitlines() if x.startswith("| dtd | CoOp | yes |"))
    assert "(over seeds 1 3)" in line


def test_base2new_paper_figures_and_differences_in_the_papers_setting(built):
    rows = built[2]["base2new"]
    ref = paper.base2new()
    for trainer, dept in (("CoOp", 0), ("CoOpDePT", 1)):
        for dataset in ("dtd", "eurosat"):
            row = one(rows, dataset=dataset, trainer=trainer)
            figures = ref[("CoOp", dept, dataset)]
            assert (row["paper_base"], row["paper_new"], row["paper_hm"]) == figures
            assert row["base_vs_paper"] == pytest.approx(row["base"] - figures[0])
            assert row["new_vs_paper"] == pytest.approx(row["new"] - figures[1])
            assert row["hm_vs_paper"] == pytest.approx(row["hm"] - figures[2])
    avg = one(rows, dataset="average", trainer="CoOp")
    assert avg["paper_hm"] is None and "averages 2 datasets, not the paper's 11" in avg["note"]


def test_base2new_missing_seed_and_failed_run_are_flagged(built):
    rows = built[2]["base2new"]
    dtd = one(rows, dataset="dtd", trainer="CoOp")
    assert "seed 2 not counted: test_new failed: RuntimeError: CUDA out of memory" in dtd["note"]
    assert "seed 3 missing: no train_base or test_new run" in one(rows, dataset="eurosat", trainer="CoOpDePT")["note"]
    md = open(os.path.join(built[1], "base2new.md")).read()
    line = next(x for x in md.splitlines() if x.startswith("| dtd | CoOp | no |"))
    assert "| **2/3** |" in line and "81.00 ± 1.41 (paper " in line
    full = next(x for x in md.splitlines() if x.startswith("| eurosat | CoOp | no |"))
    assert "| 3 |" in full


def test_base2new_csv_has_every_number(built):
    rows = list(csv.DictReader(open(os.path.join(built[1], "base2new.csv"))))
    assert list(rows[0]) == list(COLUMNS["base2new"])
    dtd = next(r for r in rows if r["dataset"] == "dtd" and r["trainer"] == "CoOp")
    assert (dtd["seeds"], dtd["expected_seeds"], dtd["seed_ids"], dtd["base"], dtd["base_std"]) == \
        ("2", "3", "1 3", "81.0", "1.41")
    assert float(dtd["hm"]) == round(hm(81, 52), 2)
    assert float(dtd["paper_base"]) == paper.base2new()[("CoOp", 0, "dtd")][0]
    assert [r["dataset"] for r in rows] == ["dtd", "dtd", "eurosat", "eurosat", "average", "average"]


# -- cross-dataset and domain generalisation ----------------------------------------------------------

def test_cross_dataset_source_targets_and_average(built):
    rows = built[2]["cross_dataset"]
    ref = paper.transfer("cross_dataset")
    source = one(rows, dataset="imagenet", trainer="CoOp")
    assert (source["role"], source["source"], source["seeds"]) == ("source", "imagenet", 3)
    assert (source["accuracy"], source["std"]) == (pytest.approx(72.0), pytest.approx(1.0))
    assert source["paper"] == ref[("CoOp", 0)]["imagenet"] and source["vs_paper"] == pytest.approx(72.0 - 71.80)
    caltech = one(rows, dataset="caltech101", trainer="CoOpDePT")
    assert (caltech["accuracy"], caltech["std"], caltech["paper"]) == (94.0, 0.0, ref[("CoOp", 1)]["caltech101"])
    assert caltech["dept_gain"] == pytest.approx(0.0)
    assert one(rows, dataset="imagenet", trainer="CoOpDePT")["dept_gain"] == pytest.approx(1.0)
    avg = one(rows, dataset="average", trainer="CoOp")
    assert avg["accuracy"] == pytest.approx((94.0 + 90.0) / 2) and avg["role"] == "average"
    assert avg["paper"] is None and "averages 2 targets, not the paper's 10" in avg["note"]


def test_an_evaluation_of_another_checkpoint_is_not_counted(built):
    rows = built[2]["cross_dataset"]
    pets = one(rows, dataset="oxford_pets", trainer="CoOpDePT")
    assert (pets["seeds"], pets["expected_seeds"], pets["accuracy"]) == (2, 3, pytest.approx(90.5))
    assert "seed 3 not counted: it evaluated another checkpoint than its training run's final one" in pets["note"]
    assert pets["dept_gain"] == pytest.approx(90.5 - 89.5) and pets["gain_over"] == "1 2"  # paired: seeds 1 2


def test_dg_uses_the_dg_papers_figures_and_lists_a_running_run(built):
    rows = built[2]["dg"]
    ref = paper.transfer("dg")
    assert {r["dataset"] for r in rows} == {"imagenet", "imagenetv2", "imagenet_sketch", "average"}
    source = one(rows, dataset="imagenet", trainer="CoOp")
    assert source["paper"] == ref[("CoOp", 0)]["imagenet"] == 70.53  # the DG table's own ImageNet figure
    v2 = one(rows, dataset="imagenetv2", trainer="CoOpDePT")
    assert (v2["accuracy"], v2["paper"], v2["vs_paper"]) == (65.0, 64.13, pytest.approx(65.0 - 64.13))
    sketch = one(rows, dataset="imagenet_sketch", trainer="CoOp")
    assert (sketch["seeds"], sketch["accuracy"]) == (2, pytest.approx(48.5))
    assert "seed 3 not counted: running (in progress" in sketch["note"]
    avg = one(rows, dataset="average", trainer="CoOp")
    assert avg["accuracy"] == pytest.approx((64.0 + 48.5) / 2)
    assert avg["paper"] is None and "averages 2 targets, not the paper's 4" in avg["note"]


# -- few-shot -------------------------------------------------------------------------------------------

def test_few_shot_rows_per_dataset_and_shots_and_their_average(built):
    rows = built[2]["few_shot"]
    assert {(r["dataset"], r["shots"]) for r in rows} == {(d, k) for d in ("dtd", "eurosat", "average")
                                                          for k in FEW_SHOTS}  # the ImageNet source is not a point
    for trainer, gain in (("CoOp", 0.0), ("CoOpDePT", 2.0)):
        for i, shots in enumerate(FEW_SHOTS):
            dtd = one(rows, dataset="dtd", shots=shots, trainer=trainer)
            assert (dtd["seeds"], dtd["accuracy"], dtd["std"]) == (3, pytest.approx(40 + 5 * i + gain),
                                                                   pytest.approx(1.0))
            avg = one(rows, dataset="average", shots=shots, trainer=trainer)
            assert avg["accuracy"] == pytest.approx(50 + 5 * i + gain)
            if trainer == "CoOpDePT":
                assert dtd["dept_gain"] == pytest.approx(2.0) and avg["dept_gain"] == pytest.approx(2.0)
    assert "paper" not in COLUMNS["few_shot"]


# -- missing.md, the index, what is not read ----------------------------------------------------------------

def test_missing_lists_failed_running_and_absent_runs_with_their_folders(built):
    text = open(os.path.join(built[1], "missing.md")).read()
    failed = "base2new/test_new/dtd/shots_16/CoOp/vit_b16_ep10_bs4_lr35/seed2"
    assert f"| test_new | `{failed}` | failed | failed: RuntimeError: CUDA out of memory |" in text
    assert "`evaluation/CoOp/vit_b16_ep10_bs4_lr35_16shots/imagenet_sketch/seed3` | running |" in text
    assert "`evaluation/CoOpDePT/vit_b16_ep10_bs4_lr35_16shots/oxford_pets/seed3` | finished |" in text
    for stage in ("train_base", "test_new"):
        assert f"`base2new/{stage}/eurosat/shots_16/CoOpDePT/vit_b16_ep10_bs4_lr35/seed3`" in text
    # A record outside the layouts is named, not read; <root>/demo and <root>/*/results are not looked at.
    assert [line for line in text.splitlines() if line.startswith("- `")] == ["- `misc/copied`"]
    assert "demo" not in text and "results" not in text


def test_skipped_folders_are_not_read(built):
    for rows in built[2].values():
        assert not any(r["config"] in ("demo_tiny", "x") or "demo" in (r["dataset"], r["trainer"]) for r in rows)


def test_index_links_every_table_and_figure(built):
    out = built[1]
    index = open(os.path.join(out, "README.md")).read()
    for protocol in ("base2new", "cross_dataset", "dg", "few_shot"):
        assert f"]({protocol}.md)" in index and os.path.isfile(os.path.join(out, f"{protocol}.csv"))
        assert f"## {TITLES[protocol]}" in built[3]  # printed too
    assert "](missing.md)" in index
    for name in ("base2new_base_vs_new.png", "base2new_dept_gain.png", "few_shot.png", "cross_dataset.png", "dg.png"):
        assert f"](figures/{name})" in index


def test_record_notes_are_carried_into_the_note_column_and_a_warning(tmp_path):
    untrained = "UNTRAINED: evaluated as initialised (--untrained), no checkpoint loaded"
    for seed in (1, 2):
        put(str(tmp_path), key("train_base", "dtd", seed=seed), 80.0, notes=[untrained])
        put(str(tmp_path), key("test_new", "dtd", seed=seed), 50.0)
    tables = write(tmp_path)
    assert f"{untrained} (seed 1 train_base, seed 2 train_base)" in tables["base2new"][0]["note"]
    assert "**WARNING" in open(tmp_path / "report" / "base2new.md").read()


@pytest.mark.parametrize("change, reason", [
    (dict(shots=4), "4 shots (paper: 16)"),
    (dict(variant=CFG + "+DEPT.WEIGHT=0.2", options=("DEPT.WEIGHT", "0.2")), "options DEPT.WEIGHT=0.2 (paper: none)"),
    (dict(variant="vit_b16_ctxv1"), "config vit_b16_ctxv1 (paper: vit_b16_ep10_bs4_lr35)"),
    (dict(clip={"name": "ViT-B/16", "arch": dict(VIT_B16["arch"], vision_layers=2)}),
     "CLIP named ViT-B/16 does not have its shape (vision_layers 2)"),
    (dict(clip={"name": "tiny-random", "arch": {}}), "CLIP is not ViT-B/16 (tiny-random)"),
    (dict(clip=None), "the CLIP used was not recorded"),
])
def test_paper_figures_are_left_out_outside_the_papers_setting_and_the_note_says_why(tmp_path, change, reason):
    where = {k: v for k, v in change.items() if k in ("shots", "variant")}
    rest = {k: v for k, v in change.items() if k not in ("shots", "variant")}
    root = str(tmp_path)
    put_base2new(root, "dtd", 1, 80.0, 50.0, **change)
    put(root, key("train", "imagenet", **where), 70.0, **rest)
    put(root, key("eval", "imagenetv2", **where), 60.0, **rest)
    tables = write(tmp_path)
    b2n, dg = tables["base2new"][0], one(tables["dg"], dataset="imagenetv2")
    assert b2n["base"] == 80.0 and b2n["paper_base"] is None and reason in b2n["note"]
    assert dg["accuracy"] == 60.0 and dg["paper"] is None and reason in dg["note"]
    if "variant" in change:  # a variant is its own cell, never mixed with the plain config
        assert b2n["config"] == change["variant"]


def test_paper_averages_need_every_dataset_of_the_paper(tmp_path):
    root = str(tmp_path)
    for dataset in paper.PAPER_DATASETS:
        put_base2new(root, dataset, 1, 80.0, 70.0)
    put(root, key("train", "imagenet"), 72.0)
    for dataset in CROSS_DATASET_TARGETS + DG_TARGETS:
        put(root, key("eval", dataset), 60.0)
    tables = write(tmp_path)
    b2n = one(tables["base2new"], dataset="average")
    assert (b2n["paper_base"], b2n["paper_new"], b2n["paper_hm"]) == paper.base2new()[("CoOp", 0, "average")]
    assert b2n["hm_vs_paper"] == pytest.approx(hm(80, 70) - 75.18)
    cross = one(tables["cross_dataset"], dataset="average")
    assert (cross["paper"], cross["vs_paper"]) == (64.40, pytest.approx(60.0 - 64.40))  # printed by the paper
    dg = one(tables["dg"], dataset="average")
    assert dg["paper"] == pytest.approx(statistics.fmean([64.13, 49.13, 77.20, 51.43]))
    assert "paper average: the mean of its 4 targets (it prints none)" in dg["note"]


def test_variants_are_separate_cells(tmp_path):
    for variant, options, base in ((CFG, (), 80.0), (CFG + "+DEPT.WEIGHT=0.2", ("DEPT.WEIGHT", "0.2"), 60.0),
                                   ("vit_b16_ctxv1", (), 70.0)):
        put_base2new(str(tmp_path), "dtd", 1, base, 50.0, trainer="CoOpDePT", variant=variant, options=options)
    rows = write(tmp_path)["base2new"]
    assert {(r["config"], r["base"]) for r in rows} == {(CFG, 80.0), (CFG + "+DEPT.WEIGHT=0.2", 60.0),
                                                        ("vit_b16_ctxv1", 70.0)}


def test_a_record_that_contradicts_its_folder_is_not_counted(tmp_path):
    folder = put(str(tmp_path), key("train", "dtd", seed=1, shots=4), 70.0)
    moved = os.path.join(str(tmp_path), "dtd", "CoOp", f"{CFG}_4shots", "seed2")
    os.rename(os.path.join(str(tmp_path), folder), moved)
    put(str(tmp_path), key("train", "dtd", seed=1, shots=4), 72.0)
    row = one(write(tmp_path)["few_shot"], dataset="dtd")
    assert (row["seeds"], row["accuracy"]) == (1, 72.0)
    assert "seed 2 not counted: its record has other settings than its folder stands for: SEED: 1 in its record, " \
           "2 for its folder" in row["note"]


# -- the command line -------------------------------------------------------------------------------------

def test_main_writes_the_report_prints_the_tables_and_exits_0(tmp_path, capsys):
    build_root(str(tmp_path))
    out = tmp_path / "elsewhere"
    assert report.main([str(tmp_path), "--out", str(out), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "## Base-to-new generalisation" in printed and "# Missing and failed runs" in printed
    assert sorted(os.listdir(out)) == ["README.md", "base2new.csv", "base2new.md", "classes.md", "cross_dataset.csv",
                                       "cross_dataset.md", "dg.csv", "dg.md", "few_shot.csv", "few_shot.md",
                                       "missing.md", "prompts.md"]
    assert "Not drawn: figures were turned off" in (out / "README.md").read_text()


def test_main_says_so_and_exits_1_when_nothing_is_found(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 1
    assert "no run found under" in capsys.readouterr().err
    assert report.main([str(tmp_path / "absent")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    put(str(tmp_path), key("train", "dtd"), None, status="failed")
    assert report.main([str(tmp_path), "--no-figures"]) == 1
    assert "none of the 1 runs" in capsys.readouterr().err
    assert "failed" in (tmp_path / "report" / "missing.md").read_text()


def test_python_m_dept_report_runs(tmp_path):
    put(str(tmp_path), key("train", "dtd", seed=1, shots=4), 70.0)
    put(str(tmp_path), key("train", "dtd", seed=2, shots=4), 72.0)
    done = subprocess.run([sys.executable, "-m", "dept", "report", str(tmp_path), "--no-figures"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "## Few-shot learning" in done.stdout and "71.00 ± 1.41" in done.stdout


def test_std_is_the_sample_std_and_absent_for_one_seed():
    assert stats([1.0, 2.0, 3.0]) == (2.0, statistics.stdev([1.0, 2.0, 3.0]))
    assert stats([5.0]) == (5.0, None) and stats([]) == (None, None)


def test_seeds_that_ran_with_other_settings_are_never_averaged_together(tmp_path):
    """Settings no folder name shows (here the CLIP file) may differ between the seeds of a cell: the
    report compares the recorded settings of a cell's seeds, counts those that agree with the most
    seeds (on a tie, the newest), and names the others and the keys that differ. (A yaml edited
    since a seed ran is caught before that: its record no longer has the settings its folder stands
    for; test_tables.py.)"""
    def put_seed(root, seed, clip_path, base, new, started):
        clip = dict(VIT_B16, path=clip_path)
        for stage, accuracy in (("train_base", base), ("test_new", new)):
            put(root, key(stage, "dtd", seed=seed), accuracy, clip=clip, started=started,
                options=("MODEL.BACKBONE.PATH", clip_path))

    most = str(tmp_path / "most")
    put_seed(most, 1, "/clips/a.pt", 50.0, 30.0, "2026-01-03T00:00:00")
    put_seed(most, 2, "/clips/b.pt", 80.0, 60.0, "2026-01-01T00:00:00")
    put_seed(most, 3, "/clips/b.pt", 82.0, 62.0, "2026-01-02T00:00:00")
    dtd = one(write(most)["base2new"], dataset="dtd", trainer="CoOp")
    assert (dtd["seeds"], dtd["seed_ids"], dtd["base"], dtd["new"]) == (2, "2 3", 81.0, 61.0)
    assert "seed 1 not counted" in dtd["note"] and "MODEL.BACKBONE.PATH: '/clips/a.pt' here, '/clips/b.pt' there" \
        in dtd["note"]
    missing = open(os.path.join(most, "report", "missing.md")).read()
    assert "other settings than seed(s) 2 3" in missing

    tie = str(tmp_path / "tie")
    put_seed(tie, 1, "/clips/a.pt", 50.0, 30.0, "2026-01-01T00:00:00")
    put_seed(tie, 2, "/clips/b.pt", 80.0, 60.0, "2026-01-02T00:00:00")
    dtd = one(write(tie)["base2new"], dataset="dtd", trainer="CoOp")
    assert (dtd["seeds"], dtd["seed_ids"], dtd["base"]) == (1, "2", 80.0)  # what the runner counts now


def test_a_source_trained_at_the_few_shot_grids_shots_is_one_of_its_cells(tmp_path):
    """Few-shot at 16 shots beside cross-dataset from ImageNet: the ImageNet 16-shot run is a
    few-shot point too, so the few-shot average has it; alone it makes no few-shot table."""
    root = str(tmp_path / "both")
    put(root, key("train", "dtd"), 60.0)
    put(root, key("train", "imagenet"), 70.0)
    put(root, key("eval", "caltech101"), 90.0)
    tables = write(root)
    rows = {r["dataset"]: r for r in tables["few_shot"]}
    assert set(rows) == {"dtd", "imagenet", "average"}
    assert rows["average"]["accuracy"] == pytest.approx(65.0)
    cross = {(r["dataset"], r["role"]): r for r in tables["cross_dataset"]}
    assert cross[("imagenet", "source")]["accuracy"] == 70.0 and cross[("caltech101", "target")]["accuracy"] == 90.0
    alone = str(tmp_path / "alone")
    put(alone, key("train", "imagenet"), 70.0)
    put(alone, key("eval", "caltech101"), 90.0)
    assert "few_shot" not in write(alone)
