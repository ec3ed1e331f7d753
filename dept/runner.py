"""The base-to-new protocol: train on base classes, evaluate on new ones, tabulate.

For every dataset and seed: train with ``SUBSAMPLE_CLASSES base`` (Dassl evaluates the base test
split after training), then evaluate the saved model with ``SUBSAMPLE_CLASSES new``. Output layout
is the CoOp family's, so their ``parse_test_res.py`` still works::

    <output>/base2new/train_base/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<S>
    <output>/base2new/test_new/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<S>

Finished runs are skipped; an unfinished run's log is kept beside as ``log-unfinished-<n>.txt``.
With no dataset root, it runs the embedded demo (scikit-learn digits, tiny random CLIP).
"""
import argparse
import logging
import os
import subprocess
import sys
import time

from dept.results import add_paper_numbers, read_accuracy, summarize, write_tables

logger = logging.getLogger(__name__)

ALL_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
DEFAULT_CONFIGS = {"CoOp": "vit_b16_ep10_bs4_lr35", "CoOpDePT": "vit_b16_ep10_bs4_lr35",
                   "ExtrasLinearProbeCoOp": "vit_b16_ep10_bs4_lr35"}
REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEMO_BANNER = (
    "DEMO: no dataset root configured (--root or $DATA), so this runs the embedded demo: scikit-learn's "
    "handwritten digits (base 0-4, new 5-9) on a tiny CLIP with RANDOM weights. Its accuracies only show "
    "that the pipeline works; they say nothing about DePT. Point --root at real data for real numbers."
)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m dept base2new", description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.environ.get("DATA", ""), help="dataset root (default: $DATA)")
    p.add_argument("--datasets", nargs="+", default=list(ALL_DATASETS), help="dataset config names")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--trainers", nargs="+", default=["CoOpDePT"])
    p.add_argument("--config", default="", help="trainer config name (default: the trainer's b2n config)")
    p.add_argument("--configs-dir", default=REPO_CONFIGS, help="folder holding datasets/ and trainers/ yaml")
    p.add_argument("--output", default="output", help="output root")
    p.add_argument("--demo", action="store_true", help="run the embedded demo even if a root is set")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="config options for every run, after --: -- OPTIM.MAX_EPOCH 5 DEPT.FUSION probs")
    return p


def run_dir(output, stage, dataset, shots, trainer, cfg_name, seed):
    return os.path.join(output, "base2new", stage, dataset, f"shots_{shots}", trainer, cfg_name, f"seed{seed}")


def is_finished(directory, stage):
    marker = "Finish training" if stage == "train_base" else "=> result"
    return read_accuracy(os.path.join(directory, "log.txt"), after=marker) is not None


def keep_unfinished_log(directory):
    """Move an interrupted run's log aside so the rerun writes log.txt (parsers read only that)."""
    log = os.path.join(directory, "log.txt")
    if os.path.isfile(log):
        n = 1
        while os.path.exists(os.path.join(directory, f"log-unfinished-{n}.txt")):
            n += 1
        os.rename(log, os.path.join(directory, f"log-unfinished-{n}.txt"))


def train_command(args, dataset, trainer, cfg_name, seed, out_dir, model_dir=None):
    cmd = [sys.executable, "-m", "dept.train", "--root", args.root, "--seed", str(seed), "--trainer", trainer,
           "--dataset-config-file", os.path.join(args.configs_dir, "datasets", f"{dataset}.yaml"),
           "--config-file", os.path.join(args.configs_dir, "trainers", trainer, f"{cfg_name}.yaml"),
           "--output-dir", out_dir]
    if model_dir:
        cmd += ["--model-dir", model_dir, "--eval-only"]
    cmd += ["DATASET.NUM_SHOTS", str(args.shots),
            "DATASET.SUBSAMPLE_CLASSES", "new" if model_dir else "base", *args.opts]
    return cmd


def run_job(cmd, directory, stage, dry_run):
    if is_finished(directory, stage):
        logger.info("skip (finished): %s", directory)
        return True
    logger.info("run: %s", " ".join(cmd))
    if dry_run:
        return True
    keep_unfinished_log(directory)
    os.makedirs(directory, exist_ok=True)
    start = time.time()
    # Dassl's logger writes the run's log.txt; keep the console quiet and point at that log.
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        logger.error("FAILED (%.0fs, exit %d): %s\n%s\nFull log: %s", time.time() - start, proc.returncode,
                     directory, proc.stderr[-3000:], os.path.join(directory, "log.txt"))
        return False
    logger.info("done in %.0fs: %s", time.time() - start, directory)
    return True


def prepare_demo(args):
    """Write the digits dataset and a tiny CLIP file under the output root; set demo options."""
    from dept.datasets.digits import prepare_digits
    from dept.testing import save_tiny_clip

    demo_dir = os.path.join(args.output, "demo")
    os.makedirs(demo_dir, exist_ok=True)
    args.root = os.path.join(demo_dir, "data")
    prepare_digits(args.root)
    clip_path = os.path.join(demo_dir, "tiny_clip.pt")
    if not os.path.isfile(clip_path):
        save_tiny_clip(clip_path)
    args.datasets = ["digits"]
    args.config = args.config or "demo_tiny"
    args.opts = ["MODEL.BACKBONE.PATH", clip_path, *args.opts]


def base2new(argv=None):
    args = build_parser().parse_args(argv)
    args.opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    demo = args.demo or not args.root
    if demo:
        logger.warning(DEMO_BANNER)
        prepare_demo(args)
    failed = []
    tables = []
    for trainer in args.trainers:
        cfg_name = args.config or DEFAULT_CONFIGS.get(trainer, "vit_b16_ep10_bs4_lr35")
        per_seed = {}
        for dataset in args.datasets:
            per_seed[dataset] = {}
            for seed in args.seeds:
                train_dir = run_dir(args.output, "train_base", dataset, args.shots, trainer, cfg_name, seed)
                test_dir = run_dir(args.output, "test_new", dataset, args.shots, trainer, cfg_name, seed)
                ok = run_job(train_command(args, dataset, trainer, cfg_name, seed, train_dir),
                             train_dir, "train_base", args.dry_run)
                ok = ok and run_job(train_command(args, dataset, trainer, cfg_name, seed, test_dir, train_dir),
                                    test_dir, "test_new", args.dry_run)
                if not ok:
                    failed.append((trainer, dataset, seed))
                per_seed[dataset][seed] = (
                    read_accuracy(os.path.join(train_dir, "log.txt"), after="Finish training"),
                    read_accuracy(os.path.join(test_dir, "log.txt")),
                )
        rows = add_paper_numbers(summarize(per_seed), trainer)
        stem = os.path.join(args.output, "base2new", "results", f"{trainer}_{cfg_name}_shots{args.shots}")
        title = f"{trainer} ({cfg_name}, {args.shots} shots, seeds {' '.join(map(str, args.seeds))})"
        if demo:
            title += " - DEMO on random CLIP weights"
        tables.append(write_tables(rows, stem + ".csv", stem + ".md", title))
        logger.info("results: %s.csv and %s.md", stem, stem)
    print("\n".join(tables))
    if demo:
        print(DEMO_BANNER)
    if failed:
        print(f"{len(failed)} run(s) failed: {failed}; their logs are in the run folders.")
        return 1
    return 0
