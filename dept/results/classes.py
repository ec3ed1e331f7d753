"""Per-class accuracy, DePT beside its method: the classes where DePT gains most and loses most.

A table's mean says by how much DePT moves a dataset; it hides whether a few classes move a lot or
every class a little, and which classes DePT's head hurts. Every evaluation record carries its
accuracy per class (``result["per_class"]``, from ``dept.core.interpret.per_class``); this module lines
them up the way the tables pair DePT's gain (``dept.results.tables``):

* an **evaluation** is what one run's final test measured: base-to-new's base classes (``train_base``)
  and new classes (``test_new``), a training run's own test on all classes (``train``: few-shot, or
  a transfer source), each target of a transfer (``eval``, with its source);
* a DePT trainer is compared with its method (``dept.core.methods``) of the same config variant and
  shots on the same evaluation, from counted runs only (``dept.results.collect``);
* **paired**: each side's accuracy on a class is its mean over the seeds both sides have with
  per-class accuracies; a seed of one side only is left out and the section says so; two sides that
  loaded other CLIPs are not compared (a difference between CLIPs is not DePT's);
* records without per-class accuracies (runs from before they were recorded) are skipped and
  counted in a note, never a crash.
"""
import math
import statistics

from dept.results.paper import demo_note, is_demo
from dept.results.render import _escape as escape
from dept.results.tables import _clip_ids, dataset_rank, display_method, method_rank, seed_text
from dept.store.protocols import PROTOCOLS

TOP = 5  # classes listed per direction
FILE = "classes.md"
TITLE = "Per-class accuracy: where DePT gains and loses"
_STAGE_ORDER = {"train_base": 0, "test_new": 1, "eval": 2, "train": 3}


def per_class_of(record):
    """A record's ``[{"class", "n", "accuracy"}]``, or None when it has none a reader can trust
    (absent, as in runs from before they were recorded, or an entry without a class and a percentage)."""
    result = (record or {}).get("result")
    found = result.get("per_class") if isinstance(result, dict) else None
    if not isinstance(found, list) or not found:
        return None
    for entry in found:
        value = entry.get("accuracy") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("class"), str) or isinstance(value, bool) \
                or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 100:
            return None
    return found


def evaluation_title(stage, dataset, source):
    """The heading of an evaluation: which protocol, which test set."""
    if stage == "train_base":
        return f"{PROTOCOLS['base2new'].title}: {dataset}, base classes"
    if stage == "test_new":
        return f"{PROTOCOLS['base2new'].title}: {dataset}, new classes"
    if stage == "eval":
        owner = next((p for p in PROTOCOLS.values() if p.has_source and p.owns_target(dataset)), None)
        return f"{owner.title if owner else 'Transfer'}: {dataset}, model trained on {source}"
    return f"{dataset}, all classes (the training run's own test: few-shot, or a transfer source)"


def compare_classes(runs):
    """(comparisons, notes) of every DePT trainer beside its method, per evaluation (module doc).

    A comparison: its evaluation (stage, dataset, source), method, variant, shots, the two trainers
    (``plain``, ``dept``), the paired ``seeds``, the seeds ``left_out`` and why, ``classes`` (every
    class both sides have: class, n, plain, dept, delta = dept - plain), the ``gains`` and
    ``losses`` (the TOP largest deltas each way), and ``problem`` when none could be computed."""
    cells, skipped = {}, []
    for run in runs:
        if not run.counted:
            continue
        k = run.key
        method, dept = display_method(k.trainer)
        classes = per_class_of(run.record)
        if classes is None:
            skipped.append(run)
        cell = cells.setdefault((k.stage, k.dataset, k.source, method, k.variant, k.shots), {})
        cell.setdefault((dept, k.trainer), {})[k.seed] = (run, classes)
    comparisons = []
    for cell, sides in cells.items():
        plain = sorted(t for d, t in sides if not d)  # the first plain trainer, as the tables pair
        for dept, trainer in sorted(sides):
            pair = [sides[(0, plain[0])], sides[(1, trainer)]] if dept and plain else []
            if any(classes is not None for side in pair for _, classes in side.values()):  # else: the note's
                comparisons.append(_compare(cell, (plain[0], sides[(0, plain[0])]), (trainer, sides[(1, trainer)])))
    comparisons.sort(key=lambda c: (_STAGE_ORDER[c["stage"]], c["source"] or "", dataset_rank(c["dataset"]),
                                    method_rank(c["method"]), c["variant"], c["shots"],
                                    c["dept"]))
    notes = []
    if skipped:
        versions = sorted({str(r.record["dept_version"]) for r in skipped if r.record.get("dept_version")})
        made = f"; made by dept {', '.join(versions)}" if versions else ""
        notes.append(f"{len(skipped)} counted evaluation record(s) have no per-class accuracies (runs from before "
                     f"dept recorded them{made}) and are skipped")
    return comparisons, notes


def _compare(cell, plain, dept):
    stage, dataset, source, method, variant, shots = cell
    (plain_name, plain_seeds), (dept_name, dept_seeds) = plain, dept
    out = dict(stage=stage, dataset=dataset, source=source, method=method, variant=variant, shots=shots,
               plain=plain_name, dept=dept_name, seeds=[], left_out=[], classes=[], gains=[], losses=[], problem="",
               clips=[])
    for seed in sorted(set(plain_seeds) | set(dept_seeds)):
        have = (plain_seeds.get(seed), dept_seeds.get(seed))
        if None in have:
            out["left_out"].append(f"seed {seed} (only {plain_name if have[0] else dept_name} has it)")
        elif have[0][1] is None or have[1][1] is None:
            lacking = " and ".join(name for name, h in zip((plain_name, dept_name), have) if h[1] is None)
            out["left_out"].append(f"seed {seed} (no per-class accuracies in {lacking}'s record)")
        else:
            out["seeds"].append(seed)
    seeds = out["seeds"]
    if not seeds:
        out["problem"] = "no seed that both sides have with per-class accuracies"
        return out
    sides = [[side[s] for s in seeds] for side in (plain_seeds, dept_seeds)]
    clips = [_clip_ids({"clips": [run.clip for run, _ in side]}) for side in sides]
    out["clips"] = [run.clip for side in sides for run, _ in side]
    if clips[0] != clips[1]:
        shown = [", ".join(sorted(f"{name} {path}" for name, path, _ in ids)) for ids in clips]
        out["problem"] = f"the two sides ran on other CLIPs ({shown[0]} / {shown[1]})"
        return out
    by_name = [[{c["class"]: c for c in classes} for _, classes in side] for side in sides]
    order = [c["class"] for c in sides[0][0][1]]  # label order, as the records list them
    every = {name for side in by_name for one in side for name in one}
    common = [name for name in order if all(name in one for side in by_name for one in side)]
    if len(common) < len(every):
        out["left_out"].append(f"{len(every) - len(common)} class(es) not in every paired record")
    for name in common:
        a, b = (statistics.fmean(one[name]["accuracy"] for one in side) for side in by_name)
        out["classes"].append({"class": name, "n": by_name[0][0][name].get("n"), "plain": a, "dept": b,
                               "delta": b - a})
    out["gains"] = sorted((c for c in out["classes"] if c["delta"] > 1e-9), key=lambda c: -c["delta"])[:TOP]
    out["losses"] = sorted((c for c in out["classes"] if c["delta"] < -1e-9), key=lambda c: c["delta"])[:TOP]
    return out


# -- classes.md ---------------------------------------------------------------------------------------

def render_classes(root, runs):
    """(the markdown of classes.md, a one-line summary for the report's index)."""
    comparisons, notes = compare_classes(runs)
    head = [f"# {TITLE}", ""]
    with_classes = [r for r in runs if r.counted and per_class_of(r.record) is not None]
    if not with_classes:
        if any(r.counted for r in runs):
            short = "no evaluation record has per-class accuracies"
            why = (f"{short}: runs from before dept recorded them (result.per_class) have none; re-run or "
                   "re-evaluate them to get them")
        else:
            short = why = "no run is counted (see missing.md)"
        return "\n".join(head + [f"Empty: {why}."]) + "\n", f"empty: {short}"
    if not comparisons:
        why = ("no DePT trainer has a run beside its method's (same evaluation, config variant and shots) among the "
               "records with per-class accuracies")
        return "\n".join(head + [f"Empty: {why}."] + [f"- {n}" for n in notes]) + "\n", "empty: no DePT pair"
    lines = head
    demo = is_demo([c for comp in comparisons for c in comp["clips"]])
    if demo:
        lines += [demo_note(demo), ""]
    lines += [f"Runs under `{root}`. Each DePT trainer beside its method (same evaluation, config variant and "
              f"shots): a class's accuracy on each side is the mean over the seeds both sides have (paired), "
              f"Δ = with DePT minus without; the {TOP} classes where DePT gains most and the {TOP} where it loses "
              f"most. Each section's mean is over its classes (each class counts once, whatever its number of "
              f"images).", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    current = None
    for comp in comparisons:
        title = evaluation_title(comp["stage"], comp["dataset"], comp["source"])
        if title != current:
            lines += [f"## {title}", ""]
            current = title
        lines += _section(comp)
    return "\n".join(lines).rstrip() + "\n", f"{len(comparisons)} comparison{'s' if len(comparisons) != 1 else ''}"


def _section(comp):
    seeds = comp["seeds"]
    lines = [f"### {comp['plain']} → {comp['dept']}, {comp['variant']}, {comp['shots']} shots, "
             f"{len(seeds)} seed(s){f' ({seed_text(seeds)})' if seeds else ''}", ""]
    if comp["left_out"]:
        lines += [f"Left out: {'; '.join(comp['left_out'])}.", ""]
    if comp["problem"]:
        return lines + [f"Not compared: {comp['problem']}.", ""]
    classes = comp["classes"]
    higher = sum(1 for c in classes if c["delta"] > 1e-9)
    lower = sum(1 for c in classes if c["delta"] < -1e-9)
    means = [statistics.fmean(c[side] for c in classes) for side in ("plain", "dept")]
    lines += [f"{len(classes)} classes: DePT higher on {higher}, lower on {lower}, equal on "
              f"{len(classes) - higher - lower}; mean over classes {means[0]:.2f} → {means[1]:.2f}.", ""]
    if not comp["gains"] and not comp["losses"]:
        return lines
    lines += [f"| | class | n | {comp['plain']} | {comp['dept']} | Δ |", "|---|---|---|---|---|---|"]
    for label, rows in (("gain", comp["gains"]), ("loss", comp["losses"])):
        lines += [f"| {label} | {escape(c['class'])} | {c['n'] if c['n'] is not None else '–'} | {c['plain']:.2f} | "
                  f"{c['dept']:.2f} | {c['delta']:+.2f} |" for c in rows]
    return lines + [""]
