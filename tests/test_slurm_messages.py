"""What the SLURM back-end checks before ``sbatch`` and says while it waits, as pure functions: the
partition check (sinfo's lines), ``--slurm-extra``, the time limit, squeue's lines, the pending and
requeue messages, the task's name and the runner's [progress] line from tasks' counts. No cluster
needed; tests/test_slurm_safety.py sees the same messages come from a real SLURM."""
import argparse
import logging

import pytest

from dept.run.backends.slurm_check import fit, gres_gpus, parse_extra, parse_sinfo, time_limit_minutes
from dept.run.backends.slurm_queue import Watch, parse_squeue, requeue_line, requeue_log, summary
from dept.run.errors import UsageError

SBATCH = {"reservation", "exclude", "mail-type", "tmp", "gres", "hold", "nodelist", "time", "cpus-per-task"}
CPU_ONLY = "vm|debug*|2|22899|(null)|infinite\n"
MIXED = ("c1|cpu*|64|256000|(null)|2-00:00:00\n"
         "g1|gpu|32|512000|gpu:a100:4(S:0-1)|4:00:00\ng2|gpu|16|128000|gpu:v100:2|4:00:00\n")


def args(**kw):
    base = dict(gpus_per_job=None, cpus_per_job=None, mem_gb=None, time_min=240, slurm_partition="")
    base.update(kw)
    return argparse.Namespace(**base)


def refused(*a, **kw):
    with pytest.raises(UsageError) as err:
        fit(*a, **kw)
    return str(err.value)


def test_sinfo_lines_gres_and_time_limits():
    nodes = parse_sinfo(MIXED + "garbage line\n")
    assert [(n.name, n.partition, n.cpus, n.mem_mb) for n in nodes] == [
        ("c1", "cpu*", 64, 256000), ("g1", "gpu", 32, 512000), ("g2", "gpu", 16, 128000)]
    assert [n.gpus for n in nodes] == [{}, {"a100": 4}, {"v100": 2}]
    assert [n.time_limit_min for n in nodes] == [2880, 240, 240]
    assert gres_gpus("gpu:4,mps:100") == {"": 4}
    assert gres_gpus("gpu:a100:2,gpu:v100:1(IDX:0)") == {"a100": 2, "v100": 1}
    assert gres_gpus("(null)") == {}
    assert [time_limit_minutes(t) for t in ("infinite", "30", "30:00", "1:30:00", "1-00:00:00", "0:30")] == [
        None, 30, 30, 90, 1440, 1]


def test_defaults_fit_a_cpu_only_partition_and_explicit_values_are_checked():
    nodes = parse_sinfo(CPU_ONLY)
    request = fit(args(), nodes, {})
    assert (request.gpus, request.cpus) == (0, 2) and 0 < request.mem_gb * 1024 <= 22899, request
    assert any("--gpus-per-job 0" in note for note in request.notes), request.notes
    text = refused(args(cpus_per_job=8), nodes, {})
    assert "--cpus-per-job 8" in text and "at most 2 CPUs" in text and "--cpus-per-job 2 or fewer" in text, text
    text = refused(args(gpus_per_job=1), nodes, {})
    assert "--gpus-per-job 1: partition debug has no GPUs" in text and "--gpus-per-job 0" in text, text
    text = refused(args(mem_gb=64, gpus_per_job=0), nodes, {})
    assert "--mem-gb 64" in text and "at most 22.4 GB" in text, text
    # without sinfo nothing is fitted nor refused (but the time limit still is)
    assert (fit(args(), None, {}).gpus, fit(args(), None, {}).cpus) == (1, 8)
    assert "--time-min 5 or more" in refused(args(time_min=2), None, {})


def test_partitions_gpu_types_and_time_limits():
    nodes = parse_sinfo(MIXED)
    assert fit(args(), nodes, {}).gpus == 0  # the default partition, cpu*, has none
    request = fit(args(slurm_partition="gpu", gpus_per_job=None), nodes, {})
    assert (request.gpus, request.cpus, request.mem_gb) == (1, 8, 32.0) and not request.notes
    assert "no such partition; sinfo lists cpu, gpu" in refused(args(slurm_partition="gpus"), nodes, {})
    text = refused(args(slurm_partition="gpu", time_min=600), nodes, {})
    assert "--time-min 600: partition gpu allows at most 240 min" in text, text
    a100 = fit(args(slurm_partition="gpu"), nodes, {"gres": "gpu:a100:2"})
    assert a100.gpus == 0 and a100.gres_gpus == ("a100", 2)  # the --gres asks them, not --gpus-per-node
    text = refused(args(slurm_partition="gpu"), nodes, {"gres": "gpu:h100:1"})
    assert "no h100 GPUs (their GPU types: a100, v100)" in text, text
    text = refused(args(slurm_partition="gpu", gpus_per_job=1), nodes, {"gres": "gpu:a100:1"})
    assert "GPUs asked twice" in text, text
    # each limit met by some node, never all at once
    text = refused(args(slurm_partition="gpu", cpus_per_job=32, gpus_per_job=0), nodes, {"gres": "gpu:v100:1"})
    assert "no node of partition gpu has 32 CPUs" in text, text


def test_slurm_extra_is_validated():
    extra = parse_extra(["--reservation=maint", "exclude=node[1-3]", "--mail-type=END,FAIL", "--hold",
                         "--gres=gpu:a100:1", "--tmp=20G"], SBATCH)
    assert extra == {"reservation": "maint", "exclude": "node[1-3]", "mail-type": "END,FAIL", "hold": True,
                     "gres": "gpu:a100:1", "tmp": "20G"}
    with pytest.raises(UsageError) as err:
        parse_extra(["--time=10", "-w node1", "--reservaton=x", "--tmp=", "--cpus-per-task=4", "two words"], SBATCH)
    text = str(err.value)
    for expected in ("--time is set by the runner; use --time-min", "short sbatch options are not taken",
                     "sbatch has no option --reservaton (did you mean --reservation?)", "--tmp=: no value",
                     "use --cpus-per-job", "two words: not one sbatch option"):
        assert expected in text, (expected, text)
    assert parse_extra(["--anything=1"], set()) == {"anything": "1"}  # sbatch --help not known: not checked


def test_squeue_lines_and_summary():
    text = ("12_0   RUNNING   0   None\n12_1   PENDING   0   Resources\n12_2   PENDING   1   BeginTime\n"
            "12_3   PENDING   0   JobHeldUser\n12_4   COMPLETED 0   None\n")
    tasks = parse_squeue(text)
    assert tasks["12_2"].restarts == 1 and tasks["12_2"].reason == "BeginTime" and tasks["12_0"].reason == ""
    assert not tasks["12_4"].active and tasks["12_3"].active
    assert summary([s for s in tasks.values() if s.active]) == (
        "1 running, 3 pending (1 BeginTime, 1 JobHeldUser, 1 Resources)")


def test_watch_says_pending_reasons_requeues_and_node_failures(tmp_path):
    log = tmp_path / "7_0_0_log.err"
    watch = Watch({"7_0": "CoOp seed 1", "7_1": "CoOp seed 2"}, 3, {"7_0": str(log), "7_1": str(tmp_path / "none")})
    state = parse_squeue("7_0 RUNNING 0 None\n7_1 PENDING 0 JobHeldUser\n")
    messages, hopeless = watch.update(state, now=0)
    texts = [t for _, t in messages]
    assert texts[0] == "slurm: 1 running, 1 pending (1 JobHeldUser)" and not hopeless
    assert any("7_1 (CoOp seed 2) pending (JobHeldUser): held: it starts once released (scontrol release 7_1)" in t
               for t in texts), texts
    assert watch.update(state, now=10)[0] == []  # nothing new: nothing said
    again = [t for _, t in watch.update(state, now=700)[0]]
    assert any("still pending (JobHeldUser)" in t for t in again), again  # a stuck task is said again
    # 7_0 requeued by SLURM (scontrol requeue), then its node failing, then a time-out requeue by submitit
    messages, _ = watch.update(parse_squeue("7_0 PENDING 1 BeginTime\n7_1 PENDING 0 PartitionConfig\n"), now=710)
    texts = [t for _, t in messages]
    assert any("7_0 (CoOp seed 1) requeued (restart 1): by SLURM" in t for t in texts), texts
    assert any("7_0 (CoOp seed 1) pending (BeginTime)" in t for t in texts), texts
    _, hopeless = watch.update(parse_squeue("7_1 PENDING 0 PartitionConfig\n"), now=720)
    assert "never start" in hopeless["7_1"] and "--cpus-per-job" in hopeless["7_1"], hopeless
    messages, _ = watch.update(parse_squeue("7_0 NODE_FAIL 1 None\n"), now=730)
    assert any("its node failed (NODE_FAIL)" in t for _, t in messages), messages
    messages, _ = watch.update(parse_squeue("7_0 PENDING 2 BeginTime\n"), now=740)
    assert any("requeued (restart 2): by SLURM after its node failed" in t for _, t in messages), messages
    log.write_text("submitit WARNING Caught signal SIGUSR2 on vm: this job is timed-out.\n"
                   "submitit INFO Requeued job 7_0 (2 remaining timeouts)\n")
    messages, _ = watch.update(parse_squeue("7_0 PENDING 3 BeginTime\n"), now=750)
    assert [lvl for lvl, t in messages if "requeued (restart" in t] == [logging.WARNING]
    assert any("requeued (restart 3): by itself at its time limit" in t and "2 time-out requeue(s) left of "
               "--max-requeue 3" in t for _, t in messages), messages
    messages, _ = watch.update(parse_squeue("7_0 PENDING 4 BeginTime\n"), now=760)  # no new word from submitit
    assert any("requeued (restart 4): by SLURM" in t for _, t in messages), messages


def test_requeue_lines():
    assert requeue_log("/nonexistent") == []
    preempted = requeue_line("5_2", "x", 1, [("preempted", 3)], set(), 3)
    assert "preempted" in preempted and "do not count against --max-requeue 3" in preempted
    assert "by SLURM" in requeue_line("5_2", "x", 1, [], {"PENDING"}, 3)


def test_task_name_and_progress_merge(caplog):
    from dept.run.backends.slurm import task_name
    from dept.run.progress import Progress

    assert task_name({"SLURM_JOB_ID": "104", "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "4"}) == "100_4"
    assert task_name({"SLURM_JOB_ID": "104"}) == "104"

    class Chain:
        runs = [1, 2]

    progress = Progress([Chain(), Chain(), Chain()])
    progress.set_running(1)
    with caplog.at_level(logging.INFO, logger="dept.run.progress"):
        progress.merge({"skipped": 2})
        progress.merge({"ran": 2, "failed": 0}, [3.0, 1.0])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[progress]")]
    assert lines[-1].startswith("[progress] 4/6 runs done (2 ran, 2 skipped, 0 failed), 1 running, 2 left; 2s per "
                                "run"), lines


def test_chains_refused_before_submission_count_as_failed_not_skipped(caplog):
    """A chain the runner will not submit because a run of it failed before (or holds other settings)
    is counted as that failed run and the runs waiting on it, not as finished; nothing is submitted."""
    from dept.run.backends import Callbacks
    from dept.run.backends.slurm import Slurm
    from dept.run.progress import Progress

    class Chain:
        def __init__(self, key, runs):
            self.key, self.runs = key, list(range(runs))

    finished, failed_training, failed_eval = Chain("a", 2), Chain("b", 3), Chain("c", 2)
    refused = {"b": 0, "c": 1}  # b: its training failed before; c: its training finished, its evaluation failed
    progress = Progress([finished, failed_training, failed_eval])
    callbacks = Callbacks(None, lambda chain: False, None, None, None, None, lambda: progress,
                          lambda chain: refused.get(chain.key))
    # each logger's own level: another test may have quietened the "dept" loggers (the benchmark does)
    with caplog.at_level(logging.INFO, logger="dept.run.progress"), \
            caplog.at_level(logging.INFO, logger="dept.run.backends.slurm"):
        Slurm(argparse.Namespace(array_parallelism=4), callbacks).run([finished, failed_training, failed_eval])
    said = [r.getMessage() for r in caplog.records]
    assert "[progress] 7/7 runs done (0 ran, 3 skipped, 2 failed, 2 blocked by a failed training), 0 running, " \
           "0 left" in " ".join(said), said
    assert any("nothing to submit" in s for s in said)
