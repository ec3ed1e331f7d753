"""Cross-dataset, domain generalisation and few-shot through the runner, end to end on the embedded
demo (digits, and its inverted copy as the target domain; tiny random CLIP): the official layouts
and log lines, one ImageNet-style model per seed shared by both transfer protocols, a grid killed
mid-way and re-run, failed runs kept until asked, grid files and the local back-end."""
import csv
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from dept.run.cli import parse_args
from dept.run.demo_clip import FILE as DEMO_CLIP_FILE
from dept.run.grid_file import read_grids
from dept.store.protocols import PROTOCOLS

pytestmark = pytest.mark.dassl

FAST = ["--", "OPTIM.MAX_EPOCH", "1"]


def env():
    e = dict(os.environ)
    e.pop("DATA", None)  # the demo
    return e


def dept_cmd(*args):
    return [sys.executable, "-m", "dept", *args]


def run(cwd, *args, check=True, timeout=900):
    proc = subprocess.run(dept_cmd(*args), cwd=str(cwd), env=env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stdout[-4000:]
    return proc


def record(folder):
    with open(os.path.join(folder, "dept_run.json")) as f:
        return json.load(f)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def transfer(tmp_path_factory):
    """cross-dataset, then dg, on one output root: the second trains nothing."""
    root = tmp_path_factory.mktemp("transfer")
    xd = run(root, "cross-dataset", "--seeds", "1", "--trainers", "CoOpDePT", "--output", "out", *FAST)
    dg = run(root, "dg", "--seeds", "1", "--trainers", "CoOpDePT", "--output", "out", *FAST)
    return root / "out", xd, dg


VARIANT = "demo_digits+OPTIM.MAX_EPOCH=1"


def test_cross_dataset_trains_once_and_evaluates_that_checkpoint_in_the_official_layout(transfer):
    out, xd, _ = transfer
    train = out / "digits" / "CoOpDePT" / f"{VARIANT}_16shots" / "seed1"
    # the official layout, one level down for a source other than ImageNet
    target = out / "evaluation" / "CoOpDePT" / f"{VARIANT}_16shots" / "from_digits" / "digits_inverted" / "seed1"
    trained, evaluated = record(train), record(target)
    assert trained["status"] == evaluated["status"] == "finished"
    assert evaluated["checkpoint"]["sha256"] == trained["checkpoint"]["sha256"]  # the training run's model
    assert "SUBSAMPLE_CLASSES: all" in trained["config"] and "SUBSAMPLE_CLASSES: all" in evaluated["config"]
    for folder, result in ((train, trained), (target, evaluated)):  # what parse_test_res.py reads
        found = re.findall(r"\* accuracy: ([\d.]+)%", (folder / "log.txt").read_text())
        assert found and float(found[-1]) == pytest.approx(result["result"]["accuracy"], abs=0.051)  # printed to 0.1
    rows = {r["dataset"]: r for r in read_csv(out / "cross_dataset" / "results" /
                                                      f"CoOpDePT_{VARIANT}_shots16_from_digits.csv")}
    assert rows["digits"]["role"] == "source" and rows["digits_inverted"]["role"] == "target"
    assert float(rows["digits"]["accuracy"]) == pytest.approx(trained["result"]["accuracy"], abs=0.01)
    assert float(rows["digits_inverted"]["accuracy"]) == pytest.approx(evaluated["result"]["accuracy"], abs=0.01)
    assert rows["digits_inverted"]["seeds"] == "1" and "paper figure omitted" in rows["digits"]["note"]
    assert "[progress] 2/2 runs done (2 ran, 0 skipped, 0 failed)" in xd.stdout


def test_domain_generalisation_reuses_the_cross_dataset_model(transfer):
    out, _, dg = transfer
    assert "skip (finished): " + str(out / "digits" / "CoOpDePT" / f"{VARIANT}_16shots" / "seed1") in dg.stdout
    assert dg.stdout.count("run: ") == 0  # the target's evaluation was done by cross-dataset: same folder
    assert os.path.isfile(out / "dg" / "results" / f"CoOpDePT_{VARIANT}_shots16_from_digits.md")
    assert len(glob.glob(str(out / "digits" / "CoOpDePT" / "*" / "seed1" / "prompt_learner*"))) <= 1
    # the report has the demo's DG table too: its one target serves both protocols, as in the runner
    report = out.parent / "dg_report"
    run(out.parent, "report", str(out), "--out", str(report), "--no-figures")
    for protocol in ("cross_dataset", "dg"):
        rows = {(r["dataset"], r["role"]): r for r in read_csv(report / f"{protocol}.csv")}
        assert rows[("digits_inverted", "target")]["seeds"] == "1", (protocol, rows)


def test_two_sources_keep_their_own_evaluations_and_tables(transfer, tmp_path):
    """A model trained on another source evaluates into its own folder and table: neither source's
    evaluation or table replaces the other's, and re-running either one runs nothing."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(transfer[0], out)
    demo = transfer[0] / "demo"  # the CLIP file the copied runs recorded
    common = ["--root", str(demo / "data"), "--seeds", "1", "--trainers", "CoOpDePT", "--config", "demo_digits",
              "--output", str(out), "--", "MODEL.BACKBONE.PATH", str(demo / DEMO_CLIP_FILE),
              "OPTIM.MAX_EPOCH", "1"]
    results = out / "cross_dataset" / "results"
    first = (results / f"CoOpDePT_{VARIANT}_shots16_from_digits.csv").read_text()
    evals = out / "evaluation" / "CoOpDePT" / f"{VARIANT}_16shots"
    before = record(evals / "from_digits" / "digits_inverted" / "seed1")
    other = run(tmp_path, "cross-dataset", "--source", "digits_inverted", "--datasets", "digits_inverted", *common)
    assert "2 runs done (2 ran, 0 skipped, 0 failed)" in other.stdout, other.stdout[-3000:]
    trained = record(out / "digits_inverted" / "CoOpDePT" / f"{VARIANT}_16shots" / "seed1")
    evaluated = record(evals / "from_digits_inverted" / "digits_inverted" / "seed1")
    assert evaluated["checkpoint"]["sha256"] == trained["checkpoint"]["sha256"] != before["checkpoint"]["sha256"]
    assert record(evals / "from_digits" / "digits_inverted" / "seed1") == before
    assert (results / f"CoOpDePT_{VARIANT}_shots16_from_digits.csv").read_text() == first
    rows = {r["dataset"]: r for r in read_csv(results / f"CoOpDePT_{VARIANT}_shots16_from_digits_inverted.csv")}
    assert float(rows["digits_inverted"]["accuracy"]) == pytest.approx(trained["result"]["accuracy"], abs=0.01)
    again = run(tmp_path, "cross-dataset", "--source", "digits", "--datasets", "digits_inverted", *common)
    assert "(0 ran, 2 skipped, 0 failed)" in again.stdout, again.stdout[-3000:]
    assert (results / f"CoOpDePT_{VARIANT}_shots16_from_digits.csv").read_text() == first
    run(tmp_path, "report", str(out), "--no-figures")  # the report reads each evaluation's source from its folder
    report = read_csv(out / "report" / "cross_dataset.csv")
    cells = {(r["source"], r["dataset"], r["role"]): r for r in report}
    assert float(cells[("digits", "digits_inverted", "target")]["accuracy"]) == pytest.approx(
        before["result"]["accuracy"], abs=0.01)
    assert float(cells[("digits_inverted", "digits_inverted", "target")]["accuracy"]) == pytest.approx(
        evaluated["result"]["accuracy"], abs=0.01)
    assert all(r["seeds"] == "1" for r in report if r["dataset"] != "average"), report


def test_a_base2new_table_keeps_the_datasets_of_an_earlier_larger_grid(tmp_path):
    from dept.core.testing import save_tiny_clip

    run(tmp_path, "data", "prepare-demo", "--root", "data")
    clip = save_tiny_clip(str(tmp_path / "clip.pt"))
    common = ["--root", "data", "--seeds", "1", "--trainers", "CoOp", "--config", "demo_tiny", "--output", "out",
              "--", "MODEL.BACKBONE.PATH", clip, "OPTIM.MAX_EPOCH", "1"]
    run(tmp_path, "base2new", "--datasets", "digits", "digits_inverted", *common)
    table = tmp_path / "out" / "base2new" / "results" / "CoOp_demo_tiny+OPTIM.MAX_EPOCH=1_shots16.csv"
    before = read_csv(table)
    assert [r["dataset"] for r in before] == ["digits", "digits_inverted", "average"]
    fewer = run(tmp_path, "base2new", "--datasets", "digits", *common)
    assert "(0 ran, 2 skipped, 0 failed)" in fewer.stdout, fewer.stdout[-3000:]
    assert read_csv(table) == before


def test_few_shot_writes_one_table_over_the_shots(tmp_path):
    proc = run(tmp_path, "few-shot", "--seeds", "1", "--shots", "1", "2", "--trainers", "CoOp", "--output", "out",
               *FAST)
    rows = read_csv(tmp_path / "out" / "few_shot" / "results" / f"CoOp_{VARIANT}.csv")
    assert [(r["dataset"], r["shots"], r["seeds"]) for r in rows] == [("digits", "1", "1"), ("digits", "2", "1")]
    for shots in (1, 2):
        folder = tmp_path / "out" / "digits" / "CoOp" / f"{VARIANT}_{shots}shots" / "seed1"
        rec = record(folder)
        assert f"NUM_SHOTS: {shots}" in rec["config"]
        assert float(next(r for r in rows if r["shots"] == str(shots))["accuracy"]) == \
            pytest.approx(rec["result"]["accuracy"], abs=0.01)
    assert "## CoOp few-shot" in proc.stdout
    # A later invocation with fewer shots rewrites the table with every shots' rows found on disk.
    fewer = run(tmp_path, "few-shot", "--seeds", "1", "--shots", "2", "--trainers", "CoOp", "--output", "out", *FAST)
    assert "(0 ran, 1 skipped, 0 failed)" in fewer.stdout, fewer.stdout[-3000:]
    again = read_csv(tmp_path / "out" / "few_shot" / "results" / f"CoOp_{VARIANT}.csv")
    assert [(r["dataset"], r["shots"], r["accuracy"]) for r in again] == \
        [(r["dataset"], r["shots"], r["accuracy"]) for r in rows]


def _tables(out):
    return {os.path.relpath(p, out): open(p).read() for p in glob.glob(str(out / "*" / "results" / "*.csv"))}


def _records(out):
    return {os.path.relpath(p, out): os.stat(p).st_mtime_ns
            for p in glob.glob(str(out / "**" / "dept_run.json"), recursive=True)}


def test_a_grid_killed_midway_and_rerun_ends_as_an_uninterrupted_one(tmp_path):
    args = ["few-shot", "--seeds", "1", "2", "--shots", "1", "--trainers", "CoOp", "--output", "out", *FAST]
    whole = tmp_path / "whole"
    whole.mkdir()
    run(whole, *args)
    cut = tmp_path / "cut"
    cut.mkdir()
    proc = subprocess.Popen(dept_cmd(*args), cwd=str(cut), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    first = cut / "out" / "digits" / "CoOp" / f"{VARIANT}_1shots" / "seed1"
    second = cut / "out" / "digits" / "CoOp" / f"{VARIANT}_1shots" / "seed2"
    deadline = time.time() + 600
    while time.time() < deadline and not (second / "dept_run.json").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # the runner dies at once; its child is told to stop (PDEATHSIG)
    proc.wait(timeout=60)
    assert record(first)["status"] == "finished"
    before = _records(cut / "out")
    again = run(cut, *args)
    assert "skip (finished): " + str(first) in again.stdout
    after = _records(cut / "out")
    assert after[os.path.relpath(first / "dept_run.json", cut / "out")] == \
        before[os.path.relpath(first / "dept_run.json", cut / "out")]  # not recomputed
    assert record(second)["status"] == "finished"
    assert _tables(cut / "out") == _tables(whole / "out")  # same accuracies, to the last digit


def test_a_failed_run_is_reported_and_run_again_only_when_asked(tmp_path):
    args = ["few-shot", "--seeds", "1", "--shots", "1", "--trainers", "CoOp", "--output", "out"]
    broken = tmp_path / "not_a_clip.pt"
    broken.write_text("not a checkpoint")
    failed = run(tmp_path, *args, "--", "OPTIM.MAX_EPOCH", "1", "MODEL.BACKBONE.PATH", str(broken), check=False)
    assert failed.returncode == 1 and "1 run(s) failed" in failed.stdout
    folder = tmp_path / "out" / "digits" / "CoOp" / f"{VARIANT}_1shots" / "seed1"
    assert record(folder)["status"] == "failed"
    again = run(tmp_path, *args, *FAST, check=False)
    assert again.returncode == 1 and "failed before (--retry-failed runs it again)" in again.stdout
    assert "Last lines of its log.txt" in again.stdout and "run: " not in again.stdout
    assert record(folder)["status"] == "failed"
    # the SLURM back-end submits nothing for it and counts it as the failed run it is, not as finished
    on_slurm = run(tmp_path, *args, "--backend", "slurm", *FAST, check=False)
    said = on_slurm.stdout + on_slurm.stderr
    assert on_slurm.returncode == 1 and "failed before (--retry-failed runs it again)" in said, said[-3000:]
    assert "[progress] 1/1 runs done (0 ran, 0 skipped, 1 failed)" in said and "nothing to submit" in said
    retried = run(tmp_path, *args, "--retry-failed", *FAST)
    assert "run: " in retried.stdout and record(folder)["status"] == "finished"


def test_two_local_cpu_workers_run_a_grid(tmp_path):
    proc = run(tmp_path, "few-shot", "--seeds", "1", "2", "--shots", "1", "--trainers", "CoOp", "--output", "out",
               "--backend", "local", "--jobs", "2", "--gpus", "", *FAST)
    assert "backend: local, 2 chain(s), 2 at once on CPU" in proc.stdout
    rows = read_csv(tmp_path / "out" / "few_shot" / "results" / f"CoOp_{VARIANT}.csv")
    assert rows[0]["seeds"] == "2" and rows[0]["seed_ids"] == "1 2"


def test_dry_run_lists_every_chain_of_every_protocol_and_writes_nothing(tmp_path):
    # the demo runs zero-shot CLIP, CoOp and CoOpDePT side by side by default
    for protocol, runs in (("base2new", 6), ("cross-dataset", 6), ("dg", 6), ("few-shot", 15)):
        proc = run(tmp_path, protocol, "--seeds", "1", "--output", "out", "--dry-run")
        assert proc.stdout.count("would run: ") == runs, (protocol, proc.stdout[-3000:])
    assert os.listdir(tmp_path) == []


def test_protocol_defaults_are_the_papers():
    xd = parse_args(["--output", "o"], PROTOCOLS["cross_dataset"])
    assert xd.source == "imagenet" and len(xd.datasets) == 10 and "imagenet" not in xd.datasets and xd.shots == [16]
    dg = parse_args(["--output", "o"], PROTOCOLS["dg"])
    assert dg.datasets == ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    assert parse_args(["--output", "o"], PROTOCOLS["few_shot"]).shots == [1, 2, 4, 8, 16]


def test_maple_and_promptsrc_use_their_own_transfer_configs():
    from dept.run.plan import method_config as config_for

    assert config_for("MaPLeDePT", PROTOCOLS["dg"]) == "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"
    assert config_for("PromptSRC", PROTOCOLS["few_shot"]) == "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"
    assert config_for("CoOpDePT", PROTOCOLS["cross_dataset"]) == "vit_b16_ep10_bs4_lr35"


def test_a_grid_file_names_protocols_and_flags(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("output: out\ngrids:\n  - protocol: base2new\n    trainers: [CoOp, CoOpDePT]\n    seeds: [1, 2]\n"
                    "  - protocol: few-shot\n    shots: [1, 2]\n    dry_run: true\n    opts: {OPTIM.MAX_EPOCH: 5}\n")
    (b2n, argv1, opts1), (fs, argv2, opts2) = read_grids(str(path))
    assert b2n == "base2new" and argv1 == ["--output", str(tmp_path / "out"), "--trainers", "CoOp", "CoOpDePT",
                                           "--seeds", "1", "2"] and opts1 == []
    assert fs == "few_shot" and "--dry-run" in argv2 and argv2[argv2.index("--shots"):][:3] == ["--shots", "1", "2"]
    assert opts2 == ["OPTIM.MAX_EPOCH", "5"]
    proc = run(tmp_path, "grid", str(path), "--dry-run")
    # base2new: 2 trainers x 2 seeds x (train, test); few-shot: the demo's zero-shot CLIP, CoOp and CoOpDePT x
    # 2 shots x the default 3 seeds
    assert proc.stdout.count("== ") == 2 and proc.stdout.count("would run: ") == 2 * 2 * 2 + 3 * 2 * 3
