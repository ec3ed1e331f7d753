"""Records to tables: one builder per protocol, for the report and the runner alike.

The report builds every protocol's table from every run under a root; the runner builds the same
tables from the runs of its grid's cells (``dept.results.grid_tables``). Rules, the same everywhere:

* A **cell** is one trainer, one config variant (``vit_b16_ep10_bs4_lr35+DEPT.WEIGHT=0.2`` is not
  ``vit_b16_ep10_bs4_lr35``), one number of shots, one dataset (and one source, for a transfer
  evaluation). Its value is the mean over the seeds whose every run is counted; its spread the
  sample standard deviation, from two seeds on (one seed shows none: "–").
* **Base-to-new**: base and new are seed means, H their harmonic mean; the average row is the mean
  of the datasets' means and its H the harmonic mean of those (the paper's way, not the mean of H).
* **Transfer** (cross-dataset, DG): the source's row (its training run's own test accuracy), each
  target, the average over the targets. An evaluation on an ImageNet variant is DG's, on another
  dataset cross-dataset's; the demo's one target is both.
* **Few-shot**: a row per dataset and shots, the average over datasets per shots. A training run
  that is the source of transfer evaluations joins a method's few-shot table only where that table
  has other training runs at its number of shots: an ImageNet 16-shot run is a few-shot point
  beside other 16-shot runs, but a cross-dataset run alone makes no few-shot table.
* **DePT's gain** (with minus without, same method, variant, shots, dataset, source) is paired:
  over the seeds both sides have, and for an average over the datasets both have, each over the
  seeds both have there. ``gain_over`` says which, and the note says so when that is not every
  seed of both sides.
* The **paper's figures** stand beside a cell only in the paper's setting (``dept.results.paper``).
* What a reader must know goes into the note: the runs' own notes (an untrained head, classes with
  too few images, ...), seeds not counted and why, seeds or datasets missing that the rest of the
  table has (also listed as absent runs, with their folders, for ``missing.md``).
"""
import statistics

from dept.core.methods import method_name
from dept.results import paper
from dept.store.layout import Layout, RunKey, split_variant
from dept.store.protocols import BENCHMARK_11, DG_TARGETS, PROTOCOLS

PROTOCOL_ORDER = ("base2new", "cross_dataset", "dg", "few_shot")
DATASET_ORDER = BENCHMARK_11 + DG_TARGETS
COMMON = ("method", "dept", "trainer", "config", "shots")
SEED_COLUMNS = ("seeds", "expected_seeds", "seed_ids", "missing_seeds")
COLUMNS = {
    "base2new": ("dataset", *COMMON, *SEED_COLUMNS, "base", "base_std", "new", "new_std", "hm",
                 "dept_gain_base", "dept_gain_new", "dept_gain_hm", "gain_over", "paper_base", "paper_new",
                 "paper_hm", "base_vs_paper", "new_vs_paper", "hm_vs_paper", "base_vs_paper_sd", "new_vs_paper_sd",
                 "hm_vs_paper_sd", "base_within_noise", "new_within_noise", "hm_within_noise", "note"),
    "cross_dataset": ("dataset", "role", *COMMON, "source", *SEED_COLUMNS, "accuracy", "std", "dept_gain",
                      "gain_over", "paper", "vs_paper", "vs_paper_sd", "within_noise", "note"),
    "few_shot": ("dataset", *COMMON, *SEED_COLUMNS, "accuracy", "std", "dept_gain", "gain_over", "note"),
}
COLUMNS["dg"] = COLUMNS["cross_dataset"]


def harmonic_mean(base, new):
    return 2 * base * new / (base + new) if base and new else 0.0


def stats(values):
    """(mean, sample std) over seeds; the std is None under two seeds (one seed shows no spread)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def seed_text(seeds):
    return " ".join(str(s) for s in sorted(seeds))


def dataset_rank(name):
    """The paper's dataset order, others after it by name, the average last."""
    if name == "average":
        return (2, 0, "")
    return (0, DATASET_ORDER.index(name), "") if name in DATASET_ORDER else (1, 0, name)


def method_rank(method):
    """Zero-shot CLIP first, then the paper's order of methods, then the others by name."""
    order = paper.method_order()
    if method.startswith("ZeroshotCLIP"):
        return (0, 0, method)
    return (1, order.index(method), "") if method in order else (2, 0, method)


def row_order(row):
    return (method_rank(row["method"]), row["config"], row["shots"], row["dept"], row["trainer"])


def display_method(trainer):
    """(the method's name as the paper writes it, 1 with DePT / 0 without)."""
    from dept.core.methods import method_of

    method, with_dept = method_of(trainer)
    if method is not None:
        return method.paper_name or method.name, with_dept
    return method_name(trainer)


# -- cells: one method variant on one dataset, over its seeds -------------------------------------

def new_row(protocol, dataset, trainer, variant, shots, expected_seeds, **extra):
    method, dept = display_method(trainer)
    return dict(extra, protocol=protocol, dataset=dataset, method=method, dept=dept, trainer=trainer,
                config=variant, shots=shots, seeds=0, expected_seeds=len(expected_seeds), seed_ids="",
                missing_seeds="", notes=[], warnings=[], clips=[], covers=(), per_seed={}, gain_over="", configs=[])


def count_seeds(row, by_seed, stages, expected_seeds, where, absent):
    """The seeds of a cell whose every run (``stages``) is counted; the others go into the note
    (and, when there is no folder, into ``absent`` with the folder ``where(stage, seed)``)."""
    counted = {}
    for seed in sorted(set(expected_seeds) | set(by_seed)):
        runs = by_seed.get(seed, {})
        problems = [f"{stage} {runs[stage].problem}" if len(stages) > 1 else runs[stage].problem
                    for stage in stages if stage in runs and runs[stage].problem]
        own = [p for p in problems if "its training run is not counted" not in p]
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
    row["seeds"], row["seed_ids"] = len(counted), seed_text(counted)
    row["missing_seeds"] = seed_text(set(expected_seeds) - set(counted))
    row["expected_seeds"] = len(set(expected_seeds) | set(by_seed))
    if not counted:
        row["notes"].insert(0, "no finished seed")
    for seed, runs in sorted(counted.items()):
        for stage in stages:
            run = runs[stage]
            row["clips"].append(run.clip)
            if not row["configs"]:  # one run's settings stand for the cell's (its seeds agree: collect)
                row["configs"].append((run.key, run.record.get("config") or ""))
            where_from = f"seed {seed} {stage}" if len(stages) > 1 else f"seed {seed}"
            row["warnings"] += [(note, where_from) for note in run.notes]
    return counted


def _label(row, seed, stage, show_stage):
    return (f"{row['trainer']} {row['config']}, {row['shots']} shots, {row['dataset']}, seed {seed}"
            + (f", {stage}" if show_stage else ""))


def _where(layout, **fields):
    """``where(stage, seed)``: the folder (relative to the root) a run of this cell has or would have."""
    def where(stage, seed):
        return layout.relative(RunKey(stage=stage, seed=seed, **fields))

    return where


def average_row(rows, expected, template, values):
    """The paper's average over datasets: the mean of the per-dataset means (``values``: the keys
    averaged); the note says which datasets it leaves out and which have fewer seeds."""
    done = [r for r in rows if r["seeds"]]
    row = dict(template, dataset="average", notes=[], warnings=[], clips=[c for r in done for c in r["clips"]],
               configs=[c for r in done for c in r["configs"]],
               covers=tuple(sorted(r["dataset"] for r in done)), per_seed={}, gain_over="")
    if "role" in template:
        row["role"] = "average"
    row["seeds"] = min((r["seeds"] for r in done), default=0)
    row["expected_seeds"] = max((r["expected_seeds"] for r in rows), default=0)
    ids = {r["seed_ids"] for r in done}
    row["seed_ids"] = ids.pop() if len(ids) == 1 else ""
    row["missing_seeds"] = ""
    for key in values:
        row[key] = statistics.fmean(r[key] for r in done) if done else None
        row[f"{key}_std"] = None
    row["std"] = None
    row["datasets"] = {r["dataset"]: r for r in done}
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
    out = {}
    for run in runs:
        out.setdefault(key(run), []).append(run)
    return out


def _options(variant):
    return split_variant(variant)[1]


# -- DePT's gain, paired ------------------------------------------------------------------------------

def _paired_means(plain, dept, keys, combine=None):
    """Each side's means over the seeds both counted: ({key: mean} without, {key: mean} with, seeds)."""
    common = sorted(set(plain["per_seed"]) & set(dept["per_seed"]))
    if not common:
        return None, None, common
    sides = [{k: statistics.fmean(side["per_seed"][s][k] for s in common) for k in keys} for side in (plain, dept)]
    if combine:
        for side in sides:
            combine(side)
    return sides[0], sides[1], common


def add_gains(rows, keys, combine=None, extra_key=()):
    """DePT's gain (with minus without) beside each DePT row: the same method, config variant,
    shots and dataset (and source), over the seeds both sides counted (see the module doc)."""
    measured = [*keys, *(["hm"] if combine else [])]
    names = ["dept_gain"] if measured == ["accuracy"] else [f"dept_gain_{k}" for k in measured]

    def cell(row):
        return (row["dataset"], row["method"], row["config"], row["shots"], *(row.get(k) for k in extra_key))

    plain = {}
    for row in rows:
        if not row["dept"]:
            plain.setdefault(cell(row), row)
    for row in rows:
        for name in names:
            row[name] = None
        other = plain.get(cell(row)) if row["dept"] else None
        if other is None or not row["seeds"] or not other["seeds"]:
            continue
        clips = [_clip_ids(r) for r in (other, row)]
        if clips[0] != clips[1]:  # a gain between two CLIPs is not DePT's
            shown = [", ".join(sorted(f"{name} {path}" for name, path, _ in ids)) for ids in clips]
            row["notes"].append(f"DePT gain not computed: {other['trainer']} and {row['trainer']} ran on other CLIPs "
                                f"({shown[0]} / {shown[1]})")
            continue
        if row["dataset"] == "average":
            gains, over = _average_gain(other, row, keys, combine)
        else:
            a, b, common = _paired_means(other, row, keys, combine)
            if a is None:
                row["notes"].append(f"DePT gain not computed: no seed both have ({other['trainer']}: "
                                    f"{other['seed_ids']}; {row['trainer']}: {row['seed_ids']})")
                continue
            gains = {k: b[k] - a[k] for k in measured}
            over = seed_text(common)
            if set(common) != set(row["per_seed"]) or set(common) != set(other["per_seed"]):
                row["notes"].append(f"DePT gain over seed(s) {over} only, the seeds both have "
                                    f"({other['trainer']}: {other['seed_ids']}; {row['trainer']}: {row['seed_ids']})")
                row["gain_partial"] = True
        if gains is None:
            continue
        row["gain_over"] = over
        for name, k in zip(names, measured):
            row[name] = gains[k]


def _average_gain(plain, dept, keys, combine):
    """The gain of an average row: over the datasets both have, each over the seeds both have."""
    datasets = sorted(set(plain["datasets"]) & set(dept["datasets"]), key=dataset_rank)
    pairs = []
    partial = set(datasets) != set(plain["datasets"]) or set(datasets) != set(dept["datasets"])
    for d in datasets:
        a, b, common = _paired_means(plain["datasets"][d], dept["datasets"][d], keys)
        if a is None:
            partial = True
            continue
        partial |= set(common) != set(plain["datasets"][d]["per_seed"]) or \
            set(common) != set(dept["datasets"][d]["per_seed"])
        pairs.append((d, a, b))
    if not pairs:
        dept["notes"].append(f"DePT gain not computed: no dataset and seed both have ({plain['trainer']})")
        return None, ""
    sides = [{k: statistics.fmean(p[i][k] for p in pairs) for k in keys} for i in (1, 2)]
    if combine:
        for side in sides:
            combine(side)
    gains = {k: sides[1][k] - sides[0][k] for k in sides[0]}
    over = f"{len(pairs)} datasets"
    if partial:
        dept["notes"].append(f"DePT gain over the datasets and seeds both have ({', '.join(d for d, *_ in pairs)}), "
                             f"not all of either side's")
        dept["gain_partial"] = True
        over += " (paired seeds)"
    return gains, over


def _clip_ids(row):
    """The CLIPs a row's runs loaded, by what their records say (name, file, architecture)."""
    out = set()
    for clip in row["clips"]:
        if isinstance(clip, dict):
            out.add((str(clip.get("name")), clip.get("path") or "(by name)",
                     tuple(sorted((clip.get("arch") or {}).items()))))
        else:
            out.add(("(not recorded)", "", ()))
    return out


def _with_hm(side):
    side["hm"] = harmonic_mean(side["base"], side["new"])


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
        row["demo"] = paper.is_demo(row["clips"])
    return rows


# -- base to new -------------------------------------------------------------------------------------

def base2new_rows(runs, layout, absent, expected_seeds=(), expected_datasets=()):
    """Rows per dataset, method and variant (seed means of base and new, H of the means), then
    each method variant's average over datasets, with the paper's figures and DePT's gain."""
    runs = [r for r in runs if r.key.stage in ("train_base", "test_new")]
    rows = []
    for (shots, _), group in _groups(runs, lambda r: (r.key.shots, _options(r.key.variant))).items():
        datasets = {r.key.dataset for r in group} | set(expected_datasets)
        seeds = {r.key.seed for r in group} | set(expected_seeds)
        for trainer, variant in sorted({(r.key.trainer, r.key.variant) for r in group}):
            cells = {}
            for r in group:
                if (r.key.trainer, r.key.variant) == (trainer, variant):
                    cells.setdefault(r.key.dataset, {}).setdefault(r.key.seed, {})[r.key.stage] = r
            own = []
            for dataset in sorted(datasets, key=dataset_rank):
                row = new_row("base2new", dataset, trainer, variant, shots, seeds)
                where = _where(layout, dataset=dataset, trainer=trainer, variant=variant, shots=shots)
                counted = count_seeds(row, cells.get(dataset, {}), ("train_base", "test_new"), seeds, where, absent)
                row["per_seed"] = {s: {"base": c["train_base"].accuracy, "new": c["test_new"].accuracy}
                                   for s, c in counted.items()}
                row["base"], row["base_std"] = stats([v["base"] for v in row["per_seed"].values()])
                row["new"], row["new_std"] = stats([v["new"] for v in row["per_seed"].values()])
                row["hm"] = harmonic_mean(row["base"], row["new"]) if counted else None
                own.append(row)
            rows += own
            if len(own) > 1:
                average = average_row(own, datasets, own[0], ("base", "new"))
                average["hm"] = harmonic_mean(average["base"], average["new"]) if average["seeds"] else None
                rows.append(average)
    for row in rows:
        paper.add_base2new(row)
    add_gains(rows, ("base", "new"), combine=_with_hm)
    return finish(rows)


# -- cross-dataset and domain generalisation ---------------------------------------------------------

def transfer_rows(runs, layout, absent, protocol, expected_seeds=(), expected_datasets=()):
    """Per method variant and source: the source (its training runs' own test accuracy), each
    target, the average over the targets; mean ± std over seeds, the paper's figure, DePT's gain."""
    owner = PROTOCOLS[protocol]
    evals = [r for r in runs if r.key.stage == "eval" and owner.owns_target(r.key.dataset)]
    trains = {r.key: r for r in runs if r.key.stage == "train"}
    rows = []
    for (shots, _), group in _groups(evals, lambda r: (r.key.shots, _options(r.key.variant))).items():
        targets = {r.key.dataset for r in group} | set(expected_datasets)
        series = sorted({(r.key.trainer, r.key.variant, r.key.source) for r in group})
        sources = {s: {k.seed: {"train": r} for k, r in trains.items()
                       if (k.dataset, k.trainer, k.variant, k.shots) == (s[2], s[0], s[1], shots)} for s in series}
        seeds = ({r.key.seed for r in group} | {seed for by_seed in sources.values() for seed in by_seed}
                 | set(expected_seeds))
        for trainer, variant, source in series:
            template = dict(trainer=trainer, variant=variant, shots=shots, expected_seeds=seeds, source=source)
            row = new_row(protocol, source, role="source", **template)
            _accuracy(row, count_seeds(row, sources[(trainer, variant, source)], ("train",), seeds,
                                       _where(layout, dataset=source, trainer=trainer, variant=variant, shots=shots),
                                       absent), "train")
            own = []
            for target in sorted(targets, key=dataset_rank):
                row_t = new_row(protocol, target, role="target", **template)
                cell = {r.key.seed: {"eval": r} for r in group
                        if (r.key.trainer, r.key.variant, r.key.source, r.key.dataset) == (trainer, variant, source,
                                                                                           target)}
                counted = count_seeds(row_t, cell, ("eval",), seeds, _where(
                    layout, dataset=target, trainer=trainer, variant=variant, shots=shots, source=source), absent)
                _accuracy(row_t, counted, "eval")
                own.append(row_t)
            rows += [row, *own]
            if len(own) > 1:
                rows.append(average_row(own, targets, own[0], ("accuracy",)))
    for row in rows:
        paper.add_transfer(row, protocol)
    add_gains(rows, ("accuracy",), extra_key=("source", "role"))
    return finish(rows)


def _accuracy(row, counted, stage):
    """The accuracy of a one-stage cell from its counted seeds ({seed: {stage: run}})."""
    row["per_seed"] = {seed: {"accuracy": runs[stage].accuracy} for seed, runs in counted.items()}
    row["accuracy"], row["std"] = stats([v["accuracy"] for v in row["per_seed"].values()])


# -- few-shot ----------------------------------------------------------------------------------------

def few_shot_rows(runs, layout, absent, expected_seeds=(), expected_datasets=(), expected_shots=()):
    """Rows per dataset, shots and method variant from the training runs, then the average over
    datasets per shots (the module doc says which training runs join; the paper has no few-shot
    table: no paper columns)."""
    sources = {(r.key.trainer, r.key.variant, r.key.shots, r.key.source) for r in runs if r.key.stage == "eval"}
    trains = [r for r in runs if r.key.stage == "train"]

    def is_source(r):
        return (r.key.trainer, r.key.variant, r.key.shots, r.key.dataset) in sources

    own = {(r.key.trainer, r.key.variant) for r in trains if not is_source(r)} | (
        {(r.key.trainer, r.key.variant) for r in trains} if expected_shots else set())
    trains = [r for r in trains if (r.key.trainer, r.key.variant) in own]
    rows = []
    for _, group in _groups(trains, lambda r: _options(r.key.variant)).items():
        grid = [r for r in group if not is_source(r)]
        all_shots = {r.key.shots for r in grid} | set(expected_shots)
        datasets = {r.key.dataset for r in group if r.key.shots in all_shots} | set(expected_datasets)
        group = [r for r in group if r.key.dataset in datasets and r.key.shots in all_shots]
        seeds = {r.key.seed for r in group} | set(expected_seeds)
        for trainer, variant in sorted({(r.key.trainer, r.key.variant) for r in group}):
            cells = {}
            for r in group:
                if (r.key.trainer, r.key.variant) == (trainer, variant):
                    cells.setdefault((r.key.dataset, r.key.shots), {})[r.key.seed] = {"train": r}
            for shots in sorted(all_shots):
                at = []
                for dataset in sorted(datasets, key=dataset_rank):
                    row = new_row("few_shot", dataset, trainer, variant, shots, seeds)
                    counted = count_seeds(row, cells.get((dataset, shots), {}), ("train",), seeds, _where(
                        layout, dataset=dataset, trainer=trainer, variant=variant, shots=shots), absent)
                    _accuracy(row, counted, "train")
                    at.append(row)
                rows += at
                if len(at) > 1:
                    rows.append(average_row(at, datasets, at[0], ("accuracy",)))
    add_gains(rows, ("accuracy",))
    return finish(rows)


# -- every table ------------------------------------------------------------------------------------

def sort_rows(protocol, rows):
    role = {"source": 0, "target": 1, "average": 2}
    if protocol == "few_shot":
        return sorted(rows, key=lambda r: (dataset_rank(r["dataset"]), r["shots"], row_order(r)))
    return sorted(rows, key=lambda r: (role.get(r.get("role"), 0), r.get("source") or "",
                                       dataset_rank(r["dataset"]), row_order(r)))


def build_tables(runs, root, protocols=PROTOCOL_ORDER, expected=None):
    """({protocol: rows} for each protocol with runs, the absent runs {folder: (protocol, label)}).

    ``expected``: what a runner asked for, {"seeds": [...], "datasets": [...], "shots": [...]}:
    requested seeds and datasets that did not finish are in the tables as missing."""
    layout = Layout(root)
    expected = expected or {}
    absent = {}
    seeds, datasets = expected.get("seeds", ()), expected.get("datasets", ())
    builders = {
        "base2new": lambda: base2new_rows(runs, layout, absent, seeds, datasets),
        "cross_dataset": lambda: transfer_rows(runs, layout, absent, "cross_dataset", seeds, datasets),
        "dg": lambda: transfer_rows(runs, layout, absent, "dg", seeds, datasets),
        "few_shot": lambda: few_shot_rows(runs, layout, absent, seeds, datasets, expected.get("shots", ())),
    }
    tables = {p: sort_rows(p, builders[p]()) for p in protocols}
    return {p: rows for p, rows in tables.items() if rows}, absent

