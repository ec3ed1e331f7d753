"""Run folders written record by record, as ``dept.run.train`` writes them, for the tests of the
tables, the report and the figures: no training, but every record verifies as a real one does
(the settings its folder stands for, built from the package's config files; a training run's
final checkpoint file and its sha256; an evaluation tied to that checkpoint)."""
import hashlib
import os

from dept.core.build_config import CONFIGS_DIR, build_config
from dept.core.settings import recorded_config
from dept.results.paper import VIT_B16_ARCH
from dept.store.layout import Layout, RunKey
from dept.store.record import write_record

CFG = "vit_b16_ep10_bs4_lr35"
VIT_B16 = {"name": "ViT-B/16", "path": None, "arch": dict(VIT_B16_ARCH)}
TINY = {"name": "tiny-random", "path": "/x/tiny_clip.pt",
        "arch": {"embed_dim": 32, "vision_width": 64, "vision_layers": 2, "vision_patch_size": 16,
                 "image_resolution": 32, "transformer_width": 64, "transformer_layers": 2}}
_BUILT = {}


def key(stage, dataset, trainer="CoOp", seed=1, shots=16, variant=CFG, source=None):
    if stage == "eval" and source is None:
        source = "imagenet"
    return RunKey(stage, dataset, trainer, variant, shots, seed, source)


def config_of(k, path, options=()):
    """The config text ``dept.run.train`` records for run ``k`` in ``path``: its trainer's config file,
    its dataset's, the runner's keys, and ``options`` (KEY, VALUE pairs after ``--``)."""
    files = (os.path.join(CONFIGS_DIR, "trainers", k.trainer, f"{k.cfg_name}.yaml"),
             os.path.join(CONFIGS_DIR, "datasets", f"{k.dataset}.yaml"), tuple(map(str, options)))
    if files not in _BUILT:
        _BUILT[files] = build_config(files[0], files[1], flags=["TRAINER.NAME", k.trainer], opts=list(files[2]),
                                     freeze=False)
    cfg = _BUILT[files].clone()
    cfg.merge_from_list(["SEED", k.seed, "DATASET.NUM_SHOTS", k.shots, "DATASET.SUBSAMPLE_CLASSES", k.subsample,
                         "OUTPUT_DIR", path, "DATASET.ROOT", "/data"])
    return recorded_config(cfg)


def checkpoint_sha(train_key):
    return hashlib.sha256(repr(train_key).encode()).hexdigest()


def put(root, k, accuracy, status="finished", clip=VIT_B16, notes=(), options=(), sha=None, error=None,
        config=None, started="2026-01-01T00:00:00", result=None, per_class=None, prompt_words=None):
    """Write run ``k``'s folder under ``root``; returns the folder relative to the root.

    ``per_class`` ([{"class", "n", "accuracy"}]) goes into the result, ``prompt_words`` into the
    record, as ``dept.run.train`` writes them (left out when None: a record from before them).

    A finished training run gets a checkpoint file (its content names the run) and that file's
    sha256; an evaluation the sha256 of its training run's (``sha`` overrides either)."""
    layout = Layout(root)
    path = layout.path(k)
    checkpoint = None
    if k.trains and status == "finished":
        file = os.path.join(path, "prompt_learner", "model.pth.tar-10")
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with open(file, "wb") as f:
            f.write(repr(k).encode())
        checkpoint = {"path": file, "sha256": sha or checkpoint_sha(k), "epoch": 10}
    elif not k.trains:
        checkpoint = {"path": "x", "sha256": sha or checkpoint_sha(k.train_key()), "epoch": 10}
    record = {"status": status, "mode": "train" if k.trains else "eval", "trainer": k.trainer,
              "config": config if config is not None else config_of(k, path, options),
              "result": result if result is not None else (None if accuracy is None else
                                                           {"split": "test", "accuracy": accuracy}),
              "checkpoint": checkpoint, "clip": clip, "notes": list(notes), "started": started}
    if per_class is not None:
        record["result"] = dict(record["result"] or {}, per_class=per_class)
    if prompt_words is not None:
        record["prompt_words"] = prompt_words
    if error:
        record["error"] = error
    write_record(path, record)
    return layout.relative(k)


def put_base2new(root, dataset, seed, base, new, trainer="CoOp", **kwargs):
    """A base-to-new seed: its train_base run and (``new`` not None) its test_new run."""
    put(root, key("train_base", dataset, trainer, seed, **_where(kwargs)), base, **_rest(kwargs))
    if new is not None:
        put(root, key("test_new", dataset, trainer, seed, **_where(kwargs)), new, **_rest(kwargs))


def _where(kwargs):
    return {k: v for k, v in kwargs.items() if k in ("shots", "variant")}


def _rest(kwargs):
    return {k: v for k, v in kwargs.items() if k not in ("shots", "variant")}
