"""Ctrl-C and SIGTERM end a run cleanly: the state is saved where it is safe, then one line says so.

``handle_interrupts()`` (around a whole run) turns SIGINT/SIGTERM into ``RunInterrupted``. Inside
``deferred()`` (a training step and the checkpoint that may follow it) the signal is only noted:
the training loop finishes the step, saves, and raises ``RunInterrupted`` itself, so a SLURM
preemption or a Ctrl-C never loses more than the step in flight. A second signal while one is
pending ends the run at once, unless it is the same signal within ``REPEAT_S`` seconds: a scheduler
(SLURM's scancel) signals every process of a job, so a run started by the runner receives the
signal itself and again as the runner forwards it; that is one request to stop, not two.
"""
import contextlib
import signal
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_S = 2.0
_state = {"deferring": 0, "pending": None, "since": 0.0}


class RunInterrupted(Exception):
    """The run was stopped by a signal; ``saved`` says what was saved (or None)."""

    def __init__(self, signum, saved=None, where=""):
        self.signum = signum
        self.saved = saved
        self.where = where
        super().__init__(self.line())

    @property
    def exit_code(self):
        return 128 + int(self.signum)

    def line(self):
        name = signal.Signals(self.signum).name
        where = f" {self.where}" if self.where else ""
        saved = f"state saved to {self.saved}" if self.saved else "nothing new was saved"
        return f"Interrupted by {name}{where}: {saved}. Run the same command again to resume."


def _handler(signum, frame):
    if _state["deferring"] and _state["pending"] is None:
        _state["pending"], _state["since"] = signum, time.monotonic()
        return
    if _state["pending"] == signum and time.monotonic() - _state["since"] < REPEAT_S:
        return  # the same request delivered twice (directly and forwarded)
    raise RunInterrupted(signum)


@contextlib.contextmanager
def handle_interrupts():
    """Install the handlers for the duration of a run (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    _state["pending"] = None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred():
    """Within, a signal is noted (``pending()``) instead of raised."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1


def pending():
    """The signal number noted during ``deferred()``, or None."""
    return _state["pending"]
