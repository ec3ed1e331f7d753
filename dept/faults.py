"""Fault injection for the crash tests: stop this process at a named point, the n-th time it is reached.

``DEPT_FAULT="<point>:<n>[:<signal>]"`` (e.g. ``step:7``, ``checkpoint:2:TERM``) sends the signal
(default KILL) to this process when ``reached(point)`` is called for the n-th time. Points: ``step``
(after a training step), ``checkpoint`` (after a checkpoint is written), ``test`` (before the final
evaluation). Unset, ``reached`` costs one dictionary lookup.
"""
import os
import signal

_counts = {}


def _target():
    spec = os.environ.get("DEPT_FAULT", "")
    if not spec:
        return None
    point, n, *sig = spec.split(":")
    return point, int(n), getattr(signal, f"SIG{sig[0]}" if sig else "SIGKILL")


def reached(point):
    target = _target()
    if target is None or target[0] != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == target[1]:
        os.kill(os.getpid(), target[2])
