"""Checkpoints of tensors and plain values only, in Dassl's layout, whole or absent.

Layout (as Dassl): ``<dir>/<name>/model.pth.tar-<epoch>`` plus a ``checkpoint`` text file naming
the newest. A checkpoint holds only the trained tensors (prompts, cwT, head; never the frozen
CLIP) and what an exact resume needs: optimizer, scheduler and AMP scaler state, the random states
of Python, NumPy and torch, how far into the epoch it is (``batch``; 0 at an epoch's end), the best
validation result, the classes the DePT head was trained on (``head_classes``) and the resolved
config (``config``), so a resumed run can refuse settings it was not trained with.
``torch.load(weights_only=True)`` reads it. Files are written through a temporary file and
renamed (``dept.util.files``); a file that cannot be read is reported by path (``CorruptCheckpoint``).

Kept files: the newest epoch always, and every epoch the user asks for with
``TRAIN.CHECKPOINT_FREQ``; a state saved mid-epoch (Ctrl-C, SIGTERM) is ``model-interrupted.pth.tar``
and is never taken for a trained model.

Checkpoints written by the official DePT/CoOp code pickle the scheduler's successor object (and,
through it, the optimizer). ``torch.load`` refuses them since torch 2.6, and ``weights_only=False``
would run whatever the pickle says; ``read_checkpoint`` falls back to ``dept.util.safe_pickle``, which
builds tensors and plain containers and nothing else.
"""
import logging
import os
import pickle
import random
import re

import torch

from dept.util import safe_pickle
from dept.util.files import torch_save, write_text

logger = logging.getLogger(__name__)

FORMAT = "dept/1"
POINTER = "checkpoint"
INTERRUPTED = "model-interrupted.pth.tar"
BEST = "model-best.pth.tar"
# Official DePT module names -> ours.
OFFICIAL_KEY_MAP = (
    ("film_lp_img.", "dept_head.film_img."),
    ("film_lp_text.", "dept_head.film_text."),
    ("linear_probe_proj.", "dept_head.linear_probe."),
)


class CorruptCheckpoint(ValueError):
    """A checkpoint file that exists but cannot be read (truncated, not a checkpoint, ...)."""

    def __init__(self, path, reason):
        super().__init__(f"Checkpoint {path} cannot be read: {reason}")
        self.path = path


# -- reading -------------------------------------------------------------------------------------

def read_checkpoint(path):
    """Load a checkpoint file without executing pickled code (ours or the official code's)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False, pickle_module=safe_pickle)
        except Exception as err:  # truncated or garbled: any failure to unpickle
            raise CorruptCheckpoint(path, f"{type(err).__name__}: {err}") from err
        logger.info("%s holds pickled objects (official checkpoint): read its tensors only.", path)
    except Exception as err:  # a half-written zip, an empty file, a text file, ...
        raise CorruptCheckpoint(path, f"{type(err).__name__}: {err}") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CorruptCheckpoint(path, "it holds no state_dict (not a Dassl/DePT checkpoint)")
    return checkpoint


def checkpoint_epochs(folder):
    """Epochs of the ``model.pth.tar-<E>`` files in ``folder`` (ignores the pointer, best, interrupted)."""
    if not os.path.isdir(folder):
        return []
    found = (re.fullmatch(r"model\.pth\.tar-(\d+)", f) for f in os.listdir(folder))
    return sorted(int(m.group(1)) for m in found if m)


def pointed_file(folder):
    """The file the ``checkpoint`` pointer names, or None (no pointer, or it names no file)."""
    pointer = os.path.join(folder, POINTER)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        name = f.readline().strip()
    path = os.path.join(folder, name)
    return path if name and os.path.isfile(path) else None


def find_checkpoint(directory, names, epoch=None, best=False):
    """The trained model to evaluate from a run directory.

    ``epoch`` None or negative: the file the ``checkpoint`` pointer names (the last epoch saved),
    else the highest-numbered one; with ``best``, ``model-best.pth.tar`` as Dassl saves it for
    TEST.FINAL_MODEL best_val. A state saved mid-epoch is never chosen.
    """
    tried = []
    for name in names:
        folder = os.path.join(directory, name)
        tried.append(folder)
        if best and (epoch is None or epoch < 0) and os.path.isfile(os.path.join(folder, BEST)):
            return os.path.join(folder, BEST)
        epochs = checkpoint_epochs(folder)
        if not epochs:
            continue
        if epoch is None or epoch < 0:
            pointed = pointed_file(folder)
            if pointed is not None and os.path.basename(pointed) != INTERRUPTED:
                return pointed
            return os.path.join(folder, f"model.pth.tar-{epochs[-1]}")
        path = os.path.join(folder, f"model.pth.tar-{epoch}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No checkpoint for epoch {epoch} in {folder}; it has epochs {epochs}.")
        return path
    raise FileNotFoundError(
        f"No checkpoint (model.pth.tar-<epoch>) found under {directory}: looked in {tried}. "
        "Pass the output directory of a finished training run as --model-dir."
    )


def set_aside(path, why="corrupt"):
    """Rename a checkpoint to ``<path>.<why>`` (kept for inspection, never loaded): unreadable ones,
    and ("set-aside") states a run cannot go on from."""
    target = f"{path}.{why}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.{why}{n}"
    os.replace(path, target)
    return target


def latest_resumable(folder):
    """``(path, checkpoint)`` of the most advanced readable state in ``folder``, or ``(None, None)``.

    Candidates: the mid-epoch state and every epoch file, most advanced first. An unreadable one is
    reported by path, renamed aside, and the next one is tried.
    """
    candidates = [os.path.join(folder, f"model.pth.tar-{e}") for e in reversed(checkpoint_epochs(folder))]
    interrupted = os.path.join(folder, INTERRUPTED)
    found = []
    for path in ([interrupted] if os.path.isfile(interrupted) else []) + candidates:
        try:
            checkpoint = read_checkpoint(path)
        except CorruptCheckpoint as err:
            logger.warning("%s; it is renamed to %s and an earlier state is used.", err, set_aside(path))
            continue
        found.append((progress(checkpoint), path, checkpoint))
        if path != interrupted:
            break  # epoch files are tried newest first: the first good one is the latest
    if not found:
        return None, None
    _, path, checkpoint = max(found, key=lambda item: item[0])
    return path, checkpoint


def progress(checkpoint):
    """(completed epochs, batches into the next one) of a checkpoint."""
    return int(checkpoint.get("epoch") or 0), int(checkpoint.get("batch") or 0)


# -- writing -------------------------------------------------------------------------------------

def trained_state(model):
    """The tensors a checkpoint keeps: the parameters that train, nothing frozen."""
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path, model, epoch, optimizer=None, scheduler=None, val_result=None, **extra):
    """Write a checkpoint atomically; ``extra`` holds plain values and tensors only (rng, config, ...).

    The ``checkpoint`` pointer is moved to it, unless it is the mid-epoch state or the best model.
    """
    head = getattr(model, "dept_head", None)
    state = {
        "format": FORMAT,
        "state_dict": trained_state(model),
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "val_result": None if val_result is None else float(val_result),
        "head_classes": list(head.classes) if head is not None else None,
        **extra,
    }
    torch_save(state, path)
    if os.path.basename(path) not in (INTERRUPTED, BEST):
        write_text(os.path.join(os.path.dirname(path), POINTER), os.path.basename(path) + "\n")
    logger.info("Checkpoint saved to %s", path)


def prune(folder, keep_epoch, every=0):
    """Delete epoch files older than ``keep_epoch`` unless their epoch is a multiple of ``every``
    (TRAIN.CHECKPOINT_FREQ > 0), and a mid-epoch state the newest epoch has overtaken."""
    for epoch in checkpoint_epochs(folder):
        if epoch < keep_epoch and not (every > 0 and epoch % every == 0):
            os.remove(os.path.join(folder, f"model.pth.tar-{epoch}"))
    interrupted = os.path.join(folder, INTERRUPTED)
    if os.path.isfile(interrupted):
        os.remove(interrupted)


# -- random states -------------------------------------------------------------------------------

def rng_state():
    """The random states of Python, NumPy and torch (CPU and every CUDA device), as plain values."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- official checkpoints ------------------------------------------------------------------------

def normalize_state_dict(checkpoint, rename=None):
    """State dict in our key names: official full-model or prompt-only checkpoints mapped over.

    ``rename`` maps a method's own official names to ours first (the method knows them: e.g. IVLP's
    prompts live in ``image_encoder.VPT`` officially); then the DePT head's official names are
    mapped, and frozen CLIP weights and the class-name token buffers are dropped.
    """
    state = checkpoint["state_dict"]
    if checkpoint.get("format") == FORMAT:
        return dict(state)
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if rename is not None:
        state = rename(state)
    out = {}
    for key, value in state.items():
        for old, new in OFFICIAL_KEY_MAP:
            if key.startswith(old):
                key = new + key[len(old):]
        if key.startswith(("image_encoder.", "text_encoder.", "logit_scale")) or key.endswith(
            ("token_prefix", "token_suffix", "token_midfix")
        ):
            continue
        out[key] = value
    return out
