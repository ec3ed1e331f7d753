"""``--backend slurm``: one job-array task per chain still to do, through ``submitit``.

Each task asks for the resources given on the command line (``--slurm-partition``,
``--gpus-per-job``, ``--cpus-per-job``, ``--mem-gb``, ``--time-min``, ...). A task that is
preempted or reaches its time limit is requeued by submitit and its runs resume from their last
checkpoint. Chains already finished on disk are not submitted. The runner waits for the array (or,
with ``--no-wait``, returns at once: run the same command again later to gather the tables) and
reads the results from the shared output root.
"""
import logging
import os
import signal
import sys
import time

from dept.run.errors import UsageError
from dept.store.layout import SLURM_DIR, Layout

logger = logging.getLogger(__name__)


def add_slurm_arguments(g):
    g.add_argument("--slurm-partition", default="", help="slurm: partition")
    g.add_argument("--slurm-account", default="", help="slurm: account")
    g.add_argument("--slurm-qos", default="", help="slurm: quality of service")
    g.add_argument("--slurm-constraint", default="", help="slurm: node constraint")
    g.add_argument("--gpus-per-job", type=int, default=1, help="slurm: GPUs per task (0 on a CPU partition)")
    g.add_argument("--cpus-per-job", type=int, default=8, help="slurm: CPUs per task")
    g.add_argument("--mem-gb", type=float, default=32, help="slurm: memory per task, GB")
    g.add_argument("--time-min", type=int, default=240, help="slurm: time limit per task, minutes (then requeued)")
    g.add_argument("--array-parallelism", type=int, default=64, help="slurm: tasks of the array running at once")
    g.add_argument("--max-requeue", type=int, default=3,
                   help="slurm: times a task is requeued after a time-out or preemption")
    g.add_argument("--slurm-setup", action="append", default=[],
                   help="slurm: a shell line run before each task (repeatable), e.g. 'source ~/venv/bin/activate' "
                        "or 'module load cuda'")
    g.add_argument("--slurm-python", default="",
                   help="slurm: the Python each task runs (default: the runner's own, sys.executable); one "
                        "with dept and Dassl installed, e.g. a container's or a venv's on the compute nodes")
    g.add_argument("--slurm-folder", default="",
                   help="slurm: where submitit writes the tasks' logs (default: <output>/slurm)")
    g.add_argument("--no-wait", action="store_true", help="slurm: submit and return; the same command again "
                   "later gathers the results (and submits what is still missing)")


def _preempt_signal():
    """The signal submitit has SLURM send before a task's time limit (``--signal=USR2@90``), and that
    submitit handles by checkpointing and requeueing: USR2 unless ``$SUBMITIT_PREEMPT_SIGNAL`` says."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)


class ChainJob:
    """What a SLURM task runs: the chain ``key`` of the grid, rebuilt in the task's process from the
    runner's arguments (``task.prepare``: an executor and the chain; its runs are children, as
    everywhere).

    Signals, as SLURM sends them to every process of the job:

    * SIGTERM (``scancel``, a preemption): the run saves its state and the task exits without a
      result (exit 143), so a task SLURM requeues after a preemption is still waited for, and a
      cancelled one is reported as ended; the next runner resumes its runs.
    * the time-limit warning (USR2, ``--signal=USR2@90``): the run is stopped with SIGTERM (it
      ignores the warning itself: the executor's ``ignored_signals``) and saves; then submitit's handler calls
      ``checkpoint``, which resubmits this same chain, and requeues the task (up to
      ``--max-requeue`` times); the requeued task resumes its runs from their checkpoints.
    """

    def __init__(self, task):
        self.task = task

    def __call__(self, key):
        from dept.run.errors import Interrupted
        from dept.util.logs import setup_logging

        setup_logging()
        logging.getLogger("submitit").propagate = False  # it has its own handler: its lines once, not twice
        runner, chain = self.task.prepare(key)
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus and "OMP_NUM_THREADS" not in os.environ:  # torch would take every core of the node
            runner.set_env({"OMP_NUM_THREADS": cpus})
        logger.info("slurm task %s: %s", os.environ.get("SLURM_JOB_ID", "?"), chain.label)
        warning = _preempt_signal()
        submitit_handler = signal.getsignal(warning)  # checkpoint and requeue (submitit's, in a task)
        warned = []

        def on_warning(signum, frame):
            logger.warning("slurm task: %s (time limit near, or preemption): stopping the run to requeue",
                           signal.Signals(signum).name)
            warned.append(signum)
            runner.on_signal(signal.SIGTERM, frame)

        handlers = {signal.SIGINT: runner.on_signal, signal.SIGTERM: runner.on_signal, warning: on_warning}
        previous = {s: signal.signal(s, handler) for s, handler in handlers.items()}
        try:
            runner.ignored_signals = (warning,)
            runner.run_chain(chain, blocking=True)
        except Interrupted as err:
            logger.warning(err.line())
            for s, handler in previous.items():
                signal.signal(s, handler)
            if warned and callable(submitit_handler):
                submitit_handler(warned[0], None)  # checkpoint (this chain again), requeue, exit
            raise SystemExit(128 + int(err.signum)) from None  # no result: a requeued task is still waited for
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return list(runner.failed)

    def checkpoint(self, key):
        """submitit, before requeueing: the same chain again (its runs resume from their checkpoints)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, key)


# squeue states of a task that will still run or is running (anything else has ended)
_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
           "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


def queued_tasks(array_ids):
    """``{task id: state}`` of the tasks of these job arrays that SLURM still runs or will run
    (``squeue``: it needs no accounting, unlike ``sacct``); None when squeue does not answer."""
    import subprocess

    tasks = {}
    for array_id in sorted(set(array_ids)):
        try:
            out = subprocess.run(["squeue", "--noheader", "--array", "--jobs", array_id, "--format", "%i %T"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode != 0:
            if "Invalid job id" in out.stderr:  # ended long ago: forgotten by slurmctld
                continue
            return None
        for line in out.stdout.splitlines():
            task, _, state = line.strip().partition(" ")
            if state in _ACTIVE:
                tasks[task] = state
    return tasks


class Slurm:
    """One job-array task per chain still to do, through submitit; see the module doc.

    Followed with ``squeue`` (a task's result file says it ended well; a task gone from the queue
    without one was cancelled or killed). ``<slurm folder>/submitted.json`` names the task of each
    chain submitted: a runner started while an earlier submission still runs waits for those tasks
    instead of submitting their chains twice."""

    POLL_S = 2  # result files
    QUEUE_POLL_S = 10  # squeue
    RESULT_GRACE_S = 20  # a task gone from the queue: its result file may still be on its way (NFS)

    def __init__(self, args, callbacks):
        self.args, self.callbacks = args, callbacks
        try:
            import submitit  # noqa: F401
        except ImportError as err:
            raise UsageError("--backend slurm needs submitit: pip install submitit") from err

    def parameters(self):
        a = self.args
        # srun is told the CPUs again: since SLURM 22.05 it no longer reads them from the job
        # (SLURM_CPUS_PER_TASK), and the task would be bound to one CPU
        params = dict(timeout_min=a.time_min, cpus_per_task=a.cpus_per_job, mem_gb=a.mem_gb,
                      name=f"dept-{a.protocol.replace('_', '-')}", tasks_per_node=1, nodes=1,
                      slurm_array_parallelism=a.array_parallelism,
                      slurm_srun_args=["--cpus-per-task", str(a.cpus_per_job)])
        if a.gpus_per_job:
            params["gpus_per_node"] = a.gpus_per_job
        for key, value in (("slurm_partition", a.slurm_partition), ("slurm_account", a.slurm_account),
                           ("slurm_qos", a.slurm_qos), ("slurm_constraint", a.slurm_constraint)):
            if value:
                params[key] = value
        if a.slurm_setup:
            params["slurm_setup"] = list(a.slurm_setup)
        return params

    def folder(self):
        return self.args.slurm_folder or Layout(self.args.output).folder(SLURM_DIR)

    def executor(self):
        import shutil

        import submitit

        missing = [tool for tool in ("sbatch", "srun", "squeue") if shutil.which(tool) is None]
        if missing:
            raise UsageError(f"--backend slurm needs SLURM's {', '.join(missing)} on PATH: run it where jobs are "
                             "submitted (a login node of the cluster)")
        # max_num_timeout is the executor's, not an sbatch parameter (update_parameters refuses it)
        executor = submitit.AutoExecutor(folder=os.path.join(self.folder(), "%j"), cluster="slurm",
                                         slurm_max_num_timeout=self.args.max_requeue,
                                         slurm_python=self.args.slurm_python or None)
        executor.update_parameters(**self.parameters())
        return executor

    def job(self, task_id):
        """submitit's handle on task ``<array>_<index>`` of an earlier submission (its files)."""
        from submitit.slurm.slurm import SlurmJob

        return SlurmJob(folder=os.path.join(self.folder(), "%j"), job_id=task_id)

    def unfinished(self, chains):
        """The chains with a run still to do (finished ones are verified here, not submitted)."""
        return [chain for chain in chains if self.callbacks.todo(chain)]

    def describe(self, chains):
        todo = self.unfinished(chains)
        logger.info("backend: slurm, %d of %d chain(s) to submit as one array; %s; tasks run %s", len(todo),
                    len(chains), ", ".join(f"{k}={v}" for k, v in self.parameters().items()),
                    self.args.slurm_python or sys.executable)

    # -- the chains submitted and not ended ----------------------------------------------------

    def _registry(self):
        return os.path.join(self.folder(), "submitted.json")

    def _read_registry(self):
        import json

        try:
            with open(self._registry()) as f:
                registry = json.load(f)
        except (OSError, ValueError):
            return {}
        return registry if isinstance(registry, dict) else {}

    def in_queue(self, chains):
        """``{chain key: task id}`` of the chains a task submitted earlier still runs or will run."""
        submitted = self._read_registry()
        registry = {c.key: submitted[c.key] for c in chains if isinstance(submitted.get(c.key), str)}
        if not registry:
            return {}
        queued = queued_tasks(task.split("_")[0] for task in registry.values())
        return {key: task for key, task in registry.items() if queued and task in queued}

    def _remember(self, submitted):
        from dept.util.files import FileLock, write_json

        os.makedirs(self.folder(), exist_ok=True)
        with FileLock(os.path.join(self.folder(), ".submitted.lock")):
            registry = dict(self._read_registry(), **submitted)
            queued = queued_tasks(task.split("_")[0] for task in registry.values())
            if queued is not None:  # forget the tasks that ended (keep all when squeue did not answer)
                registry = {key: task for key, task in registry.items() if task in queued or key in submitted}
            write_json(self._registry(), registry)

    # -- submitting and waiting --------------------------------------------------------------

    def run(self, chains):
        todo = self.unfinished(chains)
        if not todo:
            logger.info("slurm: every chain is finished on disk; nothing to submit")
            return
        running = self.in_queue(todo)
        for chain in todo:
            if chain.key in running:
                logger.info("slurm: %s is in the queue already (task %s): not submitted again", chain.label,
                            running[chain.key])
        tasks = {chain.key: self.job(running[chain.key]) for chain in todo if chain.key in running}
        submit = [chain for chain in todo if chain.key not in running]
        if submit:
            jobs = self.executor().map_array(ChainJob(self.callbacks.task), [chain.key for chain in submit])
            logger.info("slurm: submitted %d task(s) as job %s (logs: %s)", len(jobs),
                        jobs[0].job_id.split("_")[0], self.folder())
            tasks.update((chain.key, j) for chain, j in zip(submit, jobs))
            self._remember({chain.key: j.job_id for chain, j in zip(submit, jobs)})
        if self.args.no_wait:
            logger.info("slurm: not waiting (--no-wait); run the same command again to gather the results")
            return
        self.wait({tasks[chain.key]: chain for chain in todo})

    def wait(self, pending):
        """Until every task of ``pending`` (submitit job: chain) has ended; failures go to the runner."""
        total, gone, counts, last_poll = len(pending), {}, None, float("-inf")
        while pending:
            polled = time.time() - last_poll >= self.QUEUE_POLL_S
            if polled:
                queued, last_poll = queued_tasks(j.job_id.split("_")[0] for j in pending), time.time()
                now = {s: sum(1 for j in pending if (queued or {}).get(j.job_id) == s) for s in ("RUNNING", "PENDING")}
                if queued is not None and now != counts:
                    counts = now
                    logger.info("slurm: %d task(s) running, %d pending", now["RUNNING"], now["PENDING"])
            for j, chain in list(pending.items()):
                if j.paths.result_pickle.exists() or (polled and queued is None and j.done()):  # no squeue: sacct
                    self.gather(j, chain)
                elif not polled or queued is None:
                    continue
                elif j.job_id in queued:
                    gone.pop(j, None)
                    continue
                elif time.time() - gone.setdefault(j, time.time()) < self.RESULT_GRACE_S:
                    continue
                else:
                    logger.error("slurm task %s (%s) ended without a result: cancelled (scancel), preempted, out "
                                 "of memory or out of time; its log: %s", j.job_id, chain.label, j.paths.stderr)
                    self.callbacks.fail(chain.label, f"slurm task {j.job_id} ended without a result (run the same "
                                        "command again: its runs resume)")
                del pending[j]
                logger.info("[progress] slurm: %d of %d task(s) done", total - len(pending), total)
            if pending:
                time.sleep(self.POLL_S)

    def gather(self, j, chain):
        """The result of a task that wrote one: the runs that failed in it, or the error it raised."""
        try:
            for label, short in j.result():
                self.callbacks.fail(label, f"{short} (task {j.job_id})")
        except Exception as err:  # the task raised: its runs are unfinished on disk
            logger.error("slurm task %s (%s) failed: %s (log: %s)", j.job_id, chain.label, _error_line(err),
                         j.paths.stderr)
            self.callbacks.fail(chain.label, f"slurm task {j.job_id} failed: {_error_line(err)}")


def _error_line(err):
    """The exception line of the traceback submitit's error carries (between its dashed lines)."""
    parts = str(err).split("----------------------")
    lines = [line.strip() for line in (parts[1] if len(parts) > 2 else str(err)).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
