"""Every run under an output root, read and verified: what the tables are built from.

``collect`` walks the root's layout (``dept.store.layout``), verifies each run folder
(``dept.store.verify``: finished, a usable accuracy, the settings its folder stands for, its own
checkpoint), ties each evaluation to the training run of its chain, and keeps apart the seeds of
one cell that ran with other settings than each other (a yaml edited between seeds, another CLIP
file: nothing a folder name shows). A run that is not counted carries why (``Found.problem``);
the tables and ``missing.md`` say it.

Who verifies decides what a folder stands for: by default its trainer's config files under
``configs_dir`` as they are now (the report); the runner passes its own expectation (``expect``),
which knows every setting it runs with.
"""
import os
from dataclasses import dataclass, replace

import yaml

from dept.core.methods import learns
from dept.store.layout import Layout
from dept.store.verify import Expected, Verdict, seeds_disagree, verify

TRAIN_NOT_COUNTED = "its training run is not counted"


@dataclass
class Found:
    """One run folder: its key, where it is (relative to the root), the verdict on it."""

    key: object  # RunKey
    folder: str
    verdict: Verdict
    problem: str = ""  # why it is not counted ("" when it is)

    @property
    def record(self):
        return self.verdict.record

    @property
    def accuracy(self):
        return self.verdict.accuracy if not self.problem else None

    @property
    def counted(self):
        return not self.problem

    @property
    def status(self):
        if self.record is None:
            return {"corrupt": "unreadable record", "absent": "no record"}.get(self.verdict.state, "no record")
        return str(self.record.get("status") or "no status")

    @property
    def notes(self):
        return [str(n) for n in (self.record or {}).get("notes") or ()]

    @property
    def clip(self):
        return (self.record or {}).get("clip")


class FolderExpectation:
    """What a folder stands for, from its trainer's config files (``Expected.from_folder``): the
    method yaml named by its variant, the dataset's yaml, its stage, shots and seed. The config
    files are looked for under ``configs_dir``, then where the record says the run read them."""

    def __init__(self, configs_dir):
        self.configs_dir = configs_dir
        self._plain = {}

    def files(self, key, record):
        """(method yaml, dataset yaml) of ``key``, or raise FileNotFoundError naming where it looked."""
        argv = list((record or {}).get("argv") or [])
        named = {flag: argv[argv.index(flag) + 1] for flag in ("--config-file", "--dataset-config-file")
                 if flag in argv[:-1]}
        out = []
        for flag, folder, name in (("--config-file", os.path.join("trainers", key.trainer), key.cfg_name),
                                   ("--dataset-config-file", "datasets", key.dataset)):
            here = os.path.join(self.configs_dir, folder, f"{name}.yaml")
            there = named.get(flag, "")
            if os.path.isfile(here):
                out.append(here)
            elif os.path.basename(there) == f"{name}.yaml" and os.path.isfile(there):
                out.append(there)
            else:
                raise FileNotFoundError(f"no config file {here}" + (f" (nor {there}, which the run read)" if there
                                                                    else "") + ": pass --configs-dir")
        return out

    def __call__(self, key, record):
        from dassl.engine import TRAINER_REGISTRY

        from dept.core.build_config import build_config
        from dept.core.settings import flat

        if key.trainer not in TRAINER_REGISTRY.registered_names():
            raise ValueError(f"its trainer {key.trainer} is not registered here: a method of your own? import its "
                           "module with DEPT_PLUGINS=<module> (as the runs did)")
        files = tuple(self.files(key, record))
        if files not in self._plain:
            cfg = build_config(files[0], files[1], flags=["TRAINER.NAME", key.trainer])
            self._plain[files] = flat(cfg)
        plain = dict(self._plain[files], **{"SEED": key.seed, "DATASET.NUM_SHOTS": key.shots,
                                            "DATASET.SUBSAMPLE_CLASSES": key.subsample})
        return Expected.from_folder(key, plain)


def _check(layout, key, path, expect, train_record=None):
    record = _peek(path)
    try:
        expected = expect(key, record)
    except (OSError, ValueError, KeyError, AssertionError, yaml.YAMLError) as err:  # no config file, a bad yaml
        verdict = Verdict("unverifiable", record, problem=f"its settings cannot be checked ({err})")
        return Found(key, os.path.relpath(path, layout.root), verdict, verdict.problem)
    if expected is None:
        verdict = Verdict("unverifiable", record, problem="not a run of this grid")
        return Found(key, os.path.relpath(path, layout.root), verdict, verdict.problem)
    verdict = verify(path, expected, train_record, trained=learns(key.trainer))
    return Found(key, os.path.relpath(path, layout.root), verdict, "" if verdict.counted else verdict.problem)


def _peek(path):
    from dept.store.record import CorruptRecord, read_record

    try:
        return read_record(path)
    except CorruptRecord:
        return None


def collect(root, configs_dir=None, skip=(), expect=None, keep=None):
    """(every run found as ``Found``, folders with a record outside the layout).

    ``expect(key, record)``: the ``Expected`` settings of a key (default: ``FolderExpectation``);
    ``keep(key)``: only the runs it accepts (a runner's grid cells; their evaluations' training runs
    are read all the same).
    """
    layout = Layout(root)
    if expect is None:
        from dept.core.build_config import CONFIGS_DIR

        expect = FolderExpectation(configs_dir or CONFIGS_DIR)
    scanned, strays = layout.scan(skip)
    wanted = [(k, p) for k, p in scanned if keep is None or keep(k)]
    trains = {k: p for k, p in scanned if k.trains}
    found = {}
    for key, path in wanted:
        if key.trains:
            found[key] = _check(layout, key, path, expect)
    needed = {k.train_key() for k, _ in wanted if not k.trains}
    for key in needed - set(found):
        if key in trains:
            found[key] = _check(layout, key, trains[key], expect)
    _mixed_settings([f for f in found.values() if f.key.trains])
    evals = []
    for key, path in wanted:
        if key.trains:
            continue
        train = found.get(key.train_key())
        result = _check(layout, key, path, expect, train.record if train is not None and train.counted else None)
        if result.counted or result.verdict.state == "other_checkpoint":
            if train is None:
                result.problem = "its training run is not here"
            elif not train.counted:
                result.problem = f"{TRAIN_NOT_COUNTED} ({train.folder}: {train.problem})"
        evals.append(result)
    _mixed_settings(evals)
    runs = [f for k, f in found.items() if keep is None or keep(k)] + evals
    return sorted(runs, key=lambda f: f.folder), strays


def _mixed_settings(runs):
    """Seeds of one cell (one folder variant) whose recorded settings differ from each other are
    never averaged together: those that agree with the most seeds count (on a tie, the newest run:
    what the runner counts now); each other one is not counted, with the keys that differ."""
    cells = {}
    for run in runs:
        if run.counted:
            cells.setdefault(replace(run.key, seed=0), []).append(run)
    for cell in cells.values():
        if len(cell) < 2:
            continue
        groups = []  # [(a run's config, [runs with the same settings])]
        for run in cell:
            config = run.record.get("config") or ""
            for first, members in groups:
                if not seeds_disagree(first, config, run.key.trainer):
                    members.append(run)
                    break
            else:
                groups.append((config, [run]))
        if len(groups) < 2:
            continue
        kept_config, kept = max(groups, key=lambda g: (len(g[1]), max(str(r.record.get("started")) for r in g[1])))
        seeds = " ".join(str(r.key.seed) for r in sorted(kept, key=lambda r: r.key.seed))
        for config, members in groups:
            if members is kept:
                continue
            found = seeds_disagree(config, kept_config, members[0].key.trainer)
            from dept.core.settings import format_differences

            shown = format_differences(found, limit=4, sides=("here", "there"))
            for run in members:
                run.problem = f"it ran with other settings than seed(s) {seeds} of its cell: {shown}"
