"""``python -m dept <protocol>``: every run of a protocol's grid, skipped when done, resumed when half done.

The protocols (``base2new``, ``cross-dataset``, ``dg``, ``few-shot``; ``dept.store.protocols``)
run the grid trainers × datasets × seeds × shots: ``dept.run.plan`` makes its chains,
``dept.run.execute`` runs them (where: the back-end's choice, ``dept.run.backends``), and the
tables of its cells are rewritten from every finished run on disk (``dept.results.grid_tables``).
With no dataset root, it runs the embedded demo (``dept.run.demo``).
"""
import argparse
import logging
import os
import signal
import sys

from dept.core.build_config import CONFIGS_DIR
from dept.run.backends import Callbacks, add_backend_arguments, make_backend
from dept.run.demo import BANNER as DEMO_BANNER
from dept.run.demo import CONFIG as DEMO_CONFIG
from dept.run.demo import prepare_demo
from dept.run.errors import ClearParser, Interrupted, UsageError
from dept.run.execute import Executor
from dept.run.names import did_you_mean, unknown_datasets, unknown_trainers
from dept.run.plan import RUNNER_KEYS, Planner
from dept.store.layout import FEATURE_CACHE_DIR
from dept.store.protocols import DEMO_SOURCE, DEMO_TARGETS, PROTOCOLS
from dept.util.files import DiskFull

logger = logging.getLogger(__name__)
DEFAULT_TRAINERS = ("CoOpDePT",)
DEMO_TRAINERS = ("ZeroshotCLIP", "CoOp", "CoOpDePT")  # the trade-off: zero-shot, tuned, tuned with DePT


def build_parser(protocol=PROTOCOLS["base2new"]):
    p = ClearParser(prog=f"python -m dept {protocol.command}",
                                description=f"The {protocol.title.lower()} protocol: " + __doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("DATA", ""),
                   help="dataset root (default: $DATA); a relative path is relative to the current folder")
    what = "target datasets" if protocol.has_source else "datasets"
    p.add_argument("--datasets", nargs="+", default=list(protocol.default_datasets),
                   help=f"{what} (dataset config names; default: the paper's {len(protocol.default_datasets)})")
    if protocol.has_source:
        p.add_argument("--source", default="imagenet", help="the dataset trained on (all its classes)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    shots = protocol.default_shots
    p.add_argument("--shots", type=int, nargs="+", default=list(shots),
                   help=f"shots per class (default: {' '.join(map(str, shots))})")
    p.add_argument("--trainers", nargs="+", default=None,
                   help=f"trainers (default: {' '.join(DEFAULT_TRAINERS)}; on the demo {' '.join(DEMO_TRAINERS)}, side "
                        "by side)")
    p.add_argument("--config", default="", help="trainer config name (default: the trainer's config for this "
                   "protocol)")
    p.add_argument("--backbone", default="", metavar="NAME",
                   help="the CLIP of every run (RN50 ... ViT-L/14@336px): each trainer's config (or --config's) of "
                        "the same name for it (vit_b32_*, vit_l14_*, vit_l14_336_* beside vit_b16_*) where there is "
                        "one, else that config with MODEL.BACKBONE.NAME and INPUT.SIZE set (a variant folder of "
                        "their own)")
    p.add_argument("--configs-dir", default=CONFIGS_DIR, help="folder holding datasets/ and trainers/ yaml")
    p.add_argument("--output", default="output", help="output root (relative: to the current folder)")
    p.add_argument("--demo", action="store_true", help="run the embedded demo even if a root is set")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run and what would be skipped; write nothing")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the runs that failed (by default they are reported and left as they are)")
    p.add_argument("--feature-cache", default="", metavar="DIR",
                   help=f"where evaluations share the frozen CLIP image features of their test images (default: "
                        f"<output>/{FEATURE_CACHE_DIR}); only methods whose image encoder is frozen and unprompted")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="every evaluation computes its own image features (DEPT.FEATURE_CACHE \"\")")
    add_backend_arguments(p)
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="config options for every run, after --: -- OPTIM.MAX_EPOCH 5 DEPT.FUSION probs")
    return p


def parse_args(argv=None, protocol=PROTOCOLS["base2new"], raise_errors=False):
    """The runner's arguments, with relative paths resolved against the current folder (the caller's).
    ``raise_errors``: a mistake raises ``UsageError`` (a grid file names it with the file) instead of exiting."""
    parser = build_parser(protocol)
    parser.raise_errors = raise_errors
    args = parser.parse_args(argv)
    args.opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    args.demo = args.demo or not args.root
    if args.trainers is None:
        args.trainers = list(DEMO_TRAINERS if args.demo else DEFAULT_TRAINERS)
    args.output = os.path.abspath(os.path.expanduser(args.output))
    args.configs_dir = os.path.abspath(os.path.expanduser(args.configs_dir))
    if args.root and not args.demo:
        args.root = os.path.abspath(os.path.expanduser(args.root))
    args.protocol = protocol.name
    args.feature_cache = "" if args.no_feature_cache else os.path.abspath(os.path.expanduser(
        args.feature_cache or os.path.join(args.output, FEATURE_CACHE_DIR)))
    return args


def prepare(args, protocol):
    """The grid of ``args`` as (planner, its cells, its chains): the demo set up where asked (its data
    and CLIP, unless a dry run), every run's config built (a bad option fails here, before any run)."""
    for key in args.opts[0::2]:
        if key in RUNNER_KEYS:
            raise UsageError(f"{key} is set by the runner ({RUNNER_KEYS[key]}); do not pass it after --")
    if not args.seeds or not args.datasets or not args.trainers or not args.shots:
        raise UsageError("--seeds, --datasets, --shots and --trainers need at least one value each")
    check_values(args, protocol)
    if protocol.has_source and not args.demo:
        other = [d for d in args.datasets if not protocol.owns_target(d)]
        if other:  # their evaluations would be tabled by the other transfer protocol
            owner = next(p for p in PROTOCOLS.values() if p.has_source and p is not protocol)
            raise UsageError(f"{', '.join(other)}: a target of {owner.command}, not of {protocol.command} (whose "
                             f"targets are tabled apart): run it with `python -m dept {owner.command}`")
    runner_opts = []
    if args.demo:
        args.root, clip_path = prepare_demo(args.output, dry_run=args.dry_run)
        if protocol.has_source:
            args.source, args.datasets = DEMO_SOURCE, list(DEMO_TARGETS)
        else:
            args.datasets = [DEMO_SOURCE]
        args.config = args.config or DEMO_CONFIG
        runner_opts = ["MODEL.BACKBONE.PATH", clip_path]
    if getattr(args, "feature_cache", ""):  # no setting of a run: the shared features are the ones it would compute
        runner_opts += ["DEPT.FEATURE_CACHE", args.feature_cache]
    if args.demo and args.config == DEMO_CONFIG:
        missing = [t for t in args.trainers
                   if not os.path.isfile(os.path.join(args.configs_dir, "trainers", t, f"{DEMO_CONFIG}.yaml"))]
        if missing:
            raise UsageError(
                f"{', '.join(missing)}: no demo config ({args.configs_dir}/trainers/<trainer>/{DEMO_CONFIG}.yaml). "
                f"The demo runs each trainer's {DEMO_CONFIG}: its demo_tiny with the demo's pretrained CLIP; add one "
                "holding `_BASE_: demo_tiny.yaml` and `MODEL: {BACKBONE: {NAME: \"tiny-digits\"}}`")
    planner = Planner(args, protocol, runner_opts)
    cells = [planner.cell(trainer, shots) for trainer in args.trainers for shots in args.shots]
    chains = planner.chains(cells)
    for run in (run for chain in chains for run in chain.runs):
        try:
            planner.expected(run.argv)
        except Exception as err:  # a dataset yaml that does not merge, ...
            raise UsageError(f"{run.label}: its config cannot be built: {type(err).__name__}: {err}") from err
    return planner, cells, chains


def check_values(args, protocol):
    """The names and numbers of the grid that no run could honour, refused before anything is
    prepared or run (and by --dry-run): the first run would otherwise compute before the second
    found the mistake. Every such problem of the command is named at once, not one per attempt."""
    problems = []
    problem = unknown_trainers(args.trainers)
    if problem:
        problems.append(f"--trainers: {problem}")
    if not args.demo:
        problem = unknown_datasets(args.datasets, args.configs_dir)
        if problem:
            problems.append(problem)
        problem = unknown_datasets([args.source], args.configs_dir, flag="--source") if protocol.has_source else None
        if problem:
            problems.append(problem)
    bad_shots = [s for s in args.shots if s == 0 or s < -1]
    if bad_shots:
        problems.append(f"--shots {' '.join(map(str, bad_shots))}: a run takes K >= 1 images per class, or -1 "
                        "for all images (0 would train on no images)")
    bad_seeds = [s for s in args.seeds if s < 0]
    if bad_seeds:
        problems.append(f"--seeds {' '.join(map(str, bad_seeds))}: seeds are 0 or more (Dassl takes a negative "
                        "seed as 'no fixed seed': its run could be neither repeated nor resumed exactly)")
    if args.backbone:
        problems += backbone_problems(args)
    if problems:
        raise UsageError(problems=problems)


def backbone_problems(args):
    """``--backbone`` can mean one thing only: a released CLIP, on data of the user's (the demo has its
    own CLIP), and not also named after ``--`` (the planner adds its name and input size to every run)."""
    from dept.core.backbones import BACKBONES

    if args.backbone not in BACKBONES:
        return [f"--backbone {args.backbone}: not a CLIP backbone.{did_you_mean(args.backbone, BACKBONES)} "
                f"Valid: {', '.join(BACKBONES)}"]
    if args.demo:
        return [f"--backbone {args.backbone} with the demo: the demo runs its own tiny CLIP pretrained on its "
                "digits; give --root (your datasets) to run a grid on a released backbone"]
    given = [k for k in args.opts[0::2] if k in ("MODEL.BACKBONE.NAME", "INPUT.SIZE")]
    if given:
        return [f"--backbone {args.backbone} and {' and '.join(given)} after --: --backbone sets them (the "
                "backbone's name and input size); give one or the other"]
    return []


class ChainTask:
    """A chain of this grid run in another process (a SLURM task): ``prepare(key)`` rebuilds the
    grid from the same arguments and returns (its executor, the chain ``key``)."""

    def __init__(self, args, runner_opts):
        self.args, self.runner_opts = args, list(runner_opts)

    def prepare(self, key):
        protocol = PROTOCOLS[self.args.protocol]
        planner = Planner(self.args, protocol, self.runner_opts)
        cells = [planner.cell(t, s) for t in self.args.trainers for s in self.args.shots]
        chain = next((c for c in planner.chains(cells) if c.key == key), None)
        if chain is None:
            raise UsageError(f"the grid rebuilt in this task has no chain {key}: the configs changed since it "
                             "was submitted? Run the runner again: it submits the grid as it is now")
        return Executor(planner, self.args.retry_failed, protocol.command), chain


def main(args, protocol, executor):
    """Run the grid of ``args`` with ``executor`` (whose planner this sets); returns the exit code (0,
    or 1 when a run failed)."""
    if args.demo:
        logger.warning(DEMO_BANNER)
    planner, cells, chains = prepare(args, protocol)
    executor.planner = planner
    for cell in cells:
        if cell.options:
            logger.info("%s: options %s change the config: runs go to %s", cell.trainer,
                        ", ".join(f"{k}={v}" for k, v in cell.options), cell.variant)
        ignored = planner.setting_notes(cell)
        if ignored:
            logger.info("%s: %s belong to another method's config node: no setting of %s (ignored for its folder)",
                        cell.trainer, ", ".join(ignored), cell.trainer)
    backend = make_backend(args, Callbacks.of(executor, ChainTask(args, planner.runner_opts)))
    if args.dry_run:
        executor.dry_run(chains)
        backend.describe(chains)
        return report(executor, args)
    executor.start_progress(chains)
    backend.run(chains)
    from dept.results.grid_tables import write_grid_tables

    print(write_grid_tables(args.output, protocol.name, [(c.trainer, c.variant, c.shots) for c in cells],
                            planner.expect, planner.requested(), source=planner.source))
    if args.demo:
        print(DEMO_BANNER)
    return report(executor, args)


def report(executor, args):
    if not executor.failed:
        return 0
    lines = [f"{len(executor.failed)} run(s) {'would fail' if args.dry_run else 'failed'}:"]
    lines += [f"  {label}: {short}" for label, short in executor.failed]
    lines.append("Details are above and in the run folders' log.txt; fix the cause and run the same command "
                 "again (finished runs are skipped; failed ones are run again with --retry-failed).")
    print("\n".join(lines))
    return 1


def run_protocol(name, argv=None):
    """``python -m dept <protocol> ...``: exit 0, 1 (runs failed), 2 (usage), 128+N (signal N)."""
    protocol = PROTOCOLS[name.replace("-", "_")]
    args = parse_args(argv, protocol)
    executor = Executor(None, args.retry_failed, protocol.command)  # the grid's planner comes once it is made
    previous = {s: signal.signal(s, executor.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return main(args, protocol, executor)
    except Interrupted as err:
        print(err.line(), file=sys.stderr)
        return 128 + int(err.signum)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DiskFull as err:  # the runner's own files (tables, progress): the runs' are reported per run
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
