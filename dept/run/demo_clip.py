"""The demo's tiny CLIP, pretrained contrastively on the digits so that its accuracies mean something.

A CLIP with random weights (``dept.core.testing.tiny_clip``) gives chance accuracy everywhere, so
the demo could show that the pipeline runs but not that prompt tuning does anything. This module
trains the same tiny architecture, image against caption, on the digits' *train split* (all ten
classes, several caption templates), the way CLIP itself was trained: zero-shot CLIP then
recognises the new classes well above chance, yet not perfectly, which leaves CoOp and DePT room
to improve the base classes. Test images are never seen.

The build is deterministic (same bytes on the same machine) and takes seconds on two CPU cores
(about six when they are idle); it is cached once per machine (``digits_clip``), built under a
lock and checked against a sidecar checksum, so concurrent runs share one build and a damaged
file is rebuilt.
"""
import contextlib
import hashlib
import logging
import math
import os
import time

import torch

logger = logging.getLogger(__name__)

NAME = "tiny-digits"  # MODEL.BACKBONE.NAME the demo's config records
BUILD_VERSION = 1  # bump whenever the recipe below changes: it names the cached file
FILE = f"tiny_clip_digits-v{BUILD_VERSION}.pt"
ENV_CACHE = "DEPT_CACHE_DIR"

# Architecture: dept.core.testing.TINY (32-pixel images, widths 64 so clip.model.build_model
# rebuilds it from the state dict), with a 64-dimensional joint embedding instead of 32.
ARCH = dict(embed_dim=64)
# Captions; the first is the template the demo's zero-shot CLIP and CoOp's initialisation use.
TEMPLATES = (
    "a photo of a {}.",
    "a photo of the number {}.",
    "a handwritten {}.",
    "the digit {}.",
    "a drawing of a {}.",
)
# Adam, lr warmed up linearly over the first tenth, then cosine-decayed to zero. The recipe was chosen
# for a model that is good but not perfect: converged (300+ steps) it reaches ~92% zero-shot on the
# ten test classes and ~97% on the five base ones, leaving prompt tuning little to show; 120 steps
# give ~86% (base ~91%). Higher learning rates (>= 1e-3) or a fixed logit scale of 100 from the start
# often collapse to uniform predictions (loss stuck at ln 10) for many steps, depending on the seed.
STEPS = 120  # a module attribute so that tests can build a small one
BATCH_SIZE = 128
LR = 3e-4
WARMUP = 0.1  # fraction of the steps
# CLIP's initial inverse temperature; learned (it ends near 14.4 at this learning rate, so CoOp's
# logits are softer than with the released CLIP's 100) and capped at 100 as CLIP caps it.
INIT_LOGIT_SCALE = 1 / 0.07
MAX_LOGIT_SCALE = 100.0
# CLIP's normalisation, as configs/trainers/CoOp/demo_tiny.yaml gives it to the demo's runs.
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


def _digits():
    """(sklearn's digits, their labels, the demo's split {name: indices})."""
    from sklearn.datasets import load_digits

    from dept.datasets.digits import _split_indices

    digits = load_digits()
    labels = [int(y) for y in digits.target]
    return digits, labels, _split_indices(labels)


def _images(digits, indices):
    """The demo's images of ``indices`` as the pipeline feeds them to CLIP: the written 32x32 RGB
    pixels (``digit_image``; the demo's resize to 32 leaves them as they are), scaled to [0, 1]
    and normalised with CLIP's mean and std."""
    import numpy as np

    from dept.datasets.digits import digit_image

    pixels = np.stack([np.asarray(digit_image(digits, i)) for i in indices])  # N x 32 x 32 x 3, uint8
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _classnames():
    from dept.datasets.digits import CLASSNAMES

    return CLASSNAMES


@contextlib.contextmanager
def _deterministic():
    """Deterministic kernels and a global RNG left as it was found, whatever happens inside."""
    rng_state = torch.random.get_rng_state()
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.random.set_rng_state(rng_state)


def build_state_dict(steps=None, seed=0):
    """Pretrain the tiny CLIP on the digits' train split; returns its fp32 state dict.

    Class-level contrastive loss, as in CLIP's zero-shot use: each step draws one template and a
    batch of images, encodes the ten class captions of that template, and applies cross-entropy
    over the scaled cosine similarities between each image and the ten captions, the scale
    (``logit_scale``, CLIP's inverse temperature) learned with the rest. All randomness comes
    from a private generator seeded with ``seed``; no augmentation, no data-loader workers.
    """
    import clip

    from dept.core.testing import tiny_clip

    steps = STEPS if steps is None else steps
    digits, labels, split = _digits()
    train = split["train"]
    with _deterministic():
        images = _images(digits, train)
        targets = torch.tensor([labels[i] for i in train])
        tokens = torch.stack([clip.tokenize([t.format(c) for c in _classnames()]) for t in TEMPLATES])
        model = tiny_clip(seed, **ARCH).train()
        with torch.no_grad():
            model.logit_scale.fill_(math.log(INIT_LOGIT_SCALE))
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        warmup = max(1, round(WARMUP * steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps)))
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            template = int(torch.randint(len(TEMPLATES), (1,), generator=generator))
            batch = torch.randint(len(train), (BATCH_SIZE,), generator=generator)
            image_features = _normalised(model.encode_image(images[batch]))
            text_features = _normalised(model.encode_text(tokens[template]))
            scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
            loss = torch.nn.functional.cross_entropy(scale * image_features @ text_features.t(), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))
        return {key: value.detach().float().clone() for key, value in model.eval().state_dict().items()}


def _normalised(features):
    return features / features.norm(dim=-1, keepdim=True)


def checksum(state_dict):
    """SHA-256 over the tensors in sorted key order: each key, dtype, shape, then its bytes."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _cache_root(path=None):
    """Where the build is cached: ``path``, else ``$DEPT_CACHE_DIR``, else ``~/.cache/dept``."""
    return os.path.abspath(os.path.expanduser(path or os.environ.get(ENV_CACHE) or "~/.cache/dept"))


def _intact(path):
    """None when ``path`` holds the build its sidecar checksum names; else why not (or '' if absent)."""
    if not os.path.exists(path):
        return ""
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        with open(path + ".sha256") as f:
            expected = f.read().split()[0]
    except Exception as err:  # truncated, not a torch file, sidecar missing or empty
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if not isinstance(state_dict, dict) or checksum(state_dict) != expected:
        return "its checksum does not match the one written with it"
    return None


def intact(path):
    """Whether ``path`` holds a whole build, as its sidecar checksum says."""
    return _intact(path) is None


def digits_clip(cache_dir=None):
    """The path of the cached pretrained tiny CLIP, built on first use (``build_state_dict``).

    Built once under a ``FileLock`` beside the file (a second process waits and then finds it
    built), written atomically with a sidecar ``<file>.sha256``; a file that does not load or does
    not match its checksum is logged as corrupt and rebuilt.
    """
    from dept.util.files import FileLock, torch_save, write_text

    path = os.path.join(_cache_root(cache_dir), FILE)
    if _intact(path) is None:
        return path
    with FileLock(path + ".lock"):
        problem = _intact(path)  # another process may have built it while we waited
        if problem is None:
            return path
        if problem:
            logger.warning("The cached demo CLIP %s is corrupt (%s): rebuilding it", path, problem)
        logger.info("Building the demo's tiny CLIP pretrained on digits (under a minute, once)")
        start = time.perf_counter()
        state_dict = build_state_dict()
        torch_save(state_dict, path)
        write_text(path + ".sha256", f"{checksum(state_dict)}  {FILE}\n")
        logger.info("Built the demo's tiny CLIP in %.0f s: %s", time.perf_counter() - start, path)
    return path


def _load(model_or_state_dict_or_path):
    """A fp32 CLIP from a model, a state dict or a file, rebuilt as the loader rebuilds it."""
    import clip

    source = model_or_state_dict_or_path
    if isinstance(source, torch.nn.Module):
        return source.float().eval()
    if not isinstance(source, dict):
        source = torch.load(source, map_location="cpu", weights_only=True)
    # build_model casts to fp16 as for the released weights (and the demo's runs see that rounding).
    return clip.model.build_model(dict(source)).float().eval()


@torch.no_grad()
def zero_shot_accuracy(model_or_state_dict_or_path, classes=range(10), split="test", template="a photo of a {}."):
    """Zero-shot accuracy (%) of the CLIP on the digits of ``split`` whose labels are in ``classes``,
    choosing among those classes only (argmax of the cosine similarity to ``template`` captions)."""
    import clip

    model = _load(model_or_state_dict_or_path)
    classes = list(classes)
    digits, labels, splits = _digits()
    indices = [i for i in splits[split] if labels[i] in classes]
    names = _classnames()
    text_features = _normalised(model.encode_text(clip.tokenize([template.format(names[c]) for c in classes])))
    image_features = _normalised(model.encode_image(_images(digits, indices)))
    predicted = torch.tensor(classes)[(image_features @ text_features.t()).argmax(dim=1)]
    truth = torch.tensor([labels[i] for i in indices])
    return 100.0 * (predicted == truth).float().mean().item()
