"""``python -m dept data <check|fetch-splits|prepare-demo>``: is the data where the loaders look?

``check`` walks every benchmark dataset under ``--root`` (and ``imagefolder/``, your own images,
when it is there) and prints, per dataset, found / partial
/ missing, the image counts of each split against the official sizes, and for every missing
piece the exact path it belongs at and where to get it. It reads directory listings and split
files only (no image is decoded unless ``--verify-images``), so it is cheap to run before a
long experiment.

``fetch-splits`` downloads the small files CoOp distributes on Google Drive (split files,
ImageNet's ``classnames.txt``, Flowers' ``cat_to_name.json``) with gdown and installs each one
only if it matches the pinned checksum (``dept.datasets.checksums``).

``prepare-demo`` writes the Digits demo dataset (no download).
"""
import argparse
import logging
import os
import sys

logger = logging.getLogger(__name__)

STATUS_ORDER = ("found", "partial", "missing")


def _datasets(names, root=None):
    """The dataset classes to walk: the benchmark (and ImageFolder when ``<root>/imagefolder`` is
    there), or the ones named (class or yaml-style name; ``ImageFolder:<folder>`` for your own images
    in another folder than ``imagefolder``, as DATASET.IMAGEFOLDER.DIR names it)."""
    from dept.datasets import BENCHMARK, Digits, DigitsInverted, ImageFolder

    def key(name):
        return name.lower().replace("-", "").replace("_", "")

    everything = (*BENCHMARK, Digits, DigitsInverted, ImageFolder)
    known = {key(cls.__name__): cls for cls in everything}
    known.update({key(cls.dataset_dir): cls for cls in everything})
    if not names:
        own = root is not None and os.path.isdir(os.path.join(os.path.expanduser(root), ImageFolder.dataset_dir))
        return list(BENCHMARK) + ([ImageFolder] if own else [])
    picked = []
    for name in names:
        name, _, folder = name.partition(":")
        cls = known.get(key(name)) or _registered(name)
        if folder and cls is ImageFolder:  # a subclass only to say where: inspect reads ``dataset_dir``
            cls = type(cls.__name__, (cls,), {"dataset_dir": folder, "__module__": cls.__module__})
        if cls is None:
            raise SystemExit(f"unknown dataset {name!r}; choose from {[c.__name__ for c in everything]}")
        picked.append(cls)
    return picked


def _registered(name):
    """A ``CoOpDataset`` subclass registered in Dassl under ``name`` (a user's own dataset), or None.

    The image-check error of every such dataset points to ``data check --dataset <its name>``."""
    from dassl.data.datasets import DATASET_REGISTRY
    from dept.datasets import CoOpDataset

    if name not in DATASET_REGISTRY.registered_names():
        return None
    cls = DATASET_REGISTRY.get(name)
    return cls if isinstance(cls, type) and issubclass(cls, CoOpDataset) else None


# -- check -----------------------------------------------------------------------------------------


def _counts_line(report, cls):
    parts = []
    for c in report.counts:
        if cls.lists_from_folders:
            text = f"{c.split} {c.found:,}"
            if c.expected is not None and c.expected != c.found:
                text += f" (official {c.expected:,})"
        else:
            text = f"{c.split} {c.found:,}/{c.listed:,}"
        parts.append(text)
    if report.num_classes is not None:
        parts.append(f"{report.num_classes} classes")
    return ", ".join(parts)


def format_report(report, cls, root):
    """The lines ``check`` prints for one dataset."""
    folder = os.path.relpath(report.dataset_dir, root) + "/"
    lines = [f"[{report.status:7}] {report.name:20} {folder:22} {_counts_line(report, cls)}".rstrip()]
    if report.status == "missing":
        lines.append(f"    belongs at {report.dataset_dir}/, with:")
    for piece in report.missing:
        lines.append(f"    missing {piece.what}: {os.path.join(report.dataset_dir, piece.path)}")
        lines.append(f"        get it: {piece.describe_source().replace('$DATA', root)}")
    for c in report.counts:
        if not cls.lists_from_folders and c.found < c.listed:
            lines.append(f"    {c.listed - c.found:,} of {c.listed:,} {c.split} images listed in the split are absent")
    if report.missing_images:
        lines.append("    e.g. " + ", ".join(report.missing_images[:3]))
    for path, reason in report.unreadable_images[:10]:
        lines.append(f"    unreadable image: {path} ({reason})")
    if len(report.unreadable_images) > 10:
        lines.append(f"    ... {len(report.unreadable_images) - 10} more unreadable images")
    for warning in report.warnings:
        lines.append(f"    warning: {warning}")
    caches = _fewshot_caches(report.dataset_dir)
    if caches:
        lines.append(f"    few-shot caches: {', '.join(caches)}")
    return lines


def _fewshot_caches(dataset_dir):
    folder = os.path.join(dataset_dir, "split_fewshot")
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.endswith(".pkl"))


def check(root, classes, verify_images=False, out=None):
    """Print the report of each dataset in ``classes``; return the reports."""
    out = out or sys.stdout
    root = os.path.abspath(os.path.expanduser(root))
    out.write(f"Data root: {root}\n")
    reports = []
    for cls in classes:
        report = cls.inspect(root, verify_images=verify_images)
        reports.append(report)
        for line in format_report(report, cls, root):
            out.write(line + "\n")
    tally = {status: sum(r.status == status for r in reports) for status in STATUS_ORDER}
    out.write("Summary: " + ", ".join(f"{n} {status}" for status, n in tally.items()) + ".\n")
    if tally["missing"] or tally["partial"]:
        out.write("DATASETS.md describes how to prepare each dataset; split files and class lists: "
                  f"python -m dept data fetch-splits --root {root}\n")
    return reports


# -- fetch-splits ------------------------------------------------------------------------------------


def gdown_download(file_id, dest):
    """Download a Google Drive file with gdown; the path written, or None on failure."""
    import gdown

    return gdown.download(id=file_id, output=dest, quiet=False)


def fetchable_pieces(classes):
    """``(cls, piece)`` for each file distributed on Google Drive with a pinned checksum."""
    return [(cls, p) for cls in classes for p in cls.pieces if p.gdrive_id and p.checksum]


MANUAL_SECTION = "Getting the split files by hand"  # the DATASETS.md section that lists every such file


def manual_route(cls, piece, dest, reason, root):
    """What to do when a download failed: the link to open in a browser and the exact place for the file.

    Not "run fetch-splits": that is what just failed (no network, Google Drive's quota, a region
    without access). DATASETS.md lists the same links, for a machine that cannot print this.
    """
    from dept.datasets.report import gdrive_view_url

    source = piece.source.rstrip(":").replace("$DATA", root)
    return (f"{cls.__name__}: could not download {piece.path} ({reason}).\n"
            f"    {piece.what}: {source}.\n"
            f"    By hand: open {gdrive_view_url(piece.gdrive_id)} in a browser, download the file and save it as\n"
            f"        {dest}\n"
            "    (no network here: download it on another machine and copy it over; DATASETS.md, section "
            f"\"{MANUAL_SECTION}\", lists every such file).\n"
            f"    Then `python -m dept data check --root {root}` says whether it matches the official file.\n")


def fetch_splits(root, classes, download=gdown_download, force=False, out=None):
    """Download each missing split / class-list file of ``classes`` and install it if verified.

    A file already present is left alone unless ``force``. A download whose checksum does not
    match is kept next to its place as ``<name>.download`` and reported; nothing unverified is
    installed. Returns the number of failures.
    """
    from dept.datasets.checksums import describe, verify_file

    out = out or sys.stdout
    root = os.path.abspath(os.path.expanduser(root))
    failures = 0
    for cls, piece in fetchable_pieces(classes):
        dest = os.path.join(root, cls.dataset_dir, piece.path)
        if os.path.exists(dest) and not force:
            state = "verified" if verify_file(dest, piece.checksum) else "present, differs from the official file"
            out.write(f"{cls.__name__}: {dest} already there ({state})\n")
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{dest}.download"
        try:
            got = download(piece.gdrive_id, tmp)
        except Exception as err:  # gdown raises many types (quota, permission, network)
            got, reason = None, f"{type(err).__name__}: {err}"
        else:
            reason = "the download failed"
        if not got or not os.path.isfile(tmp):
            failures += 1
            out.write(manual_route(cls, piece, dest, reason, root))
            continue
        if verify_file(tmp, piece.checksum):
            os.replace(tmp, dest)
            out.write(f"{cls.__name__}: {dest} downloaded and verified\n")
        else:
            failures += 1
            out.write(f"{cls.__name__}: {piece.path} from Google Drive does not match the pinned checksum "
                      f"({describe(tmp)}); kept as {tmp}, not installed. If you trust it, rename it to {dest}\n")
    return failures


# -- command line --------------------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m dept data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("check", "report found / partial / missing datasets under --root"),
        ("fetch-splits", "download the CoOp split files and class lists (gdown), verified by checksum"),
        ("prepare-demo", "write the Digits demo dataset under --root (no download)"),
    ):
        cmd = sub.add_parser(name, help=helptext, description=helptext)
        cmd.add_argument("--root", required=True, help="the data root (DATASET.ROOT, $DATA in DATASETS.md)")
        if name != "prepare-demo":
            cmd.add_argument("--dataset", nargs="+", default=[],
                             help="only these datasets (names such as DescribableTextures, or folders such as dtd; "
                                  "ImageFolder:<folder> for your own images in another folder than imagefolder)")
    sub.choices["check"].add_argument("--verify-images", action="store_true",
                                      help="also decode every image (slow) to find truncated or corrupt files")
    sub.choices["fetch-splits"].add_argument("--force", action="store_true",
                                             help="download again even if the file is already there")
    return parser


def main(argv=None):
    """Entry point of ``python -m dept data ...``; returns the exit status (0 = all good)."""
    args = build_parser().parse_args(argv)
    if args.command == "prepare-demo":
        from dept.datasets.digits import prepare_digits

        root = prepare_digits(args.root)
        sys.stdout.write(f"Digits demo ready under {root}/digits and {root}/digits_inverted\n")
        return 0
    classes = _datasets(args.dataset, args.root)
    if args.command == "fetch-splits":
        return 1 if fetch_splits(args.root, classes, force=args.force) else 0
    reports = check(args.root, classes, verify_images=args.verify_images)
    return 0 if all(r.status == "found" for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
