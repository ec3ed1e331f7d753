"""What SLURM does to a runner's tasks, read from ``squeue`` and said in the runner's log: why a task
pends (``squeue``'s reason, with what to do when it cannot start), when it is requeued (by itself
at its time limit, by a preemption, by SLURM: ``scontrol requeue``, a node failure) and how many
time-out requeues it has left. ``squeue`` needs no accounting database, unlike ``sacct``.
"""
import logging
import re
import subprocess
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# squeue states of a task that will still run or is running (anything else has ended)
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
          "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}

# Pending reasons a task never gets out of by waiting: the runner cancels it and says what to change.
NEVER = {
    "PartitionConfig": "it asks more than any node of its partition has (CPUs, memory or GPUs): lower "
                       "--cpus-per-job, --mem-gb or --gpus-per-job, or pick another --slurm-partition",
    "PartitionNodeLimit": "it asks more nodes or resources than its partition allows: lower --cpus-per-job, "
                          "--mem-gb or --gpus-per-job, or pick another --slurm-partition",
    "PartitionTimeLimit": "it asks more time than its partition allows: lower --time-min",
    "BadConstraints": "no node of its partition has the features it asks (--slurm-constraint, --slurm-extra)",
    "InvalidAccount": "its account is not valid (--slurm-account)",
    "InvalidQOS": "its quality of service is not valid (--slurm-qos)",
    "DependencyNeverSatisfied": "its --dependency can never be satisfied (--slurm-extra)",
}
# Pending reasons worth a word (the others: the reason as SLURM names it)
WHY = {
    "Resources": "waiting for free resources",
    "Priority": "other jobs come first",
    "BeginTime": "held back until its begin time (SLURM holds a requeued task back about two minutes)",
    "JobHeldUser": "held: it starts once released (scontrol release {task})",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "the nodes it may use are down, drained or reserved (sinfo -R says why)",
    "PartitionDown": "its partition is down", "PartitionInactive": "its partition is inactive",
    "NodeDown": "a node it was given is down", "Reservation": "waiting for its reservation to start",
    "Dependency": "waiting for the job it depends on",
    "launch failed requeued held": "its launch failed: SLURM requeued and held it (scontrol release {task})",
}
STUCK = {"JobHeldUser", "JobHeldAdmin", "ReqNodeNotAvail", "PartitionDown", "PartitionInactive",
         "launch failed requeued held"}  # pending until someone acts: said again every REPEAT_S
REPEAT_S = 600
ROUTINE = {"Resources", "Priority", "JobArrayTaskLimit", "None"}  # in the summary line only


@dataclass(frozen=True)
class TaskState:
    state: str
    reason: str = ""
    restarts: int = 0

    @property
    def active(self):
        return self.state in ACTIVE


def parse_squeue(text):
    """``squeue -O JobArrayID:64,State:24,RestartCnt:8,Reason:128`` lines as ``{task: TaskState}``."""
    tasks = {}
    for line in text.splitlines():
        fields = line.split(None, 3)
        if len(fields) < 2:
            continue
        restarts = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
        reason = fields[3].strip() if len(fields) > 3 else ""
        tasks[fields[0]] = TaskState(fields[1], "" if reason in ("None", "(null)") else reason, restarts)
    return tasks


def poll(array_ids):
    """``{task id: TaskState}`` of the tasks of these job arrays squeue still knows (ended ones stay a few
    minutes: MinJobAge); None when squeue does not answer."""
    tasks = {}
    for array_id in sorted(set(array_ids)):
        try:
            out = subprocess.run(["squeue", "--noheader", "--array", "--jobs", array_id, "--Format",
                                  "JobArrayID:64,State:24,RestartCnt:8,Reason:128"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode != 0:
            if "Invalid job id" in out.stderr:  # ended long ago: forgotten by slurmctld
                continue
            return None
        tasks.update(parse_squeue(out.stdout))
    return tasks


def queued_tasks(array_ids):
    """``{task id: state}`` of the tasks of these job arrays that SLURM still runs or will run; None
    when squeue does not answer."""
    polled = poll(array_ids)
    return None if polled is None else {t: s.state for t, s in polled.items() if s.active}


def why(reason, task):
    return WHY.get(reason, NEVER.get(reason, "")).format(task=task)


def summary(states):
    """``2 running, 3 pending (2 Resources, 1 JobHeldUser)`` of the tasks' TaskStates."""
    running = sum(1 for s in states if s.state in ("RUNNING", "COMPLETING", "CONFIGURING"))
    pending = [s.reason or "?" for s in states if s.state == "PENDING"]
    reasons = {}
    for r in pending:
        reasons[r] = reasons.get(r, 0) + 1
    text = f"{running} running, {len(pending)} pending"
    if reasons:
        text += " (" + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) + ")"
    other = len(states) - running - len(pending)
    return text + (f", {other} requeued or suspended" if other else "")


def requeue_log(path):
    """submitit's word, in a task's log, on each time it was signalled: ``[(case, timeouts left)]``,
    case ``timed-out`` or ``preempted`` (timeouts left: None when it did not requeue)."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return []
    events = []
    for m in re.finditer(r"this job is (timed-out|preempted)|Requeued job \S+ \((\d+) remaining timeouts\)", text):
        if m.group(1):
            events.append([m.group(1), None])
        elif events:
            events[-1][1] = int(m.group(2))
    return [tuple(e) for e in events]


def requeue_line(task, label, restarts, events, seen, max_requeue):
    """What to say of ``task`` requeued (``restarts``: SLURM's count; ``events``: ``requeue_log``;
    ``seen``: states it passed through, e.g. NODE_FAIL, PREEMPTED)."""
    head = f"slurm task {task} ({label}) requeued (restart {restarts})"
    if events and events[-1][0] == "timed-out":
        left = events[-1][1]
        left = max_requeue if left is None else left
        return (f"{head}: by itself at its time limit; its runs resume from their checkpoints; {left} time-out "
                f"requeue(s) left of --max-requeue {max_requeue}")
    if "NODE_FAIL" in seen:
        return f"{head}: by SLURM after its node failed (NODE_FAIL); its runs resume from their checkpoints"
    if "PREEMPTED" in seen or (events and events[-1][0] == "preempted"):
        return (f"{head}: preempted; its runs resume from their checkpoints (preemptions do not count against "
                f"--max-requeue {max_requeue})")
    return (f"{head}: by SLURM (scontrol requeue, a node failure or a preemption); its runs resume from their "
            "checkpoints")


class Watch:
    """The messages about a set of tasks, from one squeue poll to the next (said once each, the
    stuck ones again every REPEAT_S)."""

    def __init__(self, labels, max_requeue, logs):
        self.labels, self.max_requeue, self.logs = labels, max_requeue, logs  # task -> label, task -> log path
        self.last, self.seen, self.said, self.line, self.events = {}, {}, {}, None, {}

    def update(self, polled, now):
        """Messages for this poll, as (level, text); and the tasks that can never start: {task: why}."""
        messages, hopeless = [], {}
        mine = {t: s for t, s in polled.items() if t in self.labels}
        line = summary([s for s in mine.values() if s.active])
        if line != self.line:
            self.line = line
            messages.append((logging.INFO, f"slurm: {line}"))
        for task, st in mine.items():
            label, before = self.labels[task], self.last.get(task)
            self.seen.setdefault(task, set()).add(st.state)
            if st.state == "NODE_FAIL" and (before is None or before.state != "NODE_FAIL"):
                messages.append((logging.WARNING, f"slurm task {task} ({label}): its node failed (NODE_FAIL); "
                                 "SLURM requeues it where the cluster allows, else it is reported as ended"))
            if st.state == "PREEMPTED" and (before is None or before.state != "PREEMPTED"):
                messages.append((logging.WARNING, f"slurm task {task} ({label}): preempted"))
            if before is not None and st.restarts > before.restarts:
                events = requeue_log(self.logs[task])
                new, self.events[task] = events[self.events.get(task, 0):], len(events)  # only this requeue's
                messages.append((logging.WARNING, requeue_line(task, label, st.restarts, new, self.seen[task],
                                                               self.max_requeue)))
                self.seen[task] = {st.state}
            if st.state == "PENDING" and st.reason in NEVER:
                hopeless[task] = f"pending ({st.reason}): it can never start: {NEVER[st.reason]}"
            elif st.state == "PENDING" and st.reason and st.reason not in ROUTINE:
                key = (task, st.reason, st.restarts)
                if key not in self.said or (st.reason in STUCK and now - self.said[key] >= REPEAT_S):
                    again = " still" if key in self.said else ""
                    self.said[key] = now
                    text = why(st.reason, task)
                    level = logging.WARNING if st.reason in STUCK else logging.INFO
                    messages.append((level, f"slurm task {task} ({label}){again} pending ({st.reason})"
                                     + (f": {text}" if text else "")))
            self.last[task] = st
        return messages, hopeless
