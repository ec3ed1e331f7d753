"""``python -m dept predict``: a finished run's top-k classes for images or folders of images.

    python -m dept predict --model-dir RUN|EXPORT.pt IMAGE_OR_FOLDER... [--classes names.txt] [--top-k 5]
        [--out preds.csv|.json] [--root DATA] [--clip FILE] [--batch-size 64]

Rows are (path, rank, class, probability), rank 1 the most probable; without ``--out`` they go to
stdout as CSV. A folder contributes its image files (by suffix, recursively). An image that cannot be
read is skipped and listed at the end (and in the JSON's "skipped"); a run that is not finished, or a
path that does not exist, is refused before any compute.
"""
import argparse
import csv
import json
import logging
import os
import sys

from dept.analysis.loaded import RunError, check_run
from dept.analysis.predict import load, read_image
from dept.core.class_list import read_class_names
from dept.util.images import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)
FIELDS = ("path", "rank", "class", "probability")


def build_parser():
    p = argparse.ArgumentParser(prog="python -m dept predict", description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them")
    p.add_argument("--model-dir", required=True,
                   help="the output folder of a finished training run, or an export of one (python -m dept export)")
    p.add_argument("--classes", default="", metavar="NAMES.txt",
                   help="classify into these classes (one name per line) with the learned prompts (ITM, the "
                        "new-class path) instead of the run's own")
    p.add_argument("--clip", default="", help="for an export: the CLIP file it was trained with, where its config "
                                              "does not find it")
    p.add_argument("--top-k", type=int, default=1, help="classes per image, most probable first (default 1)")
    p.add_argument("--out", default="", help="a .csv or .json file (default: CSV on stdout)")
    p.add_argument("--root", default="", help="dataset root, where it is not the one the run recorded")
    p.add_argument("--batch-size", type=int, default=64)
    return p


def image_paths(targets):
    """The files to predict: each named file as it is, each folder's image files (sorted, recursive)."""
    missing = [t for t in targets if not os.path.exists(t)]
    if missing:
        raise RunError(f"no such file or folder: {', '.join(missing)}")
    paths = []
    for target in targets:
        if not os.path.isdir(target):
            paths.append(target)
            continue
        for here, dirs, files in os.walk(target):
            dirs.sort()
            paths += [os.path.join(here, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
    return paths


def predict_paths(classifier, paths, top_k, batch_size):
    """(rows, skipped): the prediction rows, and (path, reason) of every image that could not be read."""
    rows, skipped = [], []
    for start in range(0, len(paths), batch_size):
        readable, tensors = [], []
        for path in paths[start:start + batch_size]:
            try:
                tensors.append(classifier.transform(read_image(path)))
            except Exception as err:  # noqa: BLE001 (any unreadable file: PIL raises several kinds)
                skipped.append((path, f"{type(err).__name__}: {err}"))
                continue
            readable.append(path)
        if not readable:
            continue
        import torch

        for path, top in zip(readable, classifier.predict(torch.stack(tensors), top_k=top_k)):
            rows += [{"path": path, "rank": rank, "class": name, "probability": round(prob, 6)}
                     for rank, (name, prob) in enumerate(top, 1)]
    return rows, skipped


def write(rows, skipped, out, classifier, model_dir):
    if out.lower().endswith(".json"):
        with open(out, "w") as f:
            json.dump({"model_dir": model_dir, "mode": classifier.mode, "classes": classifier.classes,
                       "predictions": rows, "skipped": [{"path": p, "error": e} for p, e in skipped]}, f, indent=1)
        return
    f = open(out, "w", newline="") if out else sys.stdout
    try:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if out:
            f.close()


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.top_k < 1:
            raise RunError("--top-k must be at least 1")
        if args.out and not args.out.lower().endswith((".csv", ".json")):
            raise RunError(f"--out {args.out}: name a .csv or .json file")
        classes = read_class_names(args.classes) if args.classes else None
        if not os.path.isfile(args.model_dir):
            check_run(args.model_dir)  # before the images are listed: a wrong folder costs nothing
        paths = image_paths(args.images)
        if not paths:
            raise RunError(f"no image files in {' '.join(args.images)} (suffixes {' '.join(IMAGE_SUFFIXES)})")
        classifier = load(args.model_dir, args.root or None, classes=classes, clip=args.clip)
    except (RunError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    record = classifier.record
    rows, skipped = predict_paths(classifier, paths, args.top_k, args.batch_size)
    write(rows, skipped, args.out, classifier, args.model_dir)
    logger.info("%d images predicted with %s (%s, %d classes)%s", len(paths) - len(skipped),
                record.get("trainer"), classifier.mode, len(classifier.classes), f": {args.out}" if args.out else "")
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):", file=sys.stderr)
        for path, reason in skipped:
            print(f"  {path}: {reason}", file=sys.stderr)
    return 0
