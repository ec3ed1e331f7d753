"""Where a protocol's chains run: one after another, several at once on this machine, or on SLURM.

A chain (``dept.run.plan.Chain``) is a training run and the evaluations of its model; chains are
independent, and every run holds a lock on its folder, so any number of runners, workers or jobs
can share one output root: nothing runs twice, and a run another process holds is done after it.
No back-end schedules anything itself, and none knows the runner: each gets the chains and the
``Callbacks`` that run one here, say whether one is still to do, and report a failure.

* ``sequential`` (default): in this process, in order.
* ``local``: ``--jobs N`` at once on this machine. With GPUs (``--gpus 0,1,3``, else
  ``CUDA_VISIBLE_DEVICES``, else every GPU torch sees) one run per GPU, each child seeing only its
  own; on CPU, N workers sharing the cores (``OMP_NUM_THREADS`` = cores / N each).
* ``slurm``: one job-array task per chain through ``submitit`` (``dept.run.backends.slurm``).
"""
from dataclasses import dataclass

BACKENDS = ("sequential", "local", "slurm")


@dataclass
class Callbacks:
    """What a back-end may do with the grid's chains."""

    run_chain: object  # run_chain(chain, blocking) -> False when deferred (another process holds a run)
    todo: object  # todo(chain) -> whether it has a run still to do (one that never can is reported)
    fail: object  # fail(label, short): a chain that failed elsewhere (a SLURM task)
    set_env: object  # set_env({...}): the environment of this thread's runs (their GPU, their threads)
    set_workers: object  # set_workers(n): how many run at once (for the time-left estimate)
    task: object  # picklable; task.prepare(chain key) -> (an executor, the chain) in another process
    progress: object = None  # progress() -> the runner's Progress, or None (runs counted elsewhere: SLURM)
    refused: object = None  # refused(chain) -> index of its run that ``todo`` found can never run, or None

    @classmethod
    def of(cls, executor, task):
        def set_workers(n):
            if executor.progress is not None:
                executor.progress.workers = n

        return cls(executor.run_chain, executor.todo, executor.fail, executor.set_env, set_workers, task,
                   lambda: executor.progress, lambda chain: executor.refused.get(chain.key))


def add_backend_arguments(parser):
    g = parser.add_argument_group("where the runs run (dept.run.backends)")
    g.add_argument("--backend", choices=BACKENDS, default="sequential",
                   help="sequential (default), local (--jobs at once), slurm (a job array through submitit)")
    g.add_argument("--jobs", type=int, default=0,
                   help="local: runs at once (default: one per GPU of --gpus, else 1)")
    g.add_argument("--gpus", default=None,
                   help="local: GPU ids to spread the runs over, e.g. 0,1 (default: $CUDA_VISIBLE_DEVICES, "
                        "else every GPU torch sees; none: CPU workers)")
    from dept.run.backends.slurm import add_slurm_arguments

    add_slurm_arguments(g)


def make_backend(args, callbacks):
    name = getattr(args, "backend", "sequential")
    if name == "local":
        from dept.run.backends.local import Local

        return Local(args, callbacks)
    if name == "slurm":
        from dept.run.backends.slurm import Slurm

        return Slurm(args, callbacks)
    from dept.run.backends.sequential import Sequential

    return Sequential(args, callbacks)
