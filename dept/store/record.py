"""What a run did, in one file beside its log: its settings, its status, its result.

``<run folder>/dept_run.json`` is written (atomically) by ``dept.run.train`` when a run starts, ends,
fails or is interrupted. It is what makes a finished run safe to reuse and to count: "finished"
means finished *with the settings its folder stands for* (``dept.store.verify``). Fields:

    format      RECORD_FORMAT
    status      running | finished | failed | interrupted
    mode        train | eval
    trainer     TRAINER.NAME as asked for
    argv        the command line
    config      the resolved config, each setting once (``dept.core.settings.recorded_config``)
    result      {"split": ..., "accuracy": %} of the run's final evaluation, or None
    checkpoint  {"path", "sha256", "epoch"}: for training, the final checkpoint written; for
                evaluation, the one loaded (so an evaluation is tied to the exact trained file)
    trainable   {"parameters": N, "tensors": [...]}: what training updated (training runs)
    prompt_words  for a learned M×W text context, the 5 vocabulary tokens nearest to each vector
                (``dept.core.interpret``), or None
    result.per_class  [{"class", "n", "accuracy"}] of the final evaluation, in label order
    clip        {"name", "path", "arch": {...}}: the CLIP that was loaded
    head        how the classes were scored: "fused (<fusion>)", "itm" or None (no DePT head)
    feature_cache  [{"split", "hit", "images", "file"}] per evaluation that used the shared image
                features (``dept.core.feature_cache``), or None; never part of the run's settings
    notes       warnings a reader of the results must see (untrained model, short classes, ...)
    error       the error of a failed run; ``saved`` what an interrupted run saved
    started, ended, host, pid, dept_version
"""
import datetime
import json
import math
import os
import socket

from dept.util.files import write_json

RECORD_NAME = "dept_run.json"
RECORD_FORMAT = "dept-run/1"
LOCK_NAME = ".dept.lock"


class CorruptRecord(ValueError):
    """A run record that exists but cannot be read (truncated, not JSON, another format)."""


def record_path(directory):
    return os.path.join(directory, RECORD_NAME)


def lock_path(directory):
    return os.path.join(directory, LOCK_NAME)


def read_record(directory):
    """The run record in ``directory``, or None if there is none; ``CorruptRecord`` names a bad one."""
    path = record_path(directory)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as err:
        raise CorruptRecord(f"{path} cannot be read ({err})") from err
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise CorruptRecord(f"{path} is not a {RECORD_FORMAT} run record")
    return record


def write_record(directory, record):
    write_json(record_path(directory), {"format": RECORD_FORMAT, **record})


def now():
    return datetime.datetime.now().isoformat(timespec="seconds")


def new_record(cfg, mode, argv):
    from dept.core.settings import recorded_config
    from dept.version import __version__

    return {
        "status": "running", "mode": mode, "trainer": cfg.TRAINER.NAME, "argv": list(argv),
        "config": recorded_config(cfg), "result": None, "checkpoint": None, "trainable": None, "clip": None,
        "head": None, "notes": [], "started": now(), "host": socket.gethostname(), "pid": os.getpid(),
        "dept_version": __version__,
    }


# The fields a record's readers rely on, and the types they may have (None: absent or empty).
FIELD_TYPES = {"status": str, "config": str, "checkpoint": dict, "clip": dict, "notes": list, "trainer": str,
               "data": dict}


def shape_problem(record):
    """Why a record's fields cannot be read as this module writes them (a field of another type), or ""."""
    wrong = [f"{name} is a {type(record[name]).__name__}" for name, kind in FIELD_TYPES.items()
             if record.get(name) is not None and not isinstance(record[name], kind)]
    return f"{', '.join(wrong)} (not as dept writes it)" if wrong else ""


def accuracy(record):
    """(the record's accuracy as a float, or None; why it is unusable, or "")."""
    result = (record or {}).get("result")
    if not result:
        return None, "finished without a result"
    if not isinstance(result, dict):
        return None, f"its result is not a mapping ({type(result).__name__})"
    value = result.get("accuracy")
    if value is None:
        return None, "finished without a result"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"its accuracy is not a number ({value!r})"
    if not math.isfinite(value) or not 0 <= value <= 100:
        return None, f"its accuracy is not a percentage ({value!r})"
    return float(value), ""
