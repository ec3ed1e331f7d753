"""``python -m dept analyze channels``: the channel-bias analysis of finished runs, or of the runs it
trains itself (``--protocol``).

    python -m dept analyze channels RUN_DIR... [--out DIR] [--window W] [--root DATA]
    python -m dept analyze channels --protocol [--root DATA] [--output ROOT] [--datasets D ...]
        [--seeds S ...] [--shots K] [--trainer CoOp] [--out DIR] [runner options: --backend ...]

``--protocol`` runs, through the protocol runner (every finished run reused, every back-end), what
the paper's analysis compares on each dataset and seed: an "oracle" (the method trained on all
classes: the few-shot protocol's run), zero-shot CLIP, and the method and its DePT variant trained on
base classes; then analyses their training runs. With no data root it runs on the embedded demo.
"""
import argparse
import logging
import os
import sys

from dept.analysis.channel_report import write_outputs
from dept.analysis.channels import ChannelImportance, check_width, default_width
from dept.analysis.features import RunError, build_trainer, check_run, describe, feature_dim, feed, spaces
from dept.analysis.grids import runner_argv
from dept.store.layout import ANALYSIS_DIR

logger = logging.getLogger(__name__)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m dept analyze channels", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="finished training runs (their output folders)")
    p.add_argument("--protocol", action="store_true",
                   help="train what the analysis compares (oracle, zero-shot CLIP, the method with and without "
                        "DePT) with the runner, then analyse it")
    p.add_argument("--out", default="", help=f"where the CSVs, table and figures go (default: <output>/{ANALYSIS_DIR}/"
                   "channels with --protocol, else ./channels)")
    p.add_argument("--window", type=int, default=None, help="channels per window (default: D/8, the paper's)")
    p.add_argument("--root", default=None,
                   help="dataset root, where it is not the one the runs recorded (default: the runs' own; $DATA "
                        "with --protocol)")
    g = p.add_argument_group("with --protocol")
    g.add_argument("--output", default="output", help="the runner's output root")
    g.add_argument("--datasets", nargs="+", default=None, help="dataset config names (default: the demo's, or dtd)")
    g.add_argument("--seeds", nargs="+", type=int, default=[1])
    g.add_argument("--shots", type=int, default=16)
    g.add_argument("--trainer", default="CoOp", help="the method (its DePT variant is <trainer>DePT)")
    g.add_argument("--demo", action="store_true", help="run on the embedded demo even if a root is set")
    return p


def main(argv=None):
    args, runner_args = build_parser().parse_known_args(argv)
    try:
        if args.protocol:
            if args.runs:
                raise RunError("pass run folders or --protocol, not both")
            runs, out = protocol_runs(args, runner_args)
            if runs is None:
                return 1
        else:
            if runner_args:
                raise RunError(f"unknown arguments {' '.join(runner_args)} (runner options go with --protocol)")
            if not args.runs:
                raise RunError("nothing to analyse: pass the folders of finished training runs, or --protocol")
            runs, out = args.runs, args.out or "channels"
        written = analyse(runs, args.out or out, args.window, args.root or None)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(["channel analysis written:", *(f"  {p}" for p in written)]))
    return 0


def analyse(run_dirs, out_dir, window=None, root=None):
    """Check every run (finished, a model, the window fits), then measure each: returns the paths written."""
    checked = []
    for run_dir in run_dirs:
        record = check_run(run_dir)
        dim = feature_dim(record)
        if dim is None:
            raise RunError(f"{run_dir}: its record does not say which CLIP it used (a run from before 0.1?)")
        try:
            check_width(default_width(dim) if window is None else window, dim)
        except ValueError as err:
            raise RunError(f"{run_dir}: {err}") from None
        checked.append((run_dir, record, dim))
    entries = []
    for run_dir, record, dim in checked:
        width = default_width(dim) if window is None else window
        model = describe(run_dir, record)
        logger.info("channel importance of %s (%s): %d-channel windows over %d", model, run_dir, width, dim)
        trainer = build_trainer(run_dir, record, root)
        measures = {space: ChannelImportance(dim, trainer.dm.num_classes, width) for space in spaces(trainer)}
        feed(trainer, measures)
        entries += [(model, space, m.result(), {"width": width}) for space, m in measures.items()]
    note = ("Windows: " + ", ".join(sorted({f"{e[3]['width']} channels" for e in entries})) +
            " (circular; the paper's D/8 unless --window said otherwise).")
    return write_outputs(out_dir, entries, note)


def protocol_runs(args, runner_args):
    """Run the grids the analysis needs; returns (their training runs in the figures' order, out) or
    (None, None) when a run failed (the runner said which)."""
    from dept.run.cli import parse_args, prepare, run_protocol
    from dept.store.protocols import PROTOCOLS

    trainer = args.trainer
    root = os.environ.get("DATA", "") if args.root is None else args.root  # the runner's default data root
    common = runner_argv(args.output, args.seeds, args.shots, root, args.demo, args.datasets)
    grids = (("few_shot", [trainer]), ("base2new", ["ZeroshotCLIP", trainer, f"{trainer}DePT"]))
    for name, trainers in grids:
        code = run_protocol(name, [*common, "--trainers", *trainers, *runner_args])
        if code:
            return None, None
    runs = []
    for name, trainers in grids:
        protocol = PROTOCOLS[name]
        planner_args = parse_args([*common, "--trainers", *trainers, *runner_args], protocol)
        _, _, chains = prepare(planner_args, protocol)
        runs += [(run.key, run.directory) for chain in chains for run in chain.runs if run.key.trains]
    order = {"train": 0, "train_base": 1}
    rank = {t: i for i, t in enumerate(["ZeroshotCLIP", trainer, f"{trainer}DePT"])}
    runs.sort(key=lambda kp: (kp[0].dataset, kp[0].seed, order[kp[0].stage], rank.get(kp[0].trainer, 9)))
    out = os.path.join(os.path.abspath(args.output), ANALYSIS_DIR, "channels")
    return [path for _, path in runs], out
