"""Which settings make a run what it is, and how the settings of two runs differ.

A run's settings are the keys of its resolved config that can change its numbers: every key but
the neutral ones (where files are, how often it prints or saves), the official DePT spellings
(``dept.core.config.ALIASES``: their value is in ``DEPT.*`` once resolved, so a setting counts
once, under the key that applied), and, for one of our methods, every ``TRAINER.<node>`` but its
own (``TRAINER.MAPLE`` is no setting of a CoOp run, nor is a node whose method is not loaded). So
adding or removing a method, which adds its node to every config, changes no earlier run's
settings; a key added since a run was recorded counts, in that record, as its default (the
behaviour the key was added with).

One comparison serves every place that decides whether a run is the one asked for: the runner
before reusing a finished run, the report before counting it, ``dept.run.train`` and the trainer
before resuming into a folder.
"""
import functools

import yaml

# Keys that cannot change a run's numbers: where files are, how often it prints or saves.
NEUTRAL_KEYS = frozenset({
    "OUTPUT_DIR", "RESUME", "DATASET.ROOT", "TRAIN.PRINT_FREQ", "TRAIN.CHECKPOINT_FREQ", "VERBOSE",
    "TEST.PER_CLASS_RESULT", "TEST.COMPUTE_CMAT", "DATASET.CHECK_IMAGES", "MODEL.BACKBONE.CACHE_DIR",
    "DEPT.FEATURE_CACHE",  # the shared image features are exactly those a run would compute
})
# The official spellings that are Dassl's own keys: a trainer that is not one of our methods (a
# CoOp-family trainer under ``ConventionDePT``) builds its optimizer with Dassl's, which reads them.
DASSL_OPTIM_ALIASES = frozenset({"OPTIM.STAGED_LR", "OPTIM.NEW_LAYERS", "OPTIM.BASE_LR_MULT"})
_ABSENT = object()


def flat(config):
    """``{"OPTIM.LR": 0.0035, ...}`` from a CfgNode, its yaml dump or a flat dict (values as yaml reads them)."""
    if isinstance(config, str):
        return dict(_flat_text(config))
    if hasattr(config, "dump"):  # a CfgNode: its values as its dump holds them (lists, not tuples)
        return dict(_flat_text(config.dump()))
    return _walk(config)  # nested, or already flat (its dotted keys walk to themselves)


# libyaml's loader where PyYAML has it (the same values as yaml.safe_load, many times faster): a
# report reads a config of some 400 lines for every run it verifies
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=1024)
def _flat_text(text):
    return _walk(yaml.load(text, Loader=_LOADER))


def _walk(data):
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    if data is not None and not isinstance(data, dict):
        raise ValueError(f"a config is a mapping, not a {type(data).__name__}")
    walk(data or {}, "")
    return out


@functools.lru_cache(maxsize=None)
def _defaults():
    from dassl.config import get_cfg_default

    from dept.core.config import add_dept_config

    return flat(add_dept_config(get_cfg_default()))


def defaults():
    """Every key at its default (Dassl's defaults with ours and every registered method's node)."""
    return dict(_defaults())


def _alias_keys(trainer):
    from dept.core.config import ALIASES
    from dept.core.methods import method_of

    keys = {alias for alias, _ in ALIASES.values()}
    if trainer and method_of(trainer)[0] is None:  # a trainer that is not ours reads Dassl's own keys
        keys -= DASSL_OPTIM_ALIASES
    return keys


def _own_node(trainer):
    """``trainer``'s method node, "TRAINER.<node>." (None for a trainer with no record: every node counts)."""
    from dept.core.methods import method_of

    method, _ = method_of(trainer or "")
    return None if method is None else f"TRAINER.{method.node}."


def of_another_method(key, trainer):
    """Whether ``key`` is in a config node other than ``trainer``'s method's (no setting of its runs)."""
    own = _own_node(trainer)
    return own is not None and key.startswith("TRAINER.") and key.count(".") > 1 and not key.startswith(own)


def settings(config, trainer=None, neutral=NEUTRAL_KEYS):
    """The settings of a run of ``trainer`` (default: the config's TRAINER.NAME) as a flat dict."""
    values = flat(config)
    trainer = trainer or values.get("TRAINER.NAME")
    aliases = _alias_keys(trainer)
    return {k: v for k, v in values.items()
            if k not in neutral and k not in aliases and not of_another_method(k, trainer)}


def differences(recorded, expected, trainer=None, neutral=NEUTRAL_KEYS):
    """``[(key, recorded value, expected value)]`` for every setting that differs (see the module doc).

    A key one side lacks counts there as its default (a key added since that side was recorded);
    one with no default either is absent.
    """
    expected = flat(expected)
    trainer = trainer or expected.get("TRAINER.NAME")
    a, b = settings(recorded, trainer, neutral), settings(expected, trainer, neutral)
    base = _defaults() if set(a) ^ set(b) else {}
    out = []
    for key in sorted(set(a) | set(b)):
        mine, theirs = a.get(key, base.get(key, _ABSENT)), b.get(key, base.get(key, _ABSENT))
        if mine != theirs:
            out.append((key, mine, theirs))
    return out


def show(value):
    return "(absent)" if value is _ABSENT else repr(value)


def format_differences(differences, limit=12, sides=("there", "now")):
    lines = [f"{key}: {show(old)} {sides[0]}, {show(new)} {sides[1]}" for key, old, new in differences[:limit]]
    if len(differences) > limit:
        lines.append(f"... and {len(differences) - limit} more")
    return "; ".join(lines)


def recorded_config(cfg):
    """The config a run record and a checkpoint hold: the resolved config, each setting once (the
    official spellings dropped where the ``DEPT.*`` key is what applied)."""
    drop = _alias_keys(cfg.TRAINER.NAME)
    data = yaml.safe_load(cfg.dump())
    for key in drop:
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
            if not node and parents:  # an official node left empty (TRAINER.LINEAR_PROBE)
                parent = data
                for part in parents[:-1]:
                    parent = parent[part]
                parent.pop(parents[-1], None)
    return yaml.safe_dump(data, sort_keys=True)
