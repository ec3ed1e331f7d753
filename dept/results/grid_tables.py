"""The runner's tables: the report's tables (``dept.results.tables``) restricted to a grid's cells.

After each invocation the runner rewrites, under ``<output>/<protocol>/results/``, one table per
grid cell from every run of that cell on disk (every seed and dataset found, not only those asked
for this time), plus what this invocation asked for that is missing:

    base2new       <Trainer>_<variant>_shots<K>.{csv,md}
    cross_dataset  <Trainer>_<variant>_shots<K>[_from_<source>].{csv,md}
    dg             the same
    few_shot       <Trainer>_<variant>.{csv,md} (every number of shots)

and where the invocation has several trainers, ``summary<options>[_shots<K>][_from_<source>]``:
all of them side by side, DePT's gain beside each DePT trainer.

The runs are verified by the runner's own expectation (every setting it runs with); the rows,
notes, gains and paper columns are the report's. Each table is written under a lock, from the
records as they are then: the last table written has every run finished before it.
"""
import logging
import os

from dept.results.collect import collect
from dept.results.render import TITLES, render_csv, render_markdown
from dept.results.tables import build_tables
from dept.store.layout import Layout, source_folder, split_variant
from dept.util.files import FileLock, write_text

logger = logging.getLogger(__name__)


def _write(folder, name, protocol, rows, title):
    stem = os.path.join(folder, name)
    text = render_markdown(protocol, rows, title)
    write_text(stem + ".csv", render_csv(protocol, rows))
    write_text(stem + ".md", text)
    logger.info("results: %s.csv and %s.md", stem, stem)
    return text


def _scope(protocol, source):
    """(the runs of one series a table of ``protocol`` reads: keep(key, series, shots), its name suffix)."""
    if protocol == "base2new":
        return (lambda k, series, shots: (k.trainer, k.variant) in series and k.shots == shots
                and k.stage in ("train_base", "test_new")), ""
    if protocol == "few_shot":  # every number of shots in one table; sources are read to tell them apart
        return (lambda k, series, shots: (k.trainer, k.variant) in series), ""
    suffix = f"_{source_folder(source)}" if source_folder(source) else ""
    return (lambda k, series, shots: (k.trainer, k.variant) in series and k.shots == shots
            and (k.stage == "eval" and k.source == source or k.stage == "train" and k.dataset == source)), suffix


def write_grid_tables(root, protocol, cells, expect, requested, source=None):
    """Write the tables of ``cells`` ([(trainer, variant, shots)]) of ``protocol``; returns their markdown.

    ``expect(key, record)``: the runner's ``Expected`` of a key of its cells; ``requested``:
    {"seeds", "datasets", "shots"} this invocation asked for; ``source``: the transfer protocols'.
    One table per trainer and variant (and shots, but for few-shot, whose table has every number of
    shots), and where the invocation has several, a summary of all side by side, DePT's gain beside
    each DePT trainer."""
    folder = Layout(root).results_dir(protocol)
    os.makedirs(folder, exist_ok=True)
    keep, suffix = _scope(protocol, source)
    per_shots = protocol != "few_shot"
    tables = {}  # (name, title) -> (series, shots)
    for trainer, variant, shots in dict.fromkeys(c if per_shots else (*c[:2], None) for c in cells):
        name = f"{trainer}_{variant}" + (f"_shots{shots}" if per_shots else "") + suffix
        where = f", trained on {source}" if protocol in ("cross_dataset", "dg") else ""
        what = f"{TITLES[protocol].lower()} " if protocol != "base2new" else ""
        title = f"{trainer} {what}({variant}" + (f", {shots} shots" if per_shots else "") + f"{where})"
        tables[(name, title)] = ({(trainer, variant)}, shots)
    by_shots = {}
    for trainer, variant, shots in cells:
        by_shots.setdefault(shots if per_shots else None, {})[(trainer, variant)] = None
    for shots, members in by_shots.items():
        if len(members) > 1:
            options = sorted({split_variant(v)[1] for _, v in members})
            name = (f"summary{options[0] if len(options) == 1 else ''}" + (f"_shots{shots}" if per_shots else "")
                    + suffix)
            title = (f"{', '.join(t for t, _ in members)} side by side ({TITLES[protocol].lower()}"
                     + (f", {shots} shots" if per_shots else "") + ")")
            tables[(name, title)] = (set(members), shots)
    texts = []
    for (name, title), (series, shots) in tables.items():
        with FileLock(os.path.join(folder, f".{name}.lock")):
            runs = collect(root, expect=expect, keep=lambda k, se=series, sh=shots: keep(k, se, sh))[0]
            rows = build_tables(runs, root, (protocol,), requested)[0].get(protocol, [])
            texts.append(_write(folder, name, protocol, rows, title))
    return "\n".join(texts)
