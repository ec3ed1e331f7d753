"""Registration into Dassl's own registries (``TRAINER_REGISTRY``, ``DATASET_REGISTRY``).

There is one registry per kind, Dassl's. Registration must survive what happens in real
experiment code: our package imported twice (e.g. as ``dept.trainers`` and, from the repository
root, as ``trainers``), and a user's CoOp-family checkout registering its own ``CoOp`` or
``OxfordPets``, before or after ``import dept`` (import sorters put ``import dept`` first).
Dassl's ``Registry.register`` raises ``KeyError`` on any second registration, so:

- we register through :func:`register`, which leaves a name someone else holds to them;
- :func:`register` also wraps that registry instance's ``_do_register`` (the one method every
  ``@REGISTRY.register()`` goes through), so that a name held by one of *our* registrations is
  handed to whoever registers it later, with one INFO line. Everything else (a name held by
  someone else, a free name) goes to Dassl's own method unchanged, errors included.

Either import order ends the same: the user's classes under their names, ours under the rest.
"""
import functools
import inspect
import logging
import os

logger = logging.getLogger(__name__)


def _qualname(obj):
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _same_definition(a, b):
    """Same object, or the same source file imported under two module names
    ('dept.trainers.coop' and, from the repository root, 'trainers.coop')."""
    if a is b:
        return True
    if getattr(a, "__qualname__", None) != getattr(b, "__qualname__", None):
        return False
    try:
        return os.path.samefile(inspect.getsourcefile(a), inspect.getsourcefile(b))
    except (TypeError, OSError):
        return False


def _ours(registry):
    """name -> object for the names this package registered in ``registry`` (and still holds)."""
    owned = registry.__dict__.get("_dept_owned")
    if owned is None:
        owned = registry._dept_owned = {}
    return owned


def _install_handover(registry):
    """Wrap ``registry._do_register`` (once) so that a later registration takes over our names."""
    current = registry._do_register
    if getattr(current, "_dept_handover", False):
        return
    dassl_do_register = current

    @functools.wraps(dassl_do_register)
    def _do_register(name, obj, force=False):
        owned = _ours(registry)
        held = registry._obj_map.get(name)
        if name in owned and held is owned[name] and not force:
            if _same_definition(held, obj):
                return None  # our own class again (imported under a second module name)
            del owned[name]
            logger.info("%s '%s': %s replaces dept's %s (registered later; dept's stays importable).",
                        registry._name, name, _qualname(obj), _qualname(held))
            return dassl_do_register(name, obj, force=True)
        return dassl_do_register(name, obj, force=force)

    _do_register._dept_handover = True
    registry._do_register = _do_register


def register(registry, obj, name=None, aliases=()):
    """Register ``obj`` under ``name`` (default: its ``__name__``) and each alias.

    A name already taken by the same definition is left as it is (idempotent). A name taken by
    someone else's object is left to them (one INFO line says which object holds it), and a name
    we hold goes to whoever registers it after us: a user's own ``CoOp`` wins in either import
    order. Returns the names under which ``obj`` is now reachable.
    """
    _install_handover(registry)
    owned = _ours(registry)
    names = [name or obj.__name__, *aliases]
    reachable = []
    for key in names:
        existing = registry._obj_map.get(key)
        if existing is None:
            registry._do_register(key, obj)
            owned[key] = obj
            reachable.append(key)
        elif _same_definition(existing, obj):
            reachable.append(key)
        else:
            logger.info(
                "%s '%s' is already registered by %s; keeping that one. %s stays reachable as %s.",
                registry._name, key, _qualname(existing), _qualname(obj),
                [n for n in names if n != key] or "its import path only",
            )
    return reachable
