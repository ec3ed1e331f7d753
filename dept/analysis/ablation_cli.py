"""``python -m dept ablate KEY VALUE...``: one config key swept over values through the base-to-new
runner, with a table and a figure of base, new and H against the value.

    python -m dept ablate DEPT.WEIGHT 0 0.3 0.7 1 --trainers CoOpDePT --datasets dtd --seeds 1 2 3
    python -m dept ablate OPTIM.MAX_EPOCH 2 5 10 --demo
    python -m dept ablate shots 1 4 16 --demo          (DATASET.NUM_SHOTS: the runner's --shots)

Each value is a grid of its own, its runs in their own variant folder (``<config>+KEY=value``), reused
when finished, on any back-end (runner options such as ``--backend local --workers 2`` pass through;
options for every run after ``--``). Every value is checked (the key exists, each value makes a valid
config for every trainer) before anything runs. The outputs go to ``<output>/analysis/ablation/<KEY>/``.
"""
import argparse
import difflib
import logging
import os
import sys

from dept.analysis.ablation import ablation_rows, figure, render_csv, render_markdown
from dept.analysis.grids import runner_argv
from dept.results.figures import save_figure
from dept.store.layout import ANALYSIS_DIR
from dept.util.files import atomic_open

logger = logging.getLogger(__name__)
SHOTS_KEYS = ("shots", "DATASET.NUM_SHOTS")


class AblationError(ValueError):
    pass


def build_parser():
    p = argparse.ArgumentParser(prog="python -m dept ablate", description=__doc__.splitlines()[0])
    p.add_argument("key", help="a config key (DEPT.WEIGHT, OPTIM.MAX_EPOCH, DEPT.FUSION, ...) or 'shots'")
    p.add_argument("values", nargs="+", help="the values to run, in the figure's order")
    p.add_argument("--trainers", nargs="+", default=None, help="default: CoOp and CoOpDePT")
    p.add_argument("--datasets", nargs="+", default=None, help="default: the runner's (the demo's on the demo)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--output", default="output", help="output root")
    p.add_argument("--root", default=os.environ.get("DATA", ""), help="dataset root (default: $DATA)")
    p.add_argument("--demo", action="store_true", help="run on the embedded demo even if a root is set")
    p.add_argument("--config", default="", help="trainer config name (default: the trainer's for base-to-new)")
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    fixed = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args, runner_args = build_parser().parse_known_args(argv)
    try:
        grids = plan(args, runner_args, fixed)
    except AblationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from dept.run.cli import run_protocol

    for value, grid_argv in grids:
        logger.info("ablation of %s: value %s", args.key, value)
        code = run_protocol("base2new", grid_argv)
        if code:
            print(f"error: the runs of {args.key}={value} did not all finish (exit {code}); the same command "
                  "resumes them", file=sys.stderr)
            return code
    written = write(args, grids)
    print("\n".join(["ablation written:", *(f"  {p}" for p in written)]))
    return 0


def _grid_argv(args, runner_args, fixed, value, dry_run=False):
    shots = value if args.key in SHOTS_KEYS else args.shots
    out = runner_argv(args.output, args.seeds, shots, args.root, args.demo, args.datasets)
    out += (["--dry-run"] if dry_run else []) + ["--trainers", *(args.trainers or ["CoOp", "CoOpDePT"])]
    if args.config:
        out += ["--config", args.config]
    opts = list(fixed) + ([] if args.key in SHOTS_KEYS else [args.key, value])
    return out + list(runner_args) + (["--", *opts] if opts else [])


def check_key(key):
    """The key exists in the config (with a "did you mean"), and the runner does not own it."""
    from dept.core.build_config import build_config
    from dept.core.settings import flat
    from dept.run.plan import RUNNER_KEYS

    if key in SHOTS_KEYS:
        return
    if key in RUNNER_KEYS:
        raise AblationError(f"{key} is set by the runner ({RUNNER_KEYS[key]}): it cannot be swept")
    known = flat(build_config())
    if key not in known:
        close = difflib.get_close_matches(key, list(known), n=3)
        raise AblationError(f"unknown config key {key}" + (f": did you mean {' or '.join(close)}?" if close else
                            " (keys are dotted upper-case names: DEPT.WEIGHT, OPTIM.MAX_EPOCH, ...)"))


def plan(args, runner_args, fixed):
    """[(value, the runner's argv for it)], every value's grid built (its configs checked) first."""
    from dept.run.cli import parse_args, prepare
    from dept.run.errors import UsageError
    from dept.store.protocols import PROTOCOLS

    check_key(args.key)
    if len(set(args.values)) != len(args.values):
        raise AblationError(f"a value is given twice: {' '.join(args.values)}")
    grids = []
    for value in args.values:
        grid_argv = _grid_argv(args, runner_args, fixed, value)
        if args.key in SHOTS_KEYS and not (value.isdigit() and int(value) > 0):
            raise AblationError(f"shots {value!r}: a number of images per class, 1 or more")
        try:
            planned = parse_args(_grid_argv(args, runner_args, fixed, value, dry_run=True), PROTOCOLS["base2new"])
            prepare(planned, PROTOCOLS["base2new"])
        except UsageError as err:
            raise AblationError(f"{args.key}={value}: {err}") from None
        except SystemExit:
            raise AblationError(f"{args.key}={value}: the runner refused these arguments (above)") from None
        grids.append((value, grid_argv))
    return grids


def results(args, grids):
    """[(value, base-to-new table rows of the value's cells)]."""
    from dept.results.collect import collect
    from dept.results.tables import build_tables
    from dept.run.cli import parse_args, prepare
    from dept.store.protocols import PROTOCOLS

    out = []
    for value, grid_argv in grids:
        planned = parse_args(grid_argv, PROTOCOLS["base2new"])
        planner, cells, _ = prepare(planned, PROTOCOLS["base2new"])
        wanted = {(c.trainer, c.variant, c.shots) for c in cells}
        runs = collect(planned.output, expect=planner.expect,
                       keep=lambda k, w=wanted: (k.trainer, k.variant, k.shots) in w)[0]
        rows = build_tables(runs, planned.output, ("base2new",), planner.requested())[0].get("base2new", [])
        out.append((value, rows))
    return out


def write(args, grids):
    by_value = results(args, grids)
    rows = ablation_rows(args.key, by_value)
    demo = any(r.get("demo") for _, value_rows in by_value for r in value_rows) or args.demo
    folder = os.path.join(os.path.abspath(args.output), ANALYSIS_DIR, "ablation", args.key)
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, n) for n in ("ablation.md", "ablation.csv", "ablation.png")]
    with atomic_open(paths[0], "w") as f:
        f.write(render_markdown(args.key, rows, demo))
    with atomic_open(paths[1], "w") as f:
        f.write(render_csv(rows))
    save_figure(figure(args.key, rows, list(args.values)), paths[2])
    print(render_markdown(args.key, rows, demo))
    return paths
