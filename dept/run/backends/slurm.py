"""``--backend slurm``: one job-array task per chain still to do, through ``submitit``.

Each task asks for the resources given on the command line (``--slurm-partition``,
``--gpus-per-job``, ``--cpus-per-job``, ``--mem-gb``, ``--time-min``, ...). A task that is
preempted or reaches its time limit is requeued by submitit and its runs resume from their last
checkpoint. Chains already finished on disk are not submitted. The runner waits for the array (or,
with ``--no-wait``, returns at once: run the same command again later to gather the tables) and
reads the results from the shared output root.
"""
import contextlib
import logging
import os
import signal
import sys
import time

from dept.run.backends.slurm_check import SIGNAL_MARGIN_S, fit, parse_extra, read_nodes, sbatch_options
from dept.run.backends.slurm_queue import Watch, poll, queued_tasks
from dept.run.errors import UsageError
from dept.store.layout import SLURM_DIR, Layout

logger = logging.getLogger(__name__)


def add_slurm_arguments(g):
    g.add_argument("--slurm-partition", default="", help="slurm: partition")
    g.add_argument("--slurm-account", default="", help="slurm: account")
    g.add_argument("--slurm-qos", default="", help="slurm: quality of service")
    g.add_argument("--slurm-constraint", default="", help="slurm: node constraint")
    g.add_argument("--gpus-per-job", type=int, default=None,
                   help="slurm: GPUs per task (default: 1, or 0 on a partition without GPUs)")
    g.add_argument("--cpus-per-job", type=int, default=None,
                   help="slurm: CPUs per task (default: 8, or the partition's nodes' CPUs when fewer)")
    g.add_argument("--mem-gb", type=float, default=None,
                   help="slurm: memory per task, GB (default: 32, or 90%% of the nodes' memory when less)")
    g.add_argument("--time-min", type=int, default=240, help="slurm: time limit per task, minutes (then requeued)")
    g.add_argument("--array-parallelism", type=int, default=64, help="slurm: tasks of the array running at once")
    g.add_argument("--max-requeue", type=int, default=3,
                   help="slurm: times a task is requeued after a time-out or preemption")
    g.add_argument("--slurm-setup", action="append", default=[],
                   help="slurm: a shell line run before each task (repeatable), e.g. 'source ~/venv/bin/activate' "
                        "or 'module load cuda'")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="--OPTION=VALUE",
                   help="slurm: any other sbatch option, one per flag, with '=': --slurm-extra=--gres=gpu:a100:1 "
                        "--slurm-extra=--reservation=maint --slurm-extra=--exclude=node3 --slurm-extra=--tmp=20G "
                        "--slurm-extra=--mail-type=END,FAIL")
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


def task_name(environ=None):
    """The array task as SLURM names it (``<job>_<index>``; a job's own id when not in an array)."""
    env = os.environ if environ is None else environ
    array, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{index}" if array and index else env.get("SLURM_JOB_ID", "?")


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
        logger.info("slurm task %s: %s", task_name(), chain.label)
        progress = runner.start_progress([chain])
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
        return {"failed": list(runner.failed), "counts": dict(progress.counts), "times": list(progress.times)}

    def checkpoint(self, key):
        """submitit, before requeueing: the same chain again (its runs resume from their checkpoints)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, key)


class Slurm:
    """One job-array task per chain still to do, through submitit; see the module doc.

    What each task asks is checked against the partition before anything is submitted
    (``slurm_check``). Followed with ``squeue`` (``slurm_queue``: pending reasons, requeues; a task's
    result file says it ended well; a task gone from the queue without one was cancelled or killed).
    ``<slurm folder>/submitted.json`` names the task of each chain submitted, read and written under
    a lock held until ``sbatch`` has answered: a runner started while another submits, or while an
    earlier submission still runs, waits for those tasks instead of submitting their chains twice."""

    POLL_S = 2  # result files
    QUEUE_POLL_S = 10  # squeue
    RESULT_GRACE_S = 20  # a task gone from the queue: its result file may still be on its way (NFS)

    def __init__(self, args, callbacks):
        self.args, self.callbacks = args, callbacks
        self._request = None
        try:
            import submitit  # noqa: F401
        except ImportError as err:
            raise UsageError("--backend slurm needs submitit: pip install submitit") from err

    def request(self):
        """What each task asks, fitted to and checked against the partition (once per runner)."""
        if self._request is None:
            problems, extra = [], {}
            try:
                extra = parse_extra(self.args.slurm_extra, sbatch_options())
            except UsageError as err:
                problems.append(str(err))
            nodes = read_nodes()
            if nodes is None:
                logger.warning("slurm: sinfo did not answer: what the tasks ask is not checked against the partition")
            try:
                request = fit(self.args, nodes, extra)
            except UsageError as err:
                problems.append(str(err))
            if problems:  # every problem at once, before anything is submitted
                raise UsageError("\n".join(problems))
            self._request = request
            for note in self._request.notes:
                logger.info("slurm: %s", note)
        return self._request

    def parameters(self):
        a, r = self.args, self.request()
        # srun is told the CPUs again: since SLURM 22.05 it no longer reads them from the job
        # (SLURM_CPUS_PER_TASK), and the task would be bound to one CPU
        params = dict(timeout_min=a.time_min, cpus_per_task=r.cpus, mem_gb=r.mem_gb,
                      name=f"dept-{a.protocol.replace('_', '-')}", tasks_per_node=1, nodes=1,
                      slurm_array_parallelism=a.array_parallelism, slurm_signal_delay_s=SIGNAL_MARGIN_S,
                      slurm_srun_args=["--cpus-per-task", str(r.cpus)])
        if r.gpus:
            params["gpus_per_node"] = r.gpus
        for key, value in (("slurm_partition", a.slurm_partition), ("slurm_account", a.slurm_account),
                           ("slurm_qos", a.slurm_qos), ("slurm_constraint", a.slurm_constraint)):
            if value:
                params[key] = value
        if a.slurm_setup:
            params["slurm_setup"] = list(a.slurm_setup)
        if r.extra:
            params["slurm_additional_parameters"] = dict(r.extra)
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

    def progress(self):
        return self.callbacks.progress() if self.callbacks.progress else None

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
        """Add ``submitted`` to the registry (its lock held by the caller), forgetting tasks that ended."""
        from dept.util.files import write_json

        registry = dict(self._read_registry(), **submitted)
        queued = queued_tasks(task.split("_")[0] for task in registry.values())
        if queued is not None:  # forget the tasks that ended (keep all when squeue did not answer)
            registry = {key: task for key, task in registry.items() if task in queued or key in submitted}
        write_json(self._registry(), registry)

    @contextlib.contextmanager
    def _lock(self):
        """The registry's lock, held from reading it to writing what sbatch answered."""
        from dept.util.files import Busy, FileLock

        lock = FileLock(os.path.join(self.folder(), ".submitted.lock"))
        try:
            lock.acquire(blocking=False)
        except Busy:
            logger.info("slurm: another runner is submitting to %s (%s): waiting for it, then submitting only "
                        "what it did not", self.folder(), lock.holder() or "pid unknown")
            lock.acquire()
        try:
            yield lock
        finally:
            lock.release()

    # -- submitting and waiting --------------------------------------------------------------

    def run(self, chains):
        todo = self.unfinished(chains)
        progress = self.progress()
        if progress is not None:
            keys = {c.key for c in todo}
            done = [c for c in chains if c.key not in keys]
            if done:  # finished on disk, or refused by todo (failed before, other settings): not submitted
                counts = {"skipped": 0, "failed": 0, "blocked": 0}
                for chain in done:
                    at = self.callbacks.refused(chain) if self.callbacks.refused else None
                    if at is None:
                        counts["skipped"] += len(chain.runs)
                    else:  # its runs before the refused one are finished, the ones after wait on it
                        counts["skipped"] += at
                        counts["failed"] += 1
                        counts["blocked"] += len(chain.runs) - at - 1
                progress.merge(counts)
            progress.workers = max(1, min(len(todo), self.args.array_parallelism))
        if not todo:
            logger.info("slurm: every chain is finished on disk; nothing to submit")
            return
        self.request()  # every check before the lock and before sbatch
        with self._lock():
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
            logger.info("%s", self.follow_text([(tasks[c.key].job_id, c.label) for c in todo]))
            return
        self.wait({tasks[chain.key]: chain for chain in todo})

    def follow_text(self, tasks):
        """What --no-wait leaves behind: each chain's task, and how to follow them."""
        arrays = sorted({task.split("_")[0] for task, _ in tasks})
        folder = self.folder()
        lines = [f"slurm: not waiting (--no-wait); {len(tasks)} chain(s) in job array(s) {', '.join(arrays)}:"]
        lines += [f"  task {task}: {label}" for task, label in tasks]
        lines += [f"follow them: squeue --array --jobs {','.join(arrays)} --Format JobArrayID,State,Reason,RestartCnt",
                  f"their logs: {folder}/<task>/<task>_0_log.out and .err (e.g. {folder}/{tasks[0][0]}/"
                  f"{tasks[0][0]}_0_log.err); each run's log.txt is in its run folder",
                  "run the same command again to gather the results (it waits for these tasks and submits "
                  "only what is missing)"]
        return "\n".join(lines)

    def wait(self, pending):
        """Until every task of ``pending`` (submitit job: chain) has ended; failures go to the runner."""
        watch = Watch({j.job_id: c.label for j, c in pending.items()}, self.args.max_requeue,
                      {j.job_id: str(j.paths.stderr) for j in pending})
        gone, last_poll, queued = {}, float("-inf"), None
        progress = self.progress()
        while pending:
            polled = time.time() - last_poll >= self.QUEUE_POLL_S
            if polled:
                states, last_poll = poll(j.job_id.split("_")[0] for j in pending), time.time()
                queued = None if states is None else {t: s.state for t, s in states.items() if s.active}
                if states is not None:
                    messages, hopeless = watch.update(states, time.time())
                    for level, text in messages:
                        logger.log(level, "%s", text)
                    if progress is not None:
                        progress.set_running(sum(1 for s in states.values() if s.state == "RUNNING"))
                    for j, chain in list(pending.items()):
                        if j.job_id in hopeless:
                            self.cancel(j, chain, hopeless[j.job_id])
                            del pending[j]
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
                    self._count(chain, None)
                del pending[j]
            if pending:
                time.sleep(self.POLL_S)

    def _count(self, chain, result):
        """The runs of a task that ended, in the runner's [progress] line."""
        progress = self.progress()
        if progress is None:
            return
        if isinstance(result, dict) and isinstance(result.get("counts"), dict):
            progress.merge(result["counts"], result.get("times") or ())
        else:  # no result (cancelled, killed) or one of an older task: its runs as failed
            failed = len(result) if isinstance(result, list) else len(chain.runs)
            progress.merge({"failed": failed, "ran": len(chain.runs) - failed})

    def cancel(self, j, chain, reason):
        """A task that can never start: cancelled, its chain failed with what to change."""
        import subprocess

        logger.error("slurm task %s (%s) %s; cancelling it (scancel %s)", j.job_id, chain.label, reason, j.job_id)
        try:
            subprocess.run(["scancel", j.job_id], capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as err:
            logger.error("scancel %s failed: %s: cancel it yourself", j.job_id, err)
        self.callbacks.fail(chain.label, f"slurm task {j.job_id} {reason}")
        self._count(chain, None)

    def gather(self, j, chain):
        """The result of a task that wrote one: the runs that failed in it, or the error it raised."""
        try:
            result = j.result()
        except Exception as err:  # the task raised: its runs are unfinished on disk
            logger.error("slurm task %s (%s) failed: %s (log: %s)", j.job_id, chain.label, _error_line(err),
                         j.paths.stderr)
            self.callbacks.fail(chain.label, f"slurm task {j.job_id} failed: {_error_line(err)}")
            self._count(chain, None)
            return
        failed = result.get("failed", []) if isinstance(result, dict) else result
        for label, short in failed:
            self.callbacks.fail(label, f"{short} (task {j.job_id})")
        self._count(chain, result)


def _error_line(err):
    """The exception line of the traceback submitit's error carries (between its dashed lines)."""
    parts = str(err).split("----------------------")
    lines = [line.strip() for line in (parts[1] if len(parts) > 2 else str(err)).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
