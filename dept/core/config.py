"""The project's config keys, added to a Dassl config by ``add_dept_config(cfg)``.

This module is the single source of defaults. Every key is commented at its default with the
symbol it stands for in the DePT paper. The official DePT code spelled the same settings under
other names (``TRAINER.LINEAR_PROBE.*``, ``TRAINER.FILM.*``, ``OPTIM.LR_EXP``, ...); those names
keep working as aliases (see ``ALIASES`` and ``dept_options``), so the official yaml files and
command lines run unchanged.

``add_dept_config`` only adds what is missing: a user's own ``extend_cfg`` that already defined
``TRAINER.COOP`` (or the official aliases) keeps its values.
"""
from dataclasses import dataclass

from yacs.config import CfgNode as CN

FUSIONS = ("logits", "probs", "cat")
HEAD_TYPES = ("linear", "similarity")


def _dept_node():
    dept = CN()
    # λ: weight of the CAT head, in the loss L = (1-λ)·L_ITM + λ·L_CAT and in fused inference.
    dept.WEIGHT = 0.7
    # How base-class inference combines the heads: "logits" = (1-λ)·z_ITM + λ·z_CAT (the official
    # code), "probs" = (1-λ)·softmax(z_ITM) + λ·softmax(z_CAT) (the paper's formula), "cat" = CAT only.
    dept.FUSION = "logits"
    # CAT classifier: "linear" = Linear(D, C) over [cwT_text(T_y); cwT_img(I)] with duplicated labels;
    # "similarity" = cosine ITM over cwT features (an ablation of the official code).
    dept.HEAD = "linear"
    # cwT: learned per-channel scale and bias on image and text features before the CAT head.
    dept.CWT = True
    # Staged learning rate: parameters whose name contains one of NEW_LAYERS train at LR·LR_MULT,
    # all others at LR·BASE_LR_MULT. Defaults give 0.0035 for prompts and 0.02275 for cwT + head.
    dept.STAGED_LR = True
    dept.LR_MULT = 6.5
    dept.BASE_LR_MULT = 1.0
    dept.NEW_LAYERS = ["linear_probe", "film"]
    # What trains: [] = the method's own parameters (its prefixes, e.g. prompt_learner.) and, with
    # DePT, the head (dept_head.); else a parameter trains iff its name contains one of these.
    dept.NAMES_TO_UPDATE = []
    # Text encoder path (dept.core.text_encoder), all exact: auto | shared_prefix | truncated | full.
    # auto = the prefix every class shares ([SOS] + context) run once where the context is generic and
    # the name at the end, else truncated; truncated = up to the last EOT; full = all 77 positions.
    dept.TEXT_ENCODING = "auto"
    # Where evaluations share the frozen CLIP image features of their test images ("" = off): each
    # is computed once per CLIP file, precision, transform and image list (dept.core.feature_cache).
    # Only for methods whose image encoder is frozen and unprompted; never a setting of a run.
    dept.FEATURE_CACHE = ""
    return dept


def coop_node():
    coop = CN()
    coop.N_CTX = 16  # number of learned context vectors (M in CoOp)
    coop.CSC = False  # class-specific context: one context per class
    coop.CTX_INIT = ""  # words that initialise the context, e.g. "a photo of a"; "" = random N(0, 0.02²)
    coop.PREC = "fp16"  # CLIP precision: fp16 | fp32 | amp (fp16 falls back to fp32 without CUDA)
    coop.CLASS_TOKEN_POSITION = "end"  # where the class name goes: end | middle | front
    return coop


def _official_aliases():
    """The official DePT ``extend_cfg`` keys, at the same defaults as ``DEPT.*``."""
    linear_probe = CN()
    linear_probe.TYPE = "linear"
    linear_probe.WEIGHT = 0.7
    linear_probe.TEST_TIME_FUSION = True
    film = CN()
    film.LINEAR_PROBE = True
    return linear_probe, film


# clean key -> (official key, official value -> clean value). Official Dassl keys (OPTIM.STAGED_LR,
# OPTIM.NEW_LAYERS, OPTIM.BASE_LR_MULT) count as set only when they differ from Dassl's default.
ALIASES = {
    "WEIGHT": ("TRAINER.LINEAR_PROBE.WEIGHT", float),
    "HEAD": ("TRAINER.LINEAR_PROBE.TYPE", str),
    "FUSION": ("TRAINER.LINEAR_PROBE.TEST_TIME_FUSION", lambda fuse: "logits" if fuse else "cat"),
    "CWT": ("TRAINER.FILM.LINEAR_PROBE", bool),
    "STAGED_LR": ("OPTIM.STAGED_LR", bool),
    "LR_MULT": ("OPTIM.LR_EXP", float),
    "BASE_LR_MULT": ("OPTIM.BASE_LR_MULT", float),
    "NEW_LAYERS": ("OPTIM.NEW_LAYERS", list),
    "NAMES_TO_UPDATE": ("TRAINER.NAMES_TO_UPDATE", list),
}


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, CN) or part not in node:
            return None
        node = node[part]
    return node


def add_missing(node, defaults):
    """Copy keys of ``defaults`` (a dict or CfgNode) that ``node`` lacks; never overwrite a user's value."""
    for key, value in defaults.items():
        if key not in node:
            node[key] = value
        elif isinstance(value, CN) and isinstance(node[key], CN):
            add_missing(node[key], value)


def add_dept_config(cfg):
    """Add DePT's keys (and the official aliases, where missing) to a Dassl config, in place.

    Call it once after ``get_cfg_default()`` (and after your own ``extend_cfg``, if any).
    """
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    linear_probe, film = _official_aliases()
    add_missing(cfg, CN({"DEPT": _dept_node()}))
    add_missing(cfg.MODEL.BACKBONE, CN({
        # A local CLIP checkpoint (JIT archive or state dict). "" = download/cache by backbone name;
        # the environment variable DEPT_CLIP_PATH is used when this is empty.
        "PATH": "",
        # Where named backbones are cached ("" = ~/.cache/clip, as the clip package does).
        "CACHE_DIR": "",
    }))
    add_missing(cfg.DATASET, CN({
        "SUBSAMPLE_CLASSES": "all",  # all | base | new (CoOp)
        # Before the first step, check every image the run will read: "quick" (header and end of
        # file: catches absent, empty, non-image and truncated files), "full" (decode), "none".
        "CHECK_IMAGES": "quick",
        # Your own images (DATASET.NAME ImageFolder, dept.datasets.imagefolder; DATASETS.md, "Your own images").
        "IMAGEFOLDER": CN({
            "DIR": "imagefolder",  # its folder under DATASET.ROOT (an absolute path is taken as it is)
            "CSV": "",  # "" = one folder per class; else a CSV (path,label[,split]) in that folder
        }),
    }))
    add_missing(cfg.TRAIN, CN({
        # Strict determinism on GPU (torch.use_deterministic_algorithms, no cuDNN autotuning):
        # slower, but a run and its resumed twin agree bit for bit on GPU as they do on CPU.
        "DETERMINISTIC": False,
    }))
    add_missing(cfg.TRAINER, CN({
        "COOP": coop_node(),  # CoOp's keys are also the default method node (dept.core.trainer.PromptTrainer)
        "LINEAR_PROBE": linear_probe,
        "FILM": film,
        # the official default: every official method's prompt learner, the head and cwT
        "NAMES_TO_UPDATE": ["prompt_learner", "linear_probe", "film"],
    }))
    from dept.core.methods import registered

    for method in registered().values():  # each method's own node (TRAINER.<node>), where missing
        if method.keys is not None:
            method.keys(cfg)
    add_missing(cfg.OPTIM, CN({"LR_EXP": cfg.DEPT.LR_MULT}))
    if was_frozen:
        cfg.freeze()
    return cfg


@dataclass(frozen=True)
class DePTOptions:
    """The DePT settings of one run, resolved from the clean keys and their official aliases."""

    weight: float
    fusion: str
    head: str
    cwt: bool
    staged_lr: bool
    lr_mult: float
    base_lr_mult: float
    new_layers: tuple
    names_to_update: tuple


def _reference_defaults():
    from dassl.config import get_cfg_default

    ref = add_dept_config(get_cfg_default())
    # The official keys' own defaults: Dassl's for OPTIM.*, ours for the rest.
    return ref


_REFERENCE = None


def _resolve(cfg):
    """{clean key: value} from DEPT.* and the official aliases, and the aliases that supplied a value."""
    global _REFERENCE
    if _REFERENCE is None:
        _REFERENCE = _reference_defaults()
    values, from_alias = {}, {}
    for key, (alias, convert) in ALIASES.items():
        clean = cfg.DEPT[key]
        clean_set = clean != _REFERENCE.DEPT[key]
        official = _get(cfg, alias)
        official_set = official is not None and official != _get(_REFERENCE, alias)
        if official_set and clean_set and convert(official) != clean:
            raise ValueError(
                f"DEPT.{key}={clean!r} and its official alias {alias}={official!r} disagree; "
                f"set only one of them."
            )
        if official_set and not clean_set:
            values[key] = convert(official)
            if values[key] != clean:
                from_alias[key] = alias
        else:
            values[key] = clean
    return values, from_alias


def _check_values(values):
    weight = values["WEIGHT"]
    if not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise ValueError(
            f"DEPT.WEIGHT (λ, official TRAINER.LINEAR_PROBE.WEIGHT) must be in [0, 1], got {weight!r}: "
            "the loss is (1-λ)·L_ITM + λ·L_CAT, so outside [0, 1] one of the two terms is maximised."
        )
    if values["FUSION"] not in FUSIONS:
        raise ValueError(f"DEPT.FUSION must be one of {FUSIONS}, got {values['FUSION']!r}")
    if values["HEAD"] not in HEAD_TYPES:
        raise ValueError(f"DEPT.HEAD must be one of {HEAD_TYPES}, got {values['HEAD']!r}")
    if not values["LR_MULT"] > 0:
        raise ValueError(f"DEPT.LR_MULT (official OPTIM.LR_EXP) must be > 0, got {values['LR_MULT']!r}")
    if not values["BASE_LR_MULT"] > 0:
        raise ValueError(f"DEPT.BASE_LR_MULT (official OPTIM.BASE_LR_MULT) must be > 0, got {values['BASE_LR_MULT']!r}")


def dept_options(cfg):
    """Resolve ``cfg.DEPT`` against the official alias keys, and check the values.

    An alias counts as set when it differs from its default; if both spellings were set to
    different values, that is an error rather than a silent choice. (``sync_aliases`` also catches
    both spellings written explicitly, even when one of them equals the default.)
    """
    values, _ = _resolve(cfg)
    _check_values(values)
    return DePTOptions(
        weight=float(values["WEIGHT"]), fusion=values["FUSION"], head=values["HEAD"], cwt=values["CWT"],
        staged_lr=values["STAGED_LR"], lr_mult=values["LR_MULT"],
        base_lr_mult=values["BASE_LR_MULT"], new_layers=tuple(values["NEW_LAYERS"]),
        names_to_update=tuple(values["NAMES_TO_UPDATE"]),
    )


def sync_aliases(cfg, explicit=None):
    """Write the resolved values into ``cfg.DEPT`` (in place), so the config a run prints and
    records says what it used; log each value an official key supplied.

    ``explicit``: {dotted key: value} the user wrote (yaml files and command line). Both spellings
    of a setting written with different values is an error even where one equals the default,
    which value comparison alone cannot see.
    """
    import logging

    explicit = explicit or {}
    for key, (alias, convert) in ALIASES.items():
        clean_key = f"DEPT.{key}"
        if clean_key in explicit and alias in explicit and convert(explicit[alias]) != explicit[clean_key]:
            raise ValueError(
                f"{clean_key}={explicit[clean_key]!r} and its official alias {alias}={explicit[alias]!r} "
                "are both set and disagree; set only one of them."
            )
    values, from_alias = _resolve(cfg)
    _check_values(values)
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    for key, alias in from_alias.items():
        logging.getLogger("dept.core.config").info("DEPT.%s = %r, from the official key %s", key, values[key], alias)
        cfg.DEPT[key] = values[key]
    if was_frozen:
        cfg.freeze()
    return cfg
