"""The README's main command on the demo, then the channel analysis and an ablation on its runs: each
command end to end, on one output root (the analysis and the ablation reuse what the demo trained)."""
import csv
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.dassl


def dept(cwd, *args, timeout=900):
    env = dict(os.environ)
    env.pop("DATA", None)  # the demo
    proc = subprocess.run([sys.executable, "-m", "dept", *args], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    main = dept(cwd, "base2new", "--seeds", "1", "--output", "out")  # relative: to the cwd
    channels = dept(cwd, "analyze", "channels", "--protocol", "--seeds", "1", "--output", "out")
    ablation = dept(cwd, "ablate", "DEPT.WEIGHT", "0.3", "0.7", "--trainers", "CoOpDePT", "--seeds", "1",
                    "--output", "out")
    return cwd / "out", main, channels, ablation


def test_the_demo_runs_zero_shot_coop_and_dept_and_writes_their_tables(demo):
    out, main, _, _ = demo
    assert "tiny CLIP pretrained on the digits' train split" in main.stdout
    results = out / "base2new" / "results"
    summary = {r["trainer"]: r for r in read_csv(results / "summary_shots16.csv") if r["dataset"] == "digits"}
    assert set(summary) == {"ZeroshotCLIP", "CoOp", "CoOpDePT"} and summary["CoOpDePT"]["gain_over"] == "1"
    # the pretrained CLIP recognises the five new classes far above chance (20%) zero-shot
    assert float(summary["ZeroshotCLIP"]["new"]) > 60
    digits = {r["dataset"]: r for r in read_csv(results / "CoOpDePT_demo_digits_shots16.csv")}["digits"]
    assert digits["paper_base"] == "" and "CLIP is not ViT-B/16 (tiny-digits)" in digits["note"]
    for stage in ("train_base", "test_new"):
        run = out / "base2new" / stage / "digits" / "shots_16" / "CoOpDePT" / "demo_digits" / "seed1"
        assert "* accuracy:" in (run / "log.txt").read_text()
    assert not os.path.exists(os.path.join(REPO, "out"))


def test_the_channel_analysis_trains_only_the_oracle_and_measures_every_model(demo):
    out, _, channels, _ = demo
    # the oracle (CoOp on all classes: the few-shot protocol's run) is new; the demo's six runs are reused
    assert "[progress] 1/1 runs done (1 ran, 0 skipped" in channels.stdout
    assert "[progress] 6/6 runs done (0 ran, 6 skipped" in channels.stdout
    folder = out / "analysis" / "channels"
    models = {"CoOp__all_classes__digits_seed1__itm", "ZeroshotCLIP__zero-shot__digits_seed1__itm",
              "CoOp__base__digits_seed1__itm", "CoOpDePT__base__digits_seed1__itm",
              "CoOpDePT__base__digits_seed1__cwt"}
    assert {p[:-4] for p in os.listdir(folder) if p.endswith(".csv")} == models
    rows = read_csv(folder / "CoOpDePT__base__digits_seed1__cwt.csv")
    assert len(rows) == 64 and {r["window"] for r in rows} == {"8"}  # D = 64 at the demo's CLIP: windows of D/8
    for r in rows:
        base, new = float(r["base"]), float(r["new"])
        assert base >= 0 and new >= 0 and (new == 0 or math.isclose(float(r["ratio"]), base / new, rel_tol=1e-4))
    table = (folder / "channels.md").read_text()
    assert "| CoOp (all classes) digits seed1 | ITM features |" in table and "cwT space" in table
    for figure in ("importance.png", "ratio_density.png"):
        assert (folder / figure).stat().st_size > 10_000


def test_the_ablation_runs_only_the_new_value_and_tables_both(demo):
    out, _, _, ablation = demo
    assert "[progress] 2/2 runs done (2 ran" in ablation.stdout  # λ = 0.3; 0.7 is the demo's own runs
    rows = read_csv(out / "analysis" / "ablation" / "DEPT.WEIGHT" / "ablation.csv")
    assert [(r["value"], r["trainer"], r["dataset"], r["seeds"]) for r in rows] == [
        ("0.3", "CoOpDePT", "digits", "1"), ("0.7", "CoOpDePT", "digits", "1")]
    demo_row = {r["dataset"]: r for r in read_csv(out / "base2new" / "results" / "CoOpDePT_demo_digits_shots16.csv")}
    assert float(rows[1]["base"]) == pytest.approx(float(demo_row["digits"]["base"]), abs=0.01)
    assert (out / "analysis" / "ablation" / "DEPT.WEIGHT" / "ablation.png").stat().st_size > 10_000
