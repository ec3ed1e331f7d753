"""The figure of our speed-ups and memory ratios against the official or original code, per method,
number of classes and training batch, drawn from saved benchmark runs (``benchmark.py --out``).

It reads only the saved JSON (nothing is measured), so ``python benchmarks/benchmark.py --figure
benchmarks/results/speedups.png`` redraws it after any new saved run. Only rows measured beside
their reference code count; a configuration saved by more than one run is taken from the first
file (sorted by name) and the others are named in the log, so that no figure mixes two runs.
"""
import glob
import json
import logging
import os

logger = logging.getLogger("benchmark")

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def pairs(paths=None):
    """(method, classes, batch, ours, reference, file) of every trained configuration with both
    figures, from ``paths`` (default: every ``benchmarks/results/*.json`` holding reference rows)."""
    paths = sorted(paths) if paths else sorted(glob.glob(os.path.join(RESULTS, "*.json")))
    found, where = [], {}
    for path in paths:
        with open(path) as f:
            run = json.load(f)
        results = run.get("results") if isinstance(run, dict) else None
        if not isinstance(results, list):
            continue  # another benchmark's file (feature_cache.json)
        for r in results:
            if r.get("kind") != "ours" or r.get("path") != "auto" or "step_s" not in r:
                continue
            ref = next((o for o in results if o.get("kind") == "official" and "step_s" in o
                        and all(o.get(k) == r.get(k) for k in ("method", "classes", "batch"))), None)
            if ref is None:
                continue
            key = (r["method"], r["classes"], r["batch"])
            if key in where:
                logger.warning("%s at %d classes, batch %d: in %s and %s; the figure shows the first", *key,
                               where[key], path)
                continue
            where[key] = path
            found.append((*key, r, ref, path))
    return found


def write_figure(out, paths=None):
    """Draw the two panels (training step speed-up; peak memory growth, ours ÷ reference) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = pairs(paths)
    if not rows:
        raise SystemExit("no saved run with rows of the official or original code to draw "
                         f"({', '.join(paths) if paths else os.path.join(RESULTS, '*.json')})")
    labels = []
    for method, _, batch, *_ in rows:
        label = method if batch == 4 else f"{method} (batch {batch})"
        if label not in labels:
            labels.append(label)
    classes = sorted({row[1] for row in rows})
    width = 0.8 / len(classes)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.7 * len(labels) + 2), 8), sharex=True)
    panels = ((axes[0], lambda o, ref: ref["step_s"] / o["step_s"], "training step: × faster than the reference"),
              (axes[1], lambda o, ref: o["peak_growth_bytes"] / ref["peak_growth_bytes"]
               if ref.get("peak_growth_bytes") else None, "peak memory growth: ours ÷ reference"))
    for ax, value, title in panels:
        for i, count in enumerate(classes):
            xs, ys = [], []
            for method, c, batch, ours, ref, _ in rows:
                label = method if batch == 4 else f"{method} (batch {batch})"
                y = value(ours, ref) if c == count else None
                if y:
                    xs.append(labels.index(label) + (i - (len(classes) - 1) / 2) * width)
                    ys.append(y)
            bars = ax.bar(xs, ys, width, label=f"{count} classes")
            ax.bar_label(bars, fmt="%.2g", fontsize=7)
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 1.6)  # room above the tallest bar for its label
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes: it covers no bar
    axes[1].set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    files = sorted({os.path.basename(row[-1]) for row in rows})
    fig.text(0.01, 0.005, "From " + ", ".join(files) + " (ViT-B/16 shape, fp32, 2 CPU cores; "
             "reference: Koorye/DePT, or the method's original code)", fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(out, dpi=120)
    plt.close(fig)
    logger.info("wrote %s: %d configurations from %s", out, len(rows), ", ".join(files))
    return rows
