"""``python -m dept report ROOT``: every run under an output root, in tables and figures.

The protocol runner writes one table per grid cell as it goes (``<root>/<protocol>/results/``);
this report reads the whole root at once, whoever ran what: every run folder of the layouts of
``dept.protocols`` and its record (``dept_run.json``). It writes, under ``--out`` (default
``ROOT/report``):

* ``<protocol>.csv`` and ``.md`` for each protocol found (base2new, cross_dataset, dg, few_shot):
  per dataset and method, without and with DePT, mean ± (sample) std over seeds, the harmonic mean
  H for base-to-new, the averages the paper reports, DePT's gain over the same method and config,
  and the paper's figure with our difference beside each cell where the setting is the paper's
  (16 shots, the trainer's config for the protocol with no options, a recorded ViT-B/16 CLIP of
  the right shape, the paper's datasets for an average); elsewhere the note says why not;
* ``missing.md``: every run that is not counted (failed, interrupted, running, unreadable, other
  settings than its folder says, an evaluation of another checkpoint) with its folder, and every
  run that is absent although the other runs of its table imply it (a seed or a dataset that the
  other methods of the table have);
* ``figures/*.png`` (matplotlib, Agg): base vs new accuracy per dataset for each method without
  and with DePT; DePT's gain per method; few-shot curves per dataset and their average; DG and
  cross-dataset bars;
* ``README.md``, an index of the above; the markdown tables are printed too.

A cell is one config *variant* (``vit_b16_ep10_bs4_lr35+DEPT.WEIGHT=0.2`` is not
``vit_b16_ep10_bs4_lr35``): variants are never mixed. A row with fewer seeds than the other rows of
its table shows ``2/3`` and says which seed is missing and why; nothing is dropped silently.
"""
import argparse
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass
from functools import lru_cache

from dept.files import atomic_open, write_text
from dept.protocol_results import paper_transfer
from dept.protocols import BENCHMARK_11, DEMO_TARGETS, DG_TARGETS, PROTOCOLS, SOURCE_PREFIX, eval_dir, train_dir
from dept.results import PAPER_DATASETS, PAPER_SHOTS, _clip_problem, harmonic_mean, paper_base2new, paper_method
from dept.results import render_csv as _render_csv
from dept.run_record import (
    NEUTRAL_KEYS,
    RECORD_NAME,
    CorruptRecord,
    config_differences,
    flat_config,
    read_record,
)

STAGES = ("train_base", "test_new")
TRAIN_NOT_COUNTED = "its training run is not counted"
DEFAULT_SOURCE = "imagenet"  # the runner's --source default: the source of an evaluation with no other clue
SKIPPED_TOP = ("demo", "slurm")  # <root>/demo (the demo's data), <root>/slurm (job scripts and logs)
PROTOCOL_ORDER = ("base2new", "cross_dataset", "dg", "few_shot")
TITLES = {"base2new": "Base-to-new generalisation", "cross_dataset": "Cross-dataset transfer",
          "dg": "Domain generalisation", "few_shot": "Few-shot learning"}
DATASET_ORDER = BENCHMARK_11 + DG_TARGETS
FIGURE_NAMES = ("base2new_base_vs_new.png", "base2new_dept_gain.png", "few_shot.png", "cross_dataset.png", "dg.png")
DPI = 100  # figure sizes are multiples of half an inch: pixel sizes are exact (figsize × DPI)

COMMON = ("method", "dept", "trainer", "config", "shots")
SEED_COLUMNS = ("seeds", "expected_seeds", "seed_ids", "missing_seeds")
COLUMNS = {
    "base2new": ("dataset", *COMMON, *SEED_COLUMNS, "base", "base_std", "new", "new_std", "hm",
                 "dept_gain_base", "dept_gain_new", "dept_gain_hm", "paper_base", "paper_new", "paper_hm",
                 "base_vs_paper", "new_vs_paper", "hm_vs_paper", "note"),
    "cross_dataset": ("dataset", "role", *COMMON, "source", *SEED_COLUMNS, "accuracy", "std", "dept_gain",
                      "paper", "vs_paper", "note"),
    "few_shot": ("dataset", *COMMON, *SEED_COLUMNS, "accuracy", "std", "dept_gain", "note"),
}
COLUMNS["dg"] = COLUMNS["cross_dataset"]

_SEED = re.compile(r"seed(\d+)")
_SHOTS_DIR = re.compile(r"shots_(\d+)")
_CFG_SHOTS = re.compile(r"(.+)_(\d+)shots")
# Where a variant's options start (dept.runner.variant_name): "+KEY.SUB=value" or the "+<n>more-<hash>"
# of a long name. A "+" inside a config name ("vit_b16_c2_ep20_batch4_4+4ctx") is not one.
_OPTIONS = re.compile(r"\+(?:[A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*=|\d+more-[0-9a-f]+$)")


# -- the runs on disk --------------------------------------------------------------------------------

@dataclass
class Run:
    """One run folder: where it is, what its path says it is, what its record says it did.

    ``problem`` is why its number is not counted ("" when it is). ``source`` (evaluations) is the
    dataset whose training run's checkpoint it evaluated.
    """

    kind: str  # train_base | test_new (base2new), train (a training run), eval (an evaluation)
    folder: str  # relative to the root
    dataset: str  # trained on (train_base, train) or evaluated on (test_new, eval)
    trainer: str
    variant: str
    shots: int
    seed: int
    record: dict = None
    problem: str = ""
    source: str = None

    @property
    def accuracy(self):
        return ((self.record or {}).get("result") or {}).get("accuracy")

    @property
    def status(self):
        if self.record is None:
            return "no record"
        return str(self.record.get("status") or "no status")

    @property
    def sha256(self):
        return ((self.record or {}).get("checkpoint") or {}).get("sha256")


def split_variant(variant):
    """(config name, "+KEY=value..." options or "") of a variant folder name."""
    found = _OPTIONS.search(variant)
    return (variant, "") if found is None else (variant[:found.start()], variant[found.start():])


def classify(parts):
    """(kind, dataset, trainer, variant, shots, seed) of a run folder from its path under the root
    (``dept.protocols``' layouts), or None when the path is not a run folder."""
    seed = _SEED.fullmatch(parts[-1]) if parts else None
    if seed is None:
        return None
    seed = int(seed.group(1))
    if len(parts) == 7 and parts[0] == "base2new" and parts[1] in STAGES:
        shots = _SHOTS_DIR.fullmatch(parts[3])
        if shots:
            return parts[1], parts[2], parts[4], parts[5], int(shots.group(1)), seed
    if len(parts) == 5 and parts[0] == "evaluation":
        cfg = _CFG_SHOTS.fullmatch(parts[2])
        if cfg:
            return "eval", parts[3], parts[1], cfg.group(1), int(cfg.group(2)), seed
    if len(parts) == 6 and parts[0] == "evaluation" and parts[3].startswith(SOURCE_PREFIX):
        cfg = _CFG_SHOTS.fullmatch(parts[2])
        if cfg:  # a model trained on another source than ImageNet (dept.protocols.eval_dir)
            return "eval", parts[4], parts[1], cfg.group(1), int(cfg.group(2)), seed, parts[3][len(SOURCE_PREFIX):]
    if len(parts) == 4 and parts[0] not in ("base2new", "evaluation"):
        cfg = _CFG_SHOTS.fullmatch(parts[2])
        if cfg:
            return "train", parts[0], parts[1], cfg.group(1), int(cfg.group(2)), seed
    return None


def _skipped(parts, path, skip):
    """Folders that hold no runs of the protocols: the demo's data, SLURM files, the runner's
    tables (``<root>/*/results``), this report, hidden folders."""
    name = parts[-1]
    return (name.startswith(".") or os.path.abspath(path) in skip
            or (len(parts) == 1 and name in SKIPPED_TOP) or (len(parts) == 2 and name == "results"))


def scan(root, skip=()):
    """Every run folder under ``root`` (read, checked), and the folders holding a run record outside
    the known layouts (listed in missing.md, since their numbers cannot be placed in a table)."""
    skip = {os.path.abspath(p) for p in skip}
    runs, strays = [], []
    for here, dirs, files in os.walk(root):
        rel = os.path.relpath(here, root)
        parts = [] if rel == "." else rel.split(os.sep)
        dirs[:] = sorted(d for d in dirs if not _skipped(parts + [d], os.path.join(here, d), skip))
        found = classify(parts)
        if found:
            dirs[:] = []  # a run folder's sub-folders hold its checkpoints, not runs
            runs.append(load_run(root, os.path.join(*parts), found))
        elif RECORD_NAME in files:
            strays.append(rel)
    mark_mixed_settings(runs)
    link_runs(runs)
    return runs, strays


def mark_mixed_settings(runs):
    """Seeds of one cell (one folder variant) that ran with other settings (a yaml edited between
    seeds: the folder name cannot show it) are never averaged together. The runs that agree with
    the most seeds count (on a tie, those with the newest run: what the runner counts now); each
    other one is not counted, with the keys that differ."""
    cells = {}
    for run in runs:
        if not run.problem and run.record is not None:
            cells.setdefault((run.kind, run.dataset, run.trainer, run.variant, run.shots, run.source), []).append(run)
    ignore = NEUTRAL_KEYS | {"SEED"}
    for cell in cells.values():
        if len(cell) < 2:
            continue
        groups = []  # [(a run's config, [runs with the same config])]
        for run in cell:
            config = run.record.get("config") or ""
            for first, members in groups:
                if not config_differences(first, config, neutral=ignore):
                    members.append(run)
                    break
            else:
                groups.append((config, [run]))
        if len(groups) < 2:
            continue
        kept_config, kept = max(groups, key=lambda g: (len(g[1]), max(str(r.record.get("started")) for r in g[1])))
        seeds = " ".join(str(r.seed) for r in sorted(kept, key=lambda r: r.seed))
        for config, members in groups:
            if members is kept:
                continue
            differences = config_differences(config, kept_config, neutral=ignore)
            shown = "; ".join(f"{key} {_plain(mine)} here, {_plain(theirs)} there"
                              for key, mine, theirs in differences[:4])
            shown += " ..." if len(differences) > 4 else ""
            for run in members:
                run.problem = f"it ran with other settings than seed(s) {seeds} of its cell: {shown}"


def _plain(value):
    return repr(value) if isinstance(value, (str, int, float, bool, list, tuple, type(None))) else "(absent)"


def load_run(root, folder, found):
    kind, dataset, trainer, variant, shots, seed, *source = found
    run = Run(kind, folder, dataset, trainer, variant, shots, seed, source=source[0] if source else None)
    try:
        run.record = read_record(os.path.join(root, folder))
    except CorruptRecord as err:
        run.problem = f"unreadable run record ({err})"
        return run
    run.problem = record_problem(run, os.path.join(root, folder))
    return run


def record_problem(run, path):
    """Why a run's record gives no number to count, or "": not finished, no result, or a config
    that is not the one its folder says (a folder copied or renamed by hand)."""
    record = run.record
    if record is None:
        has_log = os.path.isfile(os.path.join(path, "log.txt"))
        return "no run record (dept_run.json)" + ("; it has a log.txt (an older version or another tool)"
                                                  if has_log else "")
    status = record.get("status")
    if status != "finished":
        why = {"running": "running (in progress, or killed before it could record its end)"}.get(status, status)
        return f"{why or 'no status'}" + (f": {record['error']}" if record.get("error") else "")
    if run.accuracy is None:
        return "finished without a result"
    try:
        config = flat_config(record.get("config") or "")
    except Exception as err:  # not yaml, or not a mapping
        return f"its recorded config cannot be read ({type(err).__name__})"
    expected = {"SEED": run.seed, "DATASET.NUM_SHOTS": run.shots, "TRAINER.NAME": run.trainer,
                "DATASET.SUBSAMPLE_CLASSES": {"train_base": "base", "test_new": "new"}.get(run.kind, "all")}
    wrong = [f"{key} {config[key]!r} (its folder says {value!r})" for key, value in expected.items()
             if key in config and config[key] != value]
    return f"its record does not match its folder: {'; '.join(wrong)}" if wrong else ""


def link_runs(runs):
    """Tie each evaluation to the training run whose checkpoint it evaluated (the runner's rule:
    an evaluation counts only beside a counted training run, and of that run's final checkpoint)."""
    trains = {}
    for run in runs:
        if run.kind in ("train_base", "train"):
            trains.setdefault((run.kind, run.trainer, run.variant, run.shots, run.seed), []).append(run)
    for run in runs:
        if run.kind == "test_new":
            same = [t for t in trains.get(("train_base", run.trainer, run.variant, run.shots, run.seed), ())
                    if t.dataset == run.dataset]
            train = same[0] if same else None
            run.source = run.dataset
        elif run.kind == "eval":
            candidates = trains.get(("train", run.trainer, run.variant, run.shots, run.seed), [])
            if run.source:  # its folder names the source: only that one's training run
                same = [t for t in candidates if t.dataset == run.source]
                train = same[0] if same else None
            else:
                train = _source_run(run, candidates)
                run.source = train.dataset if train else DEFAULT_SOURCE
        else:
            continue
        if run.problem:
            continue
        if train is None:
            run.problem = "its training run is not here"
        elif train.problem:
            run.problem = f"{TRAIN_NOT_COUNTED} ({train.folder}: {train.problem})"
        elif run.sha256 and train.sha256 and run.sha256 != train.sha256:
            run.problem = f"it evaluated another checkpoint than the final one of {train.folder}"


def _source_run(run, candidates):
    """The training run an evaluation evaluated: the one whose checkpoint it loaded (sha256), else
    the ImageNet one (the runner's default source), else the only candidate."""
    for train in candidates:
        if run.sha256 and train.sha256 == run.sha256:
            return train
    named = [t for t in candidates if t.dataset == DEFAULT_SOURCE]
    if named:
        return named[0]
    return candidates[0] if len(candidates) == 1 else None


# -- ordering, statistics, the paper ---------------------------------------------------------------

@lru_cache(maxsize=None)
def _method(trainer):
    return paper_method(trainer)


@lru_cache(maxsize=None)
def _paper_b2n():
    return paper_base2new()


@lru_cache(maxsize=None)
def _paper_transfer(protocol):
    return paper_transfer(protocol)


@lru_cache(maxsize=None)
def _paper_config(trainer, protocol):
    from dept.runner import config_for

    return config_for(trainer, PROTOCOLS[protocol])


def dataset_rank(name):
    """The paper's dataset order, others after it by name, the average last."""
    if name == "average":
        return (2, 0, "")
    return (0, DATASET_ORDER.index(name), "") if name in DATASET_ORDER else (1, 0, name)


def method_rank(method):
    """Zero-shot CLIP first, then the paper's order of methods, then the others by name."""
    order = list(dict.fromkeys(m for m, _, _ in _paper_b2n()))
    if method.startswith("ZeroshotCLIP"):
        return (0, 0, method)
    return (1, order.index(method), "") if method in order else (2, 0, method)


def row_order(row):
    return (method_rank(row["method"]), row["config"], row["shots"], row["dept"], row["trainer"])


def stats(values):
    """(mean, sample std) over seeds; the std is None under two seeds (one seed shows no spread)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _seed_text(seeds):
    return " ".join(str(s) for s in sorted(seeds))


def _difference(a, b):
    return None if a is None or b is None else a - b


def setting_reasons(trainer, variant, shots, protocol):
    """Why a cell's runs are not in the paper's setting (besides the CLIP and the datasets)."""
    cfg, options = split_variant(variant)
    reasons = []
    if shots != PAPER_SHOTS:
        reasons.append(f"{shots} shots (paper: {PAPER_SHOTS})")
    paper_cfg = _paper_config(trainer, "cross_dataset" if protocol == "dg" else protocol)
    if cfg != paper_cfg:
        reasons.append(f"config {cfg} (paper: {paper_cfg})")
    if options:
        reasons.append(f"options {options[1:]} (paper: none)")
    return reasons


# -- cells: one method variant on one dataset, over its seeds -------------------------------------

def new_row(protocol, dataset, trainer, variant, shots, expected_seeds, **extra):
    method, dept = _method(trainer)
    return dict(extra, protocol=protocol, dataset=dataset, method=method, dept=dept, trainer=trainer,
                config=variant, shots=shots, seeds=0, expected_seeds=len(expected_seeds), seed_ids="",
                missing_seeds="", notes=[], warnings=[], clips=[], covers=(), seed_set=frozenset())


def count_seeds(row, by_seed, stages, expected_seeds, where, absent):
    """The seeds of a cell whose every run (``stages``) is counted; the others go into the note
    (and, when there is no folder, into ``absent`` with the folder ``where(stage, seed)``)."""
    counted = {}
    for seed in sorted(set(expected_seeds) | set(by_seed)):
        runs = by_seed.get(seed, {})
        problems = [f"{stage} {runs[stage].problem}" if len(stages) > 1 else runs[stage].problem
                    for stage in stages if stage in runs and runs[stage].problem]
        own = [p for p in problems if TRAIN_NOT_COUNTED not in p]
        problems = own or problems  # a failed train_base says it; its test_new need not repeat it
        lacking = [stage for stage in stages if stage not in runs]
        for stage in lacking:
            absent.setdefault(where(stage, seed), (row["protocol"], _label(row, seed, stage, len(stages) > 1)))
        if problems:
            row["notes"].append(f"seed {seed} not counted: {'; '.join(problems)}")
        elif lacking:
            row["notes"].append(f"seed {seed} missing: no {' or '.join(lacking)} run" if len(stages) > 1
                                else f"seed {seed} missing: no run")
        else:
            counted[seed] = runs
    row["seeds"], row["seed_ids"], row["seed_set"] = len(counted), _seed_text(counted), frozenset(counted)
    row["missing_seeds"] = _seed_text(set(expected_seeds) - set(counted))
    row["expected_seeds"] = len(set(expected_seeds) | set(by_seed))
    if not counted:
        row["notes"].insert(0, "no finished seed")
    for seed, runs in sorted(counted.items()):
        for stage in stages:
            run = runs[stage]
            row["clips"].append((run.record or {}).get("clip"))
            where_from = f"seed {seed} {stage}" if len(stages) > 1 else f"seed {seed}"
            row["warnings"] += [(str(note), where_from) for note in (run.record or {}).get("notes") or ()]
    return counted


def folders(protocol, root, dataset, shots, trainer, variant, source=None):
    """``where(stage, seed)``: the folder (relative to the root) a run of this cell has or would have."""
    p = PROTOCOLS[protocol]

    def where(stage, seed):
        if stage in ("train", "train_base"):
            return os.path.relpath(train_dir(p, root, dataset, shots, trainer, variant, seed), root)
        return os.path.relpath(eval_dir(p, root, dataset, shots, trainer, variant, seed, source=source), root)

    return where


def _label(row, seed, stage, show_stage):
    return (f"{row['trainer']} {row['config']}, {row['shots']} shots, {row['dataset']}, seed {seed}"
            + (f", {stage}" if show_stage else ""))


def average_row(rows, expected, template, values):
    """The paper's average over datasets: the mean of the per-dataset means (``values``: the keys
    averaged); the note says which datasets it leaves out and which have fewer seeds."""
    done = [r for r in rows if r["seeds"]]
    row = dict(template, dataset="average", role="average" if "role" in template else None, notes=[], warnings=[],
               clips=[c for r in done for c in r["clips"]], covers=tuple(sorted(r["dataset"] for r in done)))
    row["seeds"] = min((r["seeds"] for r in done), default=0)
    row["expected_seeds"] = max((r["expected_seeds"] for r in rows), default=0)
    ids = {r["seed_ids"] for r in done}
    row["seed_ids"] = ids.pop() if len(ids) == 1 else ""
    row["missing_seeds"] = ""
    for key in values:
        row[key] = statistics.fmean(r[key] for r in done) if done else None
        row[f"{key}_std"] = None
    row["std"] = None
    absent = [d for d in sorted(expected, key=dataset_rank) if d not in row["covers"]]
    if not done:
        row["notes"].append("no finished seed")
    elif absent:
        row["notes"].append(f"averages {len(done)} of {len(done) + len(absent)} datasets (no result: "
                            f"{', '.join(absent)})")
    short = [f"{r['dataset']} ({r['seeds']}/{r['expected_seeds']})" for r in done if r["seeds"] < r["expected_seeds"]]
    if short:
        row["notes"].append(f"includes datasets with fewer seeds: {', '.join(short)}")
    if done and not row["seed_ids"]:
        row["notes"].append("datasets have different seeds")
    return row


def _groups(runs, key):
    """{group key: [runs]}: runs that belong to one table's expectations (same shots and options)."""
    out = {}
    for run in runs:
        out.setdefault(key(run), []).append(run)
    return out


# -- base to new -------------------------------------------------------------------------------------

def base2new_rows(runs, root, absent):
    """Rows per dataset, method and variant (seed means of base and new, H of the means), then
    each method variant's average over datasets, with the paper's figures and DePT's gain."""
    runs = [r for r in runs if r.kind in STAGES]
    rows = []
    for (shots, _), group in _groups(runs, lambda r: (r.shots, split_variant(r.variant)[1])).items():
        datasets = {r.dataset for r in group}
        seeds = {r.seed for r in group}
        for trainer, variant in sorted({(r.trainer, r.variant) for r in group}):
            cells = {}
            for r in group:
                if (r.trainer, r.variant) == (trainer, variant):
                    cells.setdefault(r.dataset, {}).setdefault(r.seed, {})[r.kind] = r
            own = []
            for dataset in sorted(datasets, key=dataset_rank):
                row = new_row("base2new", dataset, trainer, variant, shots, seeds)
                where = folders("base2new", root, dataset, shots, trainer, variant)
                counted = count_seeds(row, cells.get(dataset, {}), STAGES, seeds, where, absent)
                row["base"], row["base_std"] = stats([s["train_base"].accuracy for s in counted.values()])
                row["new"], row["new_std"] = stats([s["test_new"].accuracy for s in counted.values()])
                row["hm"] = harmonic_mean(row["base"], row["new"]) if counted else None
                own.append(row)
            rows += own
            if len(own) > 1:
                average = average_row(own, datasets, own[0], ("base", "new"))
                average["hm"] = harmonic_mean(average["base"], average["new"]) if average["seeds"] else None
                rows.append(average)
    for row in rows:
        add_paper_base2new(row)
    add_gains(rows, ("base", "new", "hm"))
    return finish(rows)


def add_paper_base2new(row):
    """The paper's base, new and H beside a row in the paper's setting; else the note says why not."""
    row.update(paper_base=None, paper_new=None, paper_hm=None, base_vs_paper=None, new_vs_paper=None,
               hm_vs_paper=None)
    if not row["seeds"]:
        return
    reasons = setting_reasons(row["trainer"], row["config"], row["shots"], "base2new")
    ref = _paper_b2n().get((row["method"], row["dept"], row["dataset"]))
    if ref is None:
        reasons.append(f"the paper has no {_method_label(row)} {row['dataset']} row")
    clip = _clip_problem(row["clips"])
    if clip:
        reasons.append(clip)
    if row["dataset"] == "average":
        missing = [d for d in PAPER_DATASETS if d not in row["covers"]]
        if missing or set(row["covers"]) - set(PAPER_DATASETS):
            reasons.append(f"averages {len(row['covers'])} datasets, not the paper's {len(PAPER_DATASETS)}")
    if reasons:
        row["notes"].append("paper figures omitted: " + "; ".join(reasons))
        return
    row["paper_base"], row["paper_new"], row["paper_hm"] = ref
    for key in ("base", "new", "hm"):
        row[f"{key}_vs_paper"] = row[key] - row[f"paper_{key}"]


def _method_label(row):
    return row["method"] + (" + DePT" if row["dept"] else "")


def add_gains(rows, keys, extra_key=()):
    """DePT's gain (with minus without) beside each DePT row: the same method, config variant,
    shots and dataset (and source). An average is compared only over the same datasets."""
    def key(row):
        return (row["dataset"], row["method"], row["config"], row["shots"], *(row.get(k) for k in extra_key))

    plain = {}
    for row in rows:
        if not row["dept"]:
            plain.setdefault(key(row), row)
    names = ["dept_gain"] if keys == ("accuracy",) else [f"dept_gain_{k}" for k in keys]
    for row in rows:
        for name in names:
            row[name] = None
        other = plain.get(key(row)) if row["dept"] else None
        if other is None or not row["seeds"] or not other["seeds"]:
            continue
        if row["dataset"] == "average" and row["covers"] != other["covers"]:
            row["notes"].append(f"DePT gain not computed: {other['trainer']}'s average covers other datasets")
            continue
        for name, k in zip(names, keys):
            row[name] = _difference(row[k], other[k])


def finish(rows):
    """The note column: the records' own notes (each once, with the seeds that carry it), then ours."""
    for row in rows:
        sources = {}
        for note, where in row["warnings"]:
            sources.setdefault(note, [])
            if where not in sources[note]:
                sources[note].append(where)
        row["warnings"] = [f"{note} ({', '.join(where)})" for note, where in sources.items()]
        row["note"] = "; ".join(row["warnings"] + row["notes"])
    return rows


# -- cross-dataset and domain generalisation ---------------------------------------------------------

def transfer_rows(runs, root, absent, protocol):
    """Per method variant: the source (its training runs' own test accuracy), each target, the
    average over the targets; mean ± std over seeds, the paper's figure and DePT's gain. Targets
    that are ImageNet variants are DG, the others cross-dataset (``eval_protocols``)."""
    evals = [r for r in runs if r.kind == "eval" and protocol in eval_protocols(r.dataset)]
    rows = []
    for (shots, _), group in _groups(evals, lambda r: (r.shots, split_variant(r.variant)[1])).items():
        targets = {r.dataset for r in group}
        series = sorted({(r.trainer, r.variant, r.source) for r in group})
        sources = {s: {r.seed: {"train": r} for r in runs if r.kind == "train" and
                       (r.dataset, r.trainer, r.variant, r.shots) == (s[2], s[0], s[1], shots)} for s in series}
        seeds = {r.seed for r in group} | {seed for by_seed in sources.values() for seed in by_seed}
        for trainer, variant, source in series:
            template = dict(trainer=trainer, variant=variant, shots=shots, expected_seeds=seeds, source=source)
            row = new_row(protocol, source, role="source", **template)
            count_seeds(row, sources[(trainer, variant, source)], ("train",), seeds,
                        folders(protocol, root, source, shots, trainer, variant), absent)
            _accuracy(row, sources[(trainer, variant, source)])
            own = []
            for target in sorted(targets, key=dataset_rank):
                row_t = new_row(protocol, target, role="target", **template)
                cell = {r.seed: {"eval": r} for r in group
                        if (r.trainer, r.variant, r.source, r.dataset) == (trainer, variant, source, target)}
                count_seeds(row_t, cell, ("eval",), seeds,
                            folders(protocol, root, target, shots, trainer, variant, source), absent)
                _accuracy(row_t, cell)
                own.append(row_t)
            rows += [row, *own]
            if len(own) > 1:
                rows.append(average_row(own, targets, own[0], ("accuracy",)))
    for row in rows:
        add_paper_transfer(row, protocol)
    add_gains(rows, ("accuracy",), extra_key=("source", "role"))
    return finish(rows)


def _accuracy(row, cell):
    counted = [runs[k] for runs in cell.values() for k in runs]
    counted = [r for r in counted if r.seed in row["seed_set"]]
    row["accuracy"], row["std"] = stats([r.accuracy for r in counted])


def add_paper_transfer(row, protocol):
    """The paper's cross-dataset or DG figure beside a row in its setting (trained on ImageNet at
    16 shots, the protocol's config, ViT-B/16). The paper's DG table prints no average: ours is
    compared with the mean of its four targets, and the note says so."""
    row["paper"] = row["vs_paper"] = None
    if not row["seeds"]:
        return
    paper = _paper_transfer(protocol).get((row["method"], row["dept"]))
    reasons = setting_reasons(row["trainer"], row["config"], row["shots"], protocol)
    if row["source"] != DEFAULT_SOURCE:
        reasons.append(f"trained on {row['source']} (paper: {DEFAULT_SOURCE})")
    clip = _clip_problem(row["clips"])
    if clip:
        reasons.append(clip)
    value = None
    if paper is None:
        reasons.append(f"the paper has no {_method_label(row)} row")
    elif row["dataset"] == "average":
        wanted = set(paper) - {DEFAULT_SOURCE, "average"}
        if set(row["covers"]) != wanted:
            reasons.append(f"averages {len(row['covers'])} targets, not the paper's {len(wanted)}")
        elif "average" in paper:
            value = paper["average"]
        else:
            value = statistics.fmean(paper[d] for d in sorted(wanted))
            row["notes"].append(f"paper average: the mean of its {len(wanted)} targets (it prints none)")
    else:
        value = paper.get(row["dataset"])
        if value is None:
            reasons.append(f"the paper has no {row['dataset']} column")
    if reasons:
        row["notes"].append("paper figure omitted: " + "; ".join(reasons))
    else:
        row["paper"], row["vs_paper"] = value, row["accuracy"] - value


# -- few-shot ----------------------------------------------------------------------------------------

def few_shot_rows(runs, root, absent):
    """Rows per dataset, shots and method variant from the training runs, then the average over
    datasets per shots. A method variant is in the table when it has training runs besides the
    sources of its evaluations (its ImageNet 16-shot source run is a few-shot point too, but alone
    it is the cross-dataset protocol's). Its grid is every dataset × every shots its runs (not
    counting such sources) have, and the sources trained at one of those shots (as the runner's
    few-shot table counts them); a source run inside that grid is one of its cells. The paper has
    no few-shot table: no paper columns."""
    sources = {(r.trainer, r.variant, r.shots, r.source) for r in runs if r.kind == "eval"}
    trains = [r for r in runs if r.kind == "train"]
    own = {(r.trainer, r.variant) for r in trains if (r.trainer, r.variant, r.shots, r.dataset) not in sources}
    trains = [r for r in trains if (r.trainer, r.variant) in own]
    rows = []
    for _, group in _groups(trains, lambda r: split_variant(r.variant)[1]).items():
        grid = [r for r in group if (r.trainer, r.variant, r.shots, r.dataset) not in sources]
        all_shots = {r.shots for r in grid}
        datasets = {r.dataset for r in group if r.shots in all_shots}  # a source at the grid's shots: a cell
        group = [r for r in group if r.dataset in datasets and r.shots in all_shots]
        seeds = {r.seed for r in group}
        for trainer, variant in sorted({(r.trainer, r.variant) for r in group}):
            cells = {}
            for r in group:
                if (r.trainer, r.variant) == (trainer, variant):
                    cells.setdefault((r.dataset, r.shots), {})[r.seed] = {"train": r}
            for shots in sorted(all_shots):
                at = []
                for dataset in sorted(datasets, key=dataset_rank):
                    row = new_row("few_shot", dataset, trainer, variant, shots, seeds)
                    count_seeds(row, cells.get((dataset, shots), {}), ("train",), seeds,
                                folders("few_shot", root, dataset, shots, trainer, variant), absent)
                    _accuracy(row, cells.get((dataset, shots), {}))
                    at.append(row)
                rows += at
                if len(at) > 1:
                    rows.append(average_row(at, datasets, at[0], ("accuracy",)))
    add_gains(rows, ("accuracy",))
    return finish(rows)


# -- tables ------------------------------------------------------------------------------------------

def sort_rows(protocol, rows):
    role = {"source": 0, "target": 1, "average": 2}
    if protocol == "few_shot":
        return sorted(rows, key=lambda r: (dataset_rank(r["dataset"]), r["shots"], row_order(r)))
    return sorted(rows, key=lambda r: (role.get(r.get("role"), 0), r.get("source") or "",
                                       dataset_rank(r["dataset"]), row_order(r)))


def _md(value, std=None, paper=None, diff=None):
    """A markdown cell: ``mean ± std (paper P, ±D)``; "-" where there is no number."""
    if value is None:
        return "-"
    text = f"{value:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    if paper is not None:
        text += f" (paper {paper:.2f}, {diff:+.2f})"
    return text


def _gain(value):
    return "-" if value is None else f"{value:+.2f}"


def _seeds_md(row):
    """The seed count, bold with the expected count when the row has fewer seeds than its table."""
    return str(row["seeds"]) if row["seeds"] >= row["expected_seeds"] else f"**{row['seeds']}/{row['expected_seeds']}**"


def markdown_rows(protocol, rows):
    """(header, cells per row) of a protocol's markdown table."""
    head = ["dataset", "method", "DePT", "config", "shots", "seeds"]

    def start(r):
        return [r["dataset"], r["method"], "yes" if r["dept"] else "no", r["config"], str(r["shots"]), _seeds_md(r)]

    if protocol == "base2new":
        head += ["base", "new", "H", "DePT gain (base / new / H)"]
        body = [start(r) + [_md(r["base"], r["base_std"], r["paper_base"], r["base_vs_paper"]),
                            _md(r["new"], r["new_std"], r["paper_new"], r["new_vs_paper"]),
                            _md(r["hm"], None, r["paper_hm"], r["hm_vs_paper"]),
                            " / ".join(_gain(r[f"dept_gain_{k}"]) for k in ("base", "new", "hm"))
                            if r["dept"] else ""] for r in rows]
    elif protocol == "few_shot":
        head += ["accuracy", "DePT gain"]
        body = [start(r) + [_md(r["accuracy"], r["std"]), _gain(r["dept_gain"]) if r["dept"] else ""] for r in rows]
    else:
        head = head[:1] + ["role", "trained on"] + head[1:] + ["accuracy", "DePT gain"]
        body = [start(r)[:1] + [r["role"], r["source"]] + start(r)[1:]
                + [_md(r["accuracy"], r["std"], r["paper"], r["vs_paper"]), _gain(r["dept_gain"]) if r["dept"] else ""]
                for r in rows]
    head.append("note")
    return head, [cells + [r["note"]] for cells, r in zip(body, rows)]


LEGENDS = {
    "base2new": "Base: accuracy on the base classes (the train_base run's test), new: on the new classes "
                "(test_new); H: harmonic mean of the mean base and mean new. The average row is the mean of "
                "the datasets' means, and its H the harmonic mean of those (as in the paper).",
    "cross_dataset": "Trained on the source (all classes), evaluated on each target (all classes). The average "
                     "is over the targets (the paper's \"average\" column).",
    "dg": "Trained on the source (ImageNet), evaluated on its variants. The paper prints no average; ours is "
          "over the targets.",
    "few_shot": "Trained and tested on all classes of each dataset at each number of shots; the average is over "
                "the datasets at that number of shots. The paper has no few-shot table.",
}


def render_markdown(protocol, rows, root):
    head, body = markdown_rows(protocol, rows)
    lines = [f"## {TITLES[protocol]}", "", f"Runs under `{root}`. {LEGENDS[protocol]}",
             "", "Cells: mean ± std over seeds (std from two seeds on), then, in the paper's setting, "
             "(paper P, ours minus paper). **k/n** seeds: fewer seeds than the other rows of the table; "
             "the note says which and why, and [missing.md](missing.md) lists the folders.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") or " " for c in cells) + " |" for cells in body]
    warned = [(r, w) for r in rows for w in r["warnings"]]
    if warned:
        lines += ["", "**WARNING: the runs' records carry notes; read them before using these numbers:**", ""]
        lines += [f"- **{r['dataset']}**, {r['trainer']} {r['config']} {r['shots']} shots: {w}" for r, w in warned]
    return "\n".join(lines) + "\n"


def render_csv(protocol, rows):
    return _render_csv(rows, COLUMNS[protocol])


def render_missing(root, runs, absent, strays):
    """missing.md: what is not counted and why, what is absent, what could not be placed."""
    bad = sorted((r for r in runs if r.problem), key=lambda r: r.folder)
    lines = [f"# Missing and failed runs under `{root}`", "",
             f"{len(runs)} run folders found: {len(runs) - len(bad)} counted, {len(bad)} not counted; "
             f"{len(absent)} runs absent that the other runs of their table imply."]
    if bad:
        lines += ["", "## Not counted", "", "Found, but their numbers are in no table.", "",
                  "| protocol | folder | status | why |", "|---|---|---|---|"]
        lines += [f"| {', '.join(run_protocols(r))} | `{r.folder}` | {r.status} | {_escape(r.problem)} |" for r in bad]
    if absent:
        lines += ["", "## Absent", "", "No folder, although other runs of the same table have this seed or "
                  "dataset (another method, another seed).", "", "| protocol | run | folder |", "|---|---|---|"]
        lines += [f"| {protocol} | {_escape(label)} | `{folder}` |"
                  for folder, (protocol, label) in sorted(absent.items(), key=lambda kv: (kv[1][0], kv[0]))]
    if strays:
        lines += ["", "## Not in a known layout", "", "These folders hold a run record but their path is none of "
                  "dept.protocols' layouts, so their numbers are in no table:", ""]
        lines += [f"- `{folder}`" for folder in sorted(strays)]
    if not (bad or absent or strays):
        lines += ["", "Nothing is missing: every run found is counted."]
    return "\n".join(lines) + "\n"


def _escape(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def eval_protocols(target):
    """The tables an evaluation on ``target`` belongs to: DG for the ImageNet variants, cross-dataset
    for the other datasets; the demo's one target (the inverted digits: the source's classes in
    another domain) serves both, as it does in the runner."""
    if target in DEMO_TARGETS:
        return ["cross_dataset", "dg"]
    return ["dg"] if target in DG_TARGETS else ["cross_dataset"]


def run_protocols(run):
    if run.kind in STAGES:
        return ["base2new"]
    if run.kind == "eval":
        return eval_protocols(run.dataset)
    return ["training (few_shot, or the source of cross_dataset / dg)"]


# -- figures ----------------------------------------------------------------------------------------

def _figure(width, height):
    """A matplotlib figure on the Agg canvas (no pyplot, no display, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    """PNG written whole or not at all; no ``bbox_inches="tight"``, so the size is figsize × DPI."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def _half_inches(x):
    return math.ceil(2 * x) / 2


def _ylim(ax, values):
    values = [v for v in values if v is not None]
    low = max(0, 10 * math.floor((min(values, default=0) - 5) / 10))
    ax.set_ylim(low, 100 if max(values, default=0) <= 100 else None)


def _err(std):
    """An error bar of one std; none (NaN is not drawn) where there is no std (one seed, an average)."""
    return math.nan if std is None else std


def _legend_room(ax, values, entries, ncols):
    """Y limits with room above the bars for a legend of ``entries`` in ``ncols`` columns, so that
    the legend never covers a bar (gains may be negative: zero stays in view)."""
    values = [v for v in values if v is not None] or [0]
    low, high = min(0, min(values)), max(0, max(values))
    span = (high - low) or 1
    rows = math.ceil(entries / ncols)
    ax.set_ylim(low - 0.05 * span, high + (0.1 + 0.12 * rows) * span)
    ax.legend(loc="upper center", ncols=ncols, fontsize=8)


def _pairs(rows):
    """[(label, {dataset: row without DePT}, {dataset: row with DePT})]: one per method, config
    variant, shots (and source), and one per pair of trainers where a method has several of a kind
    (CoOpDePT beside its official name ExtrasLinearProbeCoOp)."""
    groups = {}
    for row in sorted(rows, key=row_order):
        key = (row["method"], row["config"], row["shots"], row.get("source"))
        groups.setdefault(key, ({}, {}))[row["dept"]].setdefault(row["trainer"], {})[row["dataset"]] = row
    out = []
    for (_, cfg, shots, source), (plain, dept) in groups.items():
        for p in list(plain) or [None]:
            for d in list(dept) or [None]:
                names = " / ".join(t for t in (p, d) if t)
                where = f", trained on {source}" if source else ""
                out.append((f"{names} ({cfg}, {shots} shots{where})", plain.get(p, {}), dept.get(d, {})))
    return out


def figure_base_vs_new(rows, path):
    """Base and new accuracy per dataset (and the average), one panel per method and variant:
    without DePT light, with DePT dark; error bars are the std over seeds."""
    from matplotlib.patches import Patch

    panels = _pairs(rows)
    xs = sorted({r["dataset"] for r in rows if r["seeds"]}, key=dataset_rank)
    series = [("base", 0, "base", "#9ecae1"), ("base", 1, "base + DePT", "#2171b5"),
              ("new", 0, "new", "#fdae6b"), ("new", 1, "new + DePT", "#d94801")]
    fig = _figure(max(8, 2 + 1.5 * len(xs)), 3.5 * len(panels) + 1)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (label, *sides) in zip(axes, panels):
        shown = []
        for i, (key, dept, _, color) in enumerate(series):
            cells = [(j, sides[dept].get(x)) for j, x in enumerate(xs)]
            cells = [(j, r) for j, r in cells if r is not None and r[key] is not None]
            shown += [r[key] for _, r in cells]
            ax.bar([j + (i - 1.5) * 0.2 for j, _ in cells], [r[key] for _, r in cells], 0.2, color=color,
                   yerr=[_err(r[f"{key}_std"]) for _, r in cells], capsize=2, ecolor="#444444")
        ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        _ylim(ax, shown)
    fig.legend([Patch(color=c) for *_, c in series], [s[2] for s in series], loc="outside upper center", ncols=4)
    save_figure(fig, path)


def dept_gains(rows):
    """[(label, {dataset: (gain base, gain new, gain H)}, (the same over the common datasets), n)]:
    each method variant's gain from DePT, per dataset and over the datasets both have."""
    out = []
    for label, plain, dept in _pairs(rows):
        common = [d for d in sorted(set(plain) & set(dept), key=dataset_rank)
                  if d != "average" and plain[d]["seeds"] and dept[d]["seeds"]]
        if not common:
            continue
        per = {d: tuple(dept[d][k] - plain[d][k] for k in ("base", "new", "hm")) for d in common}
        means = [{k: statistics.fmean(side[d][k] for d in common) for k in ("base", "new")} for side in (plain, dept)]
        overall = (means[1]["base"] - means[0]["base"], means[1]["new"] - means[0]["new"],
                   harmonic_mean(means[1]["base"], means[1]["new"]) - harmonic_mean(means[0]["base"], means[0]["new"]))
        out.append((label, per, overall, len(common)))
    return out


def figure_dept_gain(rows, path):
    """DePT's gain (with minus without, percentage points): left, per method over the datasets both
    have (base, new, H of the means); right, the gain in H per dataset and method."""
    gains = dept_gains(rows)
    datasets = sorted({d for _, per, _, _ in gains for d in per}, key=dataset_rank)
    fig = _figure(max(10, 4 + 1.5 * len(datasets) + len(gains)), 4.5)
    left, right = fig.subplots(1, 2, width_ratios=[max(1, len(gains)) + 2, max(2, len(datasets)) * 1.5])
    colors = ("#2171b5", "#d94801", "#238b45")
    for i, (name, color) in enumerate(zip(("base", "new", "H"), colors)):
        left.bar([j + (i - 1) * 0.25 for j in range(len(gains))], [g[2][i] for g in gains], 0.25, color=color,
                 label=name)
    left.set_xticks(range(len(gains)), [f"{g[0].split(' (')[0]}\n({g[3]} datasets)" for g in gains],
                    rotation=20, ha="right", fontsize=8)
    left.set_xlim(-1, len(gains))
    left.set_title("gain over the datasets both have", fontsize=10)
    _legend_room(left, [v for g in gains for v in g[2]], 3, 3)
    width = 0.8 / len(gains)
    for i, (label, per, _, _) in enumerate(gains):
        xs = [j for j, d in enumerate(datasets) if d in per]
        right.bar([j + (i - (len(gains) - 1) / 2) * width for j in xs], [per[datasets[j]][2] for j in xs], width,
                  label=label.split(" (")[0], color=_color(i))
    right.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right")
    right.set_title("gain in H per dataset", fontsize=10)
    _legend_room(right, [v[2] for _, per, _, _ in gains for v in per.values()], len(gains), min(3, len(gains)))
    for ax in (left, right):
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("DePT gain (points)")
        ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def _color(i):
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10)


def _series_label(row, many_configs):
    """"CoOp + DePT", with the config where the method has several in the figure."""
    return _method_label(row) + (f" ({row['config']})" if row["method"] in many_configs else "")


def _legend_columns(labels, width):
    """As many legend columns as fit across ``width`` inches at font size 8 (a clipped legend hides
    which line is which)."""
    longest = max((len(label) for label in labels), default=1)
    return max(1, min(len(labels), int(width // (0.065 * longest + 0.7))))


def figure_few_shot(rows, path):
    """Accuracy against shots (log 2 axis), one panel per dataset and one for the average; one line
    per method variant, dashed without DePT, solid with; error bars are the std over seeds."""
    panels = sorted({r["dataset"] for r in rows if r["seeds"]}, key=dataset_rank)
    keys = sorted({(r["method"], r["dept"], r["trainer"], r["config"]) for r in rows},
                  key=lambda k: (method_rank(k[0]), k[3], k[1], k[2]))
    methods = list(dict.fromkeys(k[0] for k in keys))
    many = {m for m in methods if len({k[3] for k in keys if k[0] == m}) > 1}
    shots = sorted({r["shots"] for r in rows})
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure(4.5 * ncols, 3.5 * nrows + 1)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles = {}
    for ax, dataset in zip(axes, panels):
        for key in keys:
            points = sorted((r["shots"], r["accuracy"], r["std"]) for r in rows
                            if (r["method"], r["dept"], r["trainer"], r["config"]) == key and r["dataset"] == dataset
                            and r["accuracy"] is not None)
            if not points:
                continue
            row = next(r for r in rows if (r["method"], r["dept"], r["trainer"], r["config"]) == key)
            line = ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[_err(p[2]) for p in points],
                               color=_color(methods.index(key[0])), linestyle="-" if key[1] else "--",
                               marker="o", markersize=4, capsize=2)
            handles.setdefault(_series_label(row, many), line)
        ax.set_xscale("log", base=2)
        ax.minorticks_off()  # a log axis labels its minor ticks on a short range: only the shots run
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_title(dataset, fontsize=10)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize=8,
               ncols=_legend_columns(list(handles), 4.5 * ncols))
    save_figure(fig, path)


def figure_transfer(rows, path, title):
    """Accuracy on the source, each target and their average, one panel per method and variant:
    without DePT light, with DePT dark, error bars the std over seeds; the paper's figure, where the
    setting is its own, as a black line across the bar."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = _pairs(rows)
    xs = sorted({(r["role"], r["dataset"]) for r in rows if r["seeds"]},
                key=lambda x: ({"source": 0, "target": 1, "average": 2}[x[0]], dataset_rank(x[1])))
    colors = ("#9ecae1", "#2171b5")
    fig = _figure(max(8, 2 + len(xs)), 3 * len(panels) + 1)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (label, *sides) in zip(axes, panels):
        shown = []
        for dept, color in enumerate(colors):
            at = [(j, sides[dept].get(d)) for j, (_, d) in enumerate(xs)]
            at = [(j + (dept - 0.5) * 0.4, r) for j, r in at if r is not None and r["accuracy"] is not None]
            ax.bar([p for p, _ in at], [r["accuracy"] for _, r in at], 0.4, color=color,
                   yerr=[_err(r["std"]) for _, r in at], capsize=2, ecolor="#444444")
            papers = [(p, r["paper"]) for p, r in at if r["paper"] is not None]
            ax.hlines([v for _, v in papers], [p - 0.18 for p, _ in papers], [p + 0.18 for p, _ in papers],
                      colors="black", linewidth=2)
            shown += [r["accuracy"] for _, r in at] + [v for _, v in papers]
        ax.set_xticks(range(len(xs)), [d if role != "source" else f"{d}\n(source)" for role, d in xs],
                      rotation=30, ha="right")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{title}: {label}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        _ylim(ax, shown)
    fig.legend([Patch(color=colors[0]), Patch(color=colors[1]), Line2D([], [], color="black", linewidth=2)],
               ["without DePT", "with DePT", "paper"], loc="outside upper center", ncols=3)
    save_figure(fig, path)


def draw_figures(tables, folder):
    """Every figure the tables allow: {file name: what it shows}."""
    drawn = {}
    os.makedirs(folder, exist_ok=True)
    rows = tables.get("base2new")
    if rows:
        figure_base_vs_new(rows, os.path.join(folder, FIGURE_NAMES[0]))
        drawn[FIGURE_NAMES[0]] = "base vs new accuracy per dataset, each method without and with DePT"
        if dept_gains(rows):
            figure_dept_gain(rows, os.path.join(folder, FIGURE_NAMES[1]))
            drawn[FIGURE_NAMES[1]] = "the gain from DePT per method (base, new, H) and per dataset (H)"
    if tables.get("few_shot"):
        figure_few_shot(tables["few_shot"], os.path.join(folder, FIGURE_NAMES[2]))
        drawn[FIGURE_NAMES[2]] = "few-shot accuracy against shots per dataset and the average"
    for protocol, name in (("cross_dataset", FIGURE_NAMES[3]), ("dg", FIGURE_NAMES[4])):
        if tables.get(protocol):
            figure_transfer(tables[protocol], os.path.join(folder, name), TITLES[protocol])
            drawn[name] = f"{TITLES[protocol].lower()}: source, targets and average per method"
    return drawn


# -- the report ---------------------------------------------------------------------------------------

def build_tables(runs, root):
    """{protocol: rows} for each protocol with runs, and the absent runs ({folder: (protocol, label)})."""
    absent = {}
    tables = {"base2new": base2new_rows(runs, root, absent),
              "cross_dataset": transfer_rows(runs, root, absent, "cross_dataset"),
              "dg": transfer_rows(runs, root, absent, "dg"),
              "few_shot": few_shot_rows(runs, root, absent)}
    return {p: sort_rows(p, rows) for p, rows in tables.items() if rows}, absent


def render_index(root, tables, counts, figures, skipped_figures):
    lines = [f"# Report of `{root}`", "", "Written by `python -m dept report`: every run folder under the root, "
             "read from its run record (`dept_run.json`).", "", "## Tables", ""]
    for protocol, rows in tables.items():
        lines.append(f"- [{TITLES[protocol]}]({protocol}.md) ([csv]({protocol}.csv)): {len(rows)} rows")
    lines.append(f"- [Missing and failed runs](missing.md): {counts['bad']} not counted, {counts['absent']} absent")
    lines += ["", "## Figures", ""]
    if skipped_figures:
        lines.append(f"Not drawn: {skipped_figures}.")
    for name, what in figures.items():
        lines += [f"### {what}", "", f"![{what}](figures/{name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(root, out, figures=True, scanned=None):
    """Write the report of ``root`` into ``out`` (``scanned``: what ``scan`` found, if done already);
    returns (tables, runs, absent, the text to print)."""
    runs, strays = scanned or scan(root, skip=[out])
    tables, absent = build_tables(runs, root)
    texts = []
    for protocol in PROTOCOL_ORDER:
        stem = os.path.join(out, protocol)
        if protocol not in tables:
            for ext in (".csv", ".md"):  # a table of an earlier report that no longer has runs
                if os.path.isfile(stem + ext):
                    os.remove(stem + ext)
            continue
        text = render_markdown(protocol, tables[protocol], root)
        write_text(stem + ".csv", render_csv(protocol, tables[protocol]))
        write_text(stem + ".md", text)
        texts.append(text)
    missing = render_missing(root, runs, absent, strays)
    write_text(os.path.join(out, "missing.md"), missing)
    texts.append(missing)
    drawn = draw_figures(tables, os.path.join(out, "figures")) if figures else {}
    for name in FIGURE_NAMES:  # a figure of an earlier report that this one does not draw
        path = os.path.join(out, "figures", name)
        if name not in drawn and os.path.isfile(path):
            os.remove(path)
    counts = {"bad": sum(1 for r in runs if r.problem), "absent": len(absent)}
    write_text(os.path.join(out, "README.md"),
               render_index(root, tables, counts, drawn, "" if figures else "figures were turned off (--no-figures)"))
    return tables, runs, absent, "\n".join(texts)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m dept report", description=__doc__.splitlines()[0])
    p.add_argument("root", help="the output root of the protocol runs (the runner's --output)")
    p.add_argument("--out", default=None, help="where the report goes (default: ROOT/report)")
    p.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib)")
    return p


def main(argv=None):
    """``python -m dept report ROOT [--out DIR] [--no-figures]``: exit 0, or 1 when no run is found."""
    args = build_parser().parse_args(argv)
    root = os.path.abspath(os.path.expanduser(args.root))
    out = os.path.abspath(os.path.expanduser(args.out)) if args.out else os.path.join(root, "report")
    if not os.path.isdir(root):
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 1
    if not args.no_figures:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: the figures need matplotlib (pip install matplotlib); or pass --no-figures",
                  file=sys.stderr)
            return 1
    scanned = scan(root, skip=[out])
    if not scanned[0]:
        print(f"error: no run found under {root} (run folders are base2new/train_base/<dataset>/shots_<K>/<trainer>/"
              "<cfg>/seed<S>, <dataset>/<trainer>/<cfg>_<K>shots/seed<S> and evaluation/<trainer>/<cfg>_<K>shots/"
              "<target>/seed<S>, each with a dept_run.json)", file=sys.stderr)
        return 1
    tables, runs, absent, text = write_report(root, out, figures=not args.no_figures, scanned=scanned)
    print(text)
    counted = sum(1 for r in runs if not r.problem)
    print(f"report: {out}/README.md ({counted} runs counted, {len(runs) - counted} not counted, "
          f"{len(absent)} absent: see missing.md)")
    if not counted:
        print(f"error: none of the {len(runs)} runs under {root} is finished and counted", file=sys.stderr)
        return 1
    return 0
