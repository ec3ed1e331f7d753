"""The grid's progress as one log line after each run (readable in a file as on a terminal)."""
import logging
import threading
import time

logger = logging.getLogger(__name__)


class Progress:
    """done / running / failed / left, the mean time of the runs that ran, and the time left at that
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

    def merge(self, counts, times=()):
        """Runs counted in another process (a SLURM task's own Progress): added, and the line logged."""
        with self._lock:
            for what in ("skipped", "ran", "failed", "blocked"):
                self.counts[what] += int(counts.get(what, 0))
            self.times.extend(times)
            logger.info("[progress] %s", self.line())

    def set_running(self, n):
        """Runs going on elsewhere (a SLURM back-end: its running tasks, one run each)."""
        with self._lock:
            self.counts["running"] = n

    def line(self):
        c = self.counts
        finished = c["skipped"] + c["ran"] + c["failed"] + c["blocked"]
        left = self.total - finished
        text = (f"{finished}/{self.total} runs done ({c['ran']} ran, {c['skipped']} skipped, {c['failed']} failed"
                + (f", {c['blocked']} blocked by a failed training" if c["blocked"] else "")
                + f"), {c['running']} running, {left} left")
        if self.times:
            per_run = sum(self.times) / len(self.times)
            text += (f"; {duration(per_run)} per run, about {duration(per_run * left / max(1, self.workers))} "
                     "left")
        return text + f"; {duration(time.time() - self.start)} elapsed"


def duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
