"""The runner's arguments an analysis passes to every grid it runs (one place for both commands)."""


def runner_argv(output, seeds, shots, root="", demo=False, datasets=None):
    """``python -m dept <protocol>`` arguments: the output root, seeds, shots, data (or the demo), datasets."""
    out = ["--output", output, "--seeds", *map(str, seeds), "--shots", str(shots)]
    if root and not demo:
        out += ["--root", root]
    if demo:
        out.append("--demo")
    if datasets:
        out += ["--datasets", *datasets]
    return out
