"""``benchmarks/benchmark.py feature-cache``: a grid's evaluations with and without the shared image features.

The trainers whose image encoder is frozen and unprompted (their record says
``frozen_image_encoder``; by default every registered one, with and without DePT) each evaluate one
dataset's test set for every seed, as a base-to-new grid does, through the trainer's own ``test()``
on real image files (JPEG, decoded and transformed by the Dassl loader), a CLIP with random weights
(ViT-B/16 shape, fp32 on the CPU; ``--quick``: the tiny CLIP) and each trainer's base-to-new config.

* **without the cache** (``DEPT.FEATURE_CACHE ""``): each trainer's evaluation is timed once; its
  seeds repeat the same computation (the same images through the same CLIP; only the prompts'
  values differ), so the grid's time is that × the number of seeds;
* **with the cache**: every evaluation of the grid is timed, trainer by trainer and seed by seed,
  on one cache folder: the first computes the features (a miss), the others read them. Each
  evaluation starts as a new run's process would (no CLIP file hash remembered in the process).

Building the trainers is not timed (the same on both sides).

    python benchmarks/benchmark.py feature-cache --images 50 --out r.json
    python benchmarks/benchmark.py feature-cache --quick      # the tiny CLIP, seconds: checks that it runs
"""
import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time

import torch

logger = logging.getLogger("benchmark")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frozen_trainers():
    import dept  # noqa: F401  (registers our trainers)
    from dept.core.methods import trainers

    return [name for name, cls in trainers().items() if cls.method.frozen_image_encoder]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmarks/benchmark.py feature-cache", description=__doc__.splitlines()[0])
    p.add_argument("--trainers", nargs="+", default=None, help="default: every trainer the cache serves")
    p.add_argument("--seeds", type=int, default=3, help="evaluations per trainer (a grid's seeds)")
    p.add_argument("--images", type=int, default=50, help="test images (JPEG, 256 px, centre-cropped to 224)")
    p.add_argument("--classes", type=int, default=10, help="classes of the test set")
    p.add_argument("--workers", type=int, default=2, help="DATALOADER.NUM_WORKERS (this machine's cores)")
    p.add_argument("--quick", action="store_true", help="the tiny CLIP (32 px), 2 trainers, 12 images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.trainers = args.trainers or ["ZeroshotCLIP", "CoOpDePT"]
        args.images, args.classes, args.workers = min(args.images, 12), min(args.classes, 3), 0
    args.trainers = args.trainers or frozen_trainers()
    served = set(frozen_trainers())
    other = [t for t in args.trainers if t not in served]
    if other:
        p.error(f"{other}: not served by the feature cache (their records say frozen_image_encoder=False)")
    return args


def make_dataset(root, classes, images, size, seed):
    """A DTD-layout dataset (the dtd config reads it): one train and one val image per class and
    ``images`` test images, random-coloured JPEGs of ``size`` pixels."""
    from PIL import Image

    rng = random.Random(seed)
    names = [f"class{c:02d}" for c in range(classes)]
    split = {"train": [], "val": [], "test": []}
    counts = [images // classes + (c < images % classes) for c in range(classes)]
    for label, (name, count) in enumerate(zip(names, counts)):
        os.makedirs(os.path.join(root, "dtd", "images", name), exist_ok=True)
        for i, part in enumerate(["train", "val"] + ["test"] * count):
            rel = f"{name}/{name}_{i:04d}.jpg"
            pixels = bytes(rng.randrange(256) for _ in range(size * size * 3))
            Image.frombytes("RGB", (size, size), pixels).save(os.path.join(root, "dtd", "images", rel), quality=90)
            split[part].append([rel, label, name])
    with open(os.path.join(root, "dtd", "split_zhou_DescribableTextures.json"), "w") as f:
        json.dump(split, f)


def build(trainer, root, weights, cache, args, config):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    from dept.run.train import build_parser, setup_cfg

    argv = ["--root", root, "--trainer", trainer, "--config-file", config,
            "--dataset-config-file", os.path.join(ROOT, "configs", "datasets", "dtd.yaml"),
            "MODEL.BACKBONE.PATH", weights, "DATASET.NUM_SHOTS", "1", "DATALOADER.NUM_WORKERS", str(args.workers),
            "DEPT.FEATURE_CACHE", cache]
    if args.quick:
        argv += ["INPUT.SIZE", "(32, 32)"]
    set_random_seed(1)
    t = build_trainer(setup_cfg(build_parser().parse_args(argv)))
    if getattr(t, "with_dept", False):
        t._head_trained = True  # its random head fused in, as a trained one is on base classes
    return t


def timed_test(t, cache):
    from dept.core import feature_cache

    feature_cache._CLIP_SHA.clear()  # each evaluation as a new run's process: the CLIP hash not in memory
    t.cfg.defrost()
    t.cfg.DEPT.FEATURE_CACHE = cache
    t.cfg.freeze()
    start = time.perf_counter()
    accuracy = t.test()
    return time.perf_counter() - start, float(accuracy)


def main(argv, write_weights):
    """The sub-command; ``write_weights(model_name, seed, path)`` is benchmark.py's random CLIP writer."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[benchmark] %(message)s", stream=sys.stderr)
    logger.setLevel(logging.INFO)
    logging.getLogger("dept").setLevel(logging.WARNING)
    folder = tempfile.mkdtemp(prefix="dept-feature-cache-benchmark-")
    rows = []
    load_before = os.getloadavg()
    try:
        weights, cache, root = (os.path.join(folder, n) for n in ("clip.pt", "cache", "data"))
        model = "tiny" if args.quick else "ViT-B/16"
        image_size = write_weights(model, args.seed, weights)
        make_dataset(root, args.classes, args.images, 32 if args.quick else 256, args.seed)
        for name in args.trainers:
            from dept.core.methods import trainers

            method = trainers()[name].method
            config = os.path.join(ROOT, "configs", "trainers", name, f"{method.config('base2new')}.yaml")
            t = build(name, root, weights, cache, args, config)
            uncached, accuracy = timed_test(t, "")
            cached = []
            for _ in range(args.seeds):
                seconds, cached_accuracy = timed_test(t, cache)
                if cached_accuracy != accuracy:
                    raise SystemExit(f"{name}: {cached_accuracy}% with the cache, {accuracy}% without")
                cached.append((seconds, t.feature_cache_log[-1]["hit"]))
            rows.append({"trainer": name, "uncached_s": uncached, "cached_s": [s for s, _ in cached],
                         "hits": [h for _, h in cached], "accuracy": accuracy})
            logger.info("%s: %.2f s uncached; cached %s", name, uncached,
                        ", ".join(f"{s:.2f} s ({'hit' if h else 'miss'})" for s, h in cached))
            del t
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    without = args.seeds * sum(r["uncached_s"] for r in rows)
    with_cache = sum(sum(r["cached_s"]) for r in rows)
    run = {"model": model, "image_size": image_size, "images": args.images, "classes": args.classes,
           "seeds": args.seeds, "workers": args.workers, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "load_average": {"before": load_before, "after": os.getloadavg()},  # other processes skew every figure
           "command": " ".join(["benchmarks/benchmark.py", "feature-cache", *argv]), "rows": rows,
           "without_cache_s": without, "with_cache_s": with_cache, "times_less": without / with_cache}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(run, f, indent=1)
    sys.stdout.write(render(run))
    return 0


def render(run):
    lines = [f"Evaluations of {len(run['rows'])} trainers × {run['seeds']} seeds, {run['images']} test images "
             f"({run['classes']} classes) at {run['image_size']} px, {run['model']} random weights, "
             f"{run['threads']} threads, {run['workers']} loader workers"
             + (f"; load average {run['load_average']['before'][0]:.2f} before, {run['load_average']['after'][0]:.2f} "
                "after" if "load_average" in run else ""), "",
             "| trainer | uncached s (one evaluation) | cached s, per seed |", "|---|---:|---|"]
    for r in run["rows"]:
        cached = ", ".join(f"{s:.2f}{'' if h else ' (miss)'}" for s, h in zip(r["cached_s"], r["hits"]))
        lines.append(f"| {r['trainer']} | {r['uncached_s']:.2f} | {cached} |")
    lines += ["", f"Grid without the cache: {run['without_cache_s']:.1f} s ({run['seeds']} × the uncached "
              f"evaluations); with it: {run['with_cache_s']:.1f} s, {run['times_less']:.1f}× less.", ""]
    return "\n".join(lines)
