"""Reading the datasets' pickled caches without running anything a pickle names.

Data roots are often shared by a lab, and ``pickle.load`` calls whatever a pickle names
(``os.system``, ``builtins.eval``, any class's ``__reduce__`` or ``__setstate__``): a crafted
``split_fewshot/shot_K-seed_S.pkl`` or ``imagenet/preprocessed.pkl`` would run code in every
user's training. ``load_cache`` builds only what these caches hold, as the CoOp family and we
write them (``pickle.dump`` of ``{"train": [Datum], ...}``, any protocol):

* Dassl's ``Datum``, which pickles as its class plus its ``__dict__`` (``_impath`` str,
  ``_label`` int, ``_domain`` int, ``_classname`` str). It is built as an inert record, its
  state checked, and only then made a ``Datum``: no ``Datum.__init__`` or ``__setstate__`` runs;
* plain values: dict, list, tuple, str, int, float, bool, None, and ``collections.OrderedDict``.

Any other global (a function, another class, a ``Datum`` subclass) is refused before its module
is even imported, and so is any other value: ``RefusedCache``, naming the file and the global.
The callers set a refused cache aside (``set_aside``) and rebuild it, as they do a stale one.

The other files the datasets read from a data root are parsed as data only, nothing there is
executed: split files and ``cat_to_name.json`` by ``json.load``, class-name and image lists
(ImageNet's ``classnames.txt``, FGVC-Aircraft's variant lists) as lines of text.
"""
import _compat_pickle
import collections
import os
import pickle

from dassl.data.datasets.base_dataset import Datum

DATUM_FIELDS = {"_impath": str, "_label": int, "_domain": int, "_classname": str}
_PLAIN = (str, int, float, bool, type(None))  # bool is an int, listed for the reader
_CONTAINERS = (dict, list, tuple, collections.OrderedDict)


class RefusedCache(ValueError):
    """A cache that holds something other than ``Datum`` records and plain values (never run)."""


class _DatumRecord:
    """What the unpickler builds for a pickled ``Datum``: a class with no behaviour of its own.

    ``__setstate__`` only stores the state; ``_finish`` checks it and turns the record into a
    real ``Datum`` (same layout: a plain ``__dict__``), so the cache's consumers see Dassl's class.
    """

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a Datum's state is a {type(state).__name__}, not a dict")
        self.__dict__.update(state)


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` as protocols 0 and 1 pickle a ``Datum``, for that case only."""
    if cls is not _DatumRecord or base is not object or state is not None:
        raise pickle.UnpicklingError("copyreg._reconstructor is allowed only to rebuild a Datum")
    return _DatumRecord()


_ALLOWED = {
    ("dassl.data.datasets.base_dataset", "Datum"): _DatumRecord,
    ("dassl.data.datasets", "Datum"): _DatumRecord,  # the same class under its re-exported name
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "object"): object,  # the ``base`` argument of ``_reconstructor``
}


class _CacheUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        # Never super().find_class: importing ``module`` can itself run code.
        # Protocols 0-2 write Python 2 names (copy_reg, __builtin__).
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = _ALLOWED.get((module, name))
        if found is None:
            raise RefusedCache(f"{self.path} was refused: it names the global {module}.{name}, which a dataset "
                               "cache never holds (only Dassl Datum records and plain values); nothing of it was run")
        return found


def load_cache(path):
    """The content of the pickled cache at ``path``, built without running anything it names.

    Raises ``RefusedCache`` (a ``ValueError``) naming the file and the offending global or value;
    a truncated or garbled file raises what ``pickle`` raises for it.
    """
    with open(path, "rb") as f:
        data = _CacheUnpickler(f, path).load()
    _finish(data, path)
    return data


def _finish(data, path):
    """Check every value reachable from ``data`` and turn each record into a ``Datum``, in place.

    Iterative, with a visited set: a pickle can nest deeply, share objects, or contain cycles.
    """
    stack, seen = [data], set()
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind in _PLAIN or kind is Datum:  # a Datum: a record already finished via another reference
            continue
        if kind is _DatumRecord:
            state = value.__dict__
            if state.keys() != DATUM_FIELDS.keys() or not all(
                    isinstance(state[k], t) for k, t in DATUM_FIELDS.items()):
                found = {k: type(v).__name__ for k, v in state.items()}
                raise RefusedCache(f"{path} was refused: it holds a Datum whose attributes are {found}, not "
                                   f"{ {k: t.__name__ for k, t in DATUM_FIELDS.items()} }")
            value.__class__ = Datum
            continue
        if kind not in _CONTAINERS:
            raise RefusedCache(f"{path} was refused: it holds a {kind.__name__}, which a dataset cache never holds")
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        else:
            stack.extend(value)


def set_aside(path):
    """Rename the unusable cache ``path`` to ``<path>.stale`` (kept for inspection, never read
    again) and say so, in words for the caller's warning; a read-only data root leaves it in place."""
    stale_path = f"{path}.stale"
    try:
        os.replace(path, stale_path)
    except OSError as err:
        return f"left in place (it could not be moved aside: {err})"
    return f"set aside as {stale_path}"
