"""Frozen CLIP image features computed once for every evaluation that would compute the same ones.

Evaluation cost is the image encoder over the whole test set, and for the methods whose image
encoder is frozen and unprompted (their record says ``frozen_image_encoder``: zero-shot CLIP, CoOp,
CoCoOp, KgCoOp, CLIP-Adapter, each with DePT) that part is the same in every run of a grid that
evaluates the same images with the same CLIP: the paper's base-to-new grid evaluates each test set
2 × 3 seeds × 11 trainers times. With ``DEPT.FEATURE_CACHE`` set to a folder (the runner's
``--feature-cache``), the first evaluation writes the features there and the others read them,
without opening an image; what comes after the encoder (CLIP-Adapter's adapter, CoCoOp's text
conditioned on the image, the DePT head) runs as it does on images. The cached feature is
``PromptCLIP.encode_image`` with no prompts, so a hit gives the bits the encoder would give.

A file is named by the hash of everything its features depend on (``cache_key``): the CLIP file's
sha256 and the backbone name, the precision, dtype and device type, the test transform and the
dataset's image reader, the test batch size, and the ordered image list with each image's label,
size and modification time (plus the torch and dept versions). Any difference is another file: a
miss, never a wrong hit. Files are written atomically under a lock beside them (one writer; the
others wait, then read), carry a checksum of their tensor, and are read with
``torch.load(weights_only=True)``; a corrupt one is named in the log, recomputed and replaced.
"""
import hashlib
import json
import logging
import os

import torch
from tqdm import tqdm

from dept.core.model import PromptCLIP
from dept.util.files import FileLock, torch_save

logger = logging.getLogger(__name__)

FORMAT = "dept-image-features/1"
CLIP_HASHES = "clip_sha256.json"  # in the cache folder: the CLIP files hashed so far (``clip_sha256``)
_CLIP_SHA = {}  # the same, in this process


def loader_for(trainer, split=None):
    """(split, loader) as Dassl's ``test`` picks them: val when asked and there is one, else test."""
    split = split or trainer.cfg.TEST.SPLIT
    if split == "val" and trainer.val_loader is not None:
        return "val", trainer.val_loader
    return "test", trainer.test_loader


def why_not(trainer, loader):
    """Why the cache cannot serve this trainer's evaluation on ``loader`` ("" when it can).

    Only the registered class of a method whose record says ``frozen_image_encoder``, with the
    shared model's own encoder path, nothing trained or prompted before the feature, and a loader
    that reads the dataset's items in order: anything else could make a cached feature wrong.
    """
    cls = type(trainer)
    method = getattr(cls, "method", None)
    if method is None or not method.frozen_image_encoder:
        return f"{cls.__name__} prompts or trains its image encoder (its record: frozen_image_encoder=False)"
    if cls not in (method.trainer, method.dept_trainer):
        return f"{cls.__name__} is not the registered trainer of {method.name}"
    model = trainer.model
    if not isinstance(model, PromptCLIP) or type(model).features is not PromptCLIP.features \
            or type(model).encode_image is not PromptCLIP.encode_image:
        return f"{type(model).__name__} computes its image features its own way"
    if any(p.requires_grad for p in model.image_encoder.parameters()):
        return "its image encoder has parameters that train"
    with torch.no_grad():
        prompts = model.prompt_learner.prompts()
    if prompts.visual is not None or len(prompts.deep_visual):
        return "it has visual prompts"
    if not isinstance(loader.sampler, torch.utils.data.SequentialSampler):
        return f"its loader reads images in {type(loader.sampler).__name__} order, not the dataset's"
    items = getattr(loader.dataset, "data_source", None)
    if not items or not all(hasattr(item, "impath") for item in items):
        return "its loader's dataset names no image files"
    if " at 0x" in repr(getattr(loader.dataset, "transform", None)):
        return "its test transform cannot be named (an object without a repr of its settings)"
    return ""


def clip_sha256(cfg, directory=""):
    """The sha256 of the run's CLIP file, hashed once per file version: per process, and per cache
    folder (``clip_sha256.json``, by path, size, modification and change times and inode: a file
    written or replaced in any way has another change time), so a grid's runs do not each read
    hundreds of megabytes to name the features they share."""
    from dept.core.clip_loader import resolve_clip_file
    from dept.util.files import sha256, write_json

    backbone = cfg.MODEL.BACKBONE
    path = os.path.realpath(resolve_clip_file(backbone.NAME, backbone.get("PATH", ""), backbone.get("CACHE_DIR", "")))
    stat = os.stat(path)
    version = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}|{stat.st_ino}"
    if version in _CLIP_SHA:
        return _CLIP_SHA[version]
    known = {}
    memo = os.path.join(os.path.abspath(os.path.expanduser(directory)), CLIP_HASHES) if directory else ""
    if memo and os.path.isfile(memo):
        try:
            with open(memo) as f:
                known = json.load(f)
        except (OSError, ValueError):
            known = {}  # a damaged memo is only rewritten
    digest = known.get(version) if isinstance(known, dict) else None
    if not isinstance(digest, str) or len(digest) != 64:
        digest = sha256(path)
        if memo:
            try:
                write_json(memo, {**(known if isinstance(known, dict) else {}), version: digest})
            except OSError:
                pass  # a read-only cache folder: hashed again next time
    _CLIP_SHA[version] = digest
    return digest


def images_digest(items):
    """The sha256 of the ordered image list: each image's path, label, size and modification time."""
    digest = hashlib.sha256()
    for item in items:
        path = os.path.abspath(item.impath)
        stat = os.stat(path)
        digest.update(f"{path}\t{item.label}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(trainer, loader, directory=""):
    """Everything the features of ``loader``'s images depend on (see the module doc)."""
    from dept.version import __version__

    dataset, cfg = loader.dataset, trainer.cfg
    return {
        "format": FORMAT, "clip_sha256": clip_sha256(cfg, directory), "backbone": cfg.MODEL.BACKBONE.NAME,
        "precision": trainer.prec, "dtype": str(trainer.model.dtype), "device": torch.device(trainer.device).type,
        "transform": repr(dataset.transform), "reader": f"{type(dataset).__module__}.{type(dataset).__qualname__}",
        "batch_size": loader.batch_size, "images": images_digest(dataset.data_source),
        "count": len(dataset.data_source), "torch": torch.__version__, "dept": __version__,
    }


def cache_file(directory, key):
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40]
    return os.path.join(os.path.abspath(os.path.expanduser(directory)), f"{name}.pt")


def checksum(features):
    return hashlib.sha256(features.contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()


def read(path, key):
    """(the features in ``path`` for ``key``, or None; why the file is unusable, or "")."""
    if not os.path.isfile(path):
        return None, ""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (truncated, not a zip, not a tensor file: all recomputed)
        return None, f"cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        return None, f"is not a {FORMAT} file"
    features = payload.get("features")
    if not isinstance(features, torch.Tensor) or payload.get("key") != json.dumps(key, sort_keys=True):
        return None, "holds the features of other images or settings"
    if features.dim() != 2 or features.shape[0] != key["count"] or payload.get("checksum") != checksum(features):
        return None, "fails its checksum (damaged)"
    return features, ""


def write(path, key, features):
    features = features.detach().cpu().contiguous()
    torch_save({"format": FORMAT, "key": json.dumps(key, sort_keys=True), "features": features,
                "checksum": checksum(features)}, path)


def obtain(path, key, compute):
    """(features, True when read from ``path``): read, or computed once under the file's lock
    (a process that waited reads what the holder wrote) and written atomically."""
    features, problem = read(path, key)
    if features is not None:
        return features, True
    if problem:
        logger.warning("Image feature cache %s %s: the features are computed again and the file replaced.",
                       path, problem)
    try:
        lock = FileLock(f"{path}.lock").acquire()
    except OSError as err:
        logger.warning("Image feature cache: cannot lock %s.lock (%s): features computed without sharing them.",
                       path, err)
        return compute(), False
    try:
        features, _ = read(path, key)  # written by another process while this one waited
        if features is not None:
            return features, True
        features = compute()
        try:
            write(path, key, features)
        except OSError as err:
            logger.warning("Image feature cache: cannot write %s (%s): the features are not shared.", path, err)
        return features, False
    finally:
        lock.release()


def _compute(trainer, loader, split, labels):
    """The features of every image of ``loader``, batch by batch as the uncached evaluation does."""
    features = []
    seen = []
    for batch in tqdm(loader, desc=f"{split} image features", disable=None, leave=False, dynamic_ncols=True):
        images, batch_labels = trainer.parse_batch_test(batch)
        features.append(trainer.model.encode_image(images).cpu())
        seen.append(batch_labels.cpu())
    if not torch.equal(torch.cat(seen), labels):
        raise RuntimeError(f"The {split} loader gave other labels than its dataset's items: its image features "
                           "cannot be cached. Evaluate without the cache (DEPT.FEATURE_CACHE \"\", or the "
                           "runner's --no-feature-cache).")
    return torch.cat(features)


@torch.no_grad()
def evaluate(trainer, split=None):
    """Dassl's evaluation loop on cached image features; None (nothing done) where the cache does not
    serve (off, or ``why_not``), and the caller runs the loop on images."""
    directory = trainer.cfg.DEPT.get("FEATURE_CACHE", "")
    if not directory:
        return None
    split, loader = loader_for(trainer, split)
    reason = why_not(trainer, loader)
    if reason:
        logger.info("Image feature cache not used for %s: %s.", type(trainer).__name__, reason)
        return None
    items = loader.dataset.data_source
    try:
        key = cache_key(trainer, loader, directory)
    except OSError as err:
        logger.info("Image feature cache not used: %s", err)
        return None
    path = cache_file(directory, key)
    labels = torch.tensor([int(item.label) for item in items])
    print(f"Evaluate on the *{split}* set")  # Dassl's line, which log readers look for
    features, hit = obtain(path, key, lambda: _compute(trainer, loader, split, labels))
    logger.info("Image features of %d %s images: %s %s", len(items), split,
                "read from the cache (no image opened):" if hit else "computed (cache miss), written to", path)
    trainer.__dict__.setdefault("feature_cache_log", []).append(
        {"split": split, "hit": hit, "images": len(items), "file": path})
    trainer.evaluator.reset()
    step = loader.batch_size
    for start in range(0, len(items), step):
        image = features[start:start + step].to(trainer.device)
        output = trainer.predict(trainer.model.features(None, image_features=image))
        trainer.evaluator.process(output, labels[start:start + step].to(trainer.device))
    results = trainer.evaluator.evaluate()
    for name, value in results.items():
        trainer.write_scalar(f"{split}/{name}", value, trainer.epoch)
    return list(results.values())[0]
