"""Console + ``log.txt`` output for a run, and ``logging`` routed to it.

Dassl's ``setup_logger`` replaces ``sys.stdout`` for good, and its ``Logger.__del__`` closes the
console it wrapped (so a second run in the same process writes to a closed stream). ``run_log``
tees stdout to the run's ``log.txt`` for the duration of one run and puts everything back after.
"""
import contextlib
import logging
import os
import sys
import time


class _Tee:
    def __init__(self, console, file):
        self.console, self.file = console, file

    def write(self, text):
        self.console.write(text)
        self.file.write(text)
        return len(text)

    def flush(self):
        self.console.flush()
        self.file.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):  # encoding, fileno, ... as the console has them
        return getattr(self.console, name)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time, so the run's tee receives it."""

    def __init__(self):
        super().__init__(sys.stdout)

    def emit(self, record):
        self.stream = sys.stdout
        super().emit(record)


def setup_logging(level=logging.INFO):
    root = logging.getLogger()
    if not any(isinstance(h, _StdoutHandler) for h in root.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


@contextlib.contextmanager
def run_log(output_dir):
    """Tee stdout (Dassl's prints and our log lines) into ``<output_dir>/log.txt``.

    An existing log is appended to, after a dated separator, so a resumed run keeps its history.
    """
    if not output_dir:
        yield
        return
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "log.txt")
    console = sys.stdout
    with open(path, "a") as file:
        if file.tell():
            file.write(f"\n===== run started again at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n")
        sys.stdout = _Tee(console, file)
        try:
            yield path
        finally:
            sys.stdout.flush()
            sys.stdout = console
