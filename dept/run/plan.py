"""A protocol's grid as runs: which cells, which chains, each run's command line and expected settings.

A **cell** is one trainer, config variant and number of shots: the trainer's config for the
protocol (its method's record, or ``--config``) plus the options after ``--`` that change its
settings, which name the variant folder (``dept.store.layout.variant_name``: an option that
restates the yaml's value, or that belongs to another method, names nothing). A cell's **chains**
come from the protocol (``Protocol.chain``): one per dataset (or the source) and seed. A run's
command line is ``dept.run.train``'s, and the settings it will record are computed here from the
same command line (``Planner.expected``), so the runner can tell a finished run of exactly these
settings (reused) from one of other settings (refused).
"""
import os
import sys
import threading
from dataclasses import dataclass

from dept.core.backbones import BackboneError, backbone_config, backbone_options
from dept.core.build_config import CONFIGS_DIR
from dept.core.methods import config_for, learns
from dept.run.errors import UsageError
from dept.store.layout import Layout, RunKey, variant_name
from dept.store.verify import Expected, named_options

DEFAULT_CONFIG = "vit_b16_ep10_bs4_lr35"  # for a trainer without a method record
# Keys this runner sets on every run, and the flag that sets them.
RUNNER_KEYS = {"SEED": "--seeds", "DATASET.NUM_SHOTS": "--shots", "DATASET.SUBSAMPLE_CLASSES": "the protocol",
               "OUTPUT_DIR": "--output", "DATASET.ROOT": "--root", "DATASET.NAME": "--datasets",
               "TRAINER.NAME": "--trainers"}
TRAIN_MODULE = "dept.run.train"


@dataclass
class Cell:
    """One table's cell of the grid: a trainer, a config variant, a number of shots."""

    trainer: str
    cfg_name: str
    variant: str
    options: list
    shots: int


@dataclass
class Run:
    key: RunKey
    directory: str
    argv: list

    @property
    def trains(self):
        return self.key.trains

    @property
    def label(self):
        return self.key.label()

    @property
    def command(self):
        return [sys.executable, "-m", TRAIN_MODULE, *self.argv]


@dataclass
class Chain:
    """A training run and the evaluations of its model, run in this order, in one place."""

    runs: list

    @property
    def key(self):
        return self.runs[0].directory

    @property
    def label(self):
        first = self.runs[0].key
        evals = f" + {len(self.runs) - 1} evaluation(s)" if len(self.runs) > 1 else ""
        return f"{first.trainer} {first.variant} {first.dataset} {first.shots} shots seed {first.seed}{evals}"


def method_config(trainer, protocol):
    """The trainer's config name for ``protocol``: its method's (``Method.config``), else the default."""
    return config_for(trainer, protocol.config_key, DEFAULT_CONFIG)


class Planner:
    """The grid of one protocol command (its parsed ``args``) as cells, chains and runs."""

    def __init__(self, args, protocol, runner_opts=()):
        self.args, self.protocol = args, protocol
        self.runner_opts = list(runner_opts)
        self.layout = Layout(args.output)
        self.cells = {}  # (trainer, variant) -> Cell
        self._configs = {}
        self._expected = {}
        self._lock = threading.Lock()

    @property
    def source(self):
        return getattr(self.args, "source", None)

    def train_datasets(self):
        return [self.source] if self.protocol.has_source else list(self.args.datasets)

    # -- command lines and the settings they give ---------------------------------------------------
    def argv(self, key, cell, user_opts=True):
        """``dept.run.train``'s arguments for the run ``key`` of ``cell``."""
        a = self.args
        configs = a.configs_dir or CONFIGS_DIR
        argv = ["--root", a.root, "--seed", str(key.seed), "--trainer", key.trainer,
                "--dataset-config-file", os.path.join(configs, "datasets", f"{key.dataset}.yaml"),
                "--config-file", os.path.join(configs, "trainers", key.trainer, f"{cell.cfg_name}.yaml"),
                "--output-dir", self.layout.path(key)]
        if not learns(key.trainer):  # zero-shot CLIP: every run evaluates the model as built
            argv += ["--eval-only"]
        elif not key.trains:
            argv += ["--eval-only", "--model-dir", self.layout.path(key.train_key())]
        argv += ["DATASET.NUM_SHOTS", str(key.shots), "DATASET.SUBSAMPLE_CLASSES", key.subsample, *self.runner_opts]
        if not user_opts:
            return argv
        # --backbone's options are the user's: where the config does not restate them they name the variant
        return argv + list(a.opts) + (backbone_options(a.backbone) if getattr(a, "backbone", "") else [])

    def expected(self, argv):
        """The config ``dept.run.train`` will resolve for ``argv`` (computed here, nothing is run)."""
        key = tuple(argv)
        with self._lock:
            if key not in self._configs:
                from dept.run.train import build_parser, setup_cfg

                self._configs[key] = setup_cfg(build_parser().parse_args(list(argv)))
            return self._configs[key]

    def run(self, key):
        cell = self.cells[(key.trainer, key.variant)]
        return Run(key, self.layout.path(key), self.argv(key, cell))

    def expectation(self, key):
        """The settings ``key``'s run must have recorded (``dept.store.verify.Expected``), or None for a
        key outside this grid's cells."""
        cell = self.cells.get((key.trainer, key.variant))
        if cell is None:
            return None
        if key not in self._expected:
            plain = self.expected(self.argv(key, cell, user_opts=False))
            self._expected[key] = Expected.exactly(key, plain, self.expected(self.argv(key, cell)))
        return self._expected[key]

    def expect(self, key, record=None):
        """``expectation`` as ``dept.results.collect`` asks for it."""
        return self.expectation(key)

    # -- the grid ----------------------------------------------------------------------------------
    def cell(self, trainer, shots):
        """The cell of ``trainer`` at ``shots``: its config files checked, its variant named."""
        a = self.args
        configs = a.configs_dir or CONFIGS_DIR
        cfg_name = a.config or method_config(trainer, self.protocol)
        if getattr(a, "backbone", ""):  # the config of the same name for the backbone, where there is one
            cfg_name = backbone_config(cfg_name, a.backbone, configs, trainer)
        for path in (os.path.join(configs, "trainers", trainer, f"{cfg_name}.yaml"),
                     *(os.path.join(configs, "datasets", f"{d}.yaml")
                       for d in dict.fromkeys([*self.train_datasets(), *a.datasets]))):
            if not os.path.isfile(path):
                raise UsageError(f"no config file {path} (trainer {trainer}, config {cfg_name}; "
                                 f"configs folder {configs}, --configs-dir changes it)")
        cell = Cell(trainer, cfg_name, cfg_name, [], shots)
        named = {}  # the options' settings relative to each dataset's own config: one variant for all
        for dataset in dict.fromkeys([*self.train_datasets(), *(a.datasets if self.protocol.has_source else ())]):
            key = RunKey(self.protocol.train_stage, dataset, trainer, cfg_name, shots, a.seeds[0])
            try:
                plain = self.expected(self.argv(key, cell, user_opts=False))
                full = self.expected(self.argv(key, cell))
            except BackboneError as err:  # a method that cannot run on the backbone, or its input size
                said = f"--backbone {a.backbone}" if getattr(a, "backbone", "") else "the options after --"
                raise UsageError(f"{said}: {err}") from err
            except Exception as err:  # yacs: unknown key, odd list, bad value; alias conflicts
                raise UsageError(f"the options after -- do not make a valid config: {type(err).__name__}: "
                                 f"{err}") from err
            named[dataset] = named_options(plain, full, trainer)
        first, *rest = named.items()
        for dataset, options in rest:
            if options != first[1]:  # a folder's name must say what its runs' settings are, for every dataset
                raise UsageError(f"the options after -- change {first[0]}'s config by {first[1] or 'nothing'} but "
                                 f"{dataset}'s by {options or 'nothing'} (a dataset yaml sets one of them): run "
                                 "those datasets separately, or leave out the option their yaml already sets")
        cell.options = first[1]
        cell.variant = variant_name(cfg_name, cell.options)
        self.cells[(trainer, cell.variant)] = cell
        return cell

    def chains(self, cells):
        """Every chain of the grid: per cell, dataset (or the source) and seed."""
        out = []
        for cell in cells:
            for dataset in self.train_datasets():
                for seed in self.args.seeds:
                    keys = self.protocol.chain(cell.trainer, cell.variant, cell.shots, seed, dataset,
                                               targets=self.args.datasets)
                    out.append(Chain([self.run(k) for k in keys]))
        return out

    def requested(self):
        """What this invocation asked for, as the tables take it (missing ones are shown missing)."""
        return {"seeds": list(self.args.seeds), "datasets": list(self.args.datasets), "shots": list(self.args.shots)}

    def setting_notes(self, cell):
        """Options after -- that are no settings of ``cell``'s trainer (another method's keys)."""
        from dept.core.settings import of_another_method

        return [k for k in self.args.opts[0::2] if of_another_method(str(k), cell.trainer)]
