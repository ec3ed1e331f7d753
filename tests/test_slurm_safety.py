"""``--backend slurm``'s checks and messages on a real one-node SLURM (``bash .ci/slurm/setup.sh``:
2 CPUs, no GPU): an unsatisfiable request refused before ``sbatch``; a held task, then one that can
never start, said and cancelled by a waiting runner; two runners submitting at once (``sbatch``
slowed by a wrapper on PATH that sleeps and then runs the real one) submit a chain once; a task
requeued with ``scontrol requeue`` said, and resumed. Most tasks are submitted held
(``--slurm-extra=--hold``) and never run; one demo chain trains. Skipped without SLURM (failed with
DEPT_REQUIRE_SLURM=1)."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from conftest import REPO

pytestmark = [pytest.mark.slurm]
TIMEOUT_S = 300


def command(output, seeds=(1,), *extra, epochs=2):
    return [sys.executable, "-m", "dept", "base2new", "--seeds", *map(str, seeds), "--trainers", "CoOpDePT",
            "--backend", "slurm", "--time-min", "10", "--output", str(output), *extra, "--", "OPTIM.MAX_EPOCH",
            str(epochs)]


def run(cmd, jobs, env=None, timeout=TIMEOUT_S):
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(env or os.environ, PYTHONUNBUFFERED="1"))
    proc.output = proc.stdout + proc.stderr
    jobs.extend(re.findall(r"as job (\d+)", proc.output))
    return proc


def start(cmd, log, env=None):
    """A runner in the background, its output in ``log``."""
    with open(log, "w") as f:
        return subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                env=dict(env or os.environ, PYTHONUNBUFFERED="1"))


def wait_for(what, condition, timeout=TIMEOUT_S, poll=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll)
    pytest.fail(f"{what}: not within {timeout}s")


def text(path):
    with open(path) as f:
        return f.read()


def squeue(task):
    out = subprocess.run(["squeue", "--noheader", "--array", "--jobs", task, "-O", "JobArrayID:30,State:20,Reason:40"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def submitted_task(output):
    with open(os.path.join(str(output), "slurm", "submitted.json")) as f:
        (task,) = json.load(f).values()
    return task


def test_an_unsatisfiable_request_is_refused_before_sbatch(tmp_path, slurm_jobs):
    before = subprocess.run(["squeue", "--noheader", "-O", "JobID"], capture_output=True, text=True).stdout
    proc = run(command(tmp_path / "out", (1,), "--cpus-per-job", "64", "--gpus-per-job", "1",
                       "--slurm-extra=--begn=now"), slurm_jobs)
    assert proc.returncode == 2, proc.output[-3000:]
    for expected in ("--cpus-per-job 64: the nodes of partition debug have at most",
                     "--gpus-per-job 1: partition debug has no GPUs", "pass --gpus-per-job 0"):
        assert expected in proc.output, (expected, proc.output[-3000:])
    assert "sbatch has no option --begn (did you mean --begin?)" in proc.output, proc.output[-3000:]
    assert "Traceback" not in proc.output and "submitted" not in proc.output, proc.output[-3000:]
    assert not os.path.exists(tmp_path / "out" / "slurm" / "submitted.json")
    after = subprocess.run(["squeue", "--noheader", "-O", "JobID"], capture_output=True, text=True).stdout
    assert set(after.split()) <= set(before.split()), (before, after)


def test_a_task_that_cannot_start_is_said_and_cancelled(tmp_path, slurm_jobs):
    output = tmp_path / "out"
    # Submitted held, not waited for: --no-wait says which task runs which chain, and how to follow it
    proc = run(command(output, (1,), "--no-wait", "--slurm-extra=--hold"), slurm_jobs)
    assert proc.returncode == 0, proc.output[-3000:]
    job = re.search(r"as job (\d+)", proc.output).group(1)
    task = re.search(r"  task (\S+): CoOpDePT", proc.output).group(1)  # one chain: a job, not an array
    assert task == submitted_task(output), proc.output[-3000:]
    for expected in ( f"squeue --array --jobs {job}",
                     f"{output}/slurm/{task}/{task}_0_log.err", "run the same command again"):
        assert expected in proc.output, (expected, proc.output[-3000:])
    # A waiting runner says why it pends (held), then cancels it once it can never start
    log = tmp_path / "runner.log"
    runner = start(command(output, (1,)), log)
    try:
        wait_for("the held task said", lambda: "pending (JobHeldUser)" in text(log))
        assert f"scontrol release {task}" in text(log) and "slurm: submitted" not in text(log), text(log)
        subprocess.run(["scontrol", "update", f"JobId={task}", "NumCPUs=64"], capture_output=True, timeout=60)
        subprocess.run(["scontrol", "release", task], capture_output=True, timeout=60)
        assert runner.wait(timeout=TIMEOUT_S) == 1, text(log)[-3000:]
    finally:
        if runner.poll() is None:
            runner.kill()
    out = text(log)
    assert f"slurm task {task} (CoOpDePT" in out and "pending (PartitionConfig): it can never start" in out, out[-3000:]
    assert "lower --cpus-per-job" in out and f"scancel {task}" in out, out[-3000:]
    assert "1 run(s) failed" in out or "run(s) failed" in out, out[-3000:]
    wait_for(f"{task} cancelled", lambda: "PENDING" not in squeue(task), timeout=60)


def test_two_runners_submitting_at_once_submit_a_chain_once(tmp_path, slurm_jobs):
    output = tmp_path / "out"
    run(command(output, (1,), "--dry-run"), slurm_jobs)  # the demo's data and CLIP made once, before the race
    slow = tmp_path / "bin"
    slow.mkdir()
    # sbatch held until the second runner waits at the lock: it says so, and then the first one's sbatch goes on
    real = shutil.which("sbatch")
    (slow / "sbatch").write_text(f"#!/bin/sh\ntouch {tmp_path}/in-sbatch\nfor i in $(seq 600); do "
                                 f"[ -e {tmp_path}/go ] && break; sleep 0.2; done\nexec {real} \"$@\"\n")
    (slow / "sbatch").chmod(0o755)
    env = dict(os.environ, PATH=f"{slow}{os.pathsep}{os.environ['PATH']}")
    cmd = command(output, (1, 2), "--no-wait", "--slurm-extra=--hold")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    runners = [start(cmd, logs[0], env)]
    try:
        wait_for("the first runner in sbatch", lambda: os.path.exists(tmp_path / "in-sbatch"), timeout=120, poll=0.1)
        runners.append(start(cmd, logs[1], env))
        wait_for("the second runner waiting", lambda: "another runner is submitting" in text(logs[1]), timeout=120)
    finally:
        (tmp_path / "go").touch()
    codes = [r.wait(timeout=TIMEOUT_S) for r in runners]
    outs = [text(log) for log in logs]
    for out in outs:
        slurm_jobs.extend(re.findall(r"as job (\d+)", out))
    assert codes == [0, 0], outs
    submitted = [re.findall(r"submitted (\d+) task\(s\)", out) for out in outs]
    assert sorted(submitted) == [[], ["2"]], outs  # one runner submitted both chains, the other none
    other = outs[submitted.index([])]
    assert "another runner is submitting" in other and other.count("in the queue already") == 2, other
    with open(output / "slurm" / "submitted.json") as f:
        assert len(set(json.load(f).values())) == 2


@pytest.mark.dassl
def test_a_requeue_by_slurm_is_said_and_the_task_resumes(tmp_path, slurm_jobs):
    output = tmp_path / "out"
    log = tmp_path / "runner.log"
    runner = start(command(output, (1,), "--cpus-per-job", "1", "--mem-gb", "2", epochs=60), log)
    try:
        job = wait_for("the submission", lambda: re.search(r"as job (\d+)", text(log)), timeout=180).group(1)
        slurm_jobs.append(job)
        task = submitted_task(output)
        wait_for("a first checkpoint", lambda: [f for _, _, fs in os.walk(output / "base2new" / "train_base")
                                                for f in fs if f.startswith("model.pth.tar-")], timeout=240)
        subprocess.run(["scontrol", "requeue", task], check=True, capture_output=True, timeout=60)
        wait_for("the requeue said", lambda: f"slurm task {task} (CoOpDePT" in text(log)
                 and "requeued (restart 1): by SLURM" in text(log), timeout=120)
        # released only once the waiting runner has said so (it polls squeue on its own clock)
        wait_for("the runner saying it pends", lambda: "pending (BeginTime)" in text(log), timeout=150)
        subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True, timeout=60)
        assert runner.wait(timeout=TIMEOUT_S) == 0, text(log)[-4000:]
    finally:
        if runner.poll() is None:
            runner.kill()
    out = text(log)
    assert "pending (BeginTime)" in out, out[-4000:]
    assert "[progress] 2/2 runs done (2 ran, 0 skipped, 0 failed)" in out, out[-4000:]
    task_log = text(output / "slurm" / task / f"{task}_0_log.err") + text(output / "slurm" / task / f"{task}_0_log.out")
    assert f"slurm task {task}: " in task_log, task_log[-3000:]  # the task names itself as SLURM does
