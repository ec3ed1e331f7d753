"""Checkpoints of tensors and plain values only, in Dassl's layout; official checkpoints read safely.

Layout (as Dassl): ``<dir>/<name>/model.pth.tar-<epoch>`` plus a ``checkpoint`` text file naming
the newest. Content: only the trained tensors (prompts, cwT, head; never the frozen CLIP), the
optimizer and scheduler state (numbers and tensors), and the classes the DePT head was trained
on (``head_classes``). ``torch.load(weights_only=True)`` reads it.

Checkpoints written by the official DePT/CoOp code pickle the scheduler's successor object (and,
through it, the optimizer). ``torch.load`` refuses them since torch 2.6, and ``weights_only=False``
would run whatever the pickle says. ``read_checkpoint`` falls back to an unpickler that builds
tensors and plain containers and turns every other object into an inert placeholder.
"""
import logging
import os
import pickle
import re

import torch

from dept import safe_pickle

logger = logging.getLogger(__name__)

FORMAT = "dept/1"
OFFICIAL_NAMES = ("PromptLearner", "prompt_learner", "MultiModalPromptLearner")
# Official DePT module names -> ours.
OFFICIAL_KEY_MAP = (
    ("film_lp_img.", "dept_head.film_img."),
    ("film_lp_text.", "dept_head.film_text."),
    ("linear_probe_proj.", "dept_head.linear_probe."),
)


def read_checkpoint(path):
    """Load a checkpoint file without executing pickled code (ours or the official code's)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        logger.info("%s holds pickled objects (official checkpoint): reading tensors only.", path)
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=safe_pickle)


def checkpoint_epochs(folder):
    """Epochs of the ``model.pth.tar-<E>`` files in ``folder`` (ignores ``checkpoint``, best)."""
    if not os.path.isdir(folder):
        return []
    found = (re.fullmatch(r"model\.pth\.tar-(\d+)", f) for f in os.listdir(folder))
    return sorted(int(m.group(1)) for m in found if m)


def find_checkpoint(directory, names, epoch=None, best=False):
    """The file to load from a run directory: ``epoch`` None or negative means the last one
    (or ``model-best.pth.tar`` with ``best``, as Dassl saves it for TEST.FINAL_MODEL best_val)."""
    tried = []
    for name in names:
        folder = os.path.join(directory, name)
        tried.append(folder)
        if best and epoch is None and os.path.isfile(os.path.join(folder, "model-best.pth.tar")):
            return os.path.join(folder, "model-best.pth.tar")
        epochs = checkpoint_epochs(folder)
        if not epochs:
            continue
        if epoch is None or epoch < 0:
            return os.path.join(folder, f"model.pth.tar-{epochs[-1]}")
        path = os.path.join(folder, f"model.pth.tar-{epoch}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No checkpoint for epoch {epoch} in {folder}; it has epochs {epochs}.")
        return path
    raise FileNotFoundError(
        f"No checkpoint (model.pth.tar-<epoch>) found under {directory}: looked in {tried}. "
        "Pass the output directory of a finished training run as --model-dir."
    )


def trained_state(model):
    """The tensors a checkpoint keeps: the parameters that train, nothing frozen."""
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path, model, epoch, optimizer=None, scheduler=None, val_result=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    head = getattr(model, "dept_head", None)
    state = {
        "format": FORMAT,
        "state_dict": trained_state(model),
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "val_result": None if val_result is None else float(val_result),
        "head_classes": list(head.classes) if head is not None else None,
    }
    torch.save(state, path)
    with open(os.path.join(os.path.dirname(path), "checkpoint"), "w") as f:
        f.write(os.path.basename(path) + "\n")
    logger.info("Checkpoint saved to %s", path)


def normalize_state_dict(checkpoint):
    """State dict in our key names: official full-model or prompt-only checkpoints mapped over.

    Frozen CLIP weights and the class-name token buffers of official checkpoints are dropped.
    """
    state = checkpoint["state_dict"]
    if checkpoint.get("format") == FORMAT:
        return dict(state)
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key in ("ctx", "token_prefix", "token_suffix", "token_midfix"):  # baseline CoOp file
            key = "prompt_learner." + key
        for old, new in OFFICIAL_KEY_MAP:
            if key.startswith(old):
                key = new + key[len(old):]
        if key.startswith(("image_encoder.", "text_encoder.", "logit_scale")) or key.endswith(
            ("token_prefix", "token_suffix", "token_midfix")
        ):
            continue
        out[key] = value
    return out
