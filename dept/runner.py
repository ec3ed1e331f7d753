"""The protocol runner: every run of a protocol's grid, skipped when done, resumed when half done.

``python -m dept <protocol>`` (``base2new``, ``cross-dataset``, ``dg``, ``few-shot``; layouts and
runs in ``dept.protocols``) runs the grid trainers × datasets × seeds × shots. The output layout is
the official scripts', so their ``parse_test_res.py`` still works; tables go to
``<output>/<protocol>/results/``.

``<cfg>`` in a folder name is the trainer config's name, followed by the options given after ``--``
that change the resolved config (``vit_b16_ep10_bs4_lr35+DEPT.WEIGHT=0.2+OPTIM.MAX_EPOCH=5``): runs
with other settings never share a folder.

A run is reused only when its record (``dept_run.json``) says it finished with the config this
runner would run it with (and, for training, its final checkpoint is intact; for evaluation, it
evaluated that checkpoint). A finished run with other settings (a yaml file edited since) is an
error naming the keys, never reused and never retrained over. Unfinished runs are run again and
resume from their last good checkpoint; their old log is kept as ``log-unfinished-<n>.txt``. A run
that failed is reported with its log's last lines and run again only with ``--retry-failed``.

Each run is locked while it runs (``.dept.lock``, passed down to ``dept.train``): two runners on
one output root never run the same thing twice; a run locked by another runner is done last, after
waiting for it. Tables are rebuilt from every finished run on disk for their grid cell. Ctrl-C or
SIGTERM stops the runs in progress (they save their state) and says how to resume. With no dataset
root, it runs the embedded demo (scikit-learn digits, tiny random CLIP). Where the runs run is the
back-end's choice (``dept.backends``: here one after another, N at once, or SLURM).
"""
import argparse
import contextlib
import ctypes
import ctypes.util
import hashlib
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace

from dept.files import Busy, FileLock, sha256
from dept.protocols import (
    DEMO_SOURCE,
    DEMO_TARGETS,
    PROTOCOLS,
    eval_dir,
    protocol_config,
    source_suffix,
    train_dir,
)
from dept.results import SUMMARY_COLUMNS, SeedRuns, build_summary, build_table, write_tables
from dept.run_record import (
    NEUTRAL_KEYS,
    CorruptRecord,
    config_differences,
    flat_config,
    format_differences,
    lock_path,
    read_record,
)

logger = logging.getLogger(__name__)

ALL_DATASETS = PROTOCOLS["base2new"].default_datasets
DEFAULT_CONFIG = "vit_b16_ep10_bs4_lr35"  # for a trainer that names none (``default_config``)
REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# Keys this runner sets on every run, and the flag that sets them.
RUNNER_KEYS = {"SEED": "--seeds", "DATASET.NUM_SHOTS": "--shots", "DATASET.SUBSAMPLE_CLASSES": "the protocol",
               "OUTPUT_DIR": "--output", "DATASET.ROOT": "--root"}
# Keys that do not name a variant folder: the runner's own, and where files are (a different CLIP
# file is still a different config: the records are compared in full).
NOT_IN_NAME = NEUTRAL_KEYS | set(RUNNER_KEYS) | {"MODEL.BACKBONE.PATH"}
MAX_NAME = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")
_CHECKPOINT_FILE = re.compile(r"model\.pth\.tar-\d+|model-best\.pth\.tar|model-interrupted\.pth\.tar")
PR_SET_PDEATHSIG = 1
DEMO_BANNER = (
    "DEMO: no dataset root configured (--root or $DATA), so this runs the embedded demo: scikit-learn's "
    "handwritten digits (base 0-4, new 5-9) on a tiny CLIP with RANDOM weights. Its accuracies only show "
    "that the pipeline works; they say nothing about DePT. Point --root at real data for real numbers."
)


def default_config(trainer):
    """The trainer's own base-to-new config name (its class's ``default_config``)."""
    from dept.results import trainer_class

    return getattr(trainer_class(trainer), "default_config", None) or DEFAULT_CONFIG


def config_for(trainer, protocol):
    """The trainer's config name for ``protocol`` (``protocol_configs``, else ``default_config``)."""
    from dept.results import trainer_class

    return protocol_config(trainer_class(trainer), protocol, default_config(trainer))


def learns_nothing(trainer):
    """True for a trainer evaluated as built (``trained = False``: zero-shot CLIP)."""
    from dept.train import _learns_nothing

    return _learns_nothing(trainer)


def build_parser(protocol=PROTOCOLS["base2new"]):
    p = argparse.ArgumentParser(prog=f"python -m dept {protocol.command}",
                                description=f"The {protocol.title} protocol: " + __doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("DATA", ""),
                   help="dataset root (default: $DATA); a relative path is relative to the current folder")
    what = "target datasets" if protocol.has_source else "datasets"
    p.add_argument("--datasets", nargs="+", default=list(protocol.default_datasets),
                   help=f"{what} (dataset config names; default: the paper's {len(protocol.default_datasets)})")
    if protocol.has_source:
        p.add_argument("--source", default="imagenet", help="the dataset trained on (all its classes)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    shots = protocol.default_shots
    p.add_argument("--shots", type=int, nargs="+", default=list(shots),
                   help=f"shots per class (default: {' '.join(map(str, shots))})")
    p.add_argument("--trainers", nargs="+", default=["CoOpDePT"])
    p.add_argument("--config", default="", help="trainer config name (default: the trainer's config for this "
                   "protocol)")
    p.add_argument("--configs-dir", default=REPO_CONFIGS, help="folder holding datasets/ and trainers/ yaml")
    p.add_argument("--output", default="output", help="output root (relative: to the current folder)")
    p.add_argument("--demo", action="store_true", help="run the embedded demo even if a root is set")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run and what would be skipped; write nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the runs that failed (by default they are reported and left as they are)")
    from dept.backends import add_backend_arguments

    add_backend_arguments(p)
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="config options for every run, after --: -- OPTIM.MAX_EPOCH 5 DEPT.FUSION probs")
    return p


class UsageError(ValueError):
    """An invocation that cannot run (bad options, missing config files): exit 2, one message."""


class Interrupted(Exception):
    """SIGINT/SIGTERM reached the runner; ``run`` is the run that was in progress (or None)."""

    def __init__(self, signum, run=None, returncode=None, command="the runner"):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.run, self.returncode, self.command = signum, run, returncode, command

    def line(self):
        name = signal.Signals(self.signum).name
        if self.run is None:
            return (f"{self.command} interrupted by {name} between runs; finished runs are kept. "
                    "Run the same command again to continue.")
        if self.returncode is None:
            return (f"{self.command} interrupted by {name} while waiting for {self.run.label}, which another "
                    "process is running; nothing was lost. Run the same command again to continue.")
        if self.returncode in (130, 143):
            what = f"it saved its state ({self.run.directory})"
        elif self.returncode == 0:
            what = "it had just finished"
        else:
            what = f"it stopped with exit code {self.returncode}"
        return (f"{self.command} interrupted by {name} during {self.run.label}: {what}. "
                "Run the same command again to resume.")


# -- names and folders ---------------------------------------------------------------------------

def _value_text(value):
    if isinstance(value, (list, tuple)):
        return ",".join(_value_text(v) for v in value)
    return str(value)


def variant_name(cfg_name, options, limit=MAX_NAME):
    """``cfg+KEY=value+...`` (options sorted by key), filesystem-safe; a long one ends in a hash."""
    parts = [_UNSAFE.sub("_", f"{key}={_value_text(value)}") for key, value in sorted(options)]
    name = "+".join([cfg_name, *parts])
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(repr(sorted(options)).encode()).hexdigest()[:10]
    kept = [cfg_name]
    for i, part in enumerate(parts):
        left = len(parts) - i - 1
        if len("+".join([*kept, part]) + (f"+{left}more-{digest}" if left else f"+{digest}")) > limit:
            break
        kept.append(part)
    return "+".join(kept) + f"+{len(parts) - len(kept) + 1}more-{digest}"


def _checkpoint_folders(directory):
    """Sub-folders of a run folder that hold checkpoints."""
    if not os.path.isdir(directory):
        return []
    return [e.path for e in os.scandir(directory)
            if e.is_dir() and any(_CHECKPOINT_FILE.fullmatch(f) for f in os.listdir(e.path))]


def _next_free(pattern):
    n = 1
    while os.path.exists(pattern.format(n)):
        n += 1
    return pattern.format(n)


def keep_unfinished_log(directory):
    """Move an unfinished run's log aside so the rerun writes log.txt (parsers read only that)."""
    log = os.path.join(directory, "log.txt")
    if os.path.isfile(log):
        target = _next_free(os.path.join(directory, "log-unfinished-{}.txt"))
        os.rename(log, target)
        return target
    return None


def _read_tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# -- child processes -----------------------------------------------------------------------------

def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def child_setup(parent_pid, ignore=()):
    """``preexec_fn`` for a run: its own process group (Ctrl-C reaches the runner, which forwards it
    once), and SIGTERM when the runner dies (PR_SET_PDEATHSIG), so a killed runner never leaves a run
    writing into a folder that the next runner takes over. ``ignore``: signals the run must not die
    of (a SLURM task's time-limit warning, which SLURM sends to every process of the job)."""

    def setup():
        for signum in ignore:
            signal.signal(signum, signal.SIG_IGN)
        os.setpgid(0, 0)
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # the runner died before prctl took effect
            os._exit(128 + int(signal.SIGTERM))

    return setup


# -- the protocol --------------------------------------------------------------------------------

@dataclass
class Grid:
    """One results table's cell: a trainer, a config variant, a number of shots."""

    trainer: str
    cfg_name: str
    variant: str
    options: list
    shots: int

    @property
    def stem(self):
        return f"{self.trainer}_{self.variant}_shots{self.shots}"


@dataclass
class Run:
    stage: str  # train_base / test_new (base2new), train / eval (the others)
    grid: Grid
    dataset: str
    seed: int
    directory: str
    argv: list
    trains: bool = True  # the chain's first run: trains (or evaluates as built); else evaluates its checkpoint

    @property
    def label(self):
        return f"{self.stage} {self.dataset} seed {self.seed} ({self.grid.trainer} {self.grid.variant})"

    @property
    def command(self):
        return [sys.executable, "-m", "dept.train", *self.argv]


@dataclass
class Chain:
    """A training run and the evaluations of its checkpoint, run in this order, in one place."""

    runs: list

    @property
    def key(self):
        return self.runs[0].directory

    @property
    def label(self):
        first = self.runs[0]
        evals = f" + {len(self.runs) - 1} evaluation(s)" if len(self.runs) > 1 else ""
        return (f"{first.grid.trainer} {first.grid.variant} {first.dataset} {first.grid.shots} shots "
                f"seed {first.seed}{evals}")


@dataclass
class Verdict:
    """What to do with a run: "skip" (finished and verified), "run", or "fail" (never reuse)."""

    action: str
    record: dict = None
    reason: str = ""
    short: str = ""
    notes: list = field(default_factory=list)
    unverified: bool = False


class Runner:
    def __init__(self, args, demo, protocol=PROTOCOLS["base2new"]):
        self.args, self.demo, self.protocol = args, demo, protocol
        self.output = args.output
        self.runner_opts = []
        self.failed = []
        self.children = set()
        self.signum = None
        self.waiting_for = None
        self.progress = None
        self.ignored_signals = ()  # signals its runs ignore (child_setup)
        self._configs = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # per worker thread: its environment (GPU) for children

    # -- configs -----------------------------------------------------------------------------

    def directory(self, grid, dataset, seed, stage, source=None):
        p = self.protocol
        if stage in ("train", "train_base"):
            return train_dir(p, self.output, dataset, grid.shots, grid.trainer, grid.variant, seed)
        return eval_dir(p, self.output, dataset, grid.shots, grid.trainer, grid.variant, seed, source=source)

    def argv(self, grid, dataset, seed, stage, user_opts=True, source=None):
        """``dept.train`` arguments of one run. ``source``: the dataset the evaluated checkpoint was
        trained on (cross-dataset, DG); base2new trains and evaluates on ``dataset``."""
        a, p = self.args, self.protocol
        trains = stage in ("train", "train_base")
        out = self.directory(grid, dataset, seed, stage, source=source)
        argv = ["--root", a.root, "--seed", str(seed), "--trainer", grid.trainer,
                "--dataset-config-file", os.path.join(a.configs_dir, "datasets", f"{dataset}.yaml"),
                "--config-file", os.path.join(a.configs_dir, "trainers", grid.trainer, f"{grid.cfg_name}.yaml"),
                "--output-dir", out]
        if learns_nothing(grid.trainer):  # zero-shot CLIP: every run evaluates the model as built
            argv += ["--eval-only"]
        elif not trains:
            argv += ["--eval-only", "--model-dir", self.directory(grid, source or dataset, seed, self.train_stage)]
        argv += ["DATASET.NUM_SHOTS", str(grid.shots),
                 "DATASET.SUBSAMPLE_CLASSES", p.train_subsample if trains else p.eval_subsample, *self.runner_opts]
        return argv + (list(a.opts) if user_opts else [])

    @property
    def train_stage(self):
        return "train_base" if self.protocol.name == "base2new" else "train"

    @property
    def eval_stage(self):
        return "test_new" if self.protocol.name == "base2new" else "eval"

    def expected(self, argv):
        """The config ``dept.train`` will resolve for ``argv`` (computed here, nothing is run)."""
        key = tuple(argv)
        with self._lock:
            if key not in self._configs:
                from dept.train import build_parser as train_parser
                from dept.train import setup_cfg

                self._configs[key] = setup_cfg(train_parser().parse_args(list(argv)))
            return self._configs[key]

    def train_datasets(self):
        return [self.source] if self.protocol.has_source else list(self.args.datasets)

    def make_grid(self, trainer, shots=None):
        a = self.args
        shots = a.shots[0] if shots is None else shots
        cfg_name = a.config or config_for(trainer, self.protocol)
        for path in (os.path.join(a.configs_dir, "trainers", trainer, f"{cfg_name}.yaml"),
                     *(os.path.join(a.configs_dir, "datasets", f"{d}.yaml")
                       for d in dict.fromkeys([*self.train_datasets(), *a.datasets]))):
            if not os.path.isfile(path):
                raise UsageError(f"no config file {path} (trainer {trainer}, config {cfg_name}; "
                                 f"configs folder {a.configs_dir}, --configs-dir changes it)")
        grid = Grid(trainer, cfg_name, cfg_name, [], shots)
        seed, dataset = a.seeds[0], self.train_datasets()[0]
        try:
            plain = self.expected(self.argv(grid, dataset, seed, self.train_stage, user_opts=False))
            full = self.expected(self.argv(grid, dataset, seed, self.train_stage))
        except Exception as err:  # yacs: unknown key, odd list, bad value; alias conflicts
            raise UsageError(f"the options after -- do not make a valid config: {type(err).__name__}: {err}") from err
        grid.options = [(key, new) for key, _, new in config_differences(plain, full, neutral=NOT_IN_NAME)]
        grid.variant = variant_name(cfg_name, grid.options)
        return grid

    def make_run(self, grid, dataset, seed, stage, source=None):
        return Run(stage, grid, dataset, seed, self.directory(grid, dataset, seed, stage, source=source),
                   self.argv(grid, dataset, seed, stage, source=source), trains=stage in ("train", "train_base"))

    def make_chains(self, grids):
        """Every chain of the grid: per trainer, shots, dataset (or the source) and seed."""
        chains = []
        for grid in grids:
            for dataset in self.train_datasets():
                for seed in self.args.seeds:
                    runs = [self.make_run(grid, dataset, seed, self.train_stage)]
                    if self.protocol.name == "base2new":
                        runs.append(self.make_run(grid, dataset, seed, self.eval_stage))
                    elif self.protocol.has_source:
                        runs += [self.make_run(grid, target, seed, self.eval_stage, source=dataset)
                                 for target in self.args.datasets]
                    chains.append(Chain(runs))
        return chains

    # -- verification ------------------------------------------------------------------------

    def assess(self, run, train_record=None):
        """Decide from what is on disk whether ``run`` is finished with this config (reads only)."""
        d = run.directory
        try:
            record = read_record(d)
        except CorruptRecord as err:
            return Verdict("run", short="corrupt run record",
                           notes=[f"{err}: treated as unfinished (the run is run again)"])
        if record is None:
            if os.path.isfile(os.path.join(d, "log.txt")):
                return Verdict("run", unverified=True, short="no run record (older version or another tool)",
                               notes=[f"{d} has a log but no run record ({os.path.basename(d)}/dept_run.json): it "
                                      "was written by an older version or another tool and cannot be verified; "
                                      "its log and checkpoints are set aside and the run is run again"])
            return Verdict("run", short="not run")
        expected = self.expected(run.argv)
        differences = config_differences(record.get("config") or "", expected)
        status = record.get("status")
        if status == "finished":
            if differences:
                return self._mismatch(run, record, differences)
            if (record.get("result") or {}).get("accuracy") is None:
                return Verdict("run", short="finished without a result",
                               notes=["its record says finished but holds no result: it is run again"])
            if learns_nothing(run.grid.trainer):
                pass  # nothing trained, nothing to verify beyond the config
            elif run.trains:
                problem = final_checkpoint_problem(record, d)
                if problem:
                    return Verdict("run", short="final checkpoint unusable",
                                   notes=[f"its final checkpoint is not usable ({problem}): it is run again "
                                          "(dept.train resumes from the last good checkpoint)"])
            else:
                trained = ((train_record or {}).get("checkpoint") or {}).get("sha256")
                evaluated = (record.get("checkpoint") or {}).get("sha256")
                if not trained or evaluated != trained:
                    return Verdict("run", short="evaluated another checkpoint",
                                   notes=["it evaluated another checkpoint than the training run's final one: "
                                          "it is evaluated again"])
            return Verdict("skip", record=record)
        if differences and run.trains and _checkpoint_folders(d):
            return self._mismatch(run, record, differences)
        if status == "failed" and not getattr(self.args, "retry_failed", False):
            tail = _read_tail(os.path.join(d, "log.txt"), lines=12).rstrip()
            return Verdict("fail", record=record, short="failed before (--retry-failed runs it again)",
                           reason=f"{d} failed when it last ran"
                                  + (f" ({record['error']})" if record.get("error") else "")
                                  + ". It is left as it is: fix the cause, then run the same command with "
                                    "--retry-failed." + (f"\nLast lines of its log.txt:\n{tail}" if tail else ""))
        return Verdict("run", short=f"{status or 'unknown status'}",
                       notes=[f"it was left {status}: it is run again (resuming where it was saved)"]
                       if status in ("interrupted", "running", "failed") else [])

    def _mismatch(self, run, record, differences):
        keys = ", ".join(k for k, _, _ in differences[:8]) + (" ..." if len(differences) > 8 else "")
        unnamed = [k for k, _, _ in differences if k in NOT_IN_NAME]
        if unnamed:  # options after -- would not help: these keys never name a folder
            beside = (f"{', '.join(unnamed)} never name a variant folder (a file path, or a key the runner sets)"
                      + (", and MODEL.BACKBONE.PATH is also what $DEPT_CLIP_PATH sets"
                         if "MODEL.BACKBONE.PATH" in unnamed else "")
                      + ": to run the new settings beside it, give them another --output")
        else:
            beside = "to run the new settings beside it, pass them as options after -- (options get their own folder)"
        reason = (f"{run.directory} holds a {record.get('status')} run with other settings: "
                  f"{format_differences(differences)}. It is neither reused nor trained over. If the settings "
                  f"changed since it ran (e.g. the yaml file {run.argv[run.argv.index('--config-file') + 1]} "
                  f"was edited), restore them; {beside}; or move that folder away to run it anew.")
        return Verdict("fail", record=record, reason=reason, short=f"other settings ({keys})")

    def verified(self, run, train_record=None):
        """(record, None) for a finished, verified run; (None, why not) otherwise."""
        verdict = self.assess(run, train_record)
        if verdict.action == "skip":
            return verdict.record, None
        return None, f"{run.stage}: {verdict.short}"

    # -- running -----------------------------------------------------------------------------

    def on_signal(self, signum, frame):
        children = [c for c in list(self.children) if c.returncode is None]
        if children:
            self.signum = self.signum or signum
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)  # it saves and exits; a second signal ends it at once
            return
        raise Interrupted(signum, self.waiting_for, command=self.protocol.command)

    def child_env(self):
        """Environment of this worker's children (a back-end sets its GPU: ``worker_env``)."""
        return dict(os.environ, **getattr(self._local, "env", {}))

    def spawn(self, run, lock):
        """Run ``dept.train`` holding ``lock`` (passed down); returns (exit code, stderr text)."""
        if self.signum is not None:  # another worker was interrupted: start nothing new
            raise Interrupted(self.signum, run, None, command=self.protocol.command)
        env = dict(self.child_env(), DEPT_LOCK_FD=str(lock.fd))
        with tempfile.TemporaryFile("w+", errors="replace") as err:
            child = subprocess.Popen(run.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=err, pass_fds=(lock.fd,), env=env,
                                     preexec_fn=child_setup(os.getpid(), self.ignored_signals))
            self.children.add(child)
            try:
                returncode = child.wait()
            finally:
                self.children.discard(child)
            err.seek(0)
            text = err.read()
        if self.signum is not None:
            raise Interrupted(self.signum, run, returncode, command=self.protocol.command)
        return returncode, text

    def fail(self, run, short, detail=""):
        with self._lock:
            self.failed.append((run, short))
        logger.error("FAILED %s: %s%s", run.label, short, f"\n{detail}" if detail else "")

    def execute(self, run, lock, train_record=None):
        """Skip, fail or run ``run`` (its lock held); returns its finished, verified record or None."""
        verdict = self.assess(run, train_record)
        if verdict.action == "skip":
            logger.info("skip (finished): %s", run.directory)
            self._count(run, "skipped")
            return verdict.record
        if verdict.action == "fail":
            self.fail(run, verdict.short, verdict.reason)
            self._count(run, "failed")
            return None
        for note in verdict.notes:
            logger.warning("%s: %s", run.label, note)
        kept = keep_unfinished_log(run.directory)
        if kept:
            logger.info("previous log kept as %s", kept)
        if verdict.unverified:
            for folder in _checkpoint_folders(run.directory):
                target = _next_free(os.path.join(run.directory, "unverified-{}"))
                os.makedirs(target)
                os.rename(folder, os.path.join(target, os.path.basename(folder)))
                logger.warning("unverifiable checkpoints moved to %s", target)
        logger.info("run: %s", shlex.join(run.command))
        start = time.time()
        self._count(run, "started")
        returncode, stderr = self.spawn(run, lock)
        took = time.time() - start
        log = os.path.join(run.directory, "log.txt")
        if returncode != 0:
            detail = stderr.strip()[-3000:]
            tail = _read_tail(log)
            last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
            if tail and (not detail or returncode < 0 or last.split(": ", 1)[-1].strip() not in detail):
                detail += f"\nLast lines of {log}:\n{tail}"
            self.fail(run, f"exit {returncode} after {took:.0f}s (log: {log})", detail + f"\nFull log: {log}")
            self._count(run, "failed", took)
            return None
        verdict = self.assess(run, train_record)
        if verdict.action != "skip":
            self.fail(run, f"dept.train exited 0 but its run does not verify: {verdict.short} (log: {log})",
                      verdict.reason or "; ".join(verdict.notes))
            self._count(run, "failed", took)
            return None
        logger.info("done in %.0fs: %s", took, run.directory)
        self._count(run, "ran", took)
        return verdict.record

    def _count(self, run, what, took=None):
        if self.progress is not None:
            self.progress.update(run, what, took)

    def run_chain(self, chain, blocking):
        """Train, then evaluate, under every run's lock. False: deferred (another process holds one)."""
        locks = []
        try:
            for run in chain.runs:
                lock = FileLock(lock_path(run.directory))
                try:
                    lock.acquire(blocking=False)
                except Busy:
                    if not blocking:
                        logger.info("deferred: %s is being run by another process (%s); this runner comes "
                                    "back to it at the end", run.label, lock.holder() or "unknown")
                        return False
                    logger.info("waiting for %s (locked by %s)", run.label, lock.holder() or "another process")
                    self.waiting_for = run
                    try:
                        lock.acquire(blocking=True)
                    finally:
                        self.waiting_for = None
                locks.append(lock)
            record = self.execute(chain.runs[0], locks[0])
            for run, lock in zip(chain.runs[1:], locks[1:]):
                if record is None:
                    self._count(run, "blocked")
                    continue
                self.execute(run, lock, train_record=record)
            return True
        finally:
            for lock in reversed(locks):
                lock.release()

    def dry_run(self, chains):
        for chain in chains:
            train = chain.runs[0]
            verdict = self.assess(train)
            if verdict.action == "fail":
                self.fail(train, verdict.short, verdict.reason)
                continue
            if verdict.action == "skip":
                logger.info("skip (finished): %s", train.directory)
            else:
                for note in verdict.notes:
                    logger.info("%s: %s", train.label, note)
                logger.info("would run: %s", shlex.join(train.command))
            for test in chain.runs[1:]:
                test_verdict = self.assess(test, verdict.record) if verdict.action == "skip" else Verdict("run")
                if test_verdict.action == "skip":
                    logger.info("skip (finished): %s", test.directory)
                elif test_verdict.action == "fail":
                    self.fail(test, test_verdict.short, test_verdict.reason)
                else:
                    logger.info("would run: %s", shlex.join(test.command))

    # -- tables ------------------------------------------------------------------------------

    def results_dir(self):
        return os.path.join(self.output, self.protocol.name, "results")

    def seeds_on_disk(self, grid, dataset, stage=None, source=None):
        parent = os.path.dirname(self.directory(grid, dataset, 0, stage or self.train_stage, source=source))
        if not os.path.isdir(parent):
            return []
        found = (re.fullmatch(r"seed(\d+)", name) for name in os.listdir(parent))
        return sorted(int(m.group(1)) for m in found if m)

    def datasets_on_disk(self, grid, requested, source=None):
        """``requested``, then the other datasets with runs of this grid cell on disk (training runs, or
        with ``source`` the evaluations of its model): a table keeps the rows of an earlier, larger
        grid when this invocation asks for fewer datasets."""
        stage = self.train_stage if source is None else self.eval_stage
        placeholder = "\0dataset"  # no folder has this name: where the dataset goes in the layout
        parts = self.directory(grid, placeholder, 0, stage, source=source).split(os.sep)
        parent = os.sep.join(parts[:parts.index(placeholder)])
        extra = []
        for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else ():
            if name in requested or not os.path.isfile(os.path.join(self.args.configs_dir, "datasets",
                                                                    f"{name}.yaml")):
                continue
            if self.seeds_on_disk(grid, name, stage, source):
                extra.append(name)
        return [*requested, *extra]

    def collect(self, grid, dataset):
        """base2new: ``SeedRuns`` for every seed of this grid cell found on disk (finished and verified only)."""
        out = []
        for seed in sorted(set(self.seeds_on_disk(grid, dataset))):
            train, why = self.verified(self.make_run(grid, dataset, seed, "train_base"))
            problems = [why] if why and why != "train_base: not run" else []
            test = None
            if train is not None:
                test, why = self.verified(self.make_run(grid, dataset, seed, "test_new"), train)
                problems += [why] if why else []
            if train is not None or problems:
                out.append(SeedRuns.from_records(seed, train, test, problems))
        return out

    def collect_transfer(self, grid):
        """Cross-dataset / DG / few-shot: ``SeedResult`` of the training runs (by their dataset) and of
        each target's evaluations, for every seed found on disk."""
        from dept.protocol_results import SeedResult

        if self.protocol.has_source:
            sources = {}
            targets = {d: [] for d in self.datasets_on_disk(grid, self.args.datasets, source=self.source)}
        else:
            sources, targets = {}, {}
        for dataset in (self.train_datasets() if self.protocol.has_source
                        else self.datasets_on_disk(grid, self.args.datasets)):
            sources[dataset] = []
            for seed in self.seeds_on_disk(grid, dataset):
                train, why = self.verified(self.make_run(grid, dataset, seed, self.train_stage))
                if train is not None or why != f"{self.train_stage}: not run":
                    sources[dataset].append(SeedResult.from_record(seed, train, [why] if why else []))
                if not self.protocol.has_source:
                    continue
                for target in targets:
                    run = self.make_run(grid, target, seed, self.eval_stage, source=dataset)
                    if train is None:
                        targets[target].append(SeedResult(seed, problems=["its training run is not finished"]))
                        continue
                    record, why = self.verified(run, train)
                    if record is not None or why != f"{self.eval_stage}: not run":
                        targets[target].append(SeedResult.from_record(seed, record, [why] if why else []))
        return sources, targets

    def setting_reasons(self, grid):
        reasons = []
        own = config_for(grid.trainer, self.protocol)
        if grid.cfg_name != own:
            reasons.append(f"config {grid.cfg_name} (paper: {own})")
        if grid.options:
            reasons.append("options " + ", ".join(f"{k}={v}" for k, v in grid.options) + " (paper: none)")
        return reasons

    def _title(self, text):
        return text + (" - DEMO on random CLIP weights" if self.demo else "")

    def write_table(self, grid):
        if self.protocol.name == "base2new":
            return self.write_base2new_table(grid)
        from dept.protocol_results import TRANSFER_COLUMNS, transfer_table

        name = grid.stem + source_suffix(self.source)  # one table per source
        stem = os.path.join(self.results_dir(), name)
        with FileLock(os.path.join(self.results_dir(), f".{name}.lock")):
            sources, targets = self.collect_transfer(grid)
            rows = transfer_table(self.protocol.name, grid.trainer, self.source, targets, sources[self.source],
                                  grid.shots, self.setting_reasons(grid), self.args.seeds)
            title = self._title(f"{grid.trainer} {self.protocol.title} ({grid.variant}, {grid.shots} shots, "
                                f"trained on {self.source})")
            text = write_tables(rows, stem + ".csv", stem + ".md", title, TRANSFER_COLUMNS)
        logger.info("results: %s.csv and %s.md", stem, stem)
        return text, rows

    def write_few_shot_tables(self, grids):
        """One few-shot table per trainer and variant, every number of shots in it."""
        from dept.protocol_results import FEW_SHOT_COLUMNS, few_shot_table

        texts = []
        by_trainer = {}
        for grid in grids:
            by_trainer.setdefault((grid.trainer, grid.variant), []).append(grid)
        for (trainer, variant), cells in by_trainer.items():
            stem = os.path.join(self.results_dir(), f"{trainer}_{variant}")
            with FileLock(os.path.join(self.results_dir(), f".{trainer}_{variant}.lock")):
                per_shots = {grid.shots: self.collect_transfer(grid)[0] for grid in self.shots_on_disk(cells)}
                rows = few_shot_table(per_shots, self.args.seeds)
                shown = ", ".join(str(k) for k in sorted(per_shots))
                title = self._title(f"{trainer} few-shot ({variant}, shots {shown})")
                texts.append(write_tables(rows, stem + ".csv", stem + ".md", title, FEW_SHOT_COLUMNS))
            logger.info("results: %s.csv and %s.md", stem, stem)
        return texts

    def shots_on_disk(self, cells):
        """The grids of ``cells`` (one trainer and variant), then those of the other numbers of shots
        with training runs of it on disk: the few-shot table keeps the shots of earlier invocations."""
        grid, have = cells[0], {g.shots for g in cells}
        pattern = re.compile(re.escape(grid.variant) + r"_(\d+)shots")
        found = set()
        for dataset in os.listdir(self.output) if os.path.isdir(self.output) else ():
            folder = os.path.join(self.output, dataset, grid.trainer)
            if os.path.isdir(folder) and os.path.isfile(os.path.join(self.args.configs_dir, "datasets",
                                                                      f"{dataset}.yaml")):
                found |= {int(m.group(1)) for m in map(pattern.fullmatch, os.listdir(folder)) if m}
        return [*cells, *(replace(grid, shots=k) for k in sorted(found - have))]

    def write_base2new_table(self, grid):
        results = self.results_dir()
        stem = os.path.join(results, grid.stem)
        # One writer at a time per table, reading the records after any other writer's: the last
        # table written has every run finished before it.
        with FileLock(os.path.join(results, f".{grid.stem}.lock")):
            per_dataset = {d: self.collect(grid, d) for d in self.datasets_on_disk(grid, self.args.datasets)}
            rows = build_table(per_dataset, grid.trainer, grid.shots, grid.cfg_name,
                               default_config(grid.trainer), grid.options, self.args.seeds)
            seeds = sorted({s for r in rows if r["dataset"] != "average" for s in r["seed_ids"].split()}, key=int)
            title = self._title(f"{grid.trainer} ({grid.variant}, {grid.shots} shots), "
                                f"seeds found: {' '.join(seeds) or 'none'}")
            text = write_tables(rows, stem + ".csv", stem + ".md", title)
        logger.info("results: %s.csv and %s.md", stem, stem)
        return text, rows

    def write_summary(self, grids, tables):
        """Every trainer of this invocation side by side (``build_summary``), when there are several."""
        if len(grids) < 2:
            return ""
        suffix = grids[0].variant[len(grids[0].cfg_name):]  # "+KEY=value..." of the options, shared by all
        stem = os.path.join(self.results_dir(), f"summary{suffix}_shots{grids[0].shots}")
        title = self._title(f"{', '.join(g.trainer for g in grids)} side by side ({grids[0].shots} shots"
                            + (f", options {suffix[1:]}" if suffix else "") + ")")
        text = write_tables(build_summary({g.trainer: rows for g, rows in zip(grids, tables)}), stem + ".csv",
                            stem + ".md", title, SUMMARY_COLUMNS)
        logger.info("summary: %s.csv and %s.md", stem, stem)
        return text

    def write_results(self, grids):
        if self.protocol.name == "few_shot":
            return "\n".join(self.write_few_shot_tables(grids))
        written = [self.write_table(grid) for grid in grids]
        texts = [text for text, _ in written]
        if self.protocol.name == "base2new":
            for shots in dict.fromkeys(g.shots for g in grids):
                cell = [(g, rows) for g, (_, rows) in zip(grids, written) if g.shots == shots]
                summary = self.write_summary([g for g, _ in cell], [rows for _, rows in cell])
                if summary:
                    texts.append(summary)
        return "\n".join(texts)

    # -- all of it ---------------------------------------------------------------------------

    @property
    def source(self):
        return getattr(self.args, "source", None)

    def main(self):
        a = self.args
        for key in a.opts[0::2]:
            if key in RUNNER_KEYS:
                raise UsageError(f"{key} is set by the runner ({RUNNER_KEYS[key]}); do not pass it after --")
        if not a.seeds or not a.datasets or not a.trainers or not a.shots:
            raise UsageError("--seeds, --datasets, --shots and --trainers need at least one value each")
        if self.demo:
            logger.warning(DEMO_BANNER)
            a.root, clip_path = prepare_demo(self.output, dry_run=a.dry_run)
            if self.protocol.has_source:
                a.source, a.datasets = DEMO_SOURCE, list(DEMO_TARGETS)
            else:
                a.datasets = [DEMO_SOURCE]
            a.config = a.config or "demo_tiny"
            self.runner_opts = ["MODEL.BACKBONE.PATH", clip_path]
        grids = [self.make_grid(trainer, shots) for trainer in a.trainers for shots in a.shots]
        for grid in grids:
            if grid.options:
                logger.info("%s: options %s change the config: runs go to %s", grid.trainer,
                            ", ".join(f"{k}={v}" for k, v in grid.options), grid.variant)
        chains = self.make_chains(grids)
        for run in (run for chain in chains for run in chain.runs):
            try:
                self.expected(run.argv)
            except Exception as err:  # a dataset yaml that does not merge, ...
                raise UsageError(f"{run.label}: its config cannot be built: {type(err).__name__}: {err}") from err
        from dept.backends import make_backend

        backend = make_backend(self)
        if a.dry_run:
            self.dry_run(chains)
            backend.describe(chains)
            return self.report()
        self.progress = Progress(chains)
        backend.run(chains)
        print(self.write_results(grids))
        if self.demo:
            print(DEMO_BANNER)
        return self.report()

    def report(self):
        if not self.failed:
            return 0
        lines = [f"{len(self.failed)} run(s) {'would fail' if self.args.dry_run else 'failed'}:"]
        lines += [f"  {run.label}: {short}" for run, short in self.failed]
        lines.append("Details are above and in the run folders' log.txt; fix the cause and run the same command "
                     "again (finished runs are skipped; failed ones are run again with --retry-failed).")
        print("\n".join(lines))
        return 1


class Progress:
    """The grid's state after each run, as one log line (readable in a file as on a terminal):
    done / running / failed / left, the mean time of the runs that ran, and the time left at that
    pace (divided among the workers)."""

    def __init__(self, chains, workers=1):
        self.total = sum(len(c.runs) for c in chains)
        self.workers = workers
        self.counts = dict(skipped=0, ran=0, failed=0, blocked=0, running=0)
        self.times = []
        self.start = time.time()
        self._lock = threading.Lock()

    def update(self, run, what, took=None):
        with self._lock:
            if what == "started":
                self.counts["running"] += 1
                return
            if what in ("ran", "failed") and took is not None:
                self.counts["running"] -= 1
            if what == "ran":
                self.times.append(took)
            self.counts[what] += 1
            logger.info("[progress] %s", self.line())

    def line(self):
        c = self.counts
        finished = c["skipped"] + c["ran"] + c["failed"] + c["blocked"]
        left = self.total - finished
        text = (f"{finished}/{self.total} runs done ({c['ran']} ran, {c['skipped']} skipped, {c['failed']} failed"
                + (f", {c['blocked']} blocked by a failed training" if c["blocked"] else "")
                + f"), {c['running']} running, {left} left")
        if self.times:
            per_run = sum(self.times) / len(self.times)
            text += (f"; {_duration(per_run)} per run, about {_duration(per_run * left / max(1, self.workers))} "
                     "left")
        return text + f"; {_duration(time.time() - self.start)} elapsed"


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def final_checkpoint_problem(record, directory):
    """None when the training run's final checkpoint is the file it wrote and it loads; else why not."""
    checkpoint = record.get("checkpoint") or {}
    path = checkpoint.get("path")
    if not path:
        return "its record names no final checkpoint"
    # The record describes the folder it is in: a file it names inside the run's output folder is
    # read from this folder (the same place unless the output root was moved or copied).
    recorded_dir = flat_config(record.get("config") or "").get("OUTPUT_DIR") or ""
    if recorded_dir and os.path.abspath(path).startswith(os.path.abspath(recorded_dir) + os.sep):
        path = os.path.join(directory, os.path.relpath(path, recorded_dir))
    if not os.path.isfile(path):
        return f"{path} is missing"
    if checkpoint.get("sha256") and sha256(path) != checkpoint["sha256"]:
        return f"{path} is not the file the run wrote (its sha256 differs)"
    from dept import checkpoint as checkpoints

    check = getattr(checkpoints, "checkpoint_problem", None)
    return check(path) if check is not None else None


def prepare_demo(output, dry_run=False):
    """The digits data and a tiny CLIP file under ``<output>/demo`` (written once, under a lock, so
    two runners starting together on a fresh root do not race); returns (data root, CLIP path)."""
    demo_dir = os.path.join(output, "demo")
    root, clip_path = os.path.join(demo_dir, "data"), os.path.join(demo_dir, "tiny_clip.pt")
    if dry_run:
        return root, clip_path
    from dept.datasets.digits import prepare_digits

    with FileLock(os.path.join(demo_dir, ".prepare.lock")):
        prepare_digits(root)
        if not _loads(clip_path):
            from dept.testing import save_tiny_clip

            fd, tmp = tempfile.mkstemp(prefix=".tiny_clip.", suffix=".tmp", dir=demo_dir)
            os.close(fd)
            try:
                save_tiny_clip(tmp)
                os.replace(tmp, clip_path)
            finally:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
    return root, clip_path


def _loads(path):
    if not os.path.isfile(path):
        return False
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated by an older, non-atomic writer: write it again
        return False
    return True


def parse_args(argv=None, protocol=PROTOCOLS["base2new"]):
    """The runner's arguments, with relative paths resolved against the current folder (the caller's)."""
    args = build_parser(protocol).parse_args(argv)
    args.opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    args.demo = args.demo or not args.root
    args.output = os.path.abspath(os.path.expanduser(args.output))
    args.configs_dir = os.path.abspath(os.path.expanduser(args.configs_dir))
    if args.root and not args.demo:
        args.root = os.path.abspath(os.path.expanduser(args.root))
    args.protocol = protocol.name
    return args


def run_protocol(name, argv=None):
    """``python -m dept <protocol> ...``: exit 0, 1 (runs failed), 2 (usage), 128+N (signal N)."""
    protocol = PROTOCOLS[name.replace("-", "_")]
    args = parse_args(argv, protocol)
    runner = Runner(args, args.demo, protocol)
    previous = {s: signal.signal(s, runner.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return runner.main()
    except Interrupted as err:
        print(err.line(), file=sys.stderr)
        return 128 + int(err.signum)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def base2new(argv=None):
    return run_protocol("base2new", argv)
