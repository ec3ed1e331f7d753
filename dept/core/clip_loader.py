"""Loading CLIP: by backbone name (the clip package's download and cache) or from a local file.

The CLIP code itself is the ``clip`` package's (imported, never copied). What we add is the
choice of file, an error that tells the user where to put the weights when there is no network,
and the precision rule: fp16 needs CUDA, so without it we run fp32 and say so once.
"""
import logging
import os
import pickle
import warnings

import torch

from dept.core.backbones import check_model, is_vit, vision_width

logger = logging.getLogger(__name__)

ENV_PATH = "DEPT_CLIP_PATH"


def _default_cache_dir():
    return os.path.expanduser("~/.cache/clip")


def resolve_clip_file(name, path="", cache_dir=""):
    """Return the local file holding the CLIP weights for ``name`` (downloading if needed).

    Order: an explicit ``path`` (config ``MODEL.BACKBONE.PATH``), the ``DEPT_CLIP_PATH``
    environment variable, then the clip package's cache for ``name`` (downloaded on first use).
    """
    import clip

    path = path or os.environ.get(ENV_PATH, "")
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"CLIP weights file '{path}' (from MODEL.BACKBONE.PATH or ${ENV_PATH}) does not exist. "
                "Point it at a CLIP checkpoint (.pt JIT archive or state dict), or leave both empty to "
                f"load '{name}' by name."
            )
        return path
    if os.path.isfile(name):
        return name
    urls = clip.clip._MODELS
    if name not in urls:
        raise ValueError(
            f"Unknown CLIP backbone '{name}'. Use one of {sorted(urls)} or set MODEL.BACKBONE.PATH "
            "to a local checkpoint."
        )
    cache_dir = cache_dir or _default_cache_dir()
    expected = os.path.join(cache_dir, os.path.basename(urls[name]))
    try:
        return clip.clip._download(urls[name], cache_dir)
    except OSError as err:  # URLError is an OSError: no network, DNS failure, refused, ...
        raise FileNotFoundError(
            f"Could not download CLIP '{name}' ({err}). Without network, copy the file "
            f"'{os.path.basename(urls[name])}' to {expected}, or set MODEL.BACKBONE.PATH "
            f"(or ${ENV_PATH}) to where it is."
        ) from err


class NotAClipFile(ValueError):
    """``MODEL.BACKBONE.PATH`` (or ``$DEPT_CLIP_PATH``) names a file that holds no CLIP weights."""

    def __init__(self, path, what, advice=""):
        super().__init__(f"CLIP weights file '{path}' {what}{' ' if what.endswith('?') else '. '}" + (
            advice or "Point MODEL.BACKBONE.PATH (or $DEPT_CLIP_PATH) at a released CLIP file (e.g. "
            "ViT-B-16.pt) or a CLIP state dict, or leave both empty to load MODEL.BACKBONE.NAME by name."))
        self.path = path


# What clip.model.build_model reads, for every CLIP architecture (ViT and ResNet).
_CLIP_KEYS = ("text_projection", "token_embedding.weight", "positional_embedding", "ln_final.weight")
_TRAINING_CHECKPOINT = (
    "Pass the run directory that holds it as --model-dir (here: '{run_dir}'), and the CLIP weights "
    "via MODEL.BACKBONE.PATH (or $DEPT_CLIP_PATH) or by name (MODEL.BACKBONE.NAME, e.g. ViT-B/16)."
)


def _read_clip_state_dict(path):
    """The state dict in a CLIP file, or ``NotAClipFile`` saying what the file is instead.

    The released files are TorchScript archives (zip); state dicts saved with ``torch.save`` are
    zip files too (or legacy pickles). Everything else (an empty file, half a download, an HTML
    error page saved under the .pt name, a training checkpoint) gets one error that says so.
    """
    import zipfile

    size = os.path.getsize(path)
    if size == 0:
        raise NotAClipFile(path, "is empty (0 bytes): an interrupted download or copy?")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            raise NotAClipFile(path, f"is a truncated or damaged archive ({size:,} bytes, no zip directory at "
                               "its end): half a download or copy? Copy it again")
        try:
            with warnings.catch_warnings():  # the released CLIP files are TorchScript archives
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(path, map_location="cpu").eval().state_dict()
        except RuntimeError:
            pass  # a torch.save file, not TorchScript
    elif not head.startswith(b"\x80"):
        raise NotAClipFile(path, f"is not a PyTorch file (it starts with {head[:24]!r}: a text or HTML file, "
                           "e.g. an error page saved in place of the download?)")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        content = _read_pickled_objects(path, err)
    except (RuntimeError, EOFError, OSError) as err:
        raise NotAClipFile(path, f"cannot be read ({type(err).__name__}: {str(err).splitlines()[0]}): a "
                           "truncated or damaged file? Copy it again") from err
    return _clip_state_dict_in(path, content)


def _read_pickled_objects(path, refused):
    """A file ``weights_only`` refuses: an official DePT/Dassl checkpoint (pickled scheduler), or
    no pickle at all. Read with the inert unpickler, which runs nothing, only to say which."""
    from dept.util import safe_pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=safe_pickle)
    except Exception as err:
        raise NotAClipFile(path, f"cannot be read ({type(err).__name__}: {str(err).splitlines()[0]}): a "
                           "truncated or damaged file? Copy it again") from err


def _clip_state_dict_in(path, content):
    if not isinstance(content, dict):
        raise NotAClipFile(path, f"holds a {type(content).__name__}, not a CLIP state dict")
    state_dict = content
    if isinstance(content.get("state_dict"), dict):
        state_dict = content["state_dict"]
        if not all(key in state_dict for key in _CLIP_KEYS) and ("epoch" in content or "format" in content):
            kind = "dept" if str(content.get("format", "")).startswith("dept/") else "Dassl (official DePT/CoOp)"
            trained = sorted({key.split(".")[0] for key in state_dict if not key.startswith(("image_encoder.",
                                                                                          "text_encoder."))})
            raise NotAClipFile(path, f"is a {kind} training checkpoint (epoch {content.get('epoch')}): it holds "
                               f"what was trained ({', '.join(trained) or 'nothing'}), not CLIP's weights",
                               _TRAINING_CHECKPOINT.format(run_dir=os.path.dirname(os.path.dirname(path))))
    missing = [key for key in _CLIP_KEYS if key not in state_dict]
    if missing or not any(isinstance(key, str) and key.startswith("visual.") for key in state_dict):
        sample = ", ".join(map(str, list(state_dict)[:5])) or "none"
        raise NotAClipFile(path, f"holds no CLIP weights (missing {missing or ['visual.*']}; its first keys: "
                           f"{sample})")
    return state_dict


def load_clip_file(path):
    """Build a CLIP model (fp16 weights, as ``clip.build_model`` makes them) from a local file."""
    import clip

    state_dict = _read_clip_state_dict(path)
    try:
        return clip.model.build_model(state_dict)
    except (KeyError, RuntimeError, ValueError, IndexError) as err:
        raise NotAClipFile(path, f"holds CLIP-like weights that do not build a CLIP model "
                           f"({type(err).__name__}: {err})") from err


PRECISIONS = ("fp16", "fp32", "amp")  # TRAINER.<node>.PREC


def resolve_precision(prec, device):
    """fp16 CLIP cannot run on CPU (slow_conv2d_cpu has no Half kernel): use fp32 there."""
    if prec not in PRECISIONS:
        raise ValueError(f"PREC must be one of {', '.join(PRECISIONS)}; got '{prec}'")
    if prec in ("fp16", "amp") and torch.device(device).type != "cuda":
        logger.info("No CUDA device: running CLIP in fp32 instead of %s.", prec)
        return "fp32"
    return prec


def load_clip(cfg, prec="fp32", device="cpu"):
    """The frozen CLIP for a run: weights from ``cfg.MODEL.BACKBONE``, cast for ``prec``.

    Returns ``(clip_model, prec)`` where ``prec`` is the precision actually used.
    """
    backbone = cfg.MODEL.BACKBONE
    path = resolve_clip_file(backbone.NAME, backbone.get("PATH", ""), backbone.get("CACHE_DIR", ""))
    logger.info("Loading CLIP %s from %s", backbone.NAME, path)
    model = load_clip_file(path)
    check_model(cfg, model)  # a method and an input size this CLIP cannot take, before any compute
    prec = resolve_precision(prec, device)
    if prec != "fp16":
        model.float()
    return model, prec


def clip_summary(cfg, clip_model):
    """What the run record keeps of the CLIP it loaded: name, file, and architecture sizes."""
    visual = clip_model.visual
    vit = is_vit(visual)
    # a ResNet's blocks per stage ("3-4-6-3" for RN50): a string, as the report compares records' sizes as
    # hashable values; a ViT's record is as it always was (no patch size marks a ResNet)
    layers = len(visual.transformer.resblocks) if vit else "-".join(str(len(getattr(visual, f"layer{i}")))
                                                                      for i in range(1, 5))
    return {
        "name": cfg.MODEL.BACKBONE.NAME,
        "path": cfg.MODEL.BACKBONE.get("PATH", "") or os.environ.get("DEPT_CLIP_PATH", "") or None,
        "arch": {
            "embed_dim": int(clip_model.text_projection.shape[1]),
            "vision_width": vision_width(visual),
            "vision_layers": layers,
            "vision_patch_size": int(visual.conv1.kernel_size[0]) if vit else None,
            "image_resolution": int(visual.input_resolution),
            "transformer_width": int(clip_model.ln_final.weight.shape[0]),
            "transformer_layers": len(clip_model.transformer.resblocks),
        },
    }
