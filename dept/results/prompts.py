"""The vocabulary words nearest to each learned context vector, per training run: ``prompts.md``.

A learned text context lives in CLIP's token embedding space, so the tokens nearest to each vector
hint at what it encodes (CoOp's ``interpret_prompt.py``; hints, not words the model reads). A
training run of a method with a learned M×W text context records them (``prompt_words``: per
vector, k ``{"token", "distance"}``, ``dept.core.interpret.nearest_words``); this module lists them
per trainer, config variant, shots, dataset and seed, from counted runs only
(``dept.results.collect``), so the words shown are those of runs the tables count. Runs without
them (methods without a learned text context, runs from before they were recorded) are counted in
a note.
"""
import math

from dept.results.render import _escape as escape
from dept.results.tables import dataset_rank, display_method, method_rank

FILE = "prompts.md"
TITLE = "Learned prompts: the nearest words to each context vector"
_CLASSES = {"train_base": "base classes", "train": "all classes"}


def words_of(record):
    """A record's ``prompt_words`` ([[{"token", "distance"}] per vector]), or None when it has none a
    reader can use (null, absent, or not a list of such lists)."""
    found = (record or {}).get("prompt_words")
    if not isinstance(found, list) or not found:
        return None
    for vector in found:
        if not isinstance(vector, list) or not vector:
            return None
        for word in vector:
            distance = word.get("distance") if isinstance(word, dict) else None
            if not isinstance(word, dict) or not isinstance(word.get("token"), str) \
                    or not isinstance(distance, (int, float)) or isinstance(distance, bool) \
                    or not math.isfinite(distance):
                return None
    return found


def prompt_listings(runs):
    """(listings, notes): [(key, words)] of every counted training run with prompt words, in the
    report's order (method, trainer, variant, shots, dataset, stage, seed); notes on the others."""
    trains = [r for r in runs if r.counted and r.key.trains]
    listed, without = [], 0
    for run in trains:
        words = words_of(run.record)
        if words is None:
            without += 1
        else:
            listed.append((run.key, words))
    listed.sort(key=lambda kw: (method_rank(display_method(kw[0].trainer)[0]), kw[0].trainer, kw[0].variant,
                                kw[0].shots, dataset_rank(kw[0].dataset), kw[0].stage, kw[0].seed))
    notes = []
    if without and listed:
        notes.append(f"{without} counted training run(s) have no prompt words (methods without a learned text "
                     "context, or runs from before dept recorded them) and are not listed")
    return listed, notes


def _token(text):
    shown = escape(text) if text else '""'
    return f"`` {shown} ``" if "`" in shown else f"`{shown}`"


def render_prompts(root, runs):
    """(the markdown of prompts.md, a one-line summary for the report's index)."""
    listed, notes = prompt_listings(runs)
    lines = [f"# {TITLE}", ""]
    if not listed:
        if any(r.counted for r in runs):
            short = "no training record has prompt words"
            why = (f"{short}: only methods with a learned text context record them (prompt_words), and runs "
                   "from before dept recorded them have none")
        else:
            short = why = "no run is counted (see missing.md)"
        return "\n".join(lines + [f"Empty: {why}."]) + "\n", f"empty: {short}"
    lines += [f"Runs under `{root}`. For each learned context vector (1 = the first token of the prompt), the "
              "vocabulary tokens nearest to it in CLIP's token embedding space, with their Euclidean distance "
              "(CoOp's interpret_prompt): hints at what a vector encodes, not words the model reads.", ""]
    lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    current = None
    for key, words in listed:
        group = (key.trainer, key.variant, key.shots)
        if group != current:
            lines += ([""] if current else []) + [f"## {key.trainer}, {key.variant}, {key.shots} shots", "",
                      "| dataset | seed | vector | nearest words (distance) |", "|---|---|---|---|"]
            current = group
        where = f"{key.dataset} ({_CLASSES.get(key.stage, key.stage)})"
        for i, vector in enumerate(words, 1):
            shown = ", ".join(f"{_token(w['token'])} {w['distance']:.3f}" for w in vector)
            lines.append(f"| {where} | {key.seed} | {i} | {shown} |")
    return "\n".join(lines).rstrip() + "\n", f"{len(listed)} run{'s' if len(listed) != 1 else ''}"
