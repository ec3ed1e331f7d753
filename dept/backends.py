"""Where a protocol's chains run: one after another, several at once on this machine, or on SLURM.

A chain (``dept.runner.Chain``) is a training run and the evaluations of its checkpoint; chains are
independent, and every run holds a lock on its folder, so any number of runners, workers or jobs
can share one output root: nothing runs twice, and a run another process holds is done after it.
No back-end schedules anything itself:

* ``sequential`` (default): in this process, in order.
* ``local``: ``--jobs N`` at once on this machine. With GPUs (``--gpus 0,1,3``, else
  ``CUDA_VISIBLE_DEVICES``, else every GPU torch sees) one run per GPU, each child seeing only its
  own; on CPU, N workers sharing the cores (``OMP_NUM_THREADS`` = cores / N each).
* ``slurm``: one job-array task per chain through ``submitit``, with the resources given on the
  command line (``--slurm-partition``, ``--gpus-per-job``, ``--cpus-per-job``, ``--mem-gb``,
  ``--time-min``, ...). A task that is preempted or reaches its time limit is requeued by submitit
  and its runs resume from their last checkpoint. Chains already finished on disk are not
  submitted. The runner waits for the array (or, with ``--no-wait``, returns at once: run the same
  command again later to gather the tables) and reads the results from the shared output root.
"""
import logging
import os
import queue
import signal
import threading
import time

logger = logging.getLogger(__name__)

BACKENDS = ("sequential", "local", "slurm")


def add_backend_arguments(parser):
    g = parser.add_argument_group("where the runs run (dept.backends)")
    g.add_argument("--backend", choices=BACKENDS, default="sequential",
                   help="sequential (default), local (--jobs at once), slurm (a job array through submitit)")
    g.add_argument("--jobs", type=int, default=0,
                   help="local: runs at once (default: one per GPU of --gpus, else 1)")
    g.add_argument("--gpus", default=None,
                   help="local: GPU ids to spread the runs over, e.g. 0,1 (default: $CUDA_VISIBLE_DEVICES, "
                        "else every GPU torch sees; none: CPU workers)")
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
    g.add_argument("--slurm-folder", default="",
                   help="slurm: where submitit writes the tasks' logs (default: <output>/slurm)")
    g.add_argument("--no-wait", action="store_true", help="slurm: submit and return; the same command again "
                   "later gathers the results (and submits what is still missing)")


def make_backend(runner):
    name = getattr(runner.args, "backend", "sequential")
    return {"sequential": Sequential, "local": Local, "slurm": Slurm}[name](runner)


class Sequential:
    def __init__(self, runner):
        self.runner = runner

    def describe(self, chains):
        logger.info("backend: sequential, %d chain(s) in this process", len(chains))

    def run(self, chains):
        deferred = [chain for chain in chains if not self.runner.run_chain(chain, blocking=False)]
        for chain in deferred:
            self.runner.run_chain(chain, blocking=True)


def visible_gpus(spec=None):
    """GPU ids to spread runs over: ``spec`` ("0,1"), else $CUDA_VISIBLE_DEVICES, else torch's count."""
    if spec is not None:
        return [g for g in spec.split(",") if g.strip()]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch, no driver: CPU
        return []


class Local:
    """N worker threads, each running one chain at a time in its own child processes."""

    def __init__(self, runner):
        self.runner = runner
        args = runner.args
        self.gpus = visible_gpus(args.gpus)
        self.jobs = args.jobs or max(1, len(self.gpus))
        self.slots = []
        cores = os.cpu_count() or 1
        for i in range(self.jobs):
            if self.gpus:
                self.slots.append({"CUDA_VISIBLE_DEVICES": self.gpus[i % len(self.gpus)]})
            else:
                self.slots.append({"OMP_NUM_THREADS": str(max(1, cores // self.jobs))})

    def describe(self, chains):
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else f"CPU ({os.cpu_count()} cores)"
        logger.info("backend: local, %d chain(s), %d at once on %s", len(chains), self.jobs, where)

    def run(self, chains):
        self.describe(chains)
        if self.runner.progress is not None:
            self.runner.progress.workers = self.jobs
        pending = queue.Queue()
        for chain in chains:
            pending.put(chain)
        deferred, errors = [], []

        def worker(slot, blocking, source):
            self.runner._local.env = slot
            while True:
                try:
                    chain = source.get_nowait()
                except queue.Empty:
                    return
                try:
                    if not self.runner.run_chain(chain, blocking=blocking):
                        deferred.append(chain)
                except BaseException as err:  # Interrupted, or a bug: stop this worker, report in main
                    errors.append(err)
                    return

        for blocking, source in ((False, pending), (True, None)):
            if source is None:
                source = queue.Queue()
                for chain in deferred:
                    source.put(chain)
                deferred = []
            threads = [threading.Thread(target=worker, args=(slot, blocking, source), daemon=True)
                       for slot in self.slots]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):  # joins with a timeout: signals reach the main thread
                for t in threads:
                    t.join(0.2)
            if errors:
                raise errors[0]


class ChainJob:
    """What a SLURM task runs: the chain ``key`` of the grid this runner made, by a runner rebuilt
    from the same arguments. submitit requeues it (``checkpoint``) on time-out or preemption; its
    runs then resume from their checkpoints."""

    def __init__(self, args, demo, runner_opts):
        self.args, self.demo, self.runner_opts = args, demo, runner_opts

    def __call__(self, key):
        from dept.logs import setup_logging
        from dept.protocols import PROTOCOLS
        from dept.runner import Interrupted, Runner

        setup_logging()
        runner = Runner(self.args, self.demo, PROTOCOLS[self.args.protocol])
        runner.runner_opts = list(self.runner_opts)
        grids = [runner.make_grid(t, s) for t in self.args.trainers for s in self.args.shots]
        chain = next(c for c in runner.make_chains(grids) if c.key == key)
        previous = {s: signal.signal(s, runner.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            runner.run_chain(chain, blocking=True)
        except Interrupted as err:
            logger.warning(err.line())
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return [(run.label, short) for run, short in runner.failed]

    def checkpoint(self, key):
        import submitit

        return submitit.helpers.DelayedSubmission(self, key)


class Slurm:
    def __init__(self, runner):
        self.runner = runner
        try:
            import submitit  # noqa: F401
        except ImportError as err:
            from dept.runner import UsageError

            raise UsageError("--backend slurm needs submitit: pip install submitit") from err

    def parameters(self):
        a = self.runner.args
        params = dict(timeout_min=a.time_min, cpus_per_task=a.cpus_per_job, mem_gb=a.mem_gb,
                      slurm_array_parallelism=a.array_parallelism, slurm_max_num_timeout=a.max_requeue,
                      name=f"dept-{self.runner.protocol.command}", tasks_per_node=1, nodes=1)
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
        return self.runner.args.slurm_folder or os.path.join(self.runner.output, "slurm")

    def unfinished(self, chains):
        """The chains with a run still to do (finished ones are verified here, not submitted)."""
        todo = []
        for chain in chains:
            record = None
            for i, run in enumerate(chain.runs):
                verdict = self.runner.assess(run, record)
                if verdict.action == "fail":
                    self.runner.fail(run, verdict.short, verdict.reason)
                    break
                if verdict.action != "skip":
                    todo.append(chain)
                    break
                record = verdict.record if i == 0 else record
        return todo

    def describe(self, chains):
        todo = self.unfinished(chains)
        logger.info("backend: slurm, %d of %d chain(s) to submit as one array; %s", len(todo), len(chains),
                    ", ".join(f"{k}={v}" for k, v in self.parameters().items()))

    def run(self, chains):
        import submitit

        todo = self.unfinished(chains)
        if not todo:
            logger.info("slurm: every chain is finished on disk; nothing to submit")
            return
        executor = submitit.AutoExecutor(folder=os.path.join(self.folder(), "%j"), cluster="slurm")
        executor.update_parameters(**self.parameters())
        job = ChainJob(self.runner.args, self.runner.demo, self.runner.runner_opts)
        jobs = executor.map_array(job, [chain.key for chain in todo])
        logger.info("slurm: submitted %d task(s) as job %s (logs: %s)", len(jobs), jobs[0].job_id.split("_")[0],
                    self.folder())
        if self.runner.args.no_wait:
            logger.info("slurm: not waiting (--no-wait); run the same command again to gather the results")
            return
        pending = dict(zip(jobs, todo))
        while pending:
            for j in [j for j in pending if j.done()]:
                chain = pending.pop(j)
                try:
                    for label, short in j.result():
                        logger.error("FAILED %s: %s (task %s)", label, short, j.job_id)
                        self.runner.failed.append((_Named(label), short))
                except Exception as err:  # the task died: its runs are unfinished on disk
                    logger.error("slurm task %s (%s) failed: %s", j.job_id, chain.label,
                                 str(err).strip().splitlines()[-1:] or err)
                    self.runner.failed.append((_Named(chain.label), f"slurm task {j.job_id} failed"))
                logger.info("[progress] slurm: %d of %d task(s) done", len(jobs) - len(pending), len(jobs))
            if pending:
                time.sleep(2)


class _Named:
    """A failed run named by its label alone (reported from a SLURM task)."""

    def __init__(self, label):
        self.label = label
