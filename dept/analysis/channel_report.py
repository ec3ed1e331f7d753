"""The channel analysis written out: a CSV per model and feature space, a summary table, and the
paper's two figures (importance curves sorted by base importance; the density of the base/new ratio
per model).

A window's base/new ratio is undefined where its new-class importance is 0 (every clamped similarity
0 on those channels); such windows are written as they are (inf or nan) in the CSV, left out of the
summary and the density, and counted in the summary.
"""
import csv
import io
import math
import os
import statistics

from dept.results.figures import new_figure, save_figure, series_colour
from dept.util.files import atomic_open

COLUMNS = ("model", "space", "window_start", "window", "base", "new", "ratio")
SPACE_NAMES = {"itm": "ITM features", "cwt": "cwT space (DePT's CAT head)"}


def slug(text):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")


def write_csv(path, model, space, width, result):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for start, (b, n, r) in enumerate(zip(*(result[k].tolist() for k in ("base", "new", "ratio")))):
        writer.writerow([model, space, start, width, f"{b:.6f}", f"{n:.6f}", f"{r:.6f}"])
    with atomic_open(path, "w") as f:
        f.write(out.getvalue())


def summary(result):
    """Mean base and new importance, and the ratio's mean, sd and share of windows above 1."""
    ratio = [r for r in result["ratio"].tolist() if math.isfinite(r)]
    return {
        "base": statistics.fmean(result["base"].tolist()), "new": statistics.fmean(result["new"].tolist()),
        "ratio_mean": statistics.fmean(ratio) if ratio else math.nan,
        "ratio_sd": statistics.stdev(ratio) if len(ratio) > 1 else math.nan,
        "above_1": sum(r > 1 for r in ratio) / len(ratio) if ratio else math.nan,
        "undefined": len(result["ratio"]) - len(ratio),
    }


def render_summary(entries, width_note):
    lines = ["# Channel importance", "",
             "Per model and feature space: the mean importance of a window for base and for new classes, "
             "and the base/new ratio over windows (the paper's channel bias: a wider spread, and more windows "
             f"above 1, mean more channels that serve the base classes only). {width_note}", "",
             "| model | space | base | new | ratio mean | ratio sd | windows with ratio > 1 | undefined |",
             "|---|---|---|---|---|---|---|---|"]
    for model, space, _, s in entries:
        lines.append(f"| {model} | {SPACE_NAMES[space]} | {s['base']:.4f} | {s['new']:.4f} | {s['ratio_mean']:.4f} | "
                     f"{s['ratio_sd']:.4f} | {100 * s['above_1']:.1f}% | {s['undefined']} |")
    return "\n".join(lines) + "\n"


def figure_curves(entries):
    """One panel per model and space: base and new importance per window, windows sorted by base."""
    cols = min(3, len(entries))
    rows = math.ceil(len(entries) / cols)
    fig = new_figure(4.0 * cols, 3.0 * rows)
    for i, (model, space, result, _) in enumerate(entries):
        ax = fig.add_subplot(rows, cols, i + 1)
        order = sorted(range(len(result["base"])), key=lambda k: float(result["base"][k]))
        x = range(len(order))
        ax.scatter(x, [float(result["base"][k]) for k in order], s=4, label="base", color="#2171b5")
        ax.scatter(x, [float(result["new"][k]) for k in order], s=4, label="new", color="#d94801")
        ax.set_title(f"{model}\n{SPACE_NAMES[space]}", fontsize=8)
        ax.set_xlabel("window (sorted by base importance)", fontsize=8)
        ax.set_ylabel("importance", fontsize=8)
        ax.legend(fontsize=7)
    return fig


def figure_density(entries):
    """The density of the base/new ratio over windows, one curve per model and space."""
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for i, (model, space, result, _) in enumerate(entries):
        ratio = [r for r in result["ratio"].tolist() if math.isfinite(r)]
        if len(ratio) < 2:
            continue
        grid, density = _density(ratio)
        ax.plot(grid, density, color=series_colour(i), label=f"{model}, {space}")
        ax.fill_between(grid, density, color=series_colour(i), alpha=0.08)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("base / new importance per window")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return fig


def _density(values, points=200):
    """A Gaussian kernel density (Scott's bandwidth); a spike where every value is the same."""
    lo, hi = min(values), max(values)
    sd = statistics.stdev(values)
    width = 1.06 * sd * len(values) ** -0.2 if sd > 0 else max(abs(lo) * 1e-3, 1e-6)
    lo, hi = lo - 3 * width, hi + 3 * width
    grid = [lo + (hi - lo) * k / (points - 1) for k in range(points)]
    norm = 1 / (len(values) * width * math.sqrt(2 * math.pi))
    return grid, [norm * sum(math.exp(-0.5 * ((g - v) / width) ** 2) for v in values) for g in grid]


def write_outputs(out_dir, entries, width_note):
    """CSV per entry, ``channels.md``, ``importance.png`` and ``ratio_density.png`` under ``out_dir``;
    returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for model, space, result, width in ((e[0], e[1], e[2], e[3]["width"]) for e in entries):
        path = os.path.join(out_dir, f"{slug(model)}__{space}.csv")
        write_csv(path, model, space, width, result)
        written.append(path)
    rows = [(m, s, r, summary(r)) for m, s, r, _ in entries]
    path = os.path.join(out_dir, "channels.md")
    with atomic_open(path, "w") as f:
        f.write(render_summary(rows, width_note))
    written.append(path)
    for name, draw in (("importance.png", figure_curves), ("ratio_density.png", figure_density)):
        path = os.path.join(out_dir, name)
        save_figure(draw(rows), path)
        written.append(path)
    return written
