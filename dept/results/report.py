"""``python -m dept report ROOT``: every run under an output root, in tables and figures.

The report reads the whole root, whoever ran what: every run folder of the layout
(``dept.store.layout``), verified as the runner verifies it (``dept.results.collect``), built into
the tables the runner writes (``dept.results.tables``). It writes, under ``--out`` (default
``ROOT/report``):

* ``<protocol>.csv`` and ``.md`` for each protocol found (base2new, cross_dataset, dg, few_shot);
* ``missing.md``: every run that is not counted (failed, interrupted, running, unreadable, other
  settings than its folder stands for, an evaluation of another checkpoint, a damaged result),
  with its folder and why, and every run that is absent although the other runs of its table
  imply it;
* ``classes.md``: per-class accuracy of each DePT trainer beside its method, the classes where
  DePT gains and loses most (``dept.results.classes``);
* ``prompts.md``: the words nearest to each learned context vector, per run (``dept.results.prompts``);
* ``figures/*.png``: base vs new per dataset, DePT's gain, few-shot curves, cross-dataset and DG;
* ``README.md``, an index of the above; the markdown tables are printed too.

A folder's settings are checked against its trainer's config files as they are now (under
``--configs-dir``, default the package's ``configs/``): a run whose yaml was edited since, or a
record copied into another folder, is not counted.
"""
import argparse
import os
import sys

from dept.results import classes, prompts
from dept.results.collect import collect
from dept.results.figures import NAMES as FIGURE_NAMES
from dept.results.figures import draw_figures
from dept.results.render import TITLES, render_csv, render_markdown, render_missing
from dept.results.tables import PROTOCOL_ORDER, build_tables
from dept.store.layout import REPORT_DIR, Layout
from dept.util.files import write_text


def render_index(root, tables, counts, figures, skipped_figures, analyses=()):
    lines = [f"# Report of `{root}`", "", "Written by `python -m dept report`: every run folder under the root, "
             "read from its run record (`dept_run.json`) and verified.", "", "## Tables", ""]
    for protocol, rows in tables.items():
        lines.append(f"- [{TITLES[protocol]}]({protocol}.md) ([csv]({protocol}.csv)): {len(rows)} rows")
    lines.append(f"- [Missing and failed runs](missing.md): {counts['bad']} not counted, {counts['absent']} absent")
    lines += [f"- [{title}]({name}): {summary}" for name, title, summary in analyses]
    lines += ["", "## Figures", ""]
    if skipped_figures:
        lines.append(f"Not drawn: {skipped_figures}.")
    for name, what in figures.items():
        lines += [f"### {what}", "", f"![{what}](figures/{name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(root, out, figures=True, configs_dir=None, found=None):
    """Write the report of ``root`` into ``out`` (``found``: what ``collect`` found, if done already);
    returns (tables, runs, absent, the text to print)."""
    runs, strays = found or collect(root, configs_dir, skip=[out])
    tables, absent = build_tables(runs, root)
    texts = []
    for protocol in PROTOCOL_ORDER:
        stem = os.path.join(out, protocol)
        if protocol not in tables:
            for ext in (".csv", ".md"):  # a table of an earlier report that no longer has runs
                if os.path.isfile(stem + ext):
                    os.remove(stem + ext)
            continue
        text = render_markdown(protocol, tables[protocol], TITLES[protocol], f"Runs under `{root}`. ")
        write_text(stem + ".csv", render_csv(protocol, tables[protocol]))
        write_text(stem + ".md", text)
        texts.append(text)
    missing = render_missing(root, runs, absent, strays)
    write_text(os.path.join(out, "missing.md"), missing)
    texts.append(missing)
    analyses = []
    for module, render in ((classes, classes.render_classes), (prompts, prompts.render_prompts)):
        text, summary = render(root, runs)  # not printed: one line per class or per context vector
        write_text(os.path.join(out, module.FILE), text)
        analyses.append((module.FILE, module.TITLE, summary))
    folder = os.path.join(out, "figures")
    if figures:
        drawn = draw_figures(tables, folder, TITLES)
    else:
        drawn = {}
        for name in FIGURE_NAMES:  # a figure of an earlier report that this one does not draw
            if os.path.isfile(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
    counts = {"bad": sum(1 for r in runs if r.problem), "absent": len(absent)}
    write_text(os.path.join(out, "README.md"),
               render_index(root, tables, counts, drawn, "" if figures else "figures were turned off (--no-figures)",
                            analyses))
    return tables, runs, absent, "\n".join(texts)


def build_parser():
    from dept.core.build_config import CONFIGS_DIR

    p = argparse.ArgumentParser(prog="python -m dept report", description=__doc__.splitlines()[0])
    p.add_argument("root", help="the output root of the protocol runs (the runner's --output)")
    p.add_argument("--out", default=None, help="where the report goes (default: ROOT/report)")
    p.add_argument("--configs-dir", default=CONFIGS_DIR,
                   help="the folder holding datasets/ and trainers/ yaml the runs were made with (the runner's "
                        "--configs-dir; default: the package's)")
    p.add_argument("--no-figures", action="store_true", help="tables only (no matplotlib)")
    return p


def main(argv=None):
    """``python -m dept report ROOT [--out DIR] [--no-figures]``: exit 0, or 1 when no run is counted."""
    args = build_parser().parse_args(argv)
    root = os.path.abspath(os.path.expanduser(args.root))
    out = os.path.abspath(os.path.expanduser(args.out)) if args.out else Layout(root).folder(REPORT_DIR)
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
    found = collect(root, os.path.abspath(os.path.expanduser(args.configs_dir)), skip=[out])
    if not found[0]:
        print(f"error: no run found under {root} (run folders are {Layout.describe()}, each with a dept_run.json)",
              file=sys.stderr)
        return 1
    tables, runs, absent, text = write_report(root, out, figures=not args.no_figures, found=found)
    print(text)
    counted = sum(1 for r in runs if not r.problem)
    print(f"report: {out}/README.md ({counted} runs counted, {len(runs) - counted} not counted, "
          f"{len(absent)} absent: see missing.md)")
    if not counted:
        print(f"error: none of the {len(runs)} runs under {root} is finished and counted", file=sys.stderr)
        return 1
    return 0
