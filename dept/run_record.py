"""What a run did, in one file beside its log: the resolved config, its status, its result.

``<output_dir>/dept_run.json`` is written (atomically) by ``dept.train`` when a run starts, ends,
fails or is interrupted. It is what makes a finished run safe to reuse: "finished" means finished
*with the same config*, so the runner compares the recorded config with the one it would run
(``config_differences``) and never reports numbers computed with other settings. Fields:

    format      RECORD_FORMAT
    status      running | finished | failed | interrupted
    mode        train | eval
    trainer     TRAINER.NAME as asked for; ``trainer_class`` the class that ran
    argv        the command line
    config      the full resolved config (yacs dump)
    result      {"split": ..., "accuracy": %} of the run's final evaluation, or None
    checkpoint  {"path", "sha256", "epoch"}: for training, the final checkpoint written; for
                evaluation, the one loaded (so an evaluation is tied to the exact trained file)
    clip        {"name", "path", "arch": {...}}: the CLIP that was loaded
    head        how the classes were scored: "fused (<fusion>)", "itm" or None (no DePT head)
    notes       warnings a reader of the results must see (untrained model, short classes, ...)
    error       the error of a failed run; ``saved`` what an interrupted run saved
    started, ended, host, pid, dept_version
"""
import datetime
import json
import os
import socket

import yaml

from dept.files import write_json

RECORD_NAME = "dept_run.json"
RECORD_FORMAT = "dept-run/1"
LOCK_NAME = ".dept.lock"

# Keys that cannot change a run's numbers: where files are, how often it prints or saves.
NEUTRAL_KEYS = frozenset({
    "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ", "VERBOSE",
    "TEST.PER_CLASS_RESULT", "TEST.COMPUTE_CMAT", "DATASET.CHECK_IMAGES",
})


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
    from dept import __version__

    return {
        "status": "running", "mode": mode, "trainer": cfg.TRAINER.NAME, "argv": list(argv),
        "config": cfg.dump(), "result": None, "checkpoint": None, "clip": None, "head": None,
        "notes": [], "started": now(), "host": socket.gethostname(), "pid": os.getpid(),
        "dept_version": __version__,
    }


def flat_config(config):
    """``{"OPTIM.LR": 0.0035, ...}`` from a config (CfgNode or its yaml dump), values as yaml reads them."""
    text = config if isinstance(config, str) else config.dump()
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(yaml.safe_load(text) or {}, "")
    return out


def config_differences(recorded, current, neutral=NEUTRAL_KEYS):
    """``[(key, recorded value, current value)]`` for every key that could change the numbers."""
    a, b = flat_config(recorded), flat_config(current)
    missing = object()
    return [
        (key, a.get(key, missing), b.get(key, missing))
        for key in sorted(set(a) | set(b))
        if key not in neutral and a.get(key, missing) != b.get(key, missing)
    ]


def format_differences(differences, limit=12):
    def show(value):
        return "(absent)" if not isinstance(value, (str, int, float, bool, list, tuple, type(None))) else repr(value)

    lines = [f"{key}: {show(old)} there, {show(new)} now" for key, old, new in differences[:limit]]
    if len(differences) > limit:
        lines.append(f"... and {len(differences) - limit} more")
    return "; ".join(lines)
