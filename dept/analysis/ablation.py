"""An ablation's numbers: base, new and H against the swept value, per trainer and dataset and
averaged over datasets, as a table (markdown and CSV) and the paper's λ/epoch figure.

The rows are the base-to-new tables' own (``dept.results.tables``: seed means, H of the means, the
same checks of every run), picked per value by the variant folder that value's runs went to.
"""
import csv
import io
import math

from dept.results.figures import new_figure, series_colour

COLUMNS = ("key", "value", "trainer", "dataset", "seeds", "base", "base_std", "new", "new_std", "hm", "note")
METRICS = (("base", "base"), ("new", "new"), ("hm", "H"))


def ablation_rows(key, by_value):
    """Flat rows from ``by_value``: [(value, [base-to-new table rows of that value])]."""
    out = []
    for value, rows in by_value:
        for r in rows:
            out.append({"key": key, "value": value, "trainer": r["trainer"], "dataset": r["dataset"],
                        "seeds": r["seeds"], "base": r["base"], "base_std": r.get("base_std"), "new": r["new"],
                        "new_std": r.get("new_std"), "hm": r["hm"], "note": _note(r.get("note", ""))})
    return out


def _note(note):
    """The table's note without the paper comparison: an ablation is off the paper's settings by design."""
    return "; ".join(part for part in (note or "").split("; ") if part and not part.startswith(
        ("paper figures omitted", "config ", "options ", "CLIP is not", "the paper has no")))


def _num(value, std=None):
    if value is None:
        return "–"
    return f"{value:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def render_markdown(key, rows, demo=False):
    lines = [f"# Ablation of {key}", ""]
    if demo:
        lines += ["**DEMO**: the embedded digits demo and its tiny CLIP: a toy, not the paper's setting.", ""]
    lines += ["Seed means ± std of base and new accuracy, H of the means; `average` is the mean over datasets. "
              "Each value's runs are in their own variant folder (`<config>+KEY=value`).", "",
              f"| {key} | trainer | dataset | seeds | base | new | H | note |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['value']} | {r['trainer']} | {r['dataset']} | {r['seeds']} | "
                     f"{_num(r['base'], r['base_std'])} | {_num(r['new'], r['new_std'])} | {_num(r['hm'])} | "
                     f"{r['note'] or ''} |")
    return "\n".join(lines) + "\n"


def render_csv(rows):
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})
    return out.getvalue()


def _numeric(values):
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def figure(key, rows, values):
    """One panel per dataset (``average`` last when there is one): base, new and H against the value,
    a line per trainer; a categorical axis for values that are not numbers."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows if r["dataset"] != "average"))
    if any(r["dataset"] == "average" for r in rows):
        datasets.append("average")
    trainers = list(dict.fromkeys(r["trainer"] for r in rows))
    xs = _numeric(values) or list(range(len(values)))
    cols = min(3, len(datasets)) * len(METRICS)
    fig = new_figure(max(4.0, 2.6 * cols), 3.0 * math.ceil(len(datasets) / 3))
    axes = fig.subplots(math.ceil(len(datasets) / 3), cols, squeeze=False)
    for d, dataset in enumerate(datasets):
        for m, (metric, name) in enumerate(METRICS):
            ax = axes[d // 3][(d % 3) * len(METRICS) + m]
            for t, trainer in enumerate(trainers):
                points = [(x, r[metric]) for x, v in zip(xs, values) for r in rows
                          if r["trainer"] == trainer and r["dataset"] == dataset and r["value"] == v
                          and r[metric] is not None]
                if points:
                    ax.plot(*zip(*points), marker="o", color=series_colour(t), label=trainer)
            ax.set_title(f"{dataset}: {name}", fontsize=9)
            ax.set_xlabel(key, fontsize=8)
            if _numeric(values) is None:
                ax.set_xticks(xs, [str(v) for v in values], fontsize=8)
            if d == 0 and m == 0:
                ax.legend(fontsize=7)
    for extra in range(len(datasets) * len(METRICS), axes.size):
        axes.flat[extra].set_visible(False)
    return fig
