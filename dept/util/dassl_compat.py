"""Dassl's warm-up LR schedulers on current torch, for everyone's trainers (opt-in, logged).

Dassl's ``ConstantWarmupScheduler`` / ``LinearWarmupScheduler`` (``dassl/optim/lr_scheduler.py``)
fail on torch >= 2.6: they pass ``verbose`` to torch (``TypeError``), and their ``state_dict``
pickles the successor scheduler object, which ``torch.load`` refuses by default, so Dassl's
resume fails. dept's own trainers do not need this (``dept/optim.py`` builds a scheduler with the
same learning rates); a user's own Dassl trainers in the same environment do. Dassl is not forked:
the fix (``dept/_dassl_hook.py``, what it changes and why is written there) is applied

- in one process: ``dept.util.dassl_compat.patch_dassl_schedulers()``, before building the trainer;
- in every process of the environment: ``python -m dept dassl-fix install`` writes
  ``dept-dassl-fix.pth`` into site-packages. Its one line loads the standard-library-only hook
  by file path and puts an import finder on ``sys.meta_path``; the patch is applied when, and
  only when, a process imports ``dassl.optim.lr_scheduler`` (torch, Dassl and dept are not
  imported at start-up). ``uninstall`` removes the file, ``status`` says what is in place.

Each application logs one line (``dept.util.dassl_compat``).
"""
import argparse
import logging
import os
import re
import sys
import sysconfig

from dept import _dassl_hook

logger = logging.getLogger(__name__)

PTH_NAME = "dept-dassl-fix.pth"
HOOK_FILE = os.path.abspath(_dassl_hook.__file__)
HOOK_MODULE = "_dept_dassl_fix"


def patch_dassl_schedulers():
    """Patch Dassl's warm-up schedulers in this process (idempotent).

    Returns True if the patch was applied now, False if it already was (here, or by the
    installed hook). Raises ``ModuleNotFoundError`` without Dassl.
    """
    import dassl.optim.lr_scheduler as module

    return _dassl_hook.patch_module(module)


def is_patched():
    """Whether this process's ``dassl.optim.lr_scheduler`` (if Dassl is installed) is patched."""
    try:
        import dassl.optim.lr_scheduler as module
    except ModuleNotFoundError:
        return False
    return bool(getattr(module, "_BaseWarmupScheduler", None) and module._BaseWarmupScheduler.__dict__.get(
        "_dept_patched"))


def default_site_dir():
    """The site-packages of the running environment (a venv's own when run from one)."""
    return sysconfig.get_paths()["purelib"]


def pth_line(hook_file=HOOK_FILE):
    """The ``.pth`` line (``site`` executes lines that start with ``import``): load the hook file by
    path and install its finder. Standard library only; a no-op when the file is gone (dept
    uninstalled) instead of an error at every start-up, and when already loaded."""
    body = (f"if os.path.isfile(p) and {HOOK_MODULE!r} not in sys.modules:\n"
            " import importlib.util as u\n"
            f" s = u.spec_from_file_location({HOOK_MODULE!r}, p); m = u.module_from_spec(s)\n"
            f" sys.modules[{HOOK_MODULE!r}] = m; s.loader.exec_module(m); m.install_finder()\n")
    return f"import os, sys; p = {hook_file!r}; exec({body!r})\n"


def _hook_file_named_in(pth_text):
    match = re.search(r"\bp = (['\"])(.*?)\1;", pth_text)
    return match.group(2) if match else None


def install(site_dir=None):
    """Write the ``.pth`` file into ``site_dir`` (default: this environment's site-packages)."""
    site_dir = site_dir or default_site_dir()
    os.makedirs(site_dir, exist_ok=True)
    path = os.path.join(site_dir, PTH_NAME)
    with open(path, "w") as f:
        f.write("# dept: patch Dassl's warm-up LR schedulers when imported (python -m dept dassl-fix)\n")
        f.write(pth_line())
    logger.info("Installed %s: every Python process that reads %s patches Dassl's warm-up LR schedulers "
                "when it imports dassl.optim.lr_scheduler. Undo: python -m dept dassl-fix uninstall", path, site_dir)
    _warn_if_not_a_site_dir(site_dir)
    return path


def uninstall(site_dir=None):
    """Remove the ``.pth`` file. True if there was one."""
    path = os.path.join(site_dir or default_site_dir(), PTH_NAME)
    if not os.path.isfile(path):
        logger.info("Nothing to remove: %s does not exist.", path)
        return False
    os.remove(path)
    logger.info("Removed %s: Dassl's schedulers are no longer patched in new processes.", path)
    return True


def status(site_dir=None):
    """What is in place: the ``.pth`` file, the hook it loads, and this process's Dassl.

    Returns a dict (also logged): ``installed``, ``pth``, ``hook_file``, ``hook_file_exists``,
    ``patched_here`` and ``needed`` (torch's LRScheduler has no ``verbose`` any more).
    """
    import inspect

    path = os.path.join(site_dir or default_site_dir(), PTH_NAME)
    installed = os.path.isfile(path)
    hook_file = None
    if installed:
        with open(path) as f:
            text = f.read()
        hook_file = _hook_file_named_in(text)
    try:
        from torch.optim.lr_scheduler import LRScheduler

        needed = "verbose" not in inspect.signature(LRScheduler.__init__).parameters
    except ImportError:
        needed = None
    report = {"installed": installed, "pth": path, "hook_file": hook_file,
              "hook_file_exists": bool(hook_file and os.path.isfile(hook_file)),
              "patched_here": is_patched(), "needed": needed}
    if installed:
        logger.info("dassl-fix is installed: %s loads %s%s", path, hook_file,
                    "" if report["hook_file_exists"] else " (MISSING: run install again from this dept)")
    else:
        logger.info("dassl-fix is not installed (%s does not exist).", path)
    logger.info("In this process Dassl's warm-up schedulers are %s; this torch %s the fix.",
                "patched" if report["patched_here"] else "not patched",
                {True: "needs", False: "does not need", None: "(not installed) may not need"}[needed])
    return report


def _warn_if_not_a_site_dir(site_dir):
    import site

    site_dirs = [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]
    if not any(os.path.realpath(site_dir) == os.path.realpath(d) for d in site_dirs):
        logger.warning("%s is not a site-packages directory of this Python: the .pth file there is read only "
                       "by processes that add it with site.addsitedir().", site_dir)


def main(argv=None):
    """``python -m dept dassl-fix install|uninstall|status [--site-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m dept dassl-fix", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("install", "uninstall", "status"))
    parser.add_argument("--site-dir", default=None,
                        help=f"where the .pth file goes (default: this environment's, {default_site_dir()})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.action == "install":
        install(args.site_dir)
        return 0
    if args.action == "uninstall":
        uninstall(args.site_dir)
        return 0
    return 0 if status(args.site_dir)["installed"] else 1
