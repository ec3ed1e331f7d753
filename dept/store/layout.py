"""Where each run lives under an output root, and which run a folder holds: one object for both.

A run is named by its ``RunKey``: its stage, the dataset it trained or evaluated on, the trainer,
the config variant, the shots, the seed, and for an evaluation of another dataset's model, that
model's source. The folders are the official scripts' (so their ``parse_test_res.py`` still reads
them)::

    base2new/train_base/<dataset>/shots_<K>/<Trainer>/<variant>/seed<S>     train on base classes
    base2new/test_new/<dataset>/shots_<K>/<Trainer>/<variant>/seed<S>       evaluate it on new classes
    <dataset>/<Trainer>/<variant>_<K>shots/seed<S>                          train on all classes
    evaluation/<Trainer>/<variant>_<K>shots/<target>/seed<S>                evaluate an ImageNet model
    evaluation/<Trainer>/<variant>_<K>shots/from_<source>/<target>/seed<S>  ... a model of another source

(CoCoOp's base-to-new, CoOp's ``main.sh``, CoCoOp/MaPLe's ``xd_train.sh`` and ``xd_test.sh``; the
official layout has no place for a source other than ImageNet, so such evaluations go one level
down.) A variant is the trainer config's name and the options that change it, sorted
(``vit_b16_ep10_bs4_lr35+DEPT.WEIGHT=0.2``; ``variant_name``), so runs with other settings never
share a folder. ``Layout.path(key)`` and ``Layout.key(path)`` are inverse; the runner, the report
and the tables ask them, and nothing else spells a folder.
"""
import hashlib
import os
import re
from dataclasses import dataclass, replace

#: the stages of a run, and the classes each one trains or evaluates on (DATASET.SUBSAMPLE_CLASSES)
STAGES = {"train_base": "base", "test_new": "new", "train": "all", "eval": "all"}
TRAINS = ("train_base", "train")
OFFICIAL_SOURCE = "imagenet"  # the source of the official cross-dataset and DG scripts
SOURCE_PREFIX = "from_"
EVALUATION = "evaluation"
PROTOCOL_TOP = "base2new"
#: folders under the root that hold no runs: the demo's data and CLIP, SLURM's job files, the report,
#: the analyses (``python -m dept analyze`` and ``ablate``), the runner's shared image features
DEMO_DIR, SLURM_DIR, REPORT_DIR, ANALYSIS_DIR = "demo", "slurm", "report", "analysis"
FEATURE_CACHE_DIR = "feature_cache"
NOT_RUNS = (DEMO_DIR, SLURM_DIR, REPORT_DIR, ANALYSIS_DIR, FEATURE_CACHE_DIR)
RESULTS = "results"  # <root>/<protocol>/results: the runner's tables

MAX_NAME = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")
# Where a variant's options start (``variant_name``): "+KEY.SUB=value" or the "+<n>more-<hash>" of a
# long name. A "+" inside a config name ("vit_b16_c2_ep20_batch4_4+4ctx") is not one.
_OPTIONS = re.compile(r"\+(?:[A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*=|\d+more-[0-9a-f]+$)")


@dataclass(frozen=True, order=True)
class RunKey:
    """One run of a grid: what it is, which the layout turns into its folder."""

    stage: str  # train_base | test_new | train | eval (STAGES)
    dataset: str  # trained on (train_base, train), evaluated on (test_new, eval): a dataset config name
    trainer: str
    variant: str  # the config's name and its options (``variant_name``)
    shots: int
    seed: int
    source: str = None  # eval: the dataset the evaluated model was trained on

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; one of {', '.join(STAGES)}")
        if self.stage == "eval" and not self.source:
            raise ValueError("an evaluation names the source of the model it evaluates")

    @property
    def trains(self):
        """The first run of a chain: it trains (or evaluates as built what learns nothing)."""
        return self.stage in TRAINS

    @property
    def subsample(self):
        return STAGES[self.stage]

    @property
    def cfg_name(self):
        return split_variant(self.variant)[0]

    @property
    def options_text(self):
        """The "+KEY=value..." of the variant ("" for the plain config)."""
        return split_variant(self.variant)[1]

    def train_key(self):
        """The training run whose model this evaluation evaluates (itself for a training run)."""
        if self.stage == "test_new":
            return replace(self, stage="train_base")
        if self.stage == "eval":
            return replace(self, stage="train", dataset=self.source, source=None)
        return self

    def label(self):
        return f"{self.stage} {self.dataset} seed {self.seed} ({self.trainer} {self.variant})"


def _value_text(value):
    if isinstance(value, (list, tuple)):
        return ",".join(_value_text(v) for v in value)
    return str(value)


def variant_name(cfg_name, options, limit=MAX_NAME):
    """``cfg+KEY=value+...`` (options sorted by key), filesystem-safe; a long one ends in a hash."""
    parts = [_UNSAFE.sub("_", f"{key}={_value_text(value)}") for key, value in sorted(options)]
    name = "+".join([cfg_name, *parts])
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(repr(sorted(options)).encode()).hexdigest()[:10]
    kept = [cfg_name]
    for i, part in enumerate(parts):
        left = len(parts) - i - 1
        if len("+".join([*kept, part]) + (f"+{left}more-{digest}" if left else f"+{digest}")) > limit:
            break
        kept.append(part)
    return "+".join(kept) + f"+{len(parts) - len(kept) + 1}more-{digest}"


def split_variant(variant):
    """(config name, "+KEY=value..." options or "") of a variant folder name."""
    found = _OPTIONS.search(variant)
    return (variant, "") if found is None else (variant[:found.start()], variant[found.start():])


def source_folder(source):
    """``from_<source>`` for a source other than ImageNet, else "" (the official layout)."""
    return f"{SOURCE_PREFIX}{source}" if source and source != OFFICIAL_SOURCE else ""


# The folders, one template per kind of run: a segment is a fixed name or a pattern of the key's
# fields. ``Layout.path`` fills them in, ``Layout.key`` matches them: one is the other's inverse.
_FIELD = {"dataset": rf"(?!(?:{PROTOCOL_TOP}|{EVALUATION})$)[^/]+",  # a top folder of another kind is none
          "trainer": r"[^/]+", "variant": r"[^/]+", "shots": r"\d+", "seed": r"\d+", "source": r"[^/]+"}
TEMPLATES = (
    ("train_base", (PROTOCOL_TOP, "train_base", "{dataset}", "shots_{shots}", "{trainer}", "{variant}", "seed{seed}")),
    ("test_new", (PROTOCOL_TOP, "test_new", "{dataset}", "shots_{shots}", "{trainer}", "{variant}", "seed{seed}")),
    ("eval", (EVALUATION, "{trainer}", "{variant}_{shots}shots", "{dataset}", "seed{seed}")),  # from ImageNet
    ("eval", (EVALUATION, "{trainer}", "{variant}_{shots}shots", SOURCE_PREFIX + "{source}", "{dataset}",
              "seed{seed}")),
    ("train", ("{dataset}", "{trainer}", "{variant}_{shots}shots", "seed{seed}")),
)


def _segment_pattern(segment):
    return re.compile(re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>{_FIELD[m.group(1)]})",
                             re.escape(segment)))


_PATTERNS = [(stage, [_segment_pattern(s) for s in template]) for stage, template in TEMPLATES]


class Layout:
    """The folders of the runs under one output root (see the module doc and ``TEMPLATES``)."""

    def __init__(self, root):
        self.root = os.path.abspath(os.path.expanduser(root))

    @staticmethod
    def _template(key):
        if key.stage == "eval":
            return TEMPLATES[2 if key.source == OFFICIAL_SOURCE else 3][1]
        return next(template for stage, template in TEMPLATES if stage == key.stage)

    def path(self, key):
        """The folder of ``key``'s run (absolute)."""
        fields = {"dataset": key.dataset, "trainer": key.trainer, "variant": key.variant, "shots": key.shots,
                  "seed": key.seed, "source": key.source}
        return os.path.join(self.root, *(segment.format(**fields) for segment in self._template(key)))

    def relative(self, key):
        return os.path.relpath(self.path(key), self.root)

    def key(self, path):
        """The ``RunKey`` of a run folder (absolute, or relative to the root), or None for any other folder."""
        rel = os.path.relpath(os.path.join(self.root, path), self.root)
        parts = [] if rel == "." else rel.split(os.sep)
        if parts and parts[0] in NOT_RUNS:
            return None
        for stage, patterns in _PATTERNS:
            if len(parts) != len(patterns):
                continue
            fields = {}
            for part, pattern in zip(parts, patterns):
                found = pattern.fullmatch(part)
                if found is None:
                    break
                fields.update(found.groupdict())
            else:
                source = fields.get("source") or (OFFICIAL_SOURCE if stage == "eval" else None)
                key = RunKey(stage, fields["dataset"], fields["trainer"], fields["variant"], int(fields["shots"]),
                             int(fields["seed"]), source)
                if self.relative(key) == os.path.normpath(rel):  # the layout writes exactly this folder
                    return key
        return None

    def folder(self, name):
        """A folder of the root that holds no runs (``DEMO_DIR``, ``SLURM_DIR``, ``REPORT_DIR``)."""
        assert name in NOT_RUNS, name
        return os.path.join(self.root, name)

    @staticmethod
    def describe():
        """The run folders, as a reader is told where runs are looked for."""
        return ", ".join("/".join(template) for _, template in TEMPLATES)

    def results_dir(self, protocol):
        """Where the runner writes a protocol's tables."""
        return os.path.join(self.root, protocol, RESULTS)

    def skipped(self, rel_parts):
        """Folders that hold no runs: the demo's data, SLURM's files, the report, the runner's
        tables (``<root>/<protocol>/results``), hidden folders."""
        name = rel_parts[-1]
        return (name.startswith(".") or (len(rel_parts) == 1 and name in NOT_RUNS)
                or (len(rel_parts) == 2 and name == RESULTS))

    def scan(self, skip=()):
        """(every run folder as (key, absolute path), the folders holding a run record outside the layout)."""
        from dept.store.record import RECORD_NAME

        skip = {os.path.abspath(p) for p in skip}
        runs, strays = [], []
        for here, dirs, files in os.walk(self.root):
            rel = os.path.relpath(here, self.root)
            parts = [] if rel == "." else rel.split(os.sep)
            dirs[:] = sorted(d for d in dirs if not self.skipped(parts + [d])
                             and os.path.abspath(os.path.join(here, d)) not in skip)
            key = self.key(rel) if parts else None
            if key is not None:
                dirs[:] = []  # a run folder's sub-folders hold its checkpoints, not runs
                runs.append((key, here))
            elif RECORD_NAME in files:
                strays.append(rel)
        return runs, strays
