"""``train.py``: the CoOp family's command line, for our trainers and any registered Dassl trainer.

Flags are those of the official DePT/CoOp ``train.py``; config merge order is theirs too
(Dassl defaults + ``add_dept_config``, dataset yaml, method yaml, flags, trailing opts).
Differences: ``--seed 0`` is a seed, ``--load-epoch`` may be omitted (last epoch), and the log
goes to the console as well as to ``<output-dir>/log.txt``.

A run with an output directory holds a lock on it (``.dept.lock``: two processes never write one
run), records what it ran with and what it gave (``dept_run.json``, see ``dept.store.record``), and
refuses to resume from a checkpoint trained with other settings. Ctrl-C or SIGTERM saves the
state and ends with one line; the same command resumes it. Errors are printed once.
(``python -m dept.run.train`` is what the protocol runner runs for each run.)
"""
import argparse
import contextlib
import logging
import os
import re
import sys

from dept.core.build_config import build_config
from dept.core.methods import learns, method_of
from dept.core.settings import differences, format_differences
from dept.run.errors import ClearParser, missing_value, swallowed_key
from dept.run.names import unknown_trainer
from dept.store.record import CorruptRecord, lock_path, new_record, now, read_record, write_record
from dept.store.verify import has_checkpoints
from dept.util import interrupts
from dept.util.files import Busy, DiskFull, FileLock, holds_lock
from dept.util.logs import run_log, setup_logging

logger = logging.getLogger("dept")
ACCURACY = re.compile(r"\* accuracy: ([\d.]+)%")  # the line the CoOp family's parse_test_res.py reads


def build_parser():
    p = ClearParser(description=__doc__.splitlines()[0])
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
    p.add_argument("--untrained", action="store_true",
                   help="with --eval-only and no --model-dir: evaluate the model as initialised, on purpose "
                        "(noted in the run record and results table)")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="config options KEY VALUE ...")
    return p


def setup_cfg(args):
    """The run's config (``dept.core.build_config``): the files, the flags, the trailing options."""
    flags = {
        "DATASET.ROOT": args.root, "OUTPUT_DIR": args.output_dir, "RESUME": args.resume,
        "DATASET.SOURCE_DOMAINS": args.source_domains, "DATASET.TARGET_DOMAINS": args.target_domains,
        "INPUT.TRANSFORMS": args.transforms, "TRAINER.NAME": args.trainer,
        "MODEL.BACKBONE.NAME": args.backbone, "MODEL.HEAD.NAME": args.head,
    }
    pairs = [item for key, value in flags.items() if value for item in (key, value)]
    if args.seed is not None:
        pairs += ["SEED", args.seed]
    cfg = build_config(args.config_file, args.dataset_config_file, flags=pairs, opts=args.opts, freeze=False)
    _record_clip_from_environment(cfg)
    cfg.freeze()
    return cfg


def _record_clip_from_environment(cfg):
    """A CLIP file given by ``$DEPT_CLIP_PATH`` becomes ``MODEL.BACKBONE.PATH`` (absolute), so the
    run record, the runner's reuse check and resume see which weights a run used: otherwise a run
    finished on one file would be reused, or resumed, under another."""
    from dept.core.clip_loader import ENV_PATH

    env = os.environ.get(ENV_PATH, "")
    if env and not cfg.MODEL.BACKBONE.get("PATH", ""):
        cfg.MODEL.BACKBONE.PATH = os.path.abspath(os.path.expanduser(env))


def check_args(args, trainer=""):
    """The command-line mistakes that would otherwise give a number for a model that was never trained."""
    if args.eval_only and not args.model_dir and not args.untrained and learns(trainer or args.trainer):
        raise ValueError(
            "--eval-only needs --model-dir: the output directory of a training run"
            + (" (it was given but empty: an unset shell variable?)" if args.model_dir == "" and "--model-dir" in
               (sys.argv if args._argv is None else args._argv) else "")
            + ". To evaluate the model as initialised on purpose, pass --untrained."
        )
    if args.untrained and args.model_dir:
        raise ValueError("--untrained and --model-dir contradict each other: pass one of them.")
    if args.untrained and not args.eval_only:
        raise ValueError("--untrained goes with --eval-only.")


PATH_FLAGS = ("--root", "--output-dir", "--resume", "--config-file", "--dataset-config-file", "--model-dir")


def check_command_line(args):
    """A value that vanished from the command line (an unset shell variable) shifts the next word
    into its place; said as that, before yacs reports what it makes of the rest."""
    problem = swallowed_key(args, PATH_FLAGS)
    if problem:
        raise ValueError(problem)
    opts = [str(o) for o in args.opts or []]
    flags = [o for o in opts if o.startswith("--")]
    if flags:  # argparse hands everything after the first KEY to the options, flags included
        last = missing_value(opts[-1]) + " Also, " if opts[-1].startswith("--") else ""
        raise ValueError(f"{last}{', '.join(flags)} came after the config options (KEY VALUE ...), where it is "
                         "no flag: put the flags before the options.")
    if len(args.opts or []) % 2:
        raise ValueError(f"the config options after the flags are KEY VALUE pairs, but there are {len(args.opts)} "
                         f"words: {' '.join(map(str, args.opts))}. A value missing (an unset shell variable?), or "
                         "a flag placed after the options?")


def check_untrained_head(args, cfg):
    """``--untrained`` with DePT on classes its head would score: nothing is loaded, so the head is
    random and DePT would fuse it in. Said before the model is built."""
    if args.untrained and method_of(cfg.TRAINER.NAME)[1] and cfg.DATASET.SUBSAMPLE_CLASSES != "new":
        raise ValueError(
            f"--untrained loads nothing, so {cfg.TRAINER.NAME}'s CAT head is untrained, and on "
            f"{cfg.DATASET.SUBSAMPLE_CLASSES} classes DePT fuses it into the predictions: the number would be a "
            "random head's. Pass --model-dir with a training run of this trainer, evaluate on new classes "
            "(DATASET.SUBSAMPLE_CLASSES new: ITM alone), or evaluate the method without DePT "
            f"(--trainer {cfg.TRAINER.NAME.removesuffix('DePT').removeprefix('ExtrasLinearProbe')} --untrained)."
        )


def check_cfg(cfg, eval_only=False):
    """Fail early, with what to do, on the mistakes that otherwise fail deep inside Dassl."""
    problem = unknown_trainer(cfg.TRAINER.NAME)
    if problem:
        raise ValueError(problem[0].upper() + problem[1:])
    if not cfg.DATASET.ROOT:
        raise ValueError("No dataset root: pass --root DATA (the folder holding dtd/, caltech-101/, ...).")
    if not os.path.isdir(os.path.expanduser(cfg.DATASET.ROOT)):
        raise FileNotFoundError(
            f"Dataset root '{cfg.DATASET.ROOT}' does not exist. Pass --root with the folder that holds "
            "the datasets (see DATASETS.md)."
        )
    if not eval_only and cfg.OPTIM.MAX_EPOCH < 1:
        raise ValueError(f"OPTIM.MAX_EPOCH is {cfg.OPTIM.MAX_EPOCH}: training needs at least 1 epoch "
                         "(to evaluate without training, use --eval-only).")


def _lock(output_dir):
    """Hold ``<output_dir>/.dept.lock`` for the run; a runner may pass its own down (DEPT_LOCK_FD)."""
    path = lock_path(output_dir)
    inherited = os.environ.get("DEPT_LOCK_FD")
    if inherited and inherited.isdigit() and holds_lock(int(inherited), path):
        return None
    try:
        return FileLock(path).acquire(blocking=False)
    except Busy as err:
        raise Busy(f"{output_dir} is locked: another process is running there ({err}). "
                   "Wait for it, or use another --output-dir.") from None


def _check_previous(cfg, mode):
    """A training run may not continue in a folder that holds another config's checkpoints."""
    try:
        previous = read_record(cfg.OUTPUT_DIR)
    except CorruptRecord as err:
        logger.warning("%s; it is replaced.", err)
        return
    if previous is None or mode != "train":
        return previous
    try:
        found = differences(previous.get("config") or "", cfg)
    except Exception as err:  # noqa: BLE001  (a config that is not yaml: the checkpoints' own configs decide)
        logger.warning("%s/dept_run.json holds a config that cannot be read (%s: %s); it is replaced, and a "
                       "checkpoint is resumed only if its own config is this run's.", cfg.OUTPUT_DIR,
                       type(err).__name__, err)
        return previous
    if found and has_checkpoints(cfg.OUTPUT_DIR):
        raise ValueError(
            f"{cfg.OUTPUT_DIR} holds a run with other settings ({format_differences(found)}); continuing "
            "there would mix them. Use another --output-dir, or move that folder away to train anew."
        )
    return previous


def _check_same_data(cfg, mode, data, previous, model_dir):
    """A model trained on one split of a folder of images is not continued, nor evaluated, on another
    split of the same folder (made anew with DEPT_REBUILD_SPLIT=1): its test images may be ones it
    trained on. ``data``: what this run's dataset recorded (``split_identity``)."""
    if not data or not data.get("sha256"):
        return
    if mode == "train" and has_checkpoints(cfg.OUTPUT_DIR):
        other, where = (previous or {}).get("data") or {}, f"{cfg.OUTPUT_DIR} holds a run"
        fix = "Use another --output-dir, or move that folder away to train anew."
    elif mode == "eval" and model_dir:
        try:
            other = (read_record(model_dir) or {}).get("data") or {}
        except CorruptRecord:
            return
        where = f"The model in {model_dir} was"
        fix = "Train it again on this split (the runner does so itself for the runs it made)."
    else:
        return
    if other.get("split_file") == data.get("split_file") and other.get("sha256") not in (None, data["sha256"]):
        raise ValueError(f"{where} trained on another split of these images: {data['split_file']} was made anew "
                         f"since (DEPT_REBUILD_SPLIT=1), and its test images may be ones it trained on. {fix}")


def _session_accuracy(log_path, offset, mode):
    """The accuracy this session's log printed (any trainer): after "Finish training" when training."""
    with open(log_path, errors="replace") as f:
        f.seek(offset)
        text = f.read()
    start = text.rfind("Finish training" if mode == "train" else "=> result")
    found = ACCURACY.findall(text[start:]) if start >= 0 else []
    return float(found[-1]) if found else None


def main(argv=None):
    """Run one training or evaluation; raises on errors (``cli`` turns them into one line and an exit code)."""
    args = build_parser().parse_args(argv)
    args._argv = None if argv is None else list(argv)
    check_command_line(args)
    cfg = setup_cfg(args)
    check_args(args, cfg.TRAINER.NAME)
    setup_logging()
    check_cfg(cfg, eval_only=args.eval_only)
    check_untrained_head(args, cfg)
    mode = "eval" if args.eval_only else "train"
    ran = {}
    if not cfg.OUTPUT_DIR:
        with interrupts.handle_interrupts():
            return _run(args, cfg, {"notes": []}, ran)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    lock = _lock(cfg.OUTPUT_DIR)
    try:
        ran["previous"] = _check_previous(cfg, mode)
        record = new_record(cfg, mode, sys.argv[1:] if argv is None else argv)
        write_record(cfg.OUTPUT_DIR, record)
        with interrupts.handle_interrupts(), run_log(cfg.OUTPUT_DIR) as log_path:
            offset = os.path.getsize(log_path)
            try:
                trainer = _run(args, cfg, record, ran)
            except interrupts.RunInterrupted as err:
                err.saved = err.saved or getattr(ran.get("trainer"), "last_saved", None)
                record.update(status="interrupted", saved=err.saved, ended=now())
                write_record(cfg.OUTPUT_DIR, record)
                raise
            except BaseException as err:
                record.update(status="failed", error=f"{type(err).__name__}: {err}", ended=now())
                with contextlib.suppress(OSError):  # on a full disk the record may not be written either
                    write_record(cfg.OUTPUT_DIR, record)
                _log_failure(log_path, err)
                raise
            if record["result"] is None:
                accuracy = _session_accuracy(log_path, offset, mode)
                record["result"] = None if accuracy is None else {"split": cfg.TEST.SPLIT, "accuracy": accuracy}
            record.update(status="finished", ended=now())
            write_record(cfg.OUTPUT_DIR, record)
        return trainer
    finally:
        if lock is not None:
            lock.release()


def _log_failure(log_path, err):
    """The failure into log.txt only: the console gets it once, from ``cli``."""
    import traceback

    sys.stdout.flush()
    with contextlib.suppress(OSError), open(log_path, "a") as f:  # a full disk: the console still gets it
        if _is_clear(err):
            f.write(f"Run failed: {err}\n")
        else:
            f.write("Run failed:\n" + "".join(traceback.format_exception(err)))


def _is_clear(err):
    """Errors whose message says what is wrong and what to do: shown without a traceback."""
    from dept.datasets.errors import DatasetError

    return isinstance(err, (ValueError, FileNotFoundError, TypeError, Busy, DatasetError, PermissionError, DiskFull))


def _run(args, cfg, record, ran):
    import torch
    from dassl.engine import build_trainer
    from dassl.utils import collect_env_info, set_random_seed

    if cfg.SEED >= 0:
        logger.info("Setting fixed seed: %d", cfg.SEED)
        set_random_seed(cfg.SEED)
    if cfg.TRAIN.DETERMINISTIC:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    elif torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    logger.info("Arguments: %s", {k: v for k, v in vars(args).items() if not k.startswith("_")})
    logger.info("Config:\n%s", cfg)
    logger.info("System info:\n%s", collect_env_info())

    from dept.datasets.fewshot import evaluation_only

    with evaluation_only() if args.eval_only else contextlib.nullcontext():  # its K-shot list is never read
        trainer = ran["trainer"] = build_trainer(cfg)
    record["clip"] = getattr(trainer, "clip_info", None)
    # the data it ran on, where a dataset can say (ImageFolder: its split file's sha256; dept.store.verify)
    record["data"] = getattr(getattr(getattr(trainer, "dm", None), "dataset", None), "split_identity", None)
    _check_same_data(cfg, "eval" if args.eval_only else "train", record["data"], ran.get("previous"), args.model_dir)
    if args.eval_only:
        if not getattr(trainer, "trained", True):
            if args.model_dir:
                raise ValueError(f"{cfg.TRAINER.NAME} learns nothing, so there is no model to load: drop --model-dir.")
        elif args.untrained:
            note = "UNTRAINED: evaluated as initialised (--untrained), no checkpoint loaded"
            logger.warning(note)
            record["notes"].append(note)
        else:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
            record["checkpoint"] = getattr(trainer, "loaded_checkpoint", None)
        trainer.test()
    elif not args.no_train:
        trainer.train()
        record["checkpoint"] = getattr(trainer, "final_checkpoint", None)
        record["trainable"] = getattr(trainer, "trainable_summary", None)
        record["prompt_words"] = getattr(trainer, "prompt_words", None)
    result = getattr(trainer, "test_result", None)
    record["result"] = dict(result) if result else None
    record["head"] = getattr(trainer, "head_mode", None)
    record["feature_cache"] = getattr(trainer, "feature_cache_log", None)  # hit or miss, per evaluation
    dataset = getattr(getattr(trainer, "dm", None), "dataset", None)
    record["notes"] += list(getattr(trainer, "notes", None) or getattr(dataset, "notes", None) or [])
    return trainer


def cli(argv=None):
    """``python train.py`` / ``python -m dept train``: exit 0, 1 with one message, or 128+signal."""
    try:
        main(argv)
    except interrupts.RunInterrupted as err:
        print(err.line(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("Interrupted before the run started; nothing was saved.", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (one message, one exit code, whatever went wrong)
        if _is_clear(err):
            print(f"error: {err}", file=sys.stderr)
        else:
            import traceback

            traceback.print_exception(err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
