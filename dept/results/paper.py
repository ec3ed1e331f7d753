"""The DePT paper's figures, and whether a table's cell may stand beside them.

The figures are the package's copies of the paper's tables (``dept/reference/*.csv``: base-to-new,
cross-dataset, domain generalisation; the paper has no few-shot table). A cell is compared with
the paper only in the paper's setting: 16 shots, the method's own config for the protocol with no
options, a CLIP recorded as ViT-B/16 with its shape, trained on ImageNet (transfer), a method and
dataset the paper has, and for an average every dataset the paper averages. Everywhere else the
paper's figure is left out and the note says why (``reasons``).
"""
import csv
import functools
import statistics
from importlib import resources

from dept.core.methods import config_for
from dept.store.layout import OFFICIAL_SOURCE, split_variant
from dept.store.protocols import BENCHMARK_11, PROTOCOLS

PAPER_SHOTS = 16
PAPER_DATASETS = BENCHMARK_11  # the datasets of the paper's base-to-new average
PAPER_SOURCE = OFFICIAL_SOURCE
PAPER_CLIP = "ViT-B/16"
# The recorded architecture of the released ViT-B/16 CLIP (dept.core.clip_loader.clip_summary).
VIT_B16_ARCH = {"embed_dim": 512, "vision_width": 768, "vision_layers": 12, "vision_patch_size": 16,
                "image_resolution": 224, "transformer_width": 512, "transformer_layers": 12}
# The names the tiny CLIPs record, and what a reader must know about numbers computed with them: the
# demo's, pretrained on the digits (dept.run.demo_clip), and the tests' random one (dept.core.testing).
TINY_CLIP = "tiny-random"
DEMO_CLIPS = {
    "tiny-digits": ("a tiny CLIP pretrained on the demo's digits", "a toy: it shows every step working, not the "
                    "paper's setting or its claims"),
    TINY_CLIP: ("a random tiny CLIP", "its accuracies show that the pipeline works and say nothing about DePT"),
}
FILES = {"base2new": "dept_paper_base2new.csv", "cross_dataset": "dept_paper_cross_dataset.csv",
         "dg": "dept_paper_domain_generalization.csv"}


def _rows(protocol):
    text = resources.files("dept").joinpath(f"reference/{FILES[protocol]}").read_text()
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


@functools.lru_cache(maxsize=None)
def base2new():
    """{(method, dept, dataset): (base, new, hm)} of the paper's base-to-new table."""
    return {(r["method"], int(r["dept"]), r["dataset"]): (float(r["base"]), float(r["new"]), float(r["hm"]))
            for r in _rows("base2new")}


@functools.lru_cache(maxsize=None)
def transfer(protocol):
    """{(method, dept): {dataset: accuracy}} of the paper's cross-dataset or DG table."""
    return {(r["method"], int(r["dept"])): {k: float(v) for k, v in r.items() if k not in ("method", "dept") and v}
            for r in _rows(protocol)}


@functools.lru_cache(maxsize=None)
def method_order():
    """The paper's methods in the order of its tables."""
    return list(dict.fromkeys(m for m, _, _ in base2new()))


def paper_config(trainer, protocol):
    """The config the paper's figures for ``trainer`` were computed with (its method's config for
    the protocol), or None for a trainer without a method record."""
    return config_for(trainer, PROTOCOLS[protocol].config_key)


def clip_problem(clips):
    """Why the CLIPs behind a cell are not the paper's ViT-B/16, or None."""
    if not clips:
        return "no finished run to say which CLIP was used"
    for clip in clips:
        if not isinstance(clip, dict):
            return "the CLIP used was not recorded"
        name, arch = clip.get("name"), clip.get("arch") or {}
        if name != PAPER_CLIP:
            return f"CLIP is not {PAPER_CLIP} ({name})"
        wrong = [f"{k} {arch.get(k)}" for k, v in VIT_B16_ARCH.items() if arch.get(k) != v]
        if wrong:
            return f"CLIP named {PAPER_CLIP} does not have its shape ({', '.join(wrong)})"
    return None


def is_demo(clips):
    """The name of a tiny CLIP behind a cell (the demo's or the tests'), or None: the random one first."""
    names = {c.get("name") for c in clips if isinstance(c, dict)}
    return next((name for name in (TINY_CLIP, *DEMO_CLIPS) if name in names), None)


def demo_note(name):
    """The bold line above a table of runs on a tiny CLIP."""
    what, meaning = DEMO_CLIPS[name]
    return f"**DEMO: these runs used {what}** (`{name}`): {meaning}."


def demo_mark(name):
    """The same, short, for a figure's title."""
    what, _ = DEMO_CLIPS[name]
    return f"DEMO: {what}" + (" (accuracies say nothing about DePT)" if name == TINY_CLIP else " (a toy)")


def reasons(row, protocol):
    """Why a cell is not in the paper's setting (its trainer's config, shots, options, CLIP, source)."""
    out = []
    if row["shots"] != PAPER_SHOTS:
        out.append(f"{row['shots']} shots (paper: {PAPER_SHOTS})")
    wanted = paper_config(row["trainer"], protocol)
    cfg, options = split_variant(row["config"])
    if wanted is None:
        out.append(f"{row['trainer']} has no method record to say the paper's config")
    elif cfg != wanted:
        out.append(f"config {cfg} (paper: {wanted})")
    if options:
        out.append(f"options {options[1:]} (paper: none)")
    if row.get("source") and row["source"] != PAPER_SOURCE:
        out.append(f"trained on {row['source']} (paper: {PAPER_SOURCE})")
    clip = clip_problem(row["clips"])
    if clip:
        out.append(clip)
    if not out:  # the name is the paper's config's: is the content too (a config folder edited)?
        problem = config_problem(row)
        if problem:
            out.append(problem)
    return out


_PACKAGE = {}


def config_problem(row):
    """Why the cell's runs do not have the settings of the package's own config of their name (an
    edited copy under another --configs-dir, say), or None."""
    from dept.core.build_config import CONFIGS_DIR
    from dept.core.settings import NEUTRAL_KEYS, differences, format_differences
    from dept.results.collect import FolderExpectation
    from dept.store.verify import UNNAMED

    package = _PACKAGE.setdefault("expect", FolderExpectation(CONFIGS_DIR))
    for key, config in row.get("configs", ()):
        try:
            plain = package(key, None).plain
            found = differences(config, plain, key.trainer, neutral=NEUTRAL_KEYS | UNNAMED)
        except Exception as err:  # noqa: BLE001  (no such config in the package, a yaml that does not merge)
            return f"the package has no config {key.cfg_name} of {key.trainer} to compare with ({type(err).__name__})"
        if found:
            return (f"settings not the package's {key.cfg_name}.yaml ("
                    + format_differences(found, limit=3, sides=("here", "there")) + ")")
    return None


def verdict(row, key, paper):
    """(ours minus the paper in units of the seeds' standard deviation, "yes"/"no": whether the paper's
    figure lies in the 95% confidence interval of our mean, mean ± t·sd/√n with Student's t for n-1
    degrees of freedom), or (None, None) under two seeds: one seed shows no noise to compare with."""
    values = [v[key] for v in row["per_seed"].values()] if key != "hm" else \
        [2 * v["base"] * v["new"] / (v["base"] + v["new"]) if v["base"] + v["new"] else 0.0
         for v in row["per_seed"].values()]
    if len(values) < 2:
        return None, None
    from scipy.stats import t

    sd = statistics.stdev(values)
    mean = statistics.fmean(values)
    if sd == 0:
        return None, "yes" if mean == paper else "no"
    n = len(values)
    return (row[key] - paper) / sd, "yes" if abs(mean - paper) <= t.ppf(0.975, n - 1) * sd / n ** 0.5 else "no"


def add_base2new(row):
    """The paper's base, new and H beside a row in the paper's setting; else the note says why not."""
    row.update(paper_base=None, paper_new=None, paper_hm=None, base_vs_paper=None, new_vs_paper=None,
               hm_vs_paper=None)
    for key in ("base", "new", "hm"):
        row[f"{key}_vs_paper_sd"] = row[f"{key}_within_noise"] = None
    if not row["seeds"]:
        return
    why = reasons(row, "base2new")
    ref = base2new().get((row["method"], row["dept"], row["dataset"]))
    if ref is None:
        why.append(f"the paper has no {label(row)} {row['dataset']} row")
    if row["dataset"] == "average":
        if set(row["covers"]) != set(PAPER_DATASETS):
            why.append(f"averages {len(row['covers'])} datasets, not the paper's {len(PAPER_DATASETS)}")
    if why:
        row["notes"].append("paper figures omitted: " + "; ".join(why))
        return
    row["paper_base"], row["paper_new"], row["paper_hm"] = ref
    for key in ("base", "new", "hm"):
        row[f"{key}_vs_paper"] = row[key] - row[f"paper_{key}"]
        row[f"{key}_vs_paper_sd"], row[f"{key}_within_noise"] = verdict(row, key, row[f"paper_{key}"])


def add_transfer(row, protocol):
    """The paper's cross-dataset or DG figure beside a row in its setting. The paper's DG table
    prints no average: ours is compared with the mean of its four targets, and the note says so."""
    row["paper"] = row["vs_paper"] = row["vs_paper_sd"] = row["within_noise"] = None
    if not row["seeds"]:
        return
    paper = transfer(protocol).get((row["method"], row["dept"]))
    why = reasons(row, protocol)
    value = None
    if paper is None:
        why.append(f"the paper has no {label(row)} row")
    elif row["dataset"] == "average":
        wanted = set(paper) - {PAPER_SOURCE, "average"}
        if set(row["covers"]) != wanted:
            why.append(f"averages {len(row['covers'])} targets, not the paper's {len(wanted)}")
        elif "average" in paper:
            value = paper["average"]
        else:
            value = statistics.fmean(paper[d] for d in sorted(wanted))
            row["notes"].append(f"paper average: the mean of its {len(wanted)} targets (it prints none)")
    else:
        value = paper.get(row["dataset"])
        if value is None:
            why.append(f"the paper has no {row['dataset']} column")
    if why:
        row["notes"].append("paper figure omitted: " + "; ".join(why))
    else:
        row["paper"], row["vs_paper"] = value, row["accuracy"] - value
        row["vs_paper_sd"], row["within_noise"] = verdict(row, "accuracy", value)


def label(row):
    return row["method"] + (" + DePT" if row["dept"] else "")
