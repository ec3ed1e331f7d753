"""Few-shot subsets sampled and cached exactly as the CoOp family does, plus the checks it lacks.

Sampling: Dassl's ``generate_fewshot_dataset`` with Python's global ``random`` (seeded by the
caller with ``set_random_seed(cfg.SEED)`` before the dataset is built): train gets K images per
class, val min(K, 4), in that order. The result is cached in
``<dataset_dir>/split_fewshot/shot_{K}-seed_{S}.pkl`` as ``{"train": [Datum], "val": [Datum]}``
(ImageNet: ``{"train": [...]}``), the file CoOp, MaPLe, PromptSRC and the official DePT read and
write, so a cache made by any of them is reused and ours is usable by them.

What we add: ``plan_shots`` checks ``DATASET.NUM_SHOTS`` against the split before anything is drawn
(0 and a K no class can provide are errors; a K some classes cannot provide is a note the run
carries), and a cache is matched item by item against the current split. Paths that differ only
by the data root (the caches store absolute paths) are re-rooted in memory; a cache holding
images that are not in the split, other labels, or the wrong count per class is stale: it is set
aside as ``*.stale`` with a warning and a new sample is drawn (never silently used). The cache is
read by ``safe_cache.load_cache``, which builds only ``Datum`` records and plain values: a cache
naming anything else (a crafted file in a shared data root) is refused, set aside and rebuilt the
same way, and nothing in it runs.
"""
import collections
import contextlib
import contextvars
import logging
import os
import pickle

from dept.util.files import atomic_open

from .errors import DatasetConfigError
from .safe_cache import RefusedCache, load_cache, set_aside

logger = logging.getLogger(__name__)

FEWSHOT_DIR = "split_fewshot"
VAL_SHOTS_CAP = 4  # CoOp: val keeps min(K, 4) images per class
MAX_NAMED_CLASSES = 20  # a note names at most this many short classes (smallest first), then counts the rest

_EVALUATION_ONLY = contextvars.ContextVar("dept_evaluation_only", default=False)


@contextlib.contextmanager
def evaluation_only():
    """Datasets built inside are read by an evaluation (``--eval-only``): its K-shot training list is
    drawn as the CoOp family draws it but never read, so K is not checked against the classes' sizes
    (a cross-dataset target of your own may have classes with fewer than K training images)."""
    token = _EVALUATION_ONLY.set(True)
    try:
        yield
    finally:
        _EVALUATION_ONLY.reset(token)


def plan_shots(dataset_name, num_shots, train, val=None, labels=None, scope=""):
    """``({"train": K, "val": min(K, 4)}, notes)`` for ``DATASET.NUM_SHOTS`` = K, or ``(None, [])``.

    Dassl's ``generate_fewshot_dataset`` quietly gives a class all its images when it has fewer
    than K, and treats K = 0 like "all": a 0-shot or 1000-shot run would report numbers for a
    setting it did not run. So, over the classes of ``labels`` (the ones the run keeps; default
    every label of ``train``):

    * K < 0 (Dassl's default -1): every image, no sampling; returns ``(None, [])``;
    * K = 0, or not an integer: ``DatasetConfigError``;
    * K above the largest class's number of train images: ``DatasetConfigError`` (no class would
      get K images; the run would be an all-images run under a K-shot name);
    * K above some classes' size: a note naming how many and which classes get fewer than K;
    * likewise a note for classes with fewer than min(K, 4) val images (the val count is derived
      from K, not chosen, so a shortfall there is reported, not refused).

    ``val`` is None for datasets whose val is not sampled (ImageNet: val is the test set).
    ``scope`` qualifies the classes in the notes ("base", "new"; "" = all).
    """
    if isinstance(num_shots, bool) or not isinstance(num_shots, int):
        raise DatasetConfigError(f"{dataset_name}: DATASET.NUM_SHOTS must be an integer, got {num_shots!r}")
    if num_shots < 0:
        return None, []
    if num_shots == 0:
        raise DatasetConfigError(
            f"{dataset_name}: DATASET.NUM_SHOTS 0 would train on no images. Use -1 for all images, "
            "or K >= 1 for K images per class."
        )
    shots = {"train": num_shots} if val is None else {"train": num_shots, "val": min(num_shots, VAL_SHOTS_CAP)}
    names = {}
    for item in train:
        names.setdefault(item.label, item.classname)
    kept = sorted(names) if labels is None else list(labels)
    if not kept:  # no training data at all: nothing to sample, Dassl reports the empty dataset
        return shots, []
    if _EVALUATION_ONLY.get():
        return shots, []  # sampled for Dassl's loaders, never trained on: nothing to check or report
    counts = collections.Counter(item.label for item in train)
    largest = max(kept, key=lambda y: counts[y])
    if num_shots > counts[largest]:
        raise DatasetConfigError(
            f"{dataset_name}: DATASET.NUM_SHOTS {num_shots} is more than the largest class has: "
            f"{names.get(largest, largest)!r} has {counts[largest]} training images, so no class would get "
            f"{num_shots}. Use K <= {counts[largest]}, or -1 for all images."
        )
    classes = f"{scope} classes" if scope else "classes"
    notes = [_shortfall(dataset_name, kept, names, counts, num_shots, classes, "training images")]
    if val is not None:
        val_counts = collections.Counter(item.label for item in val)
        notes.append(_shortfall(dataset_name, kept, names, val_counts, shots["val"], classes,
                                f"validation images (val takes min(K, {VAL_SHOTS_CAP}) per class)"))
    return shots, [note for note in notes if note]


def _shortfall(dataset_name, labels, names, counts, shots, classes, what):
    """The note for the classes of ``labels`` with fewer than ``shots`` images, or None."""
    short = sorted((y for y in labels if counts[y] < shots), key=lambda y: (counts[y], y))
    if not short:
        return None
    shown = ", ".join(f"{names.get(y, f'label {y}')} ({counts[y]})" for y in short[:MAX_NAMED_CLASSES])
    if len(short) > MAX_NAMED_CLASSES:
        shown += f", and {len(short) - MAX_NAMED_CLASSES} more"
    return (f"{dataset_name}: {len(short)} of {len(labels)} {classes} have fewer than {shots} {what} "
            f"and use all they have: {shown}")


def fewshot_cache_path(dataset_dir, num_shots, seed):
    """``<dataset_dir>/split_fewshot/shot_{K}-seed_{S}.pkl``, the name all CoOp-family code uses."""
    return os.path.join(dataset_dir, FEWSHOT_DIR, f"shot_{num_shots}-seed_{seed}.pkl")


class StaleCache(Exception):
    """A cache that does not match the current split; the message says how."""


class _PathIndex:
    """Finds the split item a cached path stands for, even when the data root has moved.

    Cached paths are absolute. If ``path`` is not a current path, its longest suffix that is a
    current path relative to ``image_dir`` identifies the item; the old prefix found that way is
    remembered, so the remaining items of a cache cost one lookup each.
    """

    def __init__(self, items, image_dir):
        self.items = {item.impath: item for item in items}
        self.image_dir = image_dir
        self.old_prefixes = set()
        self._prefix = None

    def find(self, path):
        item = self.items.get(path)
        if item is not None:
            return item
        if self._prefix is not None and path.startswith(self._prefix):
            item = self.items.get(os.path.join(self.image_dir, path[len(self._prefix):]))
            if item is not None:
                return item
        parts = path.replace("\\", "/").split("/")
        for k in range(1, len(parts)):
            item = self.items.get(os.path.join(self.image_dir, *parts[k:]))
            if item is not None:
                self._prefix = "/".join(parts[:k]) + "/"
                self.old_prefixes.add(self._prefix)
                return item
        return None


def match_cached(cached, full, num_shots, image_dir):
    """The current split's items for a cached few-shot list, or ``StaleCache`` saying why not.

    A valid cache holds, for every class of ``full``, exactly min(K, n_class) distinct items of
    ``full`` with the same label and class name (what ``generate_fewshot_dataset`` produces).
    Returns ``(items, old_prefixes)``: the matched items in cache order, and the data roots the
    cache was re-rooted from (empty when its paths are current).
    """
    if not isinstance(cached, list):
        raise StaleCache(f"expected a list of Datum, found {type(cached).__name__}")
    index = _PathIndex(full, image_dir)
    matched, seen = [], set()
    for datum in cached:
        path = getattr(datum, "impath", None)
        if not isinstance(path, str):
            raise StaleCache(f"an entry is not a Dassl Datum ({type(datum).__name__})")
        item = index.find(path)
        if item is None:
            raise StaleCache(f"{path} is not in the split")
        if (datum.label, datum.classname) != (item.label, item.classname):
            raise StaleCache(
                f"{path} is cached as ({datum.label}, {datum.classname!r}) but the split says "
                f"({item.label}, {item.classname!r})"
            )
        if item.impath in seen:
            raise StaleCache(f"{path} appears twice")
        seen.add(item.impath)
        matched.append(item)
    available = collections.Counter(item.label for item in full)
    counts = collections.Counter(item.label for item in matched)
    for label, n in sorted(available.items()):
        if counts[label] != min(num_shots, n):
            raise StaleCache(f"class {label} has {counts[label]} images, expected {min(num_shots, n)}")
    return matched, index.old_prefixes


def sample_few_shot(dataset, splits, shots):
    """Draw ``shots[name]`` items per class from each list in ``splits``, in the dict's order.

    Uses the dataset's own (Dassl) ``generate_fewshot_dataset``, one call per list in CoOp's
    order (train, then val), so the global random stream is consumed identically.
    """
    return {name: dataset.generate_fewshot_dataset(splits[name], num_shots=shots[name]) for name in shots}


def load_or_sample(dataset, splits, shots, cache_path, image_dir, dataset_name):
    """The few-shot lists for ``shots`` (e.g. ``{"train": 16, "val": 4}``): cached or sampled.

    ``splits`` holds the full lists. A matching cache is returned (re-rooted if needed); a stale
    one is set aside and replaced; a new sample is written to ``cache_path`` when possible
    (a read-only data root only costs the cache, with a warning).
    """
    if os.path.exists(cache_path):
        try:
            result = _load(cache_path, splits, shots, image_dir)
        except (StaleCache, RefusedCache) as err:
            reason = (str(err) if isinstance(err, RefusedCache)  # it names the file
                      else f"{cache_path} does not match the current split ({err})")
            logger.warning("%s: few-shot cache %s. It is %s and rebuilt: a new %d-shot sample is drawn.",
                           dataset_name, reason, set_aside(cache_path), shots["train"])
        else:
            logger.info("%s: loaded few-shot data from %s", dataset_name, cache_path)
            return result
    result = sample_few_shot(dataset, splits, shots)
    _save(result, cache_path, dataset_name)
    return result


def _load(cache_path, splits, shots, image_dir):
    try:
        data = load_cache(cache_path)
    except RefusedCache:
        raise
    except Exception as err:  # any other unpickling failure means the cache cannot be used
        raise StaleCache(f"cannot be unpickled: {type(err).__name__}: {err}") from err
    if not isinstance(data, dict):
        raise StaleCache(f"expected a dict, found {type(data).__name__}")
    result, old_prefixes = {}, set()
    for name, num_shots in shots.items():
        if name not in data:
            raise StaleCache(f"it has no {name!r} list")
        try:
            result[name], moved = match_cached(data[name], splits[name], num_shots, image_dir)
        except StaleCache as err:
            raise StaleCache(f"{name}: {err}") from err
        old_prefixes |= moved
    if old_prefixes:
        logger.info(
            "Few-shot cache %s was written under another data root (%s); its paths are re-rooted to %s",
            cache_path, ", ".join(sorted(old_prefixes)), image_dir,
        )
    return result


def _save(data, cache_path, dataset_name):
    """Write the cache through ``dept.util.files.atomic_open``: a unique
    temporary name beside it, renamed over it when complete, so a concurrent run never reads half
    a pickle and a failed write leaves nothing behind. A data root we cannot write to only costs
    the cache (a warning)."""
    try:
        with atomic_open(cache_path, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as err:
        logger.warning("%s: could not write the few-shot cache %s (%s); continuing without it",
                       dataset_name, cache_path, err)
        return
    logger.info("%s: saved few-shot data to %s", dataset_name, cache_path)
