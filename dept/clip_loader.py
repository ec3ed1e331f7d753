"""Loading CLIP: by backbone name (the clip package's download and cache) or from a local file.

The CLIP code itself is the ``clip`` package's (imported, never copied). What we add is the
choice of file, an error that tells the user where to put the weights when there is no network,
and the precision rule: fp16 needs CUDA, so without it we run fp32 and say so once.
"""
import logging
import os
import warnings

import torch

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


def load_clip_file(path):
    """Build a CLIP model (fp16 weights, as ``clip.build_model`` makes them) from a local file."""
    import clip

    try:
        with warnings.catch_warnings():  # the released CLIP files are TorchScript archives
            warnings.simplefilter("ignore", FutureWarning)
            state_dict = torch.jit.load(path, map_location="cpu").eval().state_dict()
    except RuntimeError:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
            state_dict = state_dict["state_dict"]
    return clip.model.build_model(state_dict)


def resolve_precision(prec, device):
    """fp16 CLIP cannot run on CPU (slow_conv2d_cpu has no Half kernel): use fp32 there."""
    if prec not in ("fp16", "fp32", "amp"):
        raise ValueError(f"PREC must be one of fp16, fp32, amp; got '{prec}'")
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
    prec = resolve_precision(prec, device)
    if prec != "fp16":
        model.float()
    return model, prec
