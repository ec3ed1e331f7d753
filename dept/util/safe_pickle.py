"""An unpickler for checkpoints written by the official code: tensors and containers, nothing that runs.

The official DePT/CoOp checkpoints (Dassl's ``save_checkpoint``) pickle live objects: the warm-up
scheduler's state holds its successor scheduler *object*, which holds the optimizer object, whose
momentum buffers sit in a ``collections.defaultdict`` keyed by ``Parameter`` objects.
``torch.load(weights_only=True)`` refuses them and ``weights_only=False`` would run whatever the
pickle names (``os.system`` included). This module, passed to ``torch.load`` as ``pickle_module``:

- builds tensors (torch's own rebuild functions, the ones its ``weights_only`` loader allows),
  dtypes, sizes, devices and plain containers (``dict``, ``list``, ``set``, ``OrderedDict``,
  ``defaultdict`` without its factory unless that is a plain container type, ...);
- turns every other global into an :class:`Inert` stand-in: calling it, ``__new__``, ``BUILD``
  (``__setstate__``), item assignment, ``append``/``extend``/``add`` all only *store* what the
  pickle hands over, so the rest of the file (the tensors after the object) still loads. The
  stand-in remembers the name it replaces (``Inert.pickled_global``) and what it was given, for
  inspection; none of its methods call anything from the pickle.
"""
import _compat_pickle
import collections
import pickle

import torch

_TENSOR_REBUILDS = tuple(
    getattr(torch._utils, name)
    for name in (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage", "_rebuild_nested_tensor",
        "_rebuild_device_tensor_from_cpu_tensor",
    )
    if hasattr(torch._utils, name)
)
# Container and value types whose constructors only build data from data.
_PLAIN_TYPES = (dict, list, tuple, set, frozenset, bytearray, complex, int, float, str, bytes, bool,
                collections.OrderedDict, collections.Counter, collections.deque)


def _defaultdict(default_factory=None, *args):
    """``collections.defaultdict`` as pickled (``defaultdict(factory)`` then its items), keeping
    the factory only when it is a plain container type: an unknown factory would be called on
    the first missing key."""
    return collections.defaultdict(default_factory if default_factory in _PLAIN_TYPES else None, *args)


def _rebuild_from_type_v2(func, new_type, args, state):
    """torch's tensor-subclass wrapper, for plain ``Tensor`` / ``Parameter`` only (a subclass
    could run its own ``__setstate__``); anything else stays inert."""
    if func in _TENSOR_REBUILDS and new_type in (torch.Tensor, torch.nn.Parameter):
        return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)
    return _inert_class("torch._tensor._rebuild_from_type_v2")(func, new_type, args, state)


_SAFE_GLOBALS = {
    **{("torch._utils", f.__name__): f for f in _TENSOR_REBUILDS},
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "Counter"): collections.Counter,
    ("collections", "deque"): collections.deque,
    ("collections", "defaultdict"): _defaultdict,
    **{("builtins", t.__name__): t for t in _PLAIN_TYPES if t.__module__ == "builtins"},
}
if hasattr(torch.serialization, "_get_layout"):
    _SAFE_GLOBALS["torch.serialization", "_get_layout"] = torch.serialization._get_layout
try:  # how protocol 2 pickles bytes
    import _codecs

    _SAFE_GLOBALS["_codecs", "encode"] = _codecs.encode
except ImportError:  # pragma: no cover - CPython always has it
    pass


class Inert:
    """Stands in for any pickled object (or class, or function) that is not a tensor or plain data.

    Every pickle operation on it only records its arguments: ``Inert.calls`` (what it was called
    or constructed with), ``.state`` (``BUILD``), ``.items`` (item assignment) and ``.elements``
    (``append``/``extend``/``add``). Calling an instance returns a new stand-in, so a pickled
    ``getattr(obj, "method")(...)`` chain stays inert too.
    """

    pickled_global = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        object.__setattr__(self, "calls", [(args, kwargs)])
        object.__setattr__(self, "state", None)
        object.__setattr__(self, "items", {})
        object.__setattr__(self, "elements", [])
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        object.__setattr__(self, "state", state)

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.elements.append(value)

    def extend(self, values):
        self.elements.extend(values)

    def add(self, value):
        self.elements.append(value)

    def __call__(self, *args, **kwargs):
        return _inert_class(f"{self.pickled_global}(...)")(*args, **kwargs)

    def __repr__(self):
        return f"<inert stand-in for {self.pickled_global}>"


_INERT_CLASSES = {}


def _inert_class(qualified_name):
    """One ``Inert`` subclass per refused global, so the stand-in says what it replaces."""
    if qualified_name not in _INERT_CLASSES:
        _INERT_CLASSES[qualified_name] = type("Inert", (Inert,), {"pickled_global": qualified_name})
    return _INERT_CLASSES[qualified_name]


def _safe_global(module, name):
    # Protocol 2 (torch.save's default) writes Python 2 names: __builtin__.dict, ...
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    if (module, name) in _SAFE_GLOBALS:
        return _SAFE_GLOBALS[module, name]
    if module == "torch" and isinstance(torch.__dict__.get(name), torch.dtype):  # no lazy import via getattr
        return torch.__dict__[name]
    return _inert_class(f"{module}.{name}")


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Never super().find_class: that imports ``module``, which can itself run code.
        return _safe_global(module, name)


# torch.load(pickle_module=...) uses the module's Unpickler and load.
Unpickler = _SafeUnpickler


def load(file, **kwargs):
    return _SafeUnpickler(file, **kwargs).load()


def loads(data, **kwargs):
    import io

    return _SafeUnpickler(io.BytesIO(data), **kwargs).load()
