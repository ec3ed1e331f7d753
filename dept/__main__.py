"""``python -m dept <command>``: the protocols (base2new, cross-dataset, dg, few-shot), a grid file,
report, analyze, ablate, predict, export, train, data (check, fetch-splits, ...), dassl-fix (Dassl's warm-up
schedulers on current torch, for the whole environment)."""
import sys

USAGE = """usage: python -m dept <command> [args]

commands (protocols: python -m dept <protocol> --help):
  base2new      train on base classes, evaluate on new ones, write the results table
  cross-dataset train on ImageNet (all classes, 16 shots), evaluate on the 10 other datasets
  dg            the same ImageNet model on ImageNet-V2, -Sketch, -A, -R (domain generalisation)
  few-shot      train on all classes at 1, 2, 4, 8, 16 shots, on each dataset
  grid FILE.yaml  several protocols' grids from one file (dept/run/grid_file.py)
  report ROOT   tables (mean ± std, H, averages, the paper's figures) and figures of every finished run
  analyze channels RUN_DIR... | --protocol
                the paper's channel-bias analysis of trained runs (dept/analysis/channels_cli.py)
  ablate KEY VALUE...  a sweep of one config key through the runner, with its table and figure
  predict --model-dir RUN IMAGE_OR_FOLDER... [--top-k 5] [--out preds.csv|.json]
                a finished run's top-k classes per image (dept/analysis/predict_cli.py)
  export --model-dir RUN OUT.pt
                one file with what a run learned, its classes and its CLIP's identity (dept.load reads it)
  train         the train.py command line (train or evaluate one run)
  data check    report which datasets under --root are complete, partial or missing
  data fetch-splits   download the CoOp split files (gdown) and verify their checksums
  data prepare-demo   write the embedded digits demo dataset under --root
  dassl-fix install|uninstall|status [--site-dir DIR]
                patch Dassl's warm-up LR schedulers for torch >= 2.6 in every process of this
                environment (a .pth file in site-packages; see dept/util/dassl_compat.py)
"""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    from dept.util.logs import setup_logging

    setup_logging()
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command.replace("-", "_") in ("base2new", "cross_dataset", "dg", "few_shot"):
        from dept.run.cli import run_protocol

        return run_protocol(command, rest)
    if command == "grid":
        from dept.run.grid_file import main as grid_main

        return grid_main(rest)
    if command == "report":
        from dept.results.report import main as report_main

        return report_main(rest)
    if command == "analyze":
        if rest[:1] != ["channels"]:
            print("usage: python -m dept analyze channels RUN_DIR... | --protocol  (see --help)", file=sys.stderr)
            return 2
        from dept.analysis.channels_cli import main as channels_main

        return channels_main(rest[1:])
    if command == "ablate":
        from dept.analysis.ablation_cli import main as ablate_main

        return ablate_main(rest)
    if command == "predict":
        from dept.analysis.predict_cli import main as predict_main

        return predict_main(rest)
    if command == "export":
        from dept.analysis.export import main as export_main

        return export_main(rest)
    if command == "train":
        from dept.run.train import cli

        return cli(rest)
    if command == "dassl-fix":
        from dept.util.dassl_compat import main as dassl_fix_main

        return dassl_fix_main(rest)
    if command == "data":
        from dept.datasets.check import main as data_main

        return data_main(rest)
    print(f"unknown command '{command}'\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
