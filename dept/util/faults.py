"""Fault injection for the crash tests: stop this process at a named point, the n-th time it is reached.

``DEPT_FAULT="<point>:<n>[:<signal>[x<times>]]"`` (e.g. ``step:7``, ``checkpoint:2:TERM``,
``step:4:TERMx2``) sends the signal (default KILL; ``x2``: twice, as a scheduler and a runner both
deliver it) to this process when ``reached(point)`` is called for the n-th time. Points: ``step``
(after a training step), ``checkpoint`` (after a checkpoint is written), ``test`` (before the final
evaluation), ``write`` (a file written through ``dept.util.files.atomic_open``, before it is flushed).
``ENOSPC`` for the signal raises a full disk's ``OSError`` there instead, and ``<point>@<text>``
counts only where the point's detail (a write's file path) holds that text
(``write@model.pth.tar:1:ENOSPC``: the first checkpoint written finds the disk full).
Unset, ``reached`` costs one dictionary lookup.
"""
import errno
import os
import signal

_counts = {}


def _target():
    spec = os.environ.get("DEPT_FAULT", "")
    if not spec:
        return None
    point, n, *sig = spec.split(":")
    name, _, times = (sig[0] if sig else "KILL").partition("x")
    if name == "ENOSPC":
        return point, int(n), name, 1
    return point, int(n), getattr(signal, f"SIG{name}"), int(times or 1)


def reached(point, detail=""):
    target = _target()
    if target is None:
        return
    name, _, text = target[0].partition("@")
    if name != point or text not in detail:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] == target[1] and target[2] == "ENOSPC":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if _counts[point] == target[1]:
        for _ in range(target[3]):
            os.kill(os.getpid(), target[2])
