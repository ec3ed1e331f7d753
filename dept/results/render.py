"""Tables as a reader sees them: CSV with every number, markdown with mean ± std, the paper's
figure and our difference in one cell, and ``missing.md``."""
import csv
import io

from dept.results.paper import demo_note
from dept.results.tables import COLUMNS

TITLES = {"base2new": "Base-to-new generalisation", "cross_dataset": "Cross-dataset transfer",
          "dg": "Domain generalisation", "few_shot": "Few-shot learning"}
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


def _csv_value(value):
    if value is None:
        return ""
    return round(value, 2) if isinstance(value, float) else value


def render_csv(protocol, rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = COLUMNS[protocol]
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return out.getvalue()


def cell(value, std=None, paper=None, diff=None, sd=None, within=None):
    """A markdown cell: ``mean ± std (paper P, ±D = z sd, within noise)``; "–" where there is no number
    (and no spread from one seed, so no verdict either)."""
    if value is None:
        return "–"
    text = f"{value:.2f}" + (f" ± {std:.2f}" if std is not None else "")
    if paper is not None:
        verdict = "" if within is None else f", {'within' if within == 'yes' else 'beyond'} noise"
        text += f" (paper {paper:.2f}, {diff:+.2f}" + (f" = {sd:+.1f} sd" if sd is not None else "") + f"{verdict})"
    return text


def gain(value):
    return "–" if value is None else f"{value:+.2f}"


def _gain_cell(row, keys):
    if not row["dept"]:
        return ""
    text = " / ".join(gain(row[k]) for k in keys)
    if row.get("gain_partial") and row.get("gain_over"):
        text += f" (over {'seeds ' if row['dataset'] != 'average' else ''}{row['gain_over']})"
    return text


def seeds_cell(row):
    """The seed count, bold with the expected count when the row has fewer seeds than its table."""
    return str(row["seeds"]) if row["seeds"] >= row["expected_seeds"] else f"**{row['seeds']}/{row['expected_seeds']}**"


def markdown_rows(protocol, rows):
    """(header, cells per row) of a protocol's markdown table."""
    head = ["dataset", "method", "DePT", "config", "shots", "seeds"]

    def start(r):
        return [r["dataset"], r["method"], "yes" if r["dept"] else "no", r["config"], str(r["shots"]), seeds_cell(r)]

    if protocol == "base2new":
        head += ["base", "new", "H", "DePT gain (base / new / H)"]
        body = [start(r) + [cell(r["base"], r["base_std"], r["paper_base"], r["base_vs_paper"], r["base_vs_paper_sd"],
                                 r["base_within_noise"]),
                            cell(r["new"], r["new_std"], r["paper_new"], r["new_vs_paper"], r["new_vs_paper_sd"],
                                 r["new_within_noise"]),
                            cell(r["hm"], None, r["paper_hm"], r["hm_vs_paper"], r["hm_vs_paper_sd"],
                                 r["hm_within_noise"]),
                            _gain_cell(r, ("dept_gain_base", "dept_gain_new", "dept_gain_hm"))] for r in rows]
    elif protocol == "few_shot":
        head += ["accuracy", "DePT gain"]
        body = [start(r) + [cell(r["accuracy"], r["std"]), _gain_cell(r, ("dept_gain",))] for r in rows]
    else:
        head = head[:1] + ["role", "trained on"] + head[1:] + ["accuracy", "DePT gain"]
        body = [start(r)[:1] + [r["role"], r["source"]] + start(r)[1:]
                + [cell(r["accuracy"], r["std"], r["paper"], r["vs_paper"], r["vs_paper_sd"], r["within_noise"]),
                   _gain_cell(r, ("dept_gain",))]
                for r in rows]
    head.append("note")
    return head, [cells + [r["note"]] for cells, r in zip(body, rows)]


def _escape(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(protocol, rows, title, intro=""):
    head, body = markdown_rows(protocol, rows)
    lines = [f"## {title}", ""]
    demo = next((r["demo"] for r in rows if r.get("demo")), None)
    if demo:
        lines += [demo_note(demo), ""]
    lines += [f"{intro}{LEGENDS[protocol]}", "",
              "Cells: mean ± std over seeds (std from two seeds on), then, in the paper's setting, "
              "(paper P, ours minus paper = that in units of the seeds' sd, and whether the paper's figure is "
              "within noise: inside the 95% confidence interval of our mean, Student's t over the seeds). "
              "**k/n** seeds: fewer seeds than the other rows of the table; "
              "the note says which and why. DePT's gain is over the seeds (and datasets) both sides have.", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_escape(c) or " " for c in cells) + " |" for cells in body]
    warned = [(r, w) for r in rows for w in r["warnings"]]
    if warned:
        lines += ["", "**WARNING: the runs' records carry notes; read them before using these numbers:**", ""]
        lines += [f"- **{r['dataset']}**, {r['trainer']} {r['config']} {r['shots']} shots: {_escape(w)}"
                  for r, w in warned]
    return "\n".join(lines) + "\n"


def render_missing(root, runs, absent, strays):
    """missing.md: what is not counted and why, what is absent, what could not be placed."""
    bad = sorted((r for r in runs if r.problem), key=lambda r: r.folder)
    lines = [f"# Missing and failed runs under `{root}`", "",
             f"{len(runs)} run folders found: {len(runs) - len(bad)} counted, {len(bad)} not counted; "
             f"{len(absent)} runs absent that the other runs of their table imply."]
    if bad:
        lines += ["", "## Not counted", "", "Found, but their numbers are in no table.", "",
                  "| stage | folder | status | why |", "|---|---|---|---|"]
        lines += [f"| {r.key.stage} | `{r.folder}` | {r.status} | {_escape(r.problem)} |" for r in bad]
    if absent:
        lines += ["", "## Absent", "", "No folder, although other runs of the same table have this seed or "
                  "dataset (another method, another seed).", "", "| protocol | run | folder |", "|---|---|---|"]
        lines += [f"| {protocol} | {_escape(label)} | `{folder}` |"
                  for folder, (protocol, label) in sorted(absent.items(), key=lambda kv: (kv[1][0], kv[0]))]
    if strays:
        lines += ["", "## Not in a known layout", "", "These folders hold a run record but their path is none of "
                  "the layouts (dept.store.layout), so their numbers are in no table:", ""]
        lines += [f"- `{folder}`" for folder in sorted(strays)]
    if not (bad or absent or strays):
        lines += ["", "Nothing is missing: every run found is counted."]
    return "\n".join(lines) + "\n"
