"""Dassl trainers of this package: one module per method, each with its DePT variant and its
record (``register_method``). Importing this package imports every module beside this file, which
registers them: a new method is a new file here (and its configs), nothing else."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
