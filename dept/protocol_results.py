"""Tables of the protocols besides base-to-new: cross-dataset, domain generalisation, few-shot.

Each row is a dataset, rebuilt from every finished, verified seed on disk (``SeedResult``): the
mean and the (sample) standard deviation over seeds, the seeds used, and a note naming what is
missing, so that a row averaged over fewer seeds than asked says so. Cross-dataset and DG tables
start with the source (ImageNet: the training run's own test accuracy), then the targets, then the
average over the targets (the paper's "average" column); the paper's figure and our difference
are beside each cell where the runs are in the paper's setting (16 shots, the trainer's config for
the protocol, no options, ViT-B/16), else the note says why not. Few-shot tables have one row per
dataset and number of shots, and the average over datasets per number of shots (the paper has no
few-shot table: no paper columns).
"""
import csv
import statistics
from dataclasses import dataclass, field
from importlib import resources

from dept.results import PAPER_SHOTS, _clip_problem, _collect_notes, _seed_list, paper_method

TRANSFER_COLUMNS = ("dataset", "role", "seeds", "accuracy", "std", "seed_ids", "paper", "vs_paper", "note")
FEW_SHOT_COLUMNS = ("dataset", "shots", "seeds", "accuracy", "std", "seed_ids", "note")
PAPER_FILES = {"cross_dataset": "dept_paper_cross_dataset.csv", "dg": "dept_paper_domain_generalization.csv"}


@dataclass
class SeedResult:
    """One seed's accuracy on one dataset (None: not finished and verified; ``problems`` say why)."""

    seed: int
    accuracy: float = None
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    clip: object = None

    @classmethod
    def from_record(cls, seed, record, problems=()):
        result = cls(seed, problems=list(problems))
        if record is not None:
            result.accuracy = (record.get("result") or {}).get("accuracy")
            result.notes = [str(n) for n in record.get("notes") or []]
            result.clip = record.get("clip")
        return result


def paper_transfer(protocol):
    """{(method, dept): {dataset: accuracy}} of the paper's cross-dataset or DG table."""
    text = resources.files("dept").joinpath(f"reference/{PAPER_FILES[protocol]}").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {(r["method"], int(r["dept"])): {k: float(v) for k, v in r.items() if k not in ("method", "dept") and v}
            for r in rows}


def _stats(values):
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def dataset_row(dataset, results, requested_seeds=(), **extra):
    done = [r for r in results if r.accuracy is not None]
    notes = [f"seed {r.seed} not counted ({'; '.join(r.problems)})" for r in sorted(results, key=lambda r: r.seed)
             if r.accuracy is None and r.problems]
    missing = [s for s in requested_seeds if s not in {r.seed for r in results}]
    if missing:
        notes.append(f"requested seed {_seed_list(missing)} not finished")
    if not done:
        notes.insert(0, "no finished seed")
    mean, std = _stats([r.accuracy for r in done])
    return dict(extra, dataset=dataset, seeds=len(done), accuracy=mean, std=std,
                seed_ids=_seed_list(r.seed for r in done), notes=notes,
                warnings=_collect_notes([(n, f"seed {r.seed}") for r in done for n in r.notes]),
                clips=[r.clip for r in done])


def _average(rows, label="average", **extra):
    done = [r for r in rows if r["seeds"]]
    mean = statistics.fmean(r["accuracy"] for r in done) if done else None
    row = dict(extra, dataset=label, seeds=min((r["seeds"] for r in done), default=0), accuracy=mean, std=None,
               seed_ids="", notes=[], warnings=[], clips=[c for r in done for c in r["clips"]])
    ids = {r["seed_ids"] for r in done}
    row["seed_ids"] = ids.pop() if len(ids) == 1 else ""
    if len(done) < len(rows):
        row["notes"].append(f"averages {len(done)} of {len(rows)} datasets (no result: "
                            f"{', '.join(r['dataset'] for r in rows if not r['seeds'])})")
    elif not row["seed_ids"] and done:
        row["notes"].append("datasets have different seeds")
    return row


def _finish(rows):
    for row in rows:
        row["note"] = "; ".join(row["warnings"] + row["notes"])
    return rows


def transfer_table(protocol, trainer, source, per_target, source_results, shots, setting_reasons=(),
                   requested_seeds=()):
    """The cross-dataset (``protocol`` "cross_dataset") or DG ("dg") table of one grid cell."""
    rows = [dataset_row(source, source_results, requested_seeds, role="source")]
    targets = [dataset_row(d, results, requested_seeds, role="target") for d, results in per_target.items()]
    rows += targets
    if len(targets) > 1:
        rows.append(_average(targets, role="targets"))
    method, with_dept = paper_method(trainer)
    paper = paper_transfer(protocol).get((method, with_dept))
    reasons = list(setting_reasons)
    if shots != PAPER_SHOTS:
        reasons.append(f"{shots} shots (paper: {PAPER_SHOTS})")
    if paper is None:
        reasons.append(f"the paper has no {trainer} row")
    expected = set(paper or ()) - {"average"}
    for row in rows:
        row["paper"] = row["vs_paper"] = None
        if not row["seeds"]:
            continue
        why = list(reasons)
        clip = _clip_problem(row["clips"])
        if clip:
            why.append(clip)
        value = (paper or {}).get(row["dataset"])
        if row["dataset"] == "average":
            present = {r["dataset"] for r in targets if r["seeds"]}
            wanted = expected - {source}
            if paper is not None and present != wanted:
                why.append(f"averages {len(present)} targets, not the paper's {len(wanted)}")
            value = (paper or {}).get("average")
            if value is None and paper is not None and protocol == "dg" and not why:
                value = statistics.fmean(paper[d] for d in sorted(wanted))  # the paper prints no DG average
                row["notes"].append(f"paper: the mean of its {len(wanted)} targets (it prints no DG average)")
        elif paper is not None and value is None:
            why.append(f"the paper has no {row['dataset']} column")
        if why:
            row["notes"].append("paper figure omitted: " + "; ".join(why))
        else:
            row["paper"], row["vs_paper"] = value, row["accuracy"] - value
    return _finish(rows)


def few_shot_table(per_shots, requested_seeds=()):
    """Rows per dataset and shots from ``{shots: {dataset: [SeedResult]}}``, then per-shots averages."""
    rows, averages = [], []
    for shots in sorted(per_shots):
        cell = [dataset_row(d, results, requested_seeds, shots=shots) for d, results in per_shots[shots].items()]
        rows += cell
        if len(cell) > 1:
            averages.append(_average(cell, shots=shots))
    return _finish(rows + averages)
