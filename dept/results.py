"""The base-to-new results table, built from the run records (``dept_run.json``) of finished runs.

A table is one grid cell of the protocol: one trainer, one config (variant), one number of shots.
Its rows are the requested datasets, then their average. Each row is rebuilt from every finished,
verified seed found on disk for that cell (``SeedRuns``), not only the seeds asked for this time,
so a one-seed re-run or a second runner never drops rows. Averages follow the paper: per dataset,
base and new are seed means and H their harmonic mean; the average row is the mean of the
per-dataset base and new, and its H is the harmonic mean of those two means (not the mean of H).

What a reader must know goes into the ``note`` column: every note the runs' records carry
(an untrained head, classes with too few images, ...), seeds with a base result but no new one,
requested seeds that did not finish, and, when the paper's figures are left out, why. The paper's
figures are shown only for the paper's setting (``paper_setting``): 16 shots, the trainer's
default config with no variant options, a ViT-B/16 CLIP, a method and dataset the paper has, and
for the average row all 11 datasets.

``read_accuracy`` reads a log the way the CoOp family's ``parse_test_res.py`` does (the
``* accuracy: X%`` line after "Finish training" or "=> result"), for logs without a record.
"""
import csv
import io
import os
import re
from dataclasses import dataclass, field
from importlib import resources

from dept.files import write_text

ACCURACY = re.compile(r"\* accuracy: ([\d.]+)%")
PAPER_SHOTS = 16
PAPER_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                  "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
PAPER_CLIP = "ViT-B/16"
# The recorded architecture of the released ViT-B/16 CLIP (dept.engine.clip_summary).
VIT_B16_ARCH = {"embed_dim": 512, "vision_width": 768, "vision_layers": 12, "vision_patch_size": 16,
                "image_resolution": 224, "transformer_width": 512, "transformer_layers": 12}
COLUMNS = ("dataset", "seeds", "base", "new", "hm", "seed_ids", "paper_base", "paper_new", "paper_hm", "note")


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


def trainer_class(name):
    """The registered trainer class called ``name``, or None (not registered, or no Dassl)."""
    try:
        from dassl.engine import TRAINER_REGISTRY
    except ModuleNotFoundError:
        return None
    return TRAINER_REGISTRY._obj_map.get(name)


def paper_method(trainer):
    """(the paper's method name, 1 with DePT / 0 without): what the trainer class says
    (``paper_method``, and whether it is a DePT variant); for a name no class claims, its spelling
    (``<Method>DePT`` / ``ExtrasLinearProbe<Method>`` with DePT)."""
    cls = trainer_class(trainer)
    if cls is not None and getattr(cls, "paper_method", None):
        from dept.mixin import DePTMixin

        return cls.paper_method, int(issubclass(cls, DePTMixin))
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


@dataclass
class SeedRuns:
    """What one seed of one dataset contributes: base (train_base) and new (test_new) accuracy.

    ``base``/``new`` are None when that run is not finished and verified; ``problems`` says why a
    value is missing (shown in the note column), ``notes`` are the records' own notes, ``clips`` the
    CLIPs the records say were loaded.
    """

    seed: int
    base: float = None
    new: float = None
    notes: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    clips: list = field(default_factory=list)

    @classmethod
    def from_records(cls, seed, train=None, test=None, problems=()):
        """From the train_base and test_new records (None where unfinished or not verified)."""
        runs = cls(seed, problems=list(problems))
        for stage, record in (("train_base", train), ("test_new", test)):
            if record is None:
                continue
            accuracy = (record.get("result") or {}).get("accuracy")
            if stage == "train_base":
                runs.base = accuracy
            else:
                runs.new = accuracy
            runs.notes += [(stage, str(note)) for note in record.get("notes") or []]
            runs.clips.append(record.get("clip"))
        return runs


def _seed_list(seeds):
    return " ".join(str(s) for s in sorted(seeds))


def _mean(values):
    return sum(values) / len(values)


def _collect_notes(items):
    """Record notes, each once, with where they came from: ``items`` are (note, label) pairs."""
    sources = {}
    for note, label in items:
        sources.setdefault(note, [])
        if label not in sources[note]:
            sources[note].append(label)
    return [f"{note} ({', '.join(labels)})" for note, labels in sources.items()]


def _run_notes(runs):
    """(note, "seed S stage") for every note of the records behind a row."""
    return [(note, f"seed {r.seed} {stage}") for r in sorted(runs, key=lambda r: r.seed) for stage, note in r.notes]


def dataset_row(dataset, runs, requested_seeds=()):
    """One dataset's row from its ``SeedRuns`` (every seed found on disk)."""
    complete = [r for r in runs if r.base is not None and r.new is not None]
    notes, mentioned = [], set()
    for r in sorted(runs, key=lambda r: r.seed):
        why = f" ({'; '.join(r.problems)})" if r.problems else ""
        if r.base is not None and r.new is None:
            notes.append(f"seed {r.seed}: base {r.base:.2f} but no new result{why}")
        elif r.base is None and r.problems:
            notes.append(f"seed {r.seed} not counted{why}")
        else:
            continue
        mentioned.add(r.seed)
    done = {r.seed for r in complete}
    missing = [s for s in requested_seeds if s not in done and s not in mentioned]
    if missing:
        notes.append(f"requested seed {_seed_list(missing)} not finished")
    if not complete:
        notes.insert(0, "no finished seed")
    row = {"dataset": dataset, "seeds": len(complete), "seed_ids": _seed_list(done), "base": None, "new": None,
           "hm": None, "warnings": _collect_notes(_run_notes(complete)), "notes": notes,
           "record_notes": [(n, f"{dataset} {where}") for n, where in _run_notes(complete)],
           "clips": [c for r in complete for c in r.clips]}
    if complete:
        row["base"] = _mean([r.base for r in complete])
        row["new"] = _mean([r.new for r in complete])
        row["hm"] = harmonic_mean(row["base"], row["new"])
    return row


def average_row(rows):
    """The paper's average: mean of per-dataset base and new, H of those means."""
    done = [r for r in rows if r["seeds"]]
    row = {"dataset": "average", "seeds": min((r["seeds"] for r in done), default=0), "seed_ids": "",
           "base": None, "new": None, "hm": None, "notes": [], "clips": [c for r in done for c in r["clips"]],
           "warnings": _collect_notes([item for r in done for item in r["record_notes"]]), "record_notes": []}
    if done:
        row["base"] = _mean([r["base"] for r in done])
        row["new"] = _mean([r["new"] for r in done])
        row["hm"] = harmonic_mean(row["base"], row["new"])
        ids = {r["seed_ids"] for r in done}
        row["seed_ids"] = ids.pop() if len(ids) == 1 else ""
        if row["seed_ids"] == "":
            row["notes"].append("datasets have different seeds")
    if len(done) < len(rows):
        absent = [r["dataset"] for r in rows if not r["seeds"]]
        row["notes"].insert(0, f"averages {len(done)} of {len(rows)} requested datasets (no result: "
                               f"{', '.join(absent)})")
    return row


def _clip_problem(clips):
    """Why the CLIPs behind a row are not the paper's ViT-B/16, or None."""
    if not clips:
        return "no finished run to say which CLIP was used"
    for clip in clips:
        if not isinstance(clip, dict):
            return "the CLIP used was not recorded"
        name = clip.get("name")
        arch = clip.get("arch") or {}
        if name != PAPER_CLIP:
            return f"CLIP is not {PAPER_CLIP} ({name})"
        wrong = [f"{k} {arch.get(k)}" for k, v in VIT_B16_ARCH.items() if arch.get(k) != v]
        if wrong:
            return f"CLIP named {PAPER_CLIP} does not have its shape ({', '.join(wrong)})"
    return None


def paper_setting(trainer, shots, cfg_name, default_cfg, variant_options=()):
    """Why a table's runs are not in the paper's setting (table-wide reasons); [] when they are."""
    reasons = []
    if shots != PAPER_SHOTS:
        reasons.append(f"{shots} shots (paper: {PAPER_SHOTS})")
    if cfg_name != default_cfg:
        reasons.append(f"config {cfg_name} (paper: {default_cfg})")
    if variant_options:
        reasons.append("options " + ", ".join(f"{k}={v}" for k, v in variant_options) + " (paper: none)")
    method, with_dept = paper_method(trainer)
    if not any(key[:2] == (method, with_dept) for key in paper_base2new()):
        reasons.append(f"the paper has no {trainer} row")
    return reasons


def add_paper_numbers(rows, trainer, setting_reasons):
    """Fill the paper columns where a row's setting is the paper's; else its note says why not."""
    method, with_dept = paper_method(trainer)
    paper = paper_base2new()
    present = {r["dataset"] for r in rows if r["dataset"] != "average" and r["seeds"]}
    for row in rows:
        row["paper_base"] = row["paper_new"] = row["paper_hm"] = None
        if row["seeds"]:  # a row without results has nothing to compare: "no finished seed" says so
            ref = paper.get((method, with_dept, row["dataset"]))
            reasons = list(setting_reasons)
            if ref is None and not any(r.startswith("the paper has no") for r in reasons):
                reasons.append(f"the paper has no {row['dataset']} row")
            clip = _clip_problem(row["clips"])
            if clip:
                reasons.append(clip)
            if row["dataset"] == "average":
                missing = [d for d in PAPER_DATASETS if d not in present]
                extra = sorted(present - set(PAPER_DATASETS))
                if missing or extra:
                    reasons.append(f"averages {len(present)} datasets, not the paper's {len(PAPER_DATASETS)}"
                                   + (f" (missing: {', '.join(missing)})" if missing else "")
                                   + (f" (not in the paper: {', '.join(extra)})" if extra else ""))
            if reasons:
                row["notes"].append("paper figures omitted: " + "; ".join(reasons))
            else:
                row["paper_base"], row["paper_new"], row["paper_hm"] = ref
        row["note"] = "; ".join(row["warnings"] + row["notes"])
    return rows


def build_table(per_dataset, trainer, shots, cfg_name, default_cfg, variant_options=(), requested_seeds=()):
    """Rows for one grid cell from ``{dataset: [SeedRuns, ...]}`` (requested datasets, in order)."""
    rows = [dataset_row(d, runs, requested_seeds) for d, runs in per_dataset.items()]
    if len(rows) > 1:
        rows.append(average_row(rows))
    return add_paper_numbers(rows, trainer, paper_setting(trainer, shots, cfg_name, default_cfg, variant_options))


def _csv_value(value):
    if value is None:
        return ""
    return round(value, 2) if isinstance(value, float) else value


def _md_value(value):
    if value is None or value == "":
        return "-"
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def render_csv(rows, columns=COLUMNS):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return out.getvalue()


def render_markdown(rows, title, columns=COLUMNS):
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_value(row.get(c)) for c in columns) + " |" for row in rows]
    warnings = [(row["dataset"], n) for row in rows if row["dataset"] != "average" for n in row.get("warnings", ())]
    if warnings:
        lines += ["", "**WARNING: the runs' records carry notes; read them before using these numbers:**", ""]
        lines += [f"- **{dataset}**: {note}" for dataset, note in warnings]
    return "\n".join(lines) + "\n"


def write_tables(rows, csv_path, md_path, title, columns=COLUMNS):
    """Write both tables atomically (a reader sees the old table or the new one, whole)."""
    text = render_markdown(rows, title, columns)
    write_text(csv_path, render_csv(rows, columns))
    write_text(md_path, text)
    return text


# -- every method side by side ---------------------------------------------------------------------

SUMMARY_COLUMNS = ("dataset", "method", "base", "new", "hm", "dept_base", "dept_new", "dept_hm", "dept_gain_hm",
                   "paper_hm", "paper_dept_hm", "hm_vs_paper", "dept_hm_vs_paper", "note")


def _difference(a, b):
    return None if a is None or b is None else a - b


def build_summary(tables):
    """Every method of this run side by side, from ``{trainer: its table's rows}``.

    Per dataset (and the average): the zero-shot rows first (the reference), then each method
    without and with DePT (``base``/``new``/``hm`` and ``dept_*``), DePT's gain in H, the paper's H
    of each (filled only where the per-trainer table has it: the paper's setting), and our
    difference from the paper. Notes of the per-trainer rows are carried, prefixed by the trainer.
    """
    methods, datasets = {}, []
    for trainer, rows in tables.items():
        method, with_dept = paper_method(trainer)
        methods.setdefault(method, {})[with_dept] = (trainer, {r["dataset"]: r for r in rows})
        datasets += [r["dataset"] for r in rows if r["dataset"] not in datasets]
    datasets = [d for d in datasets if d != "average"] + (["average"] if "average" in datasets else [])

    def zero_shot(method):
        trainer = next(iter(methods[method].values()))[0]
        return getattr(trainer_class(trainer), "trained", True) is False

    order = sorted(methods, key=lambda m: not zero_shot(m))  # stable: zero-shot first, then as requested
    out = []
    for dataset in datasets:
        for method in order:
            plain, dept = (methods[method].get(k, (None, {})) for k in (0, 1))
            a, b = plain[1].get(dataset) or {}, dept[1].get(dataset) or {}
            row = {"dataset": dataset, "method": method,
                   "base": a.get("base"), "new": a.get("new"), "hm": a.get("hm"),
                   "dept_base": b.get("base"), "dept_new": b.get("new"), "dept_hm": b.get("hm"),
                   "paper_hm": a.get("paper_hm"), "paper_dept_hm": b.get("paper_hm")}
            row["dept_gain_hm"] = _difference(row["dept_hm"], row["hm"])
            row["hm_vs_paper"] = _difference(row["hm"], row["paper_hm"])
            row["dept_hm_vs_paper"] = _difference(row["dept_hm"], row["paper_dept_hm"])
            notes = [f"{trainer}: {r['note']}" for trainer, r in ((plain[0], a), (dept[0], b)) if r.get("note")]
            row["note"] = "; ".join(notes)
            row["warnings"] = [f"{trainer}: {w}" for trainer, r in ((plain[0], a), (dept[0], b))
                               for w in r.get("warnings", ())]
            out.append(row)
    return out
