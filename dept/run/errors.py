"""What stops a protocol command: a usage error (exit 2, one message) or a signal (128 + N)."""
import signal


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
