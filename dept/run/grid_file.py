"""``python -m dept grid FILE.yaml``: a whole job grid, several protocols, from one file.

The file holds one grid, or a list of them under ``grids:``; each names its ``protocol`` and takes
the protocol command's flags as keys (underscores or dashes), the config options as ``opts``::

    output: output            # keys at the top apply to every grid below
    root: /data
    grids:
      - protocol: base2new
        trainers: [CoOp, CoOpDePT]
        seeds: [1, 2, 3]
      - protocol: few-shot
        trainers: [CoOpDePT]
        shots: [1, 2, 4, 8, 16]
        datasets: [dtd, eurosat]
        opts: {OPTIM.MAX_EPOCH: 50}

Flags after the file name (``--dry-run``, ``--backend local --jobs 4``, ``--retry-failed``) apply
to every grid. The grids run one after another; each is idempotent, as its own command is.
"""
import os
import sys

import yaml

from dept.store.protocols import protocol_named


def _flag(key):
    return "--" + str(key).replace("_", "-")


def grid_argv(entry):
    """(protocol name, its command-line argv) of one grid mapping."""
    entry = dict(entry)
    if "protocol" not in entry:
        raise ValueError(f"a grid names no protocol: {entry}")
    protocol = protocol_named(str(entry.pop("protocol")))
    opts = entry.pop("opts", None) or {}
    argv = []
    for key, value in entry.items():
        if isinstance(value, bool):
            argv += [_flag(key)] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [_flag(key), *map(str, value)]
        elif value is not None:
            argv += [_flag(key), str(value)]
    if isinstance(opts, dict):
        opts = [str(x) for kv in opts.items() for x in kv]
    return protocol.name, argv, [str(o) for o in opts]


def read_grids(path):
    """[(protocol, argv, opts)] of every grid in the file."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a mapping of flags, or of common flags and a list under grids:")
    common = {k: v for k, v in data.items() if k != "grids"}
    entries = data.get("grids") or [{}]
    if not isinstance(entries, list):
        raise ValueError(f"{path}: grids: must be a list of mappings")
    base = os.path.dirname(os.path.abspath(path))
    grids = []
    for entry in entries:
        merged = dict(common, **entry)
        for key in ("output", "root", "configs_dir", "configs-dir"):  # relative to the file, as a user reads it
            if isinstance(merged.get(key), str) and merged[key] and not os.path.isabs(os.path.expanduser(merged[key])):
                merged[key] = os.path.join(base, merged[key])
        grids.append(grid_argv(merged))
    return grids


def main(argv=None):
    from dept.run.cli import run_protocol

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    path, extra = argv[0], argv[1:]
    try:
        grids = read_grids(path)
    except (OSError, ValueError, KeyError, yaml.YAMLError) as err:
        print(f"error: {path}: {err}", file=sys.stderr)
        return 2
    worst = 0
    for protocol, flags, opts in grids:
        print(f"== {protocol}: {' '.join(flags + extra)}" + (f" -- {' '.join(opts)}" if opts else ""), flush=True)
        code = run_protocol(protocol, flags + extra + (["--", *opts] if opts else []))
        if code >= 128:  # interrupted: stop here, the same command resumes
            return code
        worst = max(worst, code)
    return worst
