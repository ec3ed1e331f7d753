"""Whether a run folder holds the run it stands for: one verification for the runner and the report.

A run counts (is reused by the runner, is a number in a table) only when its record says it
finished, with a usable accuracy, with the settings its folder stands for, and:
- a training run: its final checkpoint is the file it wrote (same sha256);
- an evaluation: it evaluated exactly the final checkpoint of the training run of its chain.

"The settings its folder stands for" (``Expected``) are known in full to the runner, which builds
the config it would run with (``Expected.exactly``). A reader of an output root (the report) knows
them from the folder: the trainer's config files as they are now, the dataset, stage, shots and
seed, and the options its name shows (``Expected.from_folder``): the options are read back from
the record (its settings that differ from the config files) and must name the folder's variant.
Either way an edited yaml, a record copied into another folder, or a run of another trainer,
dataset, seed or split is not counted. Settings no folder names (the CLIP file) are checked by the
runner, which knows them; the report compares them between the seeds of a cell instead.
"""
import functools
import os
from dataclasses import dataclass, field

from dept.core.settings import NEUTRAL_KEYS, differences, flat, format_differences
from dept.store.layout import variant_name
from dept.store.record import CorruptRecord, accuracy, read_record, shape_problem
from dept.util.files import sha256

# Keys the runner sets on every run from the key itself (never named in a folder's variant).
KEY_SETTINGS = ("SEED", "DATASET.NUM_SHOTS", "DATASET.SUBSAMPLE_CLASSES")
# Keys that name no variant folder besides those: a file path (another CLIP file is still another
# run: the runner compares it, the report compares it between seeds).
UNNAMED = frozenset({*KEY_SETTINGS, "MODEL.BACKBONE.PATH"})
# The files a run's checkpoints can be (set aside, with the log, when a folder cannot be verified)
CHECKPOINT_FILES = ("model.pth.tar-", "model-best.pth.tar", "model-interrupted.pth.tar")


def named_options(plain, config, trainer):
    """The settings of ``config`` that differ from ``plain`` and that a variant's name shows, as
    [(key, value)]: the options after ``--`` that made it."""
    return [(key, mine) for key, mine, _ in differences(config, plain, trainer, neutral=NEUTRAL_KEYS | UNNAMED)]


@dataclass
class Expected:
    """The settings a run folder stands for (see the module doc)."""

    key: object  # RunKey
    plain: dict  # the flat config of the key's trainer config and dataset, no options
    full: dict = None  # the runner's: the config it would run with, every setting known

    @classmethod
    def exactly(cls, key, plain, full):
        return cls(key, flat(plain), flat(full))

    @classmethod
    def from_folder(cls, key, plain):
        return cls(key, flat(plain))

    def differences(self, recorded):
        """[(key, recorded, expected)] where the record is not this folder's run; for a folder whose
        options are read back from the record, the options it names and the folder's, as the keys
        "options" (recorded) and the folder's variant."""
        trainer = self.key.trainer
        if self.full is not None:
            return differences(recorded, self.full, trainer)
        found = [(k, old, new) for k, old, new in differences(recorded, self.plain, trainer) if k in KEY_SETTINGS]
        options = named_options(self.plain, recorded, trainer)
        name = variant_name(self.key.cfg_name, options)
        if name != self.key.variant:
            found.append(("options", name[len(self.key.cfg_name):] or "(none)",
                          self.key.options_text or "(none)"))
        return found


@dataclass
class Verdict:
    """What is in a run folder: ``state`` "counted" (finished, verified), or why it does not count.

    States: absent, foreign (a log but no record: an older version or another tool), corrupt,
    running, interrupted, failed (as recorded), other_settings, no_result, other_data (its dataset's
    split file was made anew since it ran), checkpoint (a training
    run's final checkpoint is unusable), other_checkpoint (an evaluation of another checkpoint),
    unverifiable (what the folder stands for cannot be built: no config file, an unknown trainer).
    """

    state: str
    record: dict = None
    accuracy: float = None
    problem: str = ""  # a reader's sentence: why it does not count
    differences: list = field(default_factory=list)

    @property
    def counted(self):
        return self.state == "counted"


def checkpoint_folders(directory):
    """The sub-folders of a run folder that hold checkpoints (Dassl saves them one level down)."""
    if not os.path.isdir(directory):
        return []
    return [e.path for e in os.scandir(directory)
            if e.is_dir() and any(f.startswith(CHECKPOINT_FILES) for f in os.listdir(e.path))]


def has_checkpoints(directory):
    return bool(checkpoint_folders(directory))


def final_checkpoint_problem(record, directory):
    """None when the training run's final checkpoint is the file it wrote, else why not."""
    checkpoint = record.get("checkpoint") or {}
    path = checkpoint.get("path") if isinstance(checkpoint, dict) else None
    if not path:
        return "its record names no final checkpoint"
    # The record describes the folder it is in: a file it names inside its output folder is read
    # from this folder (the same place, unless the output root was moved or copied).
    try:
        recorded_dir = flat(record.get("config") or "").get("OUTPUT_DIR") or ""
    except Exception:  # noqa: BLE001  (an unreadable config is reported by the settings check)
        recorded_dir = ""
    if recorded_dir and os.path.abspath(path).startswith(os.path.abspath(recorded_dir) + os.sep):
        path = os.path.join(directory, os.path.relpath(path, recorded_dir))
    if not os.path.isfile(path):
        return f"{path} is missing"
    if not checkpoint.get("sha256"):
        return "its record gives no sha256 of its final checkpoint"
    if sha256(path) != checkpoint["sha256"]:
        return f"{path} is not the file the run wrote (its sha256 differs)"
    return None


def data_problem(record):
    """Why the data a run recorded is not the data there now (its split file was remade since: a run of
    your own images after DEPT_REBUILD_SPLIT=1), or None. A split file that is not there cannot be
    compared (a data root moved): the run itself checks its folder when it runs."""
    data = record.get("data") or {}
    path, recorded = data.get("split_file"), data.get("sha256")
    if not path or not recorded or not os.path.isfile(path):
        return None
    info = os.stat(path)
    if _split_sha256(path, info.st_mtime_ns, info.st_size) != recorded:
        return (f"it ran on another split of its images: {path} was made anew since (DEPT_REBUILD_SPLIT=1), so "
                "its number is for other train/test images")
    return None


@functools.lru_cache(maxsize=64)
def _split_sha256(path, mtime_ns, size):
    """A split file's sha256, once per version of it: every run of a grid on one folder names the same file."""
    return sha256(path)


def verify(directory, expected, train_record=None, trained=True):
    """The ``Verdict`` on ``directory``, the folder of ``expected.key``'s run.

    ``train_record``: for an evaluation, the counted record of its chain's training run (None: not
    counted, so neither is the evaluation). ``trained``: False for a method that learns nothing
    (nothing was trained: no checkpoint to check).
    """
    key = expected.key
    try:
        record = read_record(directory)
    except CorruptRecord as err:
        return Verdict("corrupt", problem=f"unreadable run record ({err})")
    if record is None:
        if os.path.isfile(os.path.join(directory, "log.txt")):
            return Verdict("foreign", problem="no run record (dept_run.json) beside its log.txt (an older version "
                                              "or another tool): it cannot be verified")
        return Verdict("absent", problem="not run")
    shape = shape_problem(record)
    if shape:
        return Verdict("corrupt", problem=f"its run record cannot be read: {shape}")
    try:
        found = expected.differences(record.get("config") or "")
    except Exception as err:  # noqa: BLE001  (not yaml, not a mapping)
        return Verdict("corrupt", record, problem=f"its recorded config cannot be read ({type(err).__name__}: {err})")
    status = record.get("status")
    if status != "finished":
        why = {"running": "running (in progress, or killed before it could record its end)"}.get(status, status)
        error = f": {record['error']}" if record.get("error") else ""
        state = status if status in ("running", "interrupted", "failed") else "running"
        return Verdict(state, record, problem=f"{why or 'no status'}{error}", differences=found)
    if found:
        return Verdict("other_settings", record, problem="its record has other settings than its folder stands for: "
                       + format_found(found), differences=found)
    value, why = accuracy(record)
    if value is None:
        return Verdict("no_result", record, problem=why)
    changed = data_problem(record)
    if changed:
        return Verdict("other_data", record, problem=changed)
    if trained and key.trains:
        problem = final_checkpoint_problem(record, directory)
        if problem:
            return Verdict("checkpoint", record, problem=f"its final checkpoint is not usable ({problem})")
    elif trained:
        trained_sha = ((train_record or {}).get("checkpoint") or {}).get("sha256")
        evaluated = (record.get("checkpoint") or {}).get("sha256")
        if not trained_sha or evaluated != trained_sha:
            return Verdict("other_checkpoint", record, problem="it evaluated another checkpoint than its training "
                                                               "run's final one")
    return Verdict("counted", record, accuracy=value)


def format_found(found, limit=8):
    return format_differences(found, limit=limit, sides=("in its record", "for its folder"))


def seeds_disagree(a, b, trainer):
    """The settings two seeds of one cell differ in (the seed aside): what no folder name shows (the
    CLIP file), or a yaml edited between seeds where the folder is not checked against the yaml."""
    return [(k, x, y) for k, x, y in differences(a, b, trainer) if k != "SEED"]
