"""An unpickler for checkpoints written by the official code: tensors and containers, nothing that runs.

The official DePT/CoOp checkpoints pickle live objects (the scheduler's successor and, through it,
the optimizer). ``torch.load(weights_only=True)`` refuses them and ``weights_only=False`` would run
whatever the pickle names. This module, passed to ``torch.load`` as ``pickle_module``, builds
tensors, dtypes and plain containers and turns every other global into an inert placeholder.
"""
import pickle

import torch

_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
}


class _Inert:
    """Stands in for any pickled object that is not a tensor or a plain container."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _Inert


# torch.load(pickle_module=...) uses the module's Unpickler and load.
Unpickler = _SafeUnpickler


def load(file, **kwargs):
    return _SafeUnpickler(file, **kwargs).load()
