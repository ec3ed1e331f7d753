"""The Dassl scheduler fix itself, and the import hook that applies it; standard library only.

This file is loaded in two ways:

- as ``dept._dassl_hook`` by :mod:`dept.util.dassl_compat` (``patch_dassl_schedulers()``), and
- by file path, as the module ``_dept_dassl_fix``, from the ``.pth`` line that
  ``python -m dept dassl-fix install`` writes into site-packages. That happens at *every*
  interpreter start of the environment, so at import it defines things and nothing else: no torch,
  no Dassl, no dept (whose ``__init__`` registers trainers in Dassl). :func:`install_finder` puts
  a finder on ``sys.meta_path`` that only acts when ``dassl.optim.lr_scheduler`` is imported: it
  lets the normal finder locate it, and patches the module right after it has run.

What the patch changes in ``dassl.optim.lr_scheduler._BaseWarmupScheduler`` (the base of Dassl's
``ConstantWarmupScheduler`` and ``LinearWarmupScheduler``), and why:

- ``__init__`` no longer passes ``verbose`` to torch's ``LRScheduler`` (torch >= 2.6 removed it:
  ``TypeError: LRScheduler.__init__() takes from 2 to 3 positional arguments``);
- ``state_dict()`` holds the successor scheduler's ``state_dict()`` instead of the object, so
  Dassl's checkpoints are plain data that ``torch.load`` (``weights_only=True``, its default since
  torch 2.6) reads; ``load_state_dict()`` loads it into the live successor. Unpatched, a resumed
  run also got the *pickled copy* of the successor, which steps a pickled copy of the optimizer:
  past warm-up the real optimizer's learning rate never changed again. Checkpoints written before
  the patch (a successor object, read with ``weights_only=False``) still load.
"""
import sys

TARGET = "dassl.optim.lr_scheduler"
LOGGER = "dept.util.dassl_compat"


def _log(message, *args):
    """One INFO line: through logging when anything is configured to show it (the user's
    handlers, or dept's console fallback), else on stderr, so an application is never silent."""
    import logging

    logger = logging.getLogger(LOGGER)
    if logger.hasHandlers():
        logger.info(message, *args)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    handler.handle(logger.makeRecord(LOGGER, logging.INFO, __file__, 0, message, args, None))


def patch_module(module):
    """Patch a loaded ``dassl.optim.lr_scheduler`` in place. True if patched now, False if it
    already was. A Dassl without ``_BaseWarmupScheduler`` is left alone, with a line that says so."""
    import inspect

    base = getattr(module, "_BaseWarmupScheduler", None)
    if base is None:
        _log("%s has no _BaseWarmupScheduler (a Dassl this fix does not know): nothing patched.", TARGET)
        return False
    if base.__dict__.get("_dept_patched"):
        return False
    torch_scheduler = base.__mro__[1]  # torch's _LRScheduler / LRScheduler
    takes_verbose = "verbose" in inspect.signature(torch_scheduler.__init__).parameters

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1, verbose=False):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        if verbose and takes_verbose:  # only where torch still has it, and only if asked for
            torch_scheduler.__init__(self, optimizer, last_epoch, verbose)
        else:
            torch_scheduler.__init__(self, optimizer, last_epoch)

    def state_dict(self):
        """torch's state (everything but the optimizer), with the successor as its state dict."""
        state = torch_scheduler.state_dict(self)
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        """Load into this scheduler and its live successor (never replace the successor)."""
        state = dict(state_dict)
        successor = state.pop("successor", None)
        torch_scheduler.load_state_dict(self, state)
        if successor is not None:
            if not isinstance(successor, dict):  # written before the patch: the pickled object
                successor = successor.state_dict()
            self.successor.load_state_dict(successor)

    for function in (__init__, state_dict, load_state_dict):
        function.__qualname__ = f"{base.__qualname__}.{function.__name__}"
        function.__module__ = base.__module__
        setattr(base, function.__name__, function)
    base._dept_patched = True
    _log("Patched Dassl's warm-up LR schedulers (%s, from %s): no `verbose` passed to torch, the "
         "successor saved as its state_dict (python -m dept dassl-fix status).", TARGET,
         getattr(module, "__file__", "?"))
    return True


class _PatchingLoader:
    """Runs the real loader, then patches the module it made."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        patch_module(module)

    def __getattr__(self, name):  # get_source, get_filename, ... as the real loader has them
        return getattr(self.loader, name)


class DasslSchedulerFinder:
    """``sys.meta_path`` entry: finds nothing itself; wraps the loader of ``dassl.optim.lr_scheduler``."""

    dept_dassl_fix = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or getattr(finder, "dept_dassl_fix", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            _log("%s is loaded by %r, which this fix cannot wrap: Dassl's schedulers are NOT patched.",
                 TARGET, spec.loader)
            return spec
        spec.loader = _PatchingLoader(spec.loader)
        return spec


def install_finder():
    """Put the finder first on ``sys.meta_path`` (once); patch at once if Dassl's module is
    already loaded."""
    if not any(getattr(finder, "dept_dassl_fix", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, DasslSchedulerFinder())
    if TARGET in sys.modules:
        patch_module(sys.modules[TARGET])
