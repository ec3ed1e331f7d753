"""A finished run, loaded back: its record checked, its trainer rebuilt from the config it recorded and
its trained tensors loaded as an evaluation loads them. The analysis (``features``) and predictions
(``predict``) share it; nothing is written into the run's folder."""
import contextlib
import io
import os
import tempfile

from dept.core.methods import learns
from dept.store.record import CorruptRecord, read_record


class RunError(ValueError):
    """A folder the analysis cannot read as a finished training run."""


def check_run(run_dir):
    """The record of a finished run that has a model to analyse (raises ``RunError`` saying what to pass
    instead); read before any compute, so that a mistake in the fifth folder costs nothing."""
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir}: no such folder")
    try:
        record = read_record(run_dir)
    except CorruptRecord as err:
        raise RunError(f"{run_dir}: {err}") from None
    if record is None:
        raise RunError(f"{run_dir} is not a run folder (no dept_run.json): pass the output folder of a training run")
    if record.get("status") != "finished":
        raise RunError(f"{run_dir}: the run is not finished (status {record.get('status')}): run the command that "
                       "started it again (it resumes), then analyse it")
    trainer = record.get("trainer") or ""
    if record.get("mode") == "eval" and learns(trainer):
        raise RunError(f"{run_dir} evaluated a model trained elsewhere: pass the training run's folder "
                       f"(its --model-dir: {_model_dir(record) or 'see its dept_run.json'})")
    return record


def _model_dir(record):
    argv = record.get("argv") or []
    return argv[argv.index("--model-dir") + 1] if "--model-dir" in argv[:-1] else None


def build_trainer(run_dir, record, root=None, classes="all", class_names=None):
    """The run's trainer with its trained tensors loaded, on ``classes`` of its dataset: "all" (every
    class: the analysis), or None for the classes the run itself had (its DATASET.SUBSAMPLE_CLASSES:
    the base classes of a base-to-new training run; what a prediction uses). With ``class_names`` (a
    list), on those names instead, with the dataset's templates and without reading its data
    (``dept.core.class_list``): the learned prompts on another class list."""
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import build_trainer as dassl_build_trainer

    from dept.core.build_config import build_config
    from dept.core.class_list import ClassList, class_list

    with tempfile.TemporaryDirectory(prefix="dept-loaded-") as tmp:
        path = os.path.join(tmp, "recorded.yaml")
        with open(path, "w") as f:
            f.write(record["config"])
        classes = "all" if class_names is not None else classes  # the head's own check reads its classes
        flags = ["OUTPUT_DIR", tmp] + (["DATASET.SUBSAMPLE_CLASSES", classes] if classes else [])
        if root:
            flags += ["DATASET.ROOT", root]
        cfg = build_config(path, flags=flags)
        names = None
        if class_names is not None:
            needs_prompt_trainer(cfg.TRAINER.NAME, "another class list")
            names = ClassList.of_dataset(DATASET_REGISTRY._obj_map.get(cfg.DATASET.NAME), class_names)
        with contextlib.redirect_stdout(io.StringIO()), class_list(names):  # Dassl's dataset and model summaries
            trainer = dassl_build_trainer(cfg)
            if learns(cfg.TRAINER.NAME):
                trainer.load_model(run_dir)
    return trainer


def needs_prompt_trainer(name, what):
    """A trainer that is not dept's own (a CoOp-family class DePT was put on) reads its dataset itself:
    it cannot be built on a class list without data."""
    from dassl.engine import TRAINER_REGISTRY

    from dept.core.trainer import PromptTrainer

    cls = TRAINER_REGISTRY._obj_map.get(name)
    if cls is not None and not issubclass(cls, PromptTrainer):
        raise RunError(f"{name} builds its model from its dataset itself (it is not a dept PromptTrainer): "
                       f"{what} needs one of dept's own trainers (CoOp, CoOpDePT, MaPLeDePT, ...: docs/extending.md)")
