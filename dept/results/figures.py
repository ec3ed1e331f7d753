"""The report's figures, drawn from the tables' rows (matplotlib's Agg canvas: no display, no pyplot).

Every figure says what it compares and how much it rests on: bars start at 0, each bar carries the
number of seeds behind it, a row with fewer seeds than the rest of its table is hatched, DePT's
gain is the paired one of the tables (over the seeds both sides have, hatched where that is not all
of them), a legend lists only what is drawn, and runs on the demo's random tiny CLIP carry a mark
saying so. Each ``figure_*`` returns its ``Figure`` (tests read its axes); ``draw_figures`` saves
every figure the tables allow.
"""
import math
import os

from dept.results.paper import demo_mark
from dept.results.tables import dataset_rank, row_order
from dept.util.files import atomic_open

DPI = 100  # figure sizes are multiples of half an inch: pixel sizes are exact (figsize × DPI)
NAMES = ("base2new_base_vs_new.png", "base2new_dept_gain.png", "few_shot.png", "cross_dataset.png", "dg.png")
PARTIAL_HATCH = "///"
DEMO_COLOUR = "#c00000"
BASE_NEW_SERIES = (("base", 0, "base", "#9ecae1"), ("base", 1, "base + DePT", "#2171b5"),
                   ("new", 0, "new", "#fdae6b"), ("new", 1, "new + DePT", "#d94801"))
TRANSFER_COLOURS = ("#9ecae1", "#2171b5")
GAIN_COLOURS = ("#2171b5", "#d94801", "#238b45")  # base, new, H
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def new_figure(width, height):
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


def series_colour(i):
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10)


def _err(std):
    """An error bar of one std; none (NaN is not drawn) where there is no std (one seed, an average)."""
    return math.nan if std is None else std


def _mark_demo(fig, rows):
    demo = next((r["demo"] for r in rows if r.get("demo")), None)
    if demo:
        fig.suptitle(demo_mark(demo), color=DEMO_COLOUR, fontsize=11, fontweight="bold")


def _partial(row):
    return row["seeds"] < row["expected_seeds"]


def _bars(ax, xs, rows, values, width, colour, errors=None):
    """Bars at ``xs`` with the seeds each rests on written above it; hatched for a partial row."""
    errors = errors or [math.nan] * len(values)
    bars = ax.bar(xs, values, width, color=colour, yerr=errors, capsize=2, ecolor="#444444",
                  hatch=[PARTIAL_HATCH if _partial(r) else "" for r in rows], edgecolor="white", linewidth=0)
    for x, value, error, row in zip(xs, values, errors, rows):
        top = value + (0 if math.isnan(error) else error)
        ax.annotate(f"n={row['seeds']}", (x, top), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize=6.5, color="#333333")
    return bars


def _legend_extras(rows):
    """Legend entries for the hatched-bar convention, only where a partial row is drawn."""
    from matplotlib.patches import Patch

    if any(_partial(r) for r in rows):
        return [Patch(facecolor="#bbbbbb", hatch=PARTIAL_HATCH, edgecolor="white")], ["fewer seeds than the table"]
    return [], []


def _accuracy_axis(ax, values):
    """Accuracy bars from 0: the whole bar is the number (no cut axis); 100 at most for accuracies."""
    top = max([v for v in values if v is not None] or [0])
    ax.set_ylim(0, 100 if top <= 100 else None)
    ax.set_ylabel("accuracy (%)")
    ax.grid(axis="y", alpha=0.3)


def pairs(rows):
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


def figure_base_vs_new(rows):
    """Base and new accuracy per dataset (and the average), one panel per method and variant:
    without DePT light, with DePT dark; error bars are the std over seeds."""
    from matplotlib.patches import Patch

    panels = pairs(rows)
    xs = sorted({r["dataset"] for r in rows if r["seeds"]}, key=dataset_rank)
    fig = new_figure(max(8, 2 + 1.5 * len(xs)), 3.5 * len(panels) + 1.5)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    drawn = set()
    for ax, (label, *sides) in zip(axes, panels):
        shown = []
        for i, (key, dept, _, colour) in enumerate(BASE_NEW_SERIES):
            cells = [(j + (i - 1.5) * 0.2, sides[dept].get(x)) for j, x in enumerate(xs)]
            cells = [(p, r) for p, r in cells if r is not None and r[key] is not None]
            if not cells:
                continue
            drawn.add(i)
            _bars(ax, [p for p, _ in cells], [r for _, r in cells], [r[key] for _, r in cells], 0.2, colour,
                  [_err(r[f"{key}_std"]) for _, r in cells])
            shown += [r[key] for _, r in cells]
        ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right")
        ax.set_title(f"{label}: base and new accuracy", fontsize=10)
        _accuracy_axis(ax, shown)
    handles = [Patch(color=BASE_NEW_SERIES[i][3]) for i in sorted(drawn)]
    labels = [BASE_NEW_SERIES[i][2] for i in sorted(drawn)]
    extra = _legend_extras(rows)
    fig.legend(handles + extra[0], labels + extra[1], loc="outside lower center", ncols=5, fontsize=8)
    _mark_demo(fig, rows)
    return fig


def dept_gains(rows):
    """[(label, {dataset: row with DePT}, the row its overall gain is read from, what that gain is
    over)] of each method variant with a DePT gain (the tables' paired gain) on some dataset: the
    average row, or the one dataset's row where there is one dataset."""
    out = []
    for label, _, dept in pairs(rows):
        per = {d: r for d, r in dept.items() if d != "average" and r.get("dept_gain_hm") is not None}
        if not per:
            continue
        overall = dept.get("average")
        if overall is not None and overall.get("dept_gain_hm") is not None:
            out.append((label, per, overall, overall["gain_over"]))
        elif len(per) == 1:
            (dataset, row), = per.items()
            out.append((label, per, row, f"{dataset}, seeds {row['gain_over']}"))
        else:
            out.append((label, per, None, "no average"))
    return out


def figure_dept_gain(rows):
    """DePT's gain (with minus without, percentage points, paired): left, per method over the datasets
    both have (base, new, H of the means, from the average row); right, the gain in H per dataset."""
    from matplotlib.patches import Patch

    gains = dept_gains(rows)
    datasets = sorted({d for _, per, _, _ in gains for d in per}, key=dataset_rank)
    fig = new_figure(max(10, 4 + 1.5 * len(datasets) + len(gains)), 5)
    left, right = fig.subplots(1, 2, width_ratios=[max(1, len(gains)) + 2, max(2, len(datasets)) * 1.5])
    averaged = [(i, g) for i, g in enumerate(gains) if g[2] is not None]
    values, handles = [], {left: ([], []), right: ([], [])}
    for k, (name, colour) in enumerate(zip(("base", "new", "H"), GAIN_COLOURS)):
        if not averaged:
            break
        key = {"base": "dept_gain_base", "new": "dept_gain_new", "H": "dept_gain_hm"}[name]
        heights = [g[2][key] for _, g in averaged]
        values += heights
        left.bar([i + (k - 1) * 0.25 for i, _ in averaged], heights, 0.25, color=colour,
                 hatch=[PARTIAL_HATCH if g[2].get("gain_partial") else "" for _, g in averaged], edgecolor="white",
                 linewidth=0)
        handles[left][0].append(Patch(color=colour))
        handles[left][1].append(name)
    left.set_xticks(range(len(gains)), [f"{g[0].split(' (')[0]}\n({g[3]})" for g in gains], rotation=20, ha="right",
                    fontsize=8)
    left.set_xlim(-1, len(gains))
    left.set_title("gain over the datasets both have", fontsize=10)
    width = 0.8 / max(1, len(gains))
    for i, (label, per, _, _) in enumerate(gains):
        xs = [j for j, d in enumerate(datasets) if d in per]
        cells = [per[datasets[j]] for j in xs]
        heights = [r["dept_gain_hm"] for r in cells]
        values += heights
        right.bar([j + (i - (len(gains) - 1) / 2) * width for j in xs], heights, width, color=series_colour(i),
                  hatch=[PARTIAL_HATCH if r.get("gain_partial") else "" for r in cells], edgecolor="white",
                  linewidth=0)
        handles[right][0].append(Patch(color=series_colour(i)))
        handles[right][1].append(label.split(" (")[0])
    right.set_xticks(range(len(datasets)), datasets, rotation=30, ha="right")
    right.set_title("gain in H per dataset (paired seeds)", fontsize=10)
    low, high = min([0, *values]), max([0, *values])
    span = (high - low) or 1
    for ax in (left, right):
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("DePT gain (points)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(low - 0.05 * span, high + 0.35 * span)
        shown, labels = handles[ax]
        if any(r.get("gain_partial") for _, per, avg, _ in gains for r in [*per.values(), *([avg] if avg else [])]):
            shown.append(Patch(facecolor="#bbbbbb", hatch=PARTIAL_HATCH, edgecolor="white"))
            labels.append("over fewer seeds than either side has")
        if shown:
            ax.legend(shown, labels, loc="upper center", ncols=min(3, len(shown)), fontsize=8)
    _mark_demo(fig, rows)
    return fig


def _legend_columns(labels, width):
    """As many legend columns as fit across ``width`` inches at font size 8 (a clipped legend hides
    which line is which)."""
    longest = max((len(label) for label in labels), default=1)
    return max(1, min(len(labels), int(width // (0.065 * longest + 0.7))))


def series_key(row):
    return (row["method"], row["dept"], row["trainer"], row["config"])


def series_label(row, many_configs):
    """"CoOp + DePT", with the config where the method has several in the figure."""
    return (row["method"] + (" + DePT" if row["dept"] else "")
            + (f" ({row['config']})" if row["method"] in many_configs else ""))


def few_shot_series(rows):
    """[(series key, label)] in the order the figure draws them: each its own colour and marker."""
    keys = sorted({series_key(r) for r in rows}, key=lambda k: (row_order({"method": k[0], "dept": k[1],
                                                                            "trainer": k[2], "config": k[3],
                                                                            "shots": 0})))
    methods = list(dict.fromkeys(k[0] for k in keys))
    many = {m for m in methods if len({k[3] for k in keys if k[0] == m}) > 1}
    first = {series_key(r): r for r in rows}
    return [(key, series_label(first[key], many)) for key in keys]


def figure_few_shot(rows):
    """Accuracy against shots (log 2 axis), one panel per dataset and one for the average; one line
    per method variant, each its own colour and marker (solid with DePT, dashed without); error bars
    are the std over seeds."""
    panels = sorted({r["dataset"] for r in rows if r["seeds"]}, key=dataset_rank)
    series = few_shot_series(rows)
    shots = sorted({r["shots"] for r in rows})
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(4.5 * ncols, 3.5 * nrows + 1.5)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles = {}
    for ax, dataset in zip(axes, panels):
        for i, (key, label) in enumerate(series):
            points = sorted((r["shots"], r["accuracy"], r["std"]) for r in rows
                            if series_key(r) == key and r["dataset"] == dataset and r["accuracy"] is not None)
            if not points:
                continue
            line = ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[_err(p[2]) for p in points],
                               color=series_colour(i), linestyle="-" if key[1] else "--",
                               marker=MARKERS[i % len(MARKERS)], markersize=5, capsize=2)
            handles.setdefault(label, line)
        ax.set_xscale("log", base=2)
        ax.minorticks_off()  # a log axis labels its minor ticks on a short range: only the shots run
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_title(f"{dataset}: test accuracy vs shots per class", fontsize=10)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize=8,
               ncols=_legend_columns(list(handles), 4.5 * ncols))
    _mark_demo(fig, rows)
    return fig


def figure_transfer(rows, title):
    """Accuracy on the source, each target and their average, one panel per method and variant:
    without DePT light, with DePT dark, error bars the std over seeds; the paper's figure, where the
    setting is its own, as a black line across the bar."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = pairs(rows)
    xs = sorted({(r["role"], r["dataset"]) for r in rows if r["seeds"]},
                key=lambda x: ({"source": 0, "target": 1, "average": 2}[x[0]], dataset_rank(x[1])))
    fig = new_figure(max(8, 2 + len(xs)), 3 * len(panels) + 1.5)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    drawn, papers_drawn = set(), False
    for ax, (label, *sides) in zip(axes, panels):
        shown = []
        for dept, colour in enumerate(TRANSFER_COLOURS):
            at = [(j, sides[dept].get(d)) for j, (_, d) in enumerate(xs)]
            at = [(j + (dept - 0.5) * 0.4, r) for j, r in at if r is not None and r["accuracy"] is not None]
            if not at:
                continue
            drawn.add(dept)
            _bars(ax, [p for p, _ in at], [r for _, r in at], [r["accuracy"] for _, r in at], 0.4, colour,
                  [_err(r["std"]) for _, r in at])
            papers = [(p, r["paper"]) for p, r in at if r["paper"] is not None]
            if papers:
                papers_drawn = True
                ax.hlines([v for _, v in papers], [p - 0.18 for p, _ in papers], [p + 0.18 for p, _ in papers],
                          colors="black", linewidth=2)
            shown += [r["accuracy"] for _, r in at] + [v for _, v in papers]
        ax.set_xticks(range(len(xs)), [d if role != "source" else f"{d}\n(source)" for role, d in xs],
                      rotation=30, ha="right")
        ax.set_title(f"{title}: {label}", fontsize=10)
        _accuracy_axis(ax, shown)
    names = ("without DePT", "with DePT")
    handles = [Patch(color=TRANSFER_COLOURS[d]) for d in sorted(drawn)]
    labels = [names[d] for d in sorted(drawn)]
    if papers_drawn:
        handles.append(Line2D([], [], color="black", linewidth=2))
        labels.append("paper")
    extra = _legend_extras(rows)
    fig.legend(handles + extra[0], labels + extra[1], loc="outside lower center", ncols=4, fontsize=8)
    _mark_demo(fig, rows)
    return fig


def draw_figures(tables, folder, titles):
    """Every figure the tables allow, saved under ``folder``: {file name: what it shows}."""
    drawn = {}
    os.makedirs(folder, exist_ok=True)
    rows = tables.get("base2new")
    if rows:
        save_figure(figure_base_vs_new(rows), os.path.join(folder, NAMES[0]))
        drawn[NAMES[0]] = "base vs new accuracy per dataset, each method without and with DePT"
        if dept_gains(rows):
            save_figure(figure_dept_gain(rows), os.path.join(folder, NAMES[1]))
            drawn[NAMES[1]] = "the gain from DePT per method (base, new, H) and per dataset (H), over paired seeds"
    if tables.get("few_shot"):
        save_figure(figure_few_shot(tables["few_shot"]), os.path.join(folder, NAMES[2]))
        drawn[NAMES[2]] = "few-shot accuracy against shots per dataset and the average"
    for protocol, name in (("cross_dataset", NAMES[3]), ("dg", NAMES[4])):
        if tables.get(protocol):
            save_figure(figure_transfer(tables[protocol], titles[protocol]), os.path.join(folder, name))
            drawn[name] = f"{titles[protocol].lower()}: source, targets and average per method"
    for name in NAMES:  # a figure of an earlier report that this one does not draw
        path = os.path.join(folder, name)
        if name not in drawn and os.path.isfile(path):
            os.remove(path)
    return drawn
