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
to every grid. The whole file is checked before any grid runs (every entry's keys, names, values and
config options, as its command would check them), so a mistake in the last grid costs no compute in
the first; relative ``output``, ``root`` and ``configs_dir`` are relative to the file's folder, and
the folders they resolve to are printed first. The grids then run one after another; each is
idempotent, as its own command is.
"""
import os
import re
import sys
from dataclasses import dataclass

import yaml

from dept.run.errors import UsageError
from dept.run.names import did_you_mean
from dept.store.protocols import PROTOCOLS, protocol_named

PATH_KEYS = ("output", "root", "configs_dir")  # relative to the file's folder, as a user reads it
FILE_KEYS = ("protocol", "opts")  # the file's own keys, beside the command's flags


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose mappings refuse a key given twice (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UsageError(f"line {line}: key '{key}' is given twice in one mapping (first on line "
                                 f"{seen[key]}); YAML would keep only the last one: keep one of them")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


@dataclass
class Grid:
    """One grid of the file: where it is (``grids[i]``), its protocol and its command line."""

    where: str
    protocol: str
    argv: list
    opts: list
    resolved: dict  # path key -> (as written, absolute)

    def __iter__(self):  # unpacks as (protocol, argv, opts), the shape read_grids always returned
        return iter((self.protocol, self.argv, self.opts))

    def command(self, extra=()):
        return [*self.argv, *extra, *(["--", *self.opts] if self.opts else [])]


def _flag(key):
    return "--" + str(key).replace("_", "-")


def _parser(protocol):
    from dept.run.cli import build_parser

    return build_parser(protocol)


def valid_keys(protocol):
    """The keys a grid of ``protocol`` may hold: its command's long flags (as keys), protocol, opts."""
    flags = [o[2:].replace("-", "_") for a in _parser(protocol)._actions for o in a.option_strings
             if o.startswith("--") and o != "--help"]
    return [*FILE_KEYS, *flags]


def _options(opts, where):
    if opts is None:
        return []
    if isinstance(opts, dict):
        return [str(x) for kv in opts.items() for x in kv]
    if isinstance(opts, (list, tuple)) and len(opts) % 2 == 0:
        return [str(o) for o in opts]
    raise UsageError(f"{where}: opts must be a mapping ({{OPTIM.MAX_EPOCH: 50}}) or a flat list of KEY, VALUE "
                     f"pairs, not {opts!r}")


def grid_argv(entry, where="the grid", common=()):
    """(protocol name, its command-line argv, its config options) of one grid mapping; keys the
    protocol's command does not take are named with the valid ones."""
    entry = dict(entry)
    if "protocol" not in entry:
        raise UsageError(f"{where} names no protocol: add `protocol: <one of "
                         f"{', '.join(p.command for p in PROTOCOLS.values())}>`")
    try:
        protocol = protocol_named(str(entry["protocol"]))
    except KeyError as err:
        commands = [p.command for p in PROTOCOLS.values()]
        raise UsageError(f"{where}: {err.args[0]}.{did_you_mean(str(entry['protocol']), commands)}") from None
    entry.pop("protocol")
    opts = _options(entry.pop("opts", None), where)
    valid = valid_keys(protocol)
    unknown = [k for k in entry if str(k).replace("-", "_") not in valid]
    if unknown:
        key = unknown[0]
        origin = "the top-level key" if key in common else "key"
        raise UsageError(f"{where} ({protocol.command}): {origin} '{key}' is not a flag of `python -m dept "
                         f"{protocol.command}`.{did_you_mean(str(key).replace('-', '_'), valid)} Valid keys: "
                         f"{', '.join(valid)}. Config options go under opts: ({{OPTIM.MAX_EPOCH: 5}})")
    argv = []
    for key, value in entry.items():
        if isinstance(value, bool):
            argv += [_flag(key)] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [_flag(key), *map(str, value)]
        elif value is not None:
            argv += [_flag(key), str(value)]
    return protocol.name, argv, opts


def read_grids(path, problems=None):
    """[Grid] of every grid in the file, each one's keys checked against its protocol's flags. With
    a ``problems`` list, a grid's mistake is added to it and the other grids are still read."""
    with open(path) as f:
        data = yaml.load(f, Loader=_UniqueKeyLoader) or {}
    if not isinstance(data, dict):
        raise UsageError("a grid file is a mapping of flags, or of common flags and a list under grids:")
    common = {k: v for k, v in data.items() if k != "grids"}
    entries = data.get("grids") if "grids" in data else [{}]
    if not isinstance(entries, list) or not entries:
        raise UsageError("grids: must be a list of mappings (`- protocol: base2new`, ...)")
    base = os.path.dirname(os.path.abspath(path))
    everywhere = list(dict.fromkeys(k for p in PROTOCOLS.values() for k in valid_keys(p)))
    unknown = [k for k in common if str(k).replace("-", "_") not in everywhere]
    if unknown:  # said once, not once per grid
        key = unknown[0]
        message = (f"top level: key '{key}' is not a flag of any protocol command."
                   f"{did_you_mean(str(key).replace('-', '_'), everywhere)} Valid keys: {', '.join(everywhere)}")
        if problems is None:
            raise UsageError(message)
        problems.append(message)
        common = {k: v for k, v in common.items() if k not in unknown}
    grids = []
    for i, entry in enumerate(entries):
        where = f"grids[{i}]" if "grids" in data else "the grid"
        try:
            grids.append(_grid(entry, where, common, base))
        except UsageError as err:
            if problems is None:
                raise
            problems.append(str(err))
    return grids


def _grid(entry, where, common, base):
    if not isinstance(entry, dict):
        raise UsageError(f"{where} is {type(entry).__name__} {entry!r}, not a mapping of flags: write each grid "
                         "as `- protocol: base2new` with its keys indented below it")
    merged = dict(common, **entry)
    resolved = {}
    for key in [k for k in merged if str(k).replace("-", "_") in PATH_KEYS]:
        value = merged[key]
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            merged[key] = os.path.join(base, value)
            resolved[key] = (value, os.path.normpath(merged[key]))
    return Grid(where, *grid_argv(merged, where, common), resolved)


def check(grids, extra, problems=()):
    """Every grid as its command would check it before running (names, values, config options),
    without running or writing anything; raises ``UsageError`` naming each grid that cannot run
    (after ``problems``, those found reading the file)."""
    from dept.run.cli import parse_args, prepare

    problems = list(problems)
    for grid in grids:
        protocol = PROTOCOLS[grid.protocol]
        try:
            args = parse_args(grid.command(extra), protocol, raise_errors=True)
            args.dry_run = True  # the demo's data is not written by a check
            prepare(args, protocol)
        except UsageError as err:  # said in the file's words: keys, not flags; each problem on its line
            for problem in err.problems:
                said = re.sub(r"^argument --([\w-]+)(/\S+)?:", lambda m: f"{m.group(1).replace('-', '_')}:", problem)
                said = said.replace("the options after --", "the options under opts:")
                problems.append(f"{grid.where} ({protocol.command}): {said}")
    if problems:
        problems.sort(key=lambda p: int(p[6:p.index("]")]) if p.startswith("grids[") else -1)
        raise UsageError("\n  ".join(["nothing was run; fix these first:", *problems]))


def main(argv=None):
    from dept.run.cli import run_protocol

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    path, extra = argv[0], argv[1:]
    try:
        problems = []
        grids = read_grids(path, problems)
        said = set()
        for grid in grids:
            for key, (written, absolute) in grid.resolved.items():
                if (key, written) not in said:
                    said.add((key, written))
                    print(f"{key}: {written} is {absolute} (relative to the grid file's folder)")
        check(grids, extra, problems)
    except (OSError, UsageError, yaml.YAMLError) as err:
        print(f"error: {path}: {err}", file=sys.stderr)
        return 2
    worst = 0
    for grid in grids:
        command = grid.command(extra)
        print(f"== {grid.where}: python -m dept {PROTOCOLS[grid.protocol].command} {' '.join(command)}", flush=True)
        code = run_protocol(grid.protocol, command)
        if code >= 128:  # interrupted: stop here, the same command resumes
            return code
        worst = max(worst, code)
    return worst
