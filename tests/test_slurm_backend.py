"""``--backend slurm`` against a real SLURM: the runner submits a job array through submitit, the
tasks run the chains and the runner gathers the tables; a cancelled task's chain resumes when the
same command runs again, and finished chains are not submitted again.

Needs SLURM's commands and a cluster whose nodes see this machine's temporary folder (CI:
``bash .ci/slurm/setup.sh``, one node, this machine, slurmd as root). Skipped without ``sinfo``
(then ``DEPT_REQUIRE_SLURM=1``, as ``.ci/run`` sets it, fails the run). Everything runs on the
embedded demo (digits, tiny random CLIP) on CPU: a chain takes seconds. Three tests need no
cluster: submitit accepts every parameter the runner gives it, a task's runs ignore SLURM's
time-limit warning (their task stops them with SIGTERM), and DEPT_REQUIRE_SLURM=1 fails a run whose
SLURM tests were skipped.
"""
import csv
import glob
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

# An epoch of the demo takes about 0.1 s: enough of them for a cancel to land mid-training
EPOCHS = 60
RUNNER_TIMEOUT_S = 420


def command(output, seeds, *extra):
    return [sys.executable, "-m", "dept", "base2new", "--seeds", *map(str, seeds), "--trainers", "CoOpDePT",
            "--backend", "slurm", "--gpus-per-job", "0", "--cpus-per-job", "1", "--mem-gb", "2", "--time-min", "10",
            "--output", str(output), *extra, "--", "OPTIM.MAX_EPOCH", str(EPOCHS)]


def run_runner(cmd, jobs):
    """Run the runner; remember the job ids it submitted (cancelled at the end of the module)."""
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=RUNNER_TIMEOUT_S,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        jobs.extend(re.findall(r"as job (\d+)", out))
        pytest.fail(f"the runner did not end within {RUNNER_TIMEOUT_S}s; its output:\n{out[-4000:]}")
    proc.output = proc.stdout + proc.stderr
    proc.jobs = re.findall(r"slurm: submitted \d+ task\(s\) as job (\d+)", proc.output)
    jobs.extend(proc.jobs)
    return proc


def queued(job_id):
    """The tasks of ``job_id`` SLURM still runs or will run."""
    out = subprocess.run(["squeue", "--noheader", "--array", "--jobs", job_id, "--format", "%i %T"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.split("\n") if out.returncode == 0 and out.stdout.strip() else []


def wait_for(what, condition, timeout, poll=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll)
    pytest.fail(f"{what}: not within {timeout}s")


def run_dir(output, stage, seed):
    found = glob.glob(os.path.join(str(output), "base2new", stage, "digits", "shots_16", "CoOpDePT", "*",
                                   f"seed{seed}"))
    assert len(found) == 1, f"{stage} seed {seed}: {found}"
    return found[0]


def record(output, stage, seed):
    with open(os.path.join(run_dir(output, stage, seed), "dept_run.json")) as f:
        return json.load(f)


def task_of(output, seed):
    """The SLURM task (``<job>`` or ``<job>_<index>``) the runner submitted seed ``seed``'s chain as."""
    with open(os.path.join(str(output), "slurm", "submitted.json")) as f:
        tasks = [task for key, task in json.load(f).items() if os.path.basename(key) == f"seed{seed}"]
    assert len(tasks) == 1, tasks
    return tasks[0]


def task_log(output, task):
    """What the task wrote (submitit's and our task's log lines, stdout then stderr)."""
    text = ""
    for stream in ("out", "err"):
        path = os.path.join(str(output), "slurm", task, f"{task}_0_log.{stream}")
        if os.path.isfile(path):
            with open(path) as f:
                text += f.read()
    return text or f"(task {task} wrote no log)"


def first_checkpoint(output, seed, task):
    """Seed ``seed``'s training has saved its first epoch (only the newest checkpoint is kept)."""
    if not queued(task):
        pytest.fail(f"task {task} ended before its first checkpoint; its log:\n{task_log(output, task)[-4000:]}")
    return glob.glob(os.path.join(str(output), "base2new", "train_base", "digits", "*", "*", "*", f"seed{seed}", "*",
                                  "model.pth.tar-*"))


def fingerprint(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), st.st_mtime_ns


def table(output):
    found = glob.glob(os.path.join(str(output), "base2new", "results", "CoOpDePT_*_shots16.csv"))
    assert len(found) == 1, found
    with open(found[0]) as f:
        return {row["dataset"]: row for row in csv.DictReader(f)}


# -- without a cluster: what is submitted, and how a task's runs are started ---------------------

def fake_slurm(folder):
    """``srun``/``sbatch``/``squeue``/``sinfo`` stand-ins on PATH: submitit's executor needs them to exist
    (sinfo not answering: the partition is not checked)."""
    folder.mkdir()
    for tool in ("srun", "sbatch", "squeue", "sinfo"):
        (folder / tool).write_text("#!/bin/sh\nexit 1\n")
        (folder / tool).chmod(0o755)
    return str(folder)


@pytest.mark.parametrize("gpus", [0, 2])
def test_submitit_accepts_the_parameters(tmp_path, monkeypatch, gpus):
    pytest.importorskip("submitit")
    from dept.run.backends import Callbacks
    from dept.run.backends.slurm import Slurm
    from dept.run.cli import ChainTask, parse_args
    from dept.run.execute import Executor

    monkeypatch.setenv("PATH", fake_slurm(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    args = parse_args(["--backend", "slurm", "--gpus-per-job", str(gpus), "--cpus-per-job", "6", "--mem-gb", "1.5",
                       "--time-min", "30", "--max-requeue", "5", "--slurm-partition", "gpu", "--slurm-account", "lab",
                       "--slurm-qos", "short", "--slurm-setup", "source /opt/venv/bin/activate",
                       "--slurm-python", "/opt/venv/bin/python3", "--output", str(tmp_path / "out")])
    def slurm(args):
        return Slurm(args, Callbacks.of(Executor(None), ChainTask(args, [])))

    executor = slurm(args).executor()  # submitit refuses any parameter it does not know
    assert executor._executor.max_num_timeout == 5
    text = executor._executor._make_submission_file_text("python -m task", "uid")
    for line in ("#SBATCH --cpus-per-task=6", "#SBATCH --mem=1536MB", "#SBATCH --time=30", "#SBATCH --partition=gpu",
                 "#SBATCH --account=lab", "#SBATCH --qos=short", "#SBATCH --signal=USR2@90",
                 "source /opt/venv/bin/activate", "srun --unbuffered"):
        assert line in text, (line, text)
    assert ("#SBATCH --gpus-per-node=2" in text) == bool(gpus), text
    srun = next(line for line in text.splitlines() if line.startswith("srun"))
    assert "--cpus-per-task 6" in srun, srun  # SLURM >= 22.05: srun no longer takes it from the job
    # what the task starts: --slurm-python, else the runner's own Python
    assert executor._executor._submitit_command_str.startswith("/opt/venv/bin/python3 -u -m submitit")
    args = parse_args(["--backend", "slurm", "--output", str(tmp_path / "out")])
    default = slurm(args).executor()._executor._submitit_command_str
    assert default.startswith(f"{shlex.quote(sys.executable)} -u -m submitit"), default


def test_runs_of_a_task_ignore_the_time_limit_warning():
    """SLURM signals every process of a job: the run must not die of USR2; its task stops it."""
    from dept.run.execute import child_setup

    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN)"]

    def child_ignores(*ignore):
        return subprocess.run(probe, preexec_fn=child_setup(os.getpid(), ignore), capture_output=True,
                              text=True, timeout=60).stdout.strip()

    assert child_ignores(signal.SIGUSR2) == "True"  # what a SLURM task's runner asks (ChainJob)
    assert child_ignores() == "False"  # everywhere else


def test_required_slurm_tests_fail_the_run_when_skipped(tmp_path):
    """DEPT_REQUIRE_SLURM=1 (as .ci/run sets it): a SLURM test skipped for want of SLURM fails the
    run; with SLURM's commands there it passes; without the requirement the skip passes."""
    import shutil
    import textwrap

    tools = fake_slurm(tmp_path / "bin")
    for tool in ("sinfo", "scancel"):
        shutil.copy(os.path.join(tools, "srun"), os.path.join(tools, tool))
    runs = {}
    for name, require, path in (("missing", "1", str(tmp_path / "empty")), ("present", "1", tools),
                                ("optional", "0", str(tmp_path / "empty"))):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(os.path.join(REPO, "tests", "conftest.py"), folder)
        (folder / "test_slurm_backend.py").write_text(textwrap.dedent("""
            import pytest
            @pytest.mark.slurm
            def test_cluster(): pass
        """))
        env = {k: v for k, v in os.environ.items() if k != "DEPT_REQUIRE_DASSL"}
        env.update(PATH=path, DEPT_REQUIRE_SLURM=require)
        runs[name] = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
                                      cwd=str(folder), env=env, text=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT)
    out = {name: (proc.wait(timeout=180), proc.stdout.read()) for name, proc in runs.items()}
    rc, text = out["missing"]
    assert rc == 1 and "DEPT_REQUIRE_SLURM=1: FAILED" in text and "sinfo" in text, text
    rc, text = out["present"]
    assert rc == 0 and "SLURM tests: 1 ran (1 passed, 0 failed), 0 skipped" in text, text
    rc, text = out["optional"]
    assert rc == 0 and "SLURM tests: 0 ran (0 passed, 0 failed), 1 skipped" in text, text


# -- on a real SLURM ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    out = subprocess.run(["sinfo", "--noheader", "--format", "%P %a %D %T"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip(), (
        f"sinfo does not answer: {out.stderr.strip()}: start a cluster (bash .ci/slurm/setup.sh)")
    return out.stdout


@pytest.fixture(scope="module")
def grid(cluster, slurm_jobs, tmp_path_factory):
    """Seeds 1 and 2 of the demo, submitted as one array and waited for (one output root for the module)."""
    output = tmp_path_factory.mktemp("slurm") / "output"
    start = time.time()
    proc = run_runner(command(output, (1, 2)), slurm_jobs)
    proc.took = time.time() - start
    return output, proc


@pytest.mark.slurm
@pytest.mark.dassl
def test_grid_runs_as_a_job_array(grid):
    output, proc = grid
    assert proc.returncode == 0, proc.output[-6000:]
    assert "slurm: submitted 2 task(s) as job" in proc.output, proc.output[-3000:]
    job = proc.jobs[0]
    for task in (f"{job}_0", f"{job}_1"):  # each chain ran in its task and returned through submitit
        assert os.path.isfile(os.path.join(str(output), "slurm", task, f"{task}_0_result.pkl")), task
    for stage in ("train_base", "test_new"):
        for seed in (1, 2):
            assert record(output, stage, seed)["status"] == "finished", (stage, seed)
    rows = table(output)
    assert rows["digits"]["seed_ids"].split() == ["1", "2"], rows["digits"]
    assert rows["digits"]["base"] and rows["digits"]["new"], rows["digits"]


@pytest.mark.slurm
@pytest.mark.dassl
def test_cancelled_chain_resumes_and_finished_ones_are_skipped(grid, slurm_jobs):
    output, first = grid
    assert first.returncode == 0, first.output[-6000:]
    finished = {(stage, seed): fingerprint(os.path.join(run_dir(output, stage, seed), "dept_run.json"))
                for stage in ("train_base", "test_new") for seed in (1, 2)}

    # Seeds 1 2 3, not waiting: only seed 3's chain is to do.
    proc = run_runner(command(output, (1, 2, 3), "--no-wait"), slurm_jobs)
    assert proc.returncode == 0, proc.output[-6000:]
    assert "slurm: submitted 1 task(s) as job" in proc.output, proc.output[-3000:]
    task = task_of(output, 3)
    wait_for(f"seed 3's first checkpoint (task {task})", lambda: first_checkpoint(output, 3, task), timeout=240)
    subprocess.run(["scancel", task], check=True, timeout=60)
    wait_for(f"task {task} gone from squeue after scancel", lambda: not queued(task), timeout=120, poll=0.5)

    train3 = run_dir(output, "train_base", 3)
    interrupted = record(output, "train_base", 3)
    # scancel's SIGTERM reached the run through SLURM, and the run saved its state on it
    with open(os.path.join(train3, "log.txt")) as f:
        assert interrupted["status"] == "interrupted", (interrupted["status"], f.read()[-3000:])

    # The same command, waiting: seed 3's chain is submitted again and resumes; 1 and 2 are not.
    again = run_runner(command(output, (1, 2, 3)), slurm_jobs)
    assert again.returncode == 0, again.output[-6000:]
    assert "slurm: submitted 1 task(s) as job" in again.output, again.output[-3000:]
    for stage in ("train_base", "test_new"):
        assert record(output, stage, 3)["status"] == "finished", stage
    assert os.path.isfile(os.path.join(train3, "log-unfinished-1.txt")), os.listdir(train3)
    with open(os.path.join(train3, "log.txt")) as f:
        assert "Resumed from" in f.read()
    for (stage, seed), before in finished.items():
        assert fingerprint(os.path.join(run_dir(output, stage, seed), "dept_run.json")) == before, (stage, seed)
    rows = table(output)
    assert rows["digits"]["seed_ids"].split() == ["1", "2", "3"], rows["digits"]


@pytest.mark.slurm
@pytest.mark.dassl
def test_time_limit_warning_requeues_the_task_and_a_rerun_waits_for_it(grid, slurm_jobs):
    output, first = grid
    assert first.returncode == 0, first.output[-6000:]
    proc = run_runner(command(output, (1, 2, 4), "--no-wait"), slurm_jobs)
    assert proc.returncode == 0, proc.output[-6000:]
    assert "slurm: submitted 1 task(s) as job" in proc.output, proc.output[-3000:]
    task = task_of(output, 4)
    wait_for(f"seed 4's first checkpoint (task {task})", lambda: first_checkpoint(output, 4, task), timeout=240)

    # What SLURM sends 90 s before the time limit (--signal=USR2@90), to every process of the job
    # (submitit's own tests send it the same way): the run saves, the task requeues itself.
    subprocess.run(["scancel", "--signal=USR2", task], check=True, timeout=60)
    wait_for(f"task {task} requeued (pending again)", lambda: any(" PENDING" in line for line in queued(task)),
             timeout=120, poll=0.5)
    assert record(output, "train_base", 4)["status"] == "interrupted", task_log(output, task)[-4000:]
    # SLURM holds a requeued job back two minutes: let it start now
    subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True, timeout=60)

    # The same command while the task is queued: it waits for that task, submits nothing.
    again = run_runner(command(output, (1, 2, 4)), slurm_jobs)
    assert again.returncode == 0, again.output[-6000:]
    assert f"in the queue already (task {task}): not submitted again" in again.output, again.output[-3000:]
    assert "slurm: submitted" not in again.output, again.output[-3000:]
    train4 = run_dir(output, "train_base", 4)
    for stage in ("train_base", "test_new"):
        assert record(output, stage, 4)["status"] == "finished", stage
    assert os.path.isfile(os.path.join(train4, "log-unfinished-1.txt")), os.listdir(train4)
    with open(os.path.join(train4, "log.txt")) as f:
        assert "Resumed from" in f.read()
    assert f"Requeued job {task}" in task_log(output, task)
