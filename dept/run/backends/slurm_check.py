"""What a SLURM submission asks, checked before ``sbatch``: the partition's nodes (``sinfo``), the
time limit against the time-limit warning, and ``--slurm-extra`` sbatch options.

A request no node of the partition can meet is accepted by ``sbatch`` and then pends for ever
(``PartitionConfig``), and a GPU request on a partition without GPUs fails inside submitit with a
long traceback: both are refused here, naming the flag to change, before anything is submitted.
The defaults of ``--gpus-per-job``, ``--cpus-per-job`` and ``--mem-gb`` are fitted to the partition
(no GPU on a CPU partition, at most its nodes' CPUs and memory); values given explicitly are checked,
never changed.
"""
import difflib
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from dept.run.errors import UsageError

logger = logging.getLogger(__name__)

DEFAULT_GPUS, DEFAULT_CPUS, DEFAULT_MEM_GB = 1, 8, 32.0
# SLURM sends its time-limit warning this long before the limit (submitit's --signal=USR2@90); a task
# needs time to start (Python, Dassl, the data) before its handler is there, and to save after it.
SIGNAL_MARGIN_S = 90
MIN_TIME_MIN = 5

# sbatch options the back-end sets itself: the flag to use instead
OWN_OPTIONS = {
    "cpus-per-task": "--cpus-per-job", "mem": "--mem-gb", "mem-per-cpu": "--mem-gb", "mem-per-gpu": "--mem-gb",
    "time": "--time-min", "partition": "--slurm-partition", "account": "--slurm-account", "qos": "--slurm-qos",
    "constraint": "--slurm-constraint", "gpus": "--gpus-per-job (a GPU type: --slurm-extra=--gres=gpu:TYPE:N)",
    "gpus-per-node": "--gpus-per-job (a GPU type: --slurm-extra=--gres=gpu:TYPE:N)",
    "gpus-per-task": "--gpus-per-job (a GPU type: --slurm-extra=--gres=gpu:TYPE:N)",
    "array": "--array-parallelism (the runner makes one array task per chain)",
    "job-name": "nothing: the runner names its tasks dept-<protocol>",
    "output": "--slurm-folder", "error": "--slurm-folder", "open-mode": "nothing: the runner appends to its logs",
    "signal": "--time-min (the runner asks the time-limit warning it handles)",
    "nodes": "nothing: a task runs on one node", "ntasks": "nothing: one task per chain",
    "ntasks-per-node": "nothing: one task per chain", "wrap": "nothing: the runner writes the job script",
    "no-requeue": "nothing: a task requeues itself at its time limit (--max-requeue 0 turns that off)",
    "parsable": "nothing", "wait": "nothing: without --no-wait the runner waits itself",
}


@dataclass
class Request:
    """What each task asks: the values that go to sbatch, after the defaults are fitted."""

    gpus: int
    cpus: int
    mem_gb: float
    time_min: int
    partition: str = ""
    extra: dict = field(default_factory=dict)  # sbatch option (without --): value (True for a flag)
    gres_gpus: tuple = ()  # (type or "", count) of a GPU asked through --slurm-extra=--gres=gpu:...
    notes: list = field(default_factory=list)  # what was fitted, for the log


# -- --slurm-extra ----------------------------------------------------------------------------------

def sbatch_options():
    """The long options ``sbatch --help`` lists (empty when it cannot be asked)."""
    if shutil.which("sbatch") is None:
        return set()
    try:
        out = subprocess.run(["sbatch", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(re.findall(r"--([a-z][a-z0-9-]*)", out.stdout))


def parse_extra(values, known=None):
    """``--slurm-extra`` values (``--reservation=maint``, ``exclude=node[1-3]``, ``--hold``) as
    ``{option: value}``; every value that is not one long sbatch option, or that names an option
    the back-end sets itself, is refused with what to write instead. ``known``: sbatch's options
    (unchecked when empty)."""
    extra, problems = {}, []
    for raw in values:
        text = raw.strip()
        m = re.fullmatch(r"(?:--)?([A-Za-z][A-Za-z0-9-]*)(?:=(.*))?", text, re.S)
        if text.startswith("-") and not text.startswith("--"):
            problems.append(f"--slurm-extra={raw}: short sbatch options are not taken; write the long one "
                            "(e.g. --slurm-extra=--nodelist=node1 for -w node1)")
            continue
        if m is None:
            problems.append(f"--slurm-extra={raw}: not one sbatch option; write --slurm-extra=--OPTION=VALUE (or "
                            "--slurm-extra=--FLAG), one option per --slurm-extra")
            continue
        name, value = m.group(1), m.group(2)
        if value is not None and not value.strip():
            problems.append(f"--slurm-extra={raw}: no value after '='")
            continue
        if value is not None and "\n" in value:
            problems.append(f"--slurm-extra={raw}: a value on several lines")
            continue
        if name in OWN_OPTIONS:
            problems.append(f"--slurm-extra={raw}: --{name} is set by the runner; use {OWN_OPTIONS[name]}")
            continue
        if known and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            problems.append(f"--slurm-extra={raw}: sbatch has no option --{name}{hint}; `sbatch --help` lists them")
            continue
        if name in extra:
            problems.append(f"--slurm-extra: --{name} given twice")
            continue
        extra[name] = True if value is None else value
    if problems:
        raise UsageError("\n".join(problems))
    return extra


def gres_gpus(gres):
    """``{type or "": count}`` of the GPUs in a GRES string (``gpu:a100:4(S:0-1),gpu:2``, ``(null)``)."""
    found = {}
    for entry in re.sub(r"\([^)]*\)", "", gres or "").split(","):
        parts = entry.strip().split(":")
        if parts[0] != "gpu":
            continue
        count = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
        kind = parts[1] if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()) else ""
        found[kind] = found.get(kind, 0) + count
    return found


# -- the partition's nodes --------------------------------------------------------------------------

@dataclass
class Node:
    name: str
    partition: str
    cpus: int
    mem_mb: int
    gpus: dict  # type ("" untyped): count
    time_limit_min: object  # int, or None when unlimited


def time_limit_minutes(text):
    """sinfo's time limit (``infinite``, ``1-00:00:00``, ``4:00:00``, ``30:00``, ``30``) in minutes."""
    text = text.strip()
    if not text or text.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    hours, minutes, seconds = ([0, 0] + parts)[-3:] if len(parts) > 1 else (0, parts[0], 0)
    return (int(days) if days else 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def parse_sinfo(text):
    """``sinfo -N -h -o '%N|%P|%c|%m|%G|%l'`` as Nodes (the default partition keeps its '*')."""
    nodes = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        name, partition, cpus, mem, gres, limit = fields
        try:
            nodes.append(Node(name, partition, int(cpus.rstrip("+")), int(mem.rstrip("+")), gres_gpus(gres),
                              time_limit_minutes(limit)))
        except ValueError:
            continue
    return nodes


def read_nodes():
    """The nodes ``sinfo`` lists, or None when it does not answer."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "--Node", "--noheader", "--format", "%N|%P|%c|%m|%G|%l"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_sinfo(out.stdout) if out.returncode == 0 else None


def _gb(mb):
    return f"{mb / 1024:.1f}".rstrip("0").rstrip(".")


def fit(args, nodes, extra):
    """The Request of ``args`` on ``nodes`` (None: sinfo did not answer, nothing is checked); every
    problem raised as one UsageError naming the flags to change."""
    problems = []
    if args.time_min < MIN_TIME_MIN:
        problems.append(f"--time-min {args.time_min}: too short. SLURM warns a task {SIGNAL_MARGIN_S} s before its "
                        "time limit so that it saves its run and requeues itself; the warning would come before the "
                        f"task has started its run (and SLURM checks limits about once a minute): ask --time-min "
                        f"{MIN_TIME_MIN} or more (a task that reaches its limit is requeued and resumes)")
    gres = gres_gpus(str(extra["gres"])) if "gres" in extra else {}
    if gres and args.gpus_per_job:
        problems.append(f"GPUs asked twice: --gpus-per-job {args.gpus_per_job} and --slurm-extra=--gres="
                        f"{extra['gres']}: keep the --gres (it names the GPU type) and leave --gpus-per-job out")
    explicit = {"gpus": args.gpus_per_job is not None, "cpus": args.cpus_per_job is not None,
                "mem": args.mem_gb is not None}
    request = Request(gpus=0 if gres else (DEFAULT_GPUS if args.gpus_per_job is None else args.gpus_per_job),
                      cpus=DEFAULT_CPUS if args.cpus_per_job is None else args.cpus_per_job,
                      mem_gb=DEFAULT_MEM_GB if args.mem_gb is None else args.mem_gb, time_min=args.time_min,
                      partition=args.slurm_partition, extra=dict(extra),
                      gres_gpus=next(iter(gres.items())) if gres else ())
    if request.cpus < 1:
        problems.append(f"--cpus-per-job {request.cpus}: a task needs at least one CPU")
    if request.mem_gb <= 0:
        problems.append(f"--mem-gb {request.mem_gb:g}: a task needs some memory")
    if request.gpus < 0:
        problems.append(f"--gpus-per-job {request.gpus}: 0 or more")
    if problems or nodes is None:
        if problems:
            raise UsageError("\n".join(problems))
        return request
    partitions = sorted({n.partition.rstrip("*") for n in nodes})
    name = args.slurm_partition or next((n.partition.rstrip("*") for n in nodes if n.partition.endswith("*")), "")
    where = f"partition {name}" if name else "the cluster"
    here = [n for n in nodes if n.partition.rstrip("*") == name] if name else nodes
    if not here:
        raise UsageError(f"--slurm-partition {args.slurm_partition}: no such partition; sinfo lists "
                         f"{', '.join(partitions) or 'none'}" if args.slurm_partition else
                         f"no default partition; pick one with --slurm-partition ({', '.join(partitions)})")
    max_cpus, max_mb = max(n.cpus for n in here), max(n.mem_mb for n in here)
    max_gpus = max(sum(n.gpus.values()) for n in here)
    if not explicit["gpus"] and not gres and max_gpus == 0 and request.gpus:
        request.gpus = 0
        request.notes.append(f"{where} has no GPUs: tasks ask none (--gpus-per-job 0)")
    if not explicit["cpus"] and request.cpus > max_cpus:
        request.cpus = max_cpus
        request.notes.append(f"the nodes of {where} have {max_cpus} CPUs: tasks ask {max_cpus} (--cpus-per-job)")
    if not explicit["mem"] and request.mem_gb * 1024 > max_mb:
        request.mem_gb = int(max_mb * 0.9 / 1024 * 10) / 10
        request.notes.append(f"the nodes of {where} have {_gb(max_mb)} GB: tasks ask {_gb(request.mem_gb * 1024)} "
                             "GB (--mem-gb)")
    if request.cpus > max_cpus:
        problems.append(f"--cpus-per-job {request.cpus}: the nodes of {where} have at most {max_cpus} CPUs; ask "
                        f"--cpus-per-job {max_cpus} or fewer, or another partition (--slurm-partition)")
    if request.mem_gb * 1024 > max_mb:
        problems.append(f"--mem-gb {request.mem_gb:g}: the nodes of {where} have at most {_gb(max_mb)} GB; ask "
                        f"--mem-gb {_gb(max_mb)} or less, or another partition (--slurm-partition)")
    if request.gpus and max_gpus == 0:
        problems.append(f"--gpus-per-job {request.gpus}: {where} has no GPUs (sinfo shows no gpu GRES on its nodes); "
                        "on a CPU partition pass --gpus-per-job 0, or pick a GPU partition with --slurm-partition "
                        "(`sinfo -o '%P %G'` lists them)")
    elif request.gpus > max_gpus:
        problems.append(f"--gpus-per-job {request.gpus}: the nodes of {where} have at most {max_gpus} GPUs; ask "
                        f"--gpus-per-job {max_gpus} or fewer")
    if gres:
        kind, count = request.gres_gpus
        have = max((n.gpus.get(kind, 0) if kind else sum(n.gpus.values())) for n in here)
        if have < count:
            kinds = sorted({k for n in here for k in n.gpus if k})
            problems.append(f"--slurm-extra=--gres={extra['gres']}: the nodes of {where} have "
                            f"{'no' if not have else f'at most {have}'} {kind + ' ' if kind else ''}GPUs"
                            + (f" (their GPU types: {', '.join(kinds)})" if kinds else "")
                            + "; change the --gres or the partition (--slurm-partition)")
    limits = [n.time_limit_min for n in here]
    if None not in limits and args.time_min > max(limits):
        problems.append(f"--time-min {args.time_min}: {where} allows at most {max(limits)} min; ask --time-min "
                        f"{max(limits)} or less (a task reaching its limit is requeued and resumes its run)")
    if not problems and not any(_fits(n, request) for n in here):
        problems.append(f"no node of {where} has {request.cpus} CPUs, {_gb(request.mem_gb * 1024)} GB and "
                        f"{request.gpus or (request.gres_gpus[1] if request.gres_gpus else 0)} GPUs at once "
                        f"(`sinfo -N -p {name} -o '%N %c %m %G'`): lower --cpus-per-job, --mem-gb or --gpus-per-job")
    if problems:
        raise UsageError("\n".join(problems))
    return request


def _fits(node, request):
    kind, count = request.gres_gpus or ("", request.gpus)
    gpus = node.gpus.get(kind, 0) if kind else sum(node.gpus.values())
    return node.cpus >= request.cpus and node.mem_mb >= request.mem_gb * 1024 and gpus >= count
