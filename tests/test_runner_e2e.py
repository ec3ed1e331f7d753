"""The base-to-new runner end to end on a tiny DTD and a tiny CLIP: reuse only what is verified,
variant folders, tables from every seed, locks between runners, interrupts and a killed runner.

One module-scoped root is trained once (seeds 1 and 2, through scripts/base2new.sh with relative
paths); tests that change it work on a copy.
"""
import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl

VARIANT = "demo_tiny+OPTIM.MAX_EPOCH=1"


def runner(env=None, cwd=REPO, **kwargs):
    return dict(cwd=cwd, env=dict(os.environ, PYTHON=sys.executable, **(env or {})), capture_output=True,
                text=True, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from dept.core.testing import save_tiny_clip

    base = tmp_path_factory.mktemp("b2n")
    make_dtd(str(base / "data"))
    clip = save_tiny_clip(str(base / "clip.pt"))
    shutil.copytree(os.path.join(REPO, "configs"), base / "configs")
    # Relative --root, --configs-dir and --output: the caller's folder, not the checkout's.
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "base2new.sh"), "--root", "data", "--datasets", "dtd",
                           "--seeds", "1", "2", "--shots", "2", "--config", "demo_tiny", "--configs-dir", "configs",
                           "--output", "output", "--", "MODEL.BACKBONE.PATH", clip, "OPTIM.MAX_EPOCH", "1"],
                          timeout=900, **runner(cwd=str(base)))
    return SimpleNamespace(base=base, data=str(base / "data"), clip=clip, configs=str(base / "configs"),
                           output=str(base / "output"), proc=proc)


def command(t, output, seeds=("1",), opts=("OPTIM.MAX_EPOCH", "1"), configs=None, dry=False):
    return [sys.executable, "-m", "dept", "base2new", "--root", t.data, "--datasets", "dtd", "--seeds", *seeds,
            "--shots", "2", "--config", "demo_tiny", "--configs-dir", configs or t.configs, "--output", str(output),
            *(["--dry-run"] if dry else []), "--", "MODEL.BACKBONE.PATH", t.clip, *opts]


def snapshot(root):
    """Every file and folder under ``root`` with its size and modification time."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.stat(os.path.join(folder, name))
            out[os.path.join(folder, name)] = (st.st_size, st.st_mtime_ns)
    return out


def copy_of(t, tmp_path):
    out = tmp_path / "output"
    shutil.copytree(t.output, out)
    return out


def run_path(output, stage, seed, variant=VARIANT):
    return os.path.join(str(output), "base2new", stage, "dtd", "shots_2", "CoOpDePT", variant, f"seed{seed}")


def table(output, variant=VARIANT):
    path = os.path.join(str(output), "base2new", "results", f"CoOpDePT_{variant}_shots2.csv")
    with open(path) as f:
        return {row["dataset"]: row for row in csv.DictReader(f)}


def record(output, stage, seed, variant=VARIANT):
    with open(os.path.join(run_path(output, stage, seed, variant), "dept_run.json")) as f:
        return json.load(f)


def count_in_logs(directory, text):
    return sum(open(p, errors="replace").read().count(text) for p in glob.glob(os.path.join(directory, "log*.txt")))


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_base2new_on_dtd_through_the_script_with_relative_paths(trained):
    ok(trained.proc)
    assert "DEMO: no dataset root" not in trained.proc.stdout  # real data: no demo banner ...
    assert "**DEMO: these runs used a random tiny CLIP**" in trained.proc.stdout  # ... but the CLIP is random
    assert trained.output.startswith(str(trained.base)) and os.path.isdir(trained.output)
    dtd = table(trained.output)["dtd"]
    assert (dtd["seeds"], dtd["seed_ids"]) == ("2", "1 2")
    assert float(dtd["base"]) == pytest.approx(
        sum(record(trained.output, "train_base", s)["result"]["accuracy"] for s in (1, 2)) / 2, abs=0.01)
    # The paper's DTD row is no comparison for 2 shots on a tiny random CLIP: omitted, and the table says why.
    assert (dtd["paper_base"], dtd["paper_new"], dtd["paper_hm"]) == ("", "", "")
    assert "paper figures omitted: 2 shots (paper: 16)" in dtd["note"]
    assert "CLIP is not ViT-B/16 (tiny-random)" in dtd["note"]
    md = open(os.path.join(trained.output, "base2new", "results", f"CoOpDePT_{VARIANT}_shots2.md")).read()
    assert "83.20" not in md and "CLIP is not ViT-B/16 (tiny-random)" in md
    for seed in (1, 2):
        assert count_in_logs(run_path(trained.output, "train_base", seed), "Finish training") == 1
        assert record(trained.output, "test_new", seed)["status"] == "finished"
        assert os.path.isfile(os.path.join(run_path(trained.output, "test_new", seed), "log.txt"))


def test_a_one_seed_rerun_keeps_every_seed_and_rebuilds_a_truncated_table(trained, tmp_path):
    """Also a truncated log: the numbers come from the run records, so nothing is lost or rerun."""
    out = copy_of(trained, tmp_path)
    results = out / "base2new" / "results" / f"CoOpDePT_{VARIANT}_shots2.csv"
    results.write_text(results.read_text()[:30])
    expected = table(trained.output)["dtd"]
    log = os.path.join(run_path(out, "train_base", 2), "log.txt")
    with open(log, "r+") as f:
        f.truncate(os.path.getsize(log) // 3)  # cuts off the accuracy lines
    before = snapshot(out)
    dry = subprocess.run(command(trained, out, seeds=("1", "2", "3"), dry=True), timeout=600, **runner())
    ok(dry)
    assert dry.stdout.count("skip (finished)") == 4 and dry.stdout.count("would run: ") == 2
    assert "--seed 3" in dry.stdout and snapshot(out) == before  # a dry run writes nothing
    proc = subprocess.run(command(trained, out, seeds=("1",)), timeout=600, **runner())
    ok(proc)
    assert proc.stdout.count("skip (finished)") == 2 and "run: " not in proc.stdout
    dtd = table(out)["dtd"]
    assert (dtd["seeds"], dtd["seed_ids"]) == ("2", "1 2")
    assert (dtd["base"], dtd["new"], dtd["hm"]) == (expected["base"], expected["new"], expected["hm"])


def test_other_options_train_into_their_own_variant_folder(trained, tmp_path):
    """The lambda ablation: -- DEPT.WEIGHT 0.2 must not return the baseline's numbers."""
    out = copy_of(trained, tmp_path)
    proc = subprocess.run(command(trained, out, opts=("OPTIM.MAX_EPOCH", "1", "DEPT.WEIGHT", "0.2")),
                          timeout=600, **runner())
    ok(proc)
    variant = "demo_tiny+DEPT.WEIGHT=0.2+OPTIM.MAX_EPOCH=1"
    assert "skip (finished)" not in proc.stdout
    train = record(out, "train_base", 1, variant)
    assert train["status"] == "finished" and "WEIGHT: 0.2" in train["config"]
    ablation, baseline = table(out, variant)["dtd"], table(out)["dtd"]
    assert (ablation["seeds"], ablation["seed_ids"]) == ("1", "1")
    assert float(ablation["base"]) == pytest.approx(train["result"]["accuracy"], abs=0.01)
    assert float(ablation["new"]) == pytest.approx(record(out, "test_new", 1, variant)["result"]["accuracy"], abs=0.01)
    assert baseline["seeds"] == "2" and baseline == table(trained.output)["dtd"]


def test_a_clip_from_the_environment_is_part_of_the_settings(trained, tmp_path):
    """$DEPT_CLIP_PATH is recorded as MODEL.BACKBONE.PATH: the same file reuses the runs, another
    file is refused with advice that works (that key names no folder: another --output)."""
    from dept.core.testing import save_tiny_clip

    out = copy_of(trained, tmp_path)
    no_path = command(trained, out, seeds=("1",))
    i = no_path.index("MODEL.BACKBONE.PATH")
    del no_path[i:i + 2]
    same = subprocess.run(no_path, timeout=600, **runner(env={"DEPT_CLIP_PATH": trained.clip}))
    ok(same)
    assert same.stdout.count("skip (finished)") == 2 and "run: " not in same.stdout
    other = save_tiny_clip(str(tmp_path / "other_clip.pt"), seed=1)
    log = os.path.join(run_path(out, "train_base", 1), "log.txt")
    before = open(log).read()
    refused = subprocess.run(no_path, timeout=600, **runner(env={"DEPT_CLIP_PATH": other}))
    assert refused.returncode == 1, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert f"MODEL.BACKBONE.PATH: '{trained.clip}' there, '{other}' now" in refused.stdout, refused.stdout[-3000:]
    assert "give them another --output" in refused.stdout and "pass them as options after --" not in refused.stdout
    assert "skip (finished)" not in refused.stdout and open(log).read() == before
    beside = subprocess.run([*no_path[:no_path.index("--output") + 1], str(tmp_path / "other"),
                             *no_path[no_path.index("--output") + 2:]], timeout=600,
                            **runner(env={"DEPT_CLIP_PATH": other}))
    ok(beside)
    assert record(tmp_path / "other", "train_base", 1)["config"].count(other) == 1


def test_an_edited_yaml_fails_the_run_naming_the_key_and_reuses_nothing(trained, tmp_path):
    out = copy_of(trained, tmp_path)
    configs = tmp_path / "configs"
    shutil.copytree(trained.configs, configs)
    yaml_file = configs / "trainers" / "CoOp" / "demo_tiny.yaml"  # the _BASE_ of CoOpDePT/demo_tiny.yaml
    yaml_file.write_text(yaml_file.read_text().replace("LR: 0.01", "LR: 0.02"))
    log = os.path.join(run_path(out, "train_base", 1), "log.txt")
    before = open(log).read()
    proc = subprocess.run(command(trained, out, configs=str(configs)), timeout=600, **runner())
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "OPTIM.LR: 0.01 there, 0.02 now" in proc.stdout and "yaml" in proc.stdout
    assert "1 run(s) failed" in proc.stdout and "train_base dtd seed 1" in proc.stdout
    assert "run: " not in proc.stdout and "skip (finished)" not in proc.stdout
    assert open(log).read() == before and not glob.glob(os.path.join(run_path(out, "train_base", 1), "log-*"))
    dtd = table(out)["dtd"]
    assert dtd["seeds"] == "0" and dtd["base"] == ""
    assert "its record has other settings than its folder stands for: OPTIM.LR: 0.01 in its record, 0.02 for its " \
           "folder" in dtd["note"]


def test_what_cannot_be_verified_is_run_again_and_the_table_is_complete(trained, tmp_path):
    """Seed 1: its final checkpoint truncated, its test_new record garbled. Seed 2: a log without a
    record (an older version's run)."""
    from dept.util.checkpoint import FORMAT, read_checkpoint

    out = copy_of(trained, tmp_path)
    train1, train2 = run_path(out, "train_base", 1), run_path(out, "train_base", 2)
    final = os.path.join(train1, os.path.relpath(record(out, "train_base", 1)["checkpoint"]["path"],
                                                 run_path(trained.output, "train_base", 1)))
    with open(final, "r+b") as f:
        f.truncate(os.path.getsize(final) // 2)
    with open(os.path.join(run_path(out, "test_new", 1), "dept_run.json"), "w") as f:
        f.write('{"format": "dept-run/1", "status": "fini')
    os.remove(os.path.join(train2, "dept_run.json"))
    proc = subprocess.run(command(trained, out, seeds=("1", "2")), timeout=600, **runner())
    ok(proc)
    assert "final checkpoint is not usable" in proc.stdout
    assert "dept_run.json cannot be read" in proc.stdout and "treated as unfinished" in proc.stdout
    assert "has a log but no run record" in proc.stdout and "cannot be verified" in proc.stdout
    for train in (train1, train2):
        new = json.load(open(os.path.join(train, "dept_run.json")))
        assert new["status"] == "finished" and read_checkpoint(new["checkpoint"]["path"])["format"] == FORMAT
        assert os.path.isfile(os.path.join(train, "log-unfinished-1.txt"))
        assert "Finish training" in open(os.path.join(train, "log.txt")).read()
    assert glob.glob(os.path.join(train2, "unverified-1", "*", "model.pth.tar-1"))  # set aside, not resumed
    assert record(out, "test_new", 1)["status"] == "finished"
    dtd = table(out)["dtd"]
    assert (dtd["seeds"], dtd["seed_ids"]) == ("2", "1 2")


def _start_together(commands, **kwargs):
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env=dict(os.environ, **kwargs)) for c in commands]
    outs = [p.communicate(timeout=900) for p in procs]
    return [SimpleNamespace(returncode=p.returncode, stdout=o, stderr=e) for p, (o, e) in zip(procs, outs)]


def test_two_runners_with_other_seeds_on_one_root_leave_a_table_with_both(trained, tmp_path):
    out = tmp_path / "output"
    a, b = _start_together([command(trained, out, seeds=("1",)), command(trained, out, seeds=("2",))])
    ok(a)
    ok(b)
    dtd = table(out)["dtd"]
    assert (dtd["seeds"], dtd["seed_ids"]) == ("2", "1 2")
    for seed in (1, 2):
        assert count_in_logs(run_path(out, "train_base", seed), "Finish training") == 1
        assert count_in_logs(run_path(out, "test_new", seed), "=> result") == 1
        assert not glob.glob(os.path.join(run_path(out, "train_base", seed), "log-unfinished-*"))


def test_two_runners_with_the_same_seed_train_it_once_and_both_report_it(trained, tmp_path):
    out = tmp_path / "output"
    a, b = _start_together([command(trained, out, seeds=("1",))] * 2)
    ok(a)
    ok(b)
    assert "deferred" in a.stdout + b.stdout
    assert count_in_logs(run_path(out, "train_base", 1), "Finish training") == 1
    assert count_in_logs(run_path(out, "test_new", 1), "=> result") == 1
    for proc in (a, b):  # each runner's own table has the run, whoever trained it
        row = next(line for line in proc.stdout.splitlines() if line.startswith("| dtd |"))
        assert row.startswith(f"| dtd | CoOp | yes | {VARIANT} | 2 | 1 |"), row
    assert table(out)["dtd"]["seeds"] == "1"


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def _wait(predicate, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _training(train_dir, epoch_text):
    """The pid of the training child once its log.txt shows ``epoch_text`` (training under way)."""
    try:
        log = open(os.path.join(train_dir, "log.txt"), errors="replace").read()
        rec = json.load(open(os.path.join(train_dir, "dept_run.json")))
    except (OSError, ValueError):
        return None
    return rec.get("pid") if epoch_text in log and rec.get("status") == "running" else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
def test_a_killed_runner_takes_its_run_down_and_an_interrupted_one_says_how_to_resume(trained, tmp_path):
    out = tmp_path / "output"
    epochs = 30
    opts = ("OPTIM.MAX_EPOCH", str(epochs))
    train_dir = run_path(out, "train_base", 1, f"demo_tiny+OPTIM.MAX_EPOCH={epochs}")
    # 1. SIGKILL the runner while its child trains: the child gets SIGTERM, saves and exits.
    first = subprocess.Popen(command(trained, out, opts=opts), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=REPO)
    child = _wait(lambda: _training(train_dir, f"epoch [2/{epochs}]"), "the first run to train", timeout=300)
    first.kill()
    first.wait()
    _wait(lambda: _state(child) in (None, "Z"), "the orphaned child to exit", timeout=60)
    rec = json.load(open(os.path.join(train_dir, "dept_run.json")))
    assert rec["status"] == "interrupted" and rec.get("saved"), rec.get("status")
    # 2. SIGTERM the runner: its child saves, the runner says what was interrupted and how to resume.
    second = subprocess.Popen(command(trained, out, opts=opts), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=REPO)
    _wait(lambda: _training(train_dir, "epoch ["), "the second run to train", timeout=300)
    second.send_signal(signal.SIGTERM)
    stdout, stderr = second.communicate(timeout=120)
    assert second.returncode == 143, stdout[-3000:] + stderr[-3000:]
    assert "interrupted by SIGTERM during train_base dtd seed 1" in stderr
    assert "Run the same command again to resume" in stderr and "Traceback" not in stdout + stderr
    assert json.load(open(os.path.join(train_dir, "dept_run.json")))["status"] == "interrupted"
    # 3. The same command resumes (epoch 1 is not trained again) and finishes.
    third = subprocess.run(command(trained, out, opts=opts), timeout=600, **runner())
    ok(third)
    final = json.load(open(os.path.join(train_dir, "dept_run.json")))
    assert final["status"] == "finished" and final["checkpoint"]["epoch"] == epochs
    assert f"epoch [1/{epochs}]" not in open(os.path.join(train_dir, "log.txt")).read()
    assert len(glob.glob(os.path.join(train_dir, "log-unfinished-*.txt"))) == 2
    assert table(out, f"demo_tiny+OPTIM.MAX_EPOCH={epochs}")["dtd"]["seeds"] == "1"


def test_the_new_methods_run_through_the_runner_with_no_other_change(trained, tmp_path):
    """Zero-shot CLIP (evaluated as built, both stages), a method and its DePT variant: per-trainer
    tables, and the summary with every method side by side, the zero-shot row first."""
    cmd = command(trained, tmp_path / "output")
    at = cmd.index("--config")
    cmd[at:at] = ["--trainers", "ZeroshotCLIP", "KgCoOp", "KgCoOpDePT"]
    ok(subprocess.run(cmd, timeout=900, **runner()))
    results = tmp_path / "output" / "base2new" / "results"
    for trainer in ("ZeroshotCLIP", "KgCoOp", "KgCoOpDePT"):
        dtd = {row["dataset"]: row for row in csv.DictReader((results / f"{trainer}_{VARIANT}_shots2.csv").open())}
        dtd = dtd["dtd"]
        assert dtd["seeds"] == "1" and 0 <= float(dtd["base"]) <= 100 and 0 <= float(dtd["new"]) <= 100
        assert "paper figures omitted: 2 shots (paper: 16)" in dtd["note"]
        run = tmp_path / "output" / "base2new" / "train_base" / "dtd" / "shots_2" / trainer / VARIANT / "seed1"
        with open(run / "dept_run.json") as f:
            made = json.load(f)
        assert made["trainer"] == trainer and made["mode"] == ("eval" if trainer == "ZeroshotCLIP" else "train")
    summary = list(csv.DictReader((results / "summary+OPTIM.MAX_EPOCH=1_shots2.csv").open()))
    assert [(r["dataset"], r["trainer"]) for r in summary] == [("dtd", "ZeroshotCLIP"), ("dtd", "KgCoOp"),
                                                               ("dtd", "KgCoOpDePT")]
    plain, dept = summary[1], summary[2]
    kgcoop = {row["dataset"]: row for row in csv.DictReader((results / f"KgCoOpDePT_{VARIANT}_shots2.csv").open())}
    assert dept["hm"] == kgcoop["dtd"]["hm"] and plain["hm"] != "" and dept["paper_hm"] == ""
    assert float(dept["dept_gain_hm"]) == pytest.approx(float(dept["hm"]) - float(plain["hm"]), abs=0.011)
    assert dept["gain_over"] == "1" and plain["dept_gain_hm"] == ""
