"""Registration into Dassl's own registries (``TRAINER_REGISTRY``, ``DATASET_REGISTRY``).

There is one registry per kind, Dassl's. Registration must survive what happens in real
experiment code: our package imported twice (e.g. as ``dept.trainers`` and, from the repository
root, as ``trainers``), and a user's CoOp checkout having registered its own ``CoOp`` first.
Dassl's ``Registry.register`` raises ``KeyError`` on any second registration, so we go through
``register`` below instead.
"""
import inspect
import logging
import os

logger = logging.getLogger(__name__)


def _qualname(obj):
    return f"{obj.__module__}.{obj.__qualname__}"


def _same_definition(a, b):
    """Same object, or the same source file imported under two module names
    ('dept.trainers.coop' and, from the repository root, 'trainers.coop')."""
    if a is b:
        return True
    if a.__qualname__ != b.__qualname__:
        return False
    try:
        return os.path.samefile(inspect.getsourcefile(a), inspect.getsourcefile(b))
    except (TypeError, OSError):
        return False


def register(registry, obj, name=None, aliases=()):
    """Register ``obj`` under ``name`` (default: its ``__name__``) and each alias.

    A name already taken by the same definition is left as it is (idempotent). A name taken by
    someone else's object is left to them, with a warning that says which object holds it, so a
    user's own ``CoOp`` keeps working next to ours.
    Returns the names under which ``obj`` is now reachable.
    """
    names = [name or obj.__name__, *aliases]
    reachable = []
    for key in names:
        existing = registry._obj_map.get(key)
        if existing is None:
            registry._do_register(key, obj)
            reachable.append(key)
        elif _same_definition(existing, obj):
            reachable.append(key)
        else:
            logger.warning(
                "%s '%s' is already registered by %s; keeping that one. %s stays reachable as %s.",
                registry._name, key, _qualname(existing), _qualname(obj),
                [n for n in names if n != key] or "nothing else",
            )
    return reachable
