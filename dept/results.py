"""Accuracies read back from run logs, and the base-to-new results table.

Logs are read the way the CoOp family's ``parse_test_res.py`` reads them: the ``* accuracy: X%``
line that Dassl's evaluator prints after "Finish training" (training runs) or after "=> result"
(evaluation runs). Averages follow the paper: per dataset, base and new are seed means and H their
harmonic mean; the average row is the mean of the per-dataset base and new, and its H is the
harmonic mean of those two means (not the mean of per-dataset H).
"""
import csv
import os
import re
from importlib import resources

ACCURACY = re.compile(r"\* accuracy: ([\d.]+)%")


def read_accuracy(log_path, after="=> result"):
    """The last accuracy printed after ``after`` in a log, or None if the run has not finished."""
    if not os.path.isfile(log_path):
        return None
    with open(log_path, errors="replace") as f:
        text = f.read()
    start = text.rfind(after)
    if start < 0:
        return None
    found = ACCURACY.findall(text[start:])
    return float(found[-1]) if found else None


def harmonic_mean(base, new):
    return 2 * base * new / (base + new) if base and new else 0.0


def paper_method(trainer):
    """('CoOp', 1) for CoOpDePT / ExtrasLinearProbeCoOp, ('CoOp', 0) for CoOp."""
    if trainer.startswith("ExtrasLinearProbe"):
        return trainer[len("ExtrasLinearProbe"):], 1
    if trainer.endswith("DePT"):
        return trainer[: -len("DePT")], 1
    return trainer, 0


def paper_base2new():
    """{(method, dept, dataset): (base, new, hm)} from the paper's table shipped with the package."""
    text = resources.files("dept").joinpath("reference/dept_paper_base2new.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {(r["method"], int(r["dept"]), r["dataset"]): (float(r["base"]), float(r["new"]), float(r["hm"]))
            for r in rows}


def summarize(per_seed):
    """Rows of the results table from ``{dataset: {seed: (base, new)}}`` (None = missing)."""
    rows = []
    for dataset, seeds in per_seed.items():
        done = [(b, n) for b, n in seeds.values() if b is not None and n is not None]
        if not done:
            rows.append({"dataset": dataset, "seeds": 0, "base": None, "new": None, "hm": None})
            continue
        base = sum(b for b, _ in done) / len(done)
        new = sum(n for _, n in done) / len(done)
        rows.append({"dataset": dataset, "seeds": len(done), "base": base, "new": new,
                     "hm": harmonic_mean(base, new)})
    complete = [r for r in rows if r["seeds"]]
    if len(complete) > 1:
        base = sum(r["base"] for r in complete) / len(complete)
        new = sum(r["new"] for r in complete) / len(complete)
        rows.append({"dataset": "average", "seeds": min(r["seeds"] for r in complete), "base": base,
                     "new": new, "hm": harmonic_mean(base, new)})
    return rows


def add_paper_numbers(rows, trainer):
    method, with_dept = paper_method(trainer)
    paper = paper_base2new()
    for row in rows:
        ref = paper.get((method, with_dept, row["dataset"]))
        row["paper_base"], row["paper_new"], row["paper_hm"] = ref if ref else (None, None, None)
    return rows


COLUMNS = ("dataset", "seeds", "base", "new", "hm", "paper_base", "paper_new", "paper_hm")


def _fmt(value):
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_tables(rows, csv_path, md_path, title):
    os.makedirs(os.path.dirname(csv_path) or ".", exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else (round(row[c], 2) if isinstance(row[c], float)
                                                              else row[c]) for c in COLUMNS])
    lines = [f"### {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in COLUMNS) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    with open(md_path, "w") as f:
        f.write(text)
    return text
