"""Console + ``log.txt`` output for a run, and ``logging`` routed to it.

Dassl's ``setup_logger`` replaces ``sys.stdout`` for good, and its ``Logger.__del__`` closes the
console it wrapped (so a second run in the same process writes to a closed stream). ``run_log``
tees stdout to the run's ``log.txt`` for the duration of one run and puts everything back after;
the file is flushed at every write, so a run killed by SIGKILL (OOM killer, a cluster's time
limit) keeps every line logged before.

Where our INFO lines go:

- ``dept.run.train`` / ``python -m dept`` call :func:`setup_logging`: a root handler writing to the
  current ``sys.stdout`` (hence to the run's tee).
- Anyone else (a user's own CoOp-style ``train.py`` that calls only Dassl's ``setup_logger``):
  ``import dept`` installs :func:`install_console_fallback`, a handler on the ``dept`` logger that
  writes to the current ``sys.stdout`` *only while the root logger has no handlers*, so the lines
  reach the console and Dassl's ``log.txt`` and are never doubled once logging is configured.
  It sets the ``dept`` logger to INFO unless a level was set on it already: quiet it with
  ``logging.getLogger("dept").setLevel(logging.WARNING)``.
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
        self.file.flush()  # into the OS at once: a SIGKILL loses nothing already written
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


class _ConsoleFallback(logging.Handler):
    """``dept``'s own handler for processes that never configured logging (see the module doc).

    Writes to ``sys.stdout`` as it is at emit time (Dassl's tee to log.txt, when installed) and
    flushes it (Dassl's tee then flushes log.txt too). Stands aside while the root logger has a
    handler: the record propagates there, and printing it here as well would double it.
    """

    def __init__(self):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("[%(name)s] %(message)s"))

    def filter(self, record):
        return not logging.getLogger().handlers and super().filter(record)

    def emit(self, record):
        try:
            stream = sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # a closed or broken stdout must not break the run
            self.handleError(record)


def install_console_fallback():
    """Make ``dept``'s INFO lines visible however the trainer was started (idempotent)."""
    global _level_set_here
    logger = logging.getLogger("dept")
    if not any(isinstance(h, _ConsoleFallback) for h in logger.handlers):
        logger.addHandler(_ConsoleFallback())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)  # else INFO records are dropped at the root's WARNING
        _level_set_here = True


_level_set_here = False


def setup_logging(level=logging.INFO):
    """Root handler on the current ``sys.stdout`` at ``level`` (dept.run.train, ``python -m dept``)."""
    global _level_set_here
    if _level_set_here:  # logging is configured now: the root's level governs dept's lines too
        logging.getLogger("dept").setLevel(logging.NOTSET)
        _level_set_here = False
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
