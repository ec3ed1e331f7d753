"""What stops a protocol command: a usage error (exit 2, one message) or a signal (128 + N)."""
import argparse
import re
import signal

# A config key (MODEL.BACKBONE.PATH): taken as a flag's value, the flag's own value was missing.
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


class UsageError(ValueError):
    """An invocation that cannot run (bad options, missing config files): exit 2, one message.

    ``problems``: each of several mistakes found at once, so that a caller listing them (a grid
    file, per entry) can give each its own line; the message says them all."""

    def __init__(self, message="", problems=()):
        self.problems = list(problems) or [str(message)]
        if not message:
            message = "\n  ".join([f"{len(self.problems)} problems, nothing was run:", *self.problems]) \
                if len(self.problems) > 1 else self.problems[0]
        super().__init__(message)


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


def missing_value(flag, taken=None):
    """What to say when ``flag``'s value is missing: almost always an unset shell variable
    (``--model-dir $DIR`` with DIR unset passes no value, and the next word is taken for one)."""
    took = f" took '{taken}' (the next word on the line) as its value" if taken is not None else " has no value"
    return (f"{flag}{took}: an unset or empty shell variable ({flag} $VAR, unquoted, vanishes from the command "
            f"line)? Set the variable, or quote it ({flag} \"$VAR\") to have an empty value reported as empty.")


def swallowed_key(args, flags):
    """The message for a path flag whose value is a config key (its own value vanished), or None."""
    import os

    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if isinstance(value, str) and CONFIG_KEY.match(value) and not os.path.exists(value):
            return missing_value(flag, value)
    return None


class ClearParser(argparse.ArgumentParser):
    """argparse that says what a missing option value usually is (an unset shell variable), and
    raises ``UsageError`` instead of exiting when ``raise_errors`` is set (a grid file's entries
    are checked with the protocol's parser: its mistakes are named with the file, not as usage)."""

    raise_errors = False

    def error(self, message):
        found = re.match(r"argument (--[\w-]+)(?:/\S+)?: expected one argument", message)
        if found:
            message = missing_value(found.group(1))
        if self.raise_errors:
            raise UsageError(message)
        if found:  # one message, not the usage text around it
            self.exit(2, f"error: {message}\n")
        super().error(message)
