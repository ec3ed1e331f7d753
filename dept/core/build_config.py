"""A run's config from its files and options, in the CoOp family's merge order.

Dassl's defaults with ``add_dept_config``, then the dataset yaml, the method yaml, the command
line's flags, and the trailing ``KEY VALUE`` options; the official DePT spellings are resolved into
``DEPT.*`` (``dept.core.config.sync_aliases``). The same function builds the config a run runs
with (``dept.run.train``), the one the runner expects it to have recorded, and the one the report
checks a folder's record against: one config per run, whoever asks.

Two conveniences over yacs: a yaml may inherit from another with ``_BASE_: ../CoOp/x.yaml``
(detectron2's convention; a DePT variant's config is its method's plus a line), and an integer is
accepted where the default is a float (``GPA_MEAN: 15`` in PromptSRC's original yaml).
"""
import os

import yaml

# The package's configs/ (datasets/ and trainers/<trainer>/ yaml), beside the dept/ package.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def read_config_file(path, _chain=()):
    """A yaml config as a list of dicts, its ``_BASE_`` files first."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file '{path}' does not exist.")
    if os.path.abspath(path) in _chain:
        raise ValueError(f"Config file '{path}' inherits from itself through _BASE_: {' -> '.join(_chain)}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"Config file '{path}' is not a mapping of keys")
    base = data.pop("_BASE_", None)
    if base is None:
        return [data]
    base_path = os.path.join(os.path.dirname(path), base)
    try:
        return [*read_config_file(base_path, (*_chain, os.path.abspath(path))), data]
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (named by _BASE_ in '{path}')") from None


def _int_to_float(node, data):
    """yacs refuses an int where the default is a float (``GPA_MEAN: 15`` against 15.0): the same
    number, so let it through as a float (in place, recursively)."""
    from yacs.config import CfgNode

    for key, value in data.items():
        target = node.get(key) if isinstance(node, CfgNode) else None
        if isinstance(target, CfgNode) and isinstance(value, dict):
            _int_to_float(target, value)
        elif isinstance(target, float) and isinstance(value, int) and not isinstance(value, bool):
            data[key] = float(value)
    return data


def merge_config_file(cfg, path):
    """``cfg.merge_from_file`` that follows ``_BASE_`` (see ``read_config_file``)."""
    from yacs.config import CfgNode

    for data in read_config_file(path):
        cfg.merge_from_other_cfg(CfgNode(_int_to_float(cfg, data)))


def merge_options(cfg, opts):
    """``cfg.merge_from_list`` with ints accepted for float keys (see ``_int_to_float``)."""
    from yacs.config import CfgNode

    opts = list(opts or [])
    for i in range(1, len(opts), 2):
        *parents, leaf = str(opts[i - 1]).split(".")
        node = cfg
        for part in parents:
            node = node.get(part) if isinstance(node, CfgNode) else None
        value = CfgNode._decode_cfg_value(opts[i]) if isinstance(opts[i], str) else opts[i]
        if isinstance(node, CfgNode) and isinstance(node.get(leaf), float) and isinstance(value, int) \
                and not isinstance(value, bool):
            opts[i] = float(value)
    cfg.merge_from_list(opts)


def mentioned(files, opts):
    """{dotted key: value} the user wrote in the yaml files (and their bases) and the options."""
    from yacs.config import CfgNode

    found = {}

    def walk(node, prefix):
        for key, value in (node or {}).items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                found[f"{prefix}{key}"] = value

    for path in files:
        for data in read_config_file(path) if path else ():
            walk(data, "")
    opts = list(opts or [])
    for key, value in zip(opts[0::2], opts[1::2]):
        found[key] = CfgNode._decode_cfg_value(value) if isinstance(value, str) else value
    return found


def build_config(config_file="", dataset_config_file="", flags=(), opts=(), freeze=True):
    """The resolved config: defaults, the dataset yaml, the method yaml, ``flags`` (KEY VALUE pairs
    the command line's flags set), then ``opts``; official spellings resolved into DEPT.*."""
    from dassl.config import get_cfg_default

    from dept.core.backbones import check_config
    from dept.core.config import add_dept_config, sync_aliases

    cfg = add_dept_config(get_cfg_default())
    for path in (dataset_config_file, config_file):
        if path:
            merge_config_file(cfg, path)
    cfg.merge_from_list(list(flags))
    merge_options(cfg, opts)
    sync_aliases(cfg, mentioned((dataset_config_file, config_file), opts))
    check_config(cfg)  # a method or an input size the named backbone cannot take: before any run starts
    if freeze:
        cfg.freeze()
    return cfg
