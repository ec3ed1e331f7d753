"""``train.py``: the CoOp family's command line, for our trainers and any registered Dassl trainer.

Flags are those of the official DePT/CoOp ``train.py``; config merge order is theirs too
(Dassl defaults + ``add_dept_config``, dataset yaml, method yaml, flags, trailing opts).
Differences: ``--seed 0`` is a seed, ``--load-epoch`` may be omitted (last epoch), and the log
goes to the console as well as to ``<output-dir>/log.txt``.
"""
import argparse
import difflib
import logging
import os
import sys

from dept.logs import run_log, setup_logging

logger = logging.getLogger("dept")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=str, default="", help="path to the datasets (DATASET.ROOT)")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, default="", help="checkpoint directory to resume training from")
    p.add_argument("--seed", type=int, default=None, help="random seed (0 included); default: cfg.SEED")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="path to the method config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="path to the dataset config file")
    p.add_argument("--trainer", type=str, default="", help="name of trainer")
    p.add_argument("--backbone", type=str, default="", help="name of CLIP backbone")
    p.add_argument("--head", type=str, default="", help="name of head")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="load model from this directory (eval-only)")
    p.add_argument("--load-epoch", type=int, default=None, help="epoch to load; default: the last one")
    p.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="config options KEY VALUE ...")
    return p


def setup_cfg(args):
    from dassl.config import get_cfg_default

    from dept.config import add_dept_config

    cfg = add_dept_config(get_cfg_default())
    for path in (args.dataset_config_file, args.config_file):
        if path:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Config file '{path}' does not exist.")
            cfg.merge_from_file(path)
    flags = {
        "DATASET.ROOT": args.root, "OUTPUT_DIR": args.output_dir, "RESUME": args.resume,
        "DATASET.SOURCE_DOMAINS": args.source_domains, "DATASET.TARGET_DOMAINS": args.target_domains,
        "INPUT.TRANSFORMS": args.transforms, "TRAINER.NAME": args.trainer,
        "MODEL.BACKBONE.NAME": args.backbone, "MODEL.HEAD.NAME": args.head,
    }
    opts = [item for key, value in flags.items() if value for item in (key, value)]
    if args.seed is not None:
        opts += ["SEED", args.seed]
    cfg.merge_from_list(opts)
    cfg.merge_from_list(args.opts or [])
    cfg.freeze()
    return cfg


def check_cfg(cfg):
    """Fail early, with what to do, on the mistakes that otherwise fail deep inside Dassl."""
    from dassl.engine import TRAINER_REGISTRY

    names = TRAINER_REGISTRY.registered_names()
    if cfg.TRAINER.NAME not in names:
        close = difflib.get_close_matches(cfg.TRAINER.NAME, names, n=3)
        raise ValueError(
            f"Unknown trainer '{cfg.TRAINER.NAME}'."
            + (f" Did you mean {close}?" if close else "")
            + f" Registered trainers include {sorted(n for n in names if 'CoOp' in n or 'DePT' in n)}."
        )
    if not cfg.DATASET.ROOT:
        raise ValueError("No dataset root: pass --root DATA (the folder holding dtd/, caltech-101/, ...).")
    if not os.path.isdir(os.path.expanduser(cfg.DATASET.ROOT)):
        raise FileNotFoundError(
            f"Dataset root '{cfg.DATASET.ROOT}' does not exist. Pass --root with the folder that holds "
            "the datasets (see DATASETS.md)."
        )


def main(argv=None):
    args = build_parser().parse_args(argv)
    import dept  # noqa: F401  (registers trainers and datasets)

    cfg = setup_cfg(args)
    setup_logging()
    with run_log(cfg.OUTPUT_DIR):
        return _run(args, cfg)


def _run(args, cfg):
    import torch
    from dassl.engine import build_trainer
    from dassl.utils import collect_env_info, set_random_seed

    check_cfg(cfg)
    if cfg.SEED >= 0:
        logger.info("Setting fixed seed: %d", cfg.SEED)
        set_random_seed(cfg.SEED)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    logger.info("Arguments: %s", vars(args))
    logger.info("Config:\n%s", cfg)
    logger.info("System info:\n%s", collect_env_info())

    try:
        trainer = build_trainer(cfg)
        if args.eval_only:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
            trainer.test()
        elif not args.no_train:
            trainer.train()
    except Exception:
        logger.exception("Run failed (output so far is kept in %s)", cfg.OUTPUT_DIR or "the console")
        raise
    return trainer


if __name__ == "__main__":
    main(sys.argv[1:])
