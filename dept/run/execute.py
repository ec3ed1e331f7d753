"""Running a grid's chains: skip what is finished and verified, resume what is not, never run twice.

A run is reused only when it verifies (``dept.store.verify``): finished, with the settings this
runner would run it with, and (training) its final checkpoint intact or (evaluation) of exactly
that checkpoint. A finished run with other settings (a yaml edited since) is an error naming the
keys, never reused and never trained over. Unfinished runs are run again and resume from their last
good checkpoint; their old log is kept as ``log-unfinished-<n>.txt``. A run that failed is
reported with its log's last lines and run again only with ``--retry-failed``.

Each run is locked while it runs (``.dept.lock``, passed down to ``dept.run.train``): two runners
on one output root never run the same thing twice; a run locked by another runner is done last,
after waiting for it. Ctrl-C or SIGTERM stops the runs in progress (they save their state).
"""
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from dept.core.methods import learns
from dept.run.errors import Interrupted
from dept.run.progress import Progress
from dept.store.record import lock_path
from dept.store.verify import UNNAMED, checkpoint_folders, has_checkpoints, verify
from dept.util.files import Busy, DiskFull, FileLock

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


@dataclass
class Decision:
    """What to do with a run: "skip" (finished and verified), "run", or "fail" (never reuse)."""

    action: str
    record: dict = None
    reason: str = ""
    short: str = ""
    notes: list = field(default_factory=list)
    unverified: bool = False


# -- files of a run folder -----------------------------------------------------------------------

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


def read_tail(path, lines=20):
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


class Executor:
    """Runs chains of a ``Planner``'s grid here, in child processes, one run at a time per thread."""

    def __init__(self, planner, retry_failed=False, command="the runner"):
        self.planner, self.retry_failed, self.command = planner, retry_failed, command
        self.failed = []  # (label, short)
        self.refused = {}  # chain key -> index of its run that can never run (``todo``)
        self.children = set()
        self.signum = None
        self.waiting_for = None
        self.progress = None
        self.ignored_signals = ()  # signals its runs ignore (child_setup)
        self._lock = threading.Lock()
        self._local = threading.local()  # per worker thread: its environment (GPU) for children

    # -- deciding ------------------------------------------------------------------------------
    def assess(self, run, train_record=None):
        """Decide from what is on disk whether ``run`` is finished with this config (reads only)."""
        key, d = run.key, run.directory
        verdict = verify(d, self.planner.expectation(key), train_record, trained=learns(key.trainer))
        state = verdict.state
        if state == "counted":
            return Decision("skip", record=verdict.record)
        if state == "absent":
            return Decision("run", short="not run")
        if state == "foreign":
            return Decision("run", unverified=True, short="no run record (older version or another tool)",
                            notes=[f"{d} has a log but no run record ({os.path.basename(d)}/dept_run.json): it was "
                                   "written by an older version or another tool and cannot be verified; its log "
                                   "and checkpoints are set aside and the run is run again"])
        if state == "corrupt":  # its checkpoints cannot be tied to these settings: set aside, as a foreign run's
            return Decision("run", short="corrupt run record", unverified=has_checkpoints(d),
                            notes=[f"{verdict.problem}: treated as unfinished (the run is run again"
                                   + ("; its checkpoints are set aside" if has_checkpoints(d) else "") + ")"])
        if state == "other_settings" or (verdict.differences and key.trains and has_checkpoints(d)):
            return self._mismatch(run, verdict)
        if state == "other_data":  # its checkpoints were trained on other images: set aside, never resumed
            return Decision("run", short="ran on another split", unverified=has_checkpoints(d),
                            notes=[f"{verdict.problem}: it is run again on the new split"
                                   + ("; its checkpoints are set aside" if has_checkpoints(d) else "")])
        if state == "no_result":
            return Decision("run", short="finished without a usable result",
                            notes=[f"its record says finished but {verdict.problem}: it is run again"])
        if state == "checkpoint":
            return Decision("run", short="final checkpoint unusable",
                            notes=[f"{verdict.problem}: it is run again (dept.run.train resumes from the last "
                                   "good checkpoint)"])
        if state == "other_checkpoint":
            return Decision("run", short="evaluated another checkpoint",
                            notes=["it evaluated another checkpoint than the training run's final one: it is "
                                   "evaluated again"])
        record = verdict.record
        if state == "failed" and str(record.get("error", "")).startswith(f"{DiskFull.__name__}:"):
            return Decision("run", short="stopped on a full disk",
                            notes=[f"it stopped on a full disk ({record['error']}): it is run again, resuming "
                                   "where it was saved"])
        if state == "failed" and not self.retry_failed:
            tail = read_tail(os.path.join(d, "log.txt"), lines=12).rstrip()
            return Decision("fail", record=record, short="failed before (--retry-failed runs it again)",
                            reason=f"{d} failed when it last ran"
                                   + (f" ({record['error']})" if record.get("error") else "")
                                   + ". It is left as it is: fix the cause, then run the same command with "
                                     "--retry-failed." + (f"\nLast lines of its log.txt:\n{tail}" if tail else ""))
        return Decision("run", short=state, notes=[f"it was left {state}: it is run again (resuming where it "
                                                   "was saved)"])

    def _mismatch(self, run, verdict):
        from dept.core.settings import format_differences

        found = verdict.differences
        keys = ", ".join(k for k, _, _ in found[:8]) + (" ..." if len(found) > 8 else "")
        unnamed = [k for k, _, _ in found if k in UNNAMED]
        if unnamed:  # options after -- would not help: these keys never name a folder
            beside = (f"{', '.join(unnamed)} never name a variant folder (a file path, or a key the runner sets)"
                      + (", and MODEL.BACKBONE.PATH is also what $DEPT_CLIP_PATH sets"
                         if "MODEL.BACKBONE.PATH" in unnamed else "")
                      + ": to run the new settings beside it, give them another --output")
        else:
            beside = "to run the new settings beside it, pass them as options after -- (options get their own folder)"
        config_file = run.argv[run.argv.index("--config-file") + 1]
        reason = (f"{run.directory} holds a {verdict.record.get('status')} run with other settings: "
                  f"{format_differences(found)}. It is neither reused nor trained over. If the settings "
                  f"changed since it ran (e.g. the yaml file {config_file} was edited), restore them; {beside}; "
                  "or move that folder away to run it anew.")
        return Decision("fail", record=verdict.record, reason=reason, short=f"other settings ({keys})")

    def todo(self, chain):
        """Whether ``chain`` has a run still to do (a finished chain is verified here); a run that can
        never run (other settings, failed before) is reported and the chain is not to do."""
        record = None
        for i, run in enumerate(chain.runs):
            decision = self.assess(run, record)
            if decision.action == "fail":
                self.fail(run.label, decision.short, decision.reason)
                self.refused[chain.key] = i
                return False
            if decision.action != "skip":
                return True
            record = decision.record if i == 0 else record
        return False

    def dry_run(self, chains):
        for chain in chains:
            train = chain.runs[0]
            decision = self.assess(train)
            if decision.action == "fail":
                self.fail(train.label, decision.short, decision.reason)
                continue
            if decision.action == "skip":
                logger.info("skip (finished): %s", train.directory)
            else:
                for note in decision.notes:
                    logger.info("%s: %s", train.label, note)
                logger.info("would run: %s", shlex.join(train.command))
            for test in chain.runs[1:]:
                verdict = self.assess(test, decision.record) if decision.action == "skip" else Decision("run")
                if verdict.action == "skip":
                    logger.info("skip (finished): %s", test.directory)
                elif verdict.action == "fail":
                    self.fail(test.label, verdict.short, verdict.reason)
                else:
                    logger.info("would run: %s", shlex.join(test.command))

    # -- running -------------------------------------------------------------------------------
    def on_signal(self, signum, frame):
        children = [c for c in list(self.children) if c.returncode is None]
        if children:
            self.signum = self.signum or signum
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)  # it saves and exits; a second signal ends it at once
            return
        raise Interrupted(signum, self.waiting_for, command=self.command)

    def set_env(self, env):
        """The environment of this worker thread's children (a back-end sets its GPU or threads)."""
        self._local.env = dict(env)

    def child_env(self):
        return dict(os.environ, **getattr(self._local, "env", {}))

    def spawn(self, run, lock):
        """Run ``dept.run.train`` holding ``lock`` (passed down); returns (exit code, stderr text)."""
        if self.signum is not None:  # another worker was interrupted: start nothing new
            raise Interrupted(self.signum, run, None, command=self.command)
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
            raise Interrupted(self.signum, run, returncode, command=self.command)
        return returncode, text

    def fail(self, label, short, detail=""):
        with self._lock:
            self.failed.append((label, short))
        logger.error("FAILED %s: %s%s", label, short, f"\n{detail}" if detail else "")

    def execute(self, run, lock, train_record=None):
        """Skip, fail or run ``run`` (its lock held); returns its finished, verified record or None."""
        decision = self.assess(run, train_record)
        if decision.action == "skip":
            logger.info("skip (finished): %s", run.directory)
            self._count(run, "skipped")
            return decision.record
        if decision.action == "fail":
            self.fail(run.label, decision.short, decision.reason)
            self._count(run, "failed")
            return None
        for note in decision.notes:
            logger.warning("%s: %s", run.label, note)
        kept = keep_unfinished_log(run.directory)
        if kept:
            logger.info("previous log kept as %s", kept)
        if decision.unverified:
            for folder in checkpoint_folders(run.directory):
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
            tail = read_tail(log)
            last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
            if tail and (not detail or returncode < 0 or last.split(": ", 1)[-1].strip() not in detail):
                detail += f"\nLast lines of {log}:\n{tail}"
            short = f"exit {returncode} after {took:.0f}s (log: {log})"
            full = next((line for line in stderr.splitlines() if DiskFull.PREFIX in line), None)
            if full is not None:  # resumable: the same command runs it again (no --retry-failed needed)
                short = (f"{full.split(DiskFull.PREFIX, 1)[1].split('. ', 1)[0].strip()}: disk full. Free space "
                         "and run the same command again: it resumes this run")
            self.fail(run.label, short, detail + f"\nFull log: {log}")
            self._count(run, "failed", took)
            return None
        decision = self.assess(run, train_record)
        if decision.action != "skip":
            self.fail(run.label, f"dept.run.train exited 0 but its run does not verify: {decision.short} (log: {log})",
                      decision.reason or "; ".join(decision.notes))
            self._count(run, "failed", took)
            return None
        logger.info("done in %.0fs: %s", took, run.directory)
        self._count(run, "ran", took)
        return decision.record

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

    def start_progress(self, chains):
        self.progress = Progress(chains)
        return self.progress
