"""Trainer and dataset names checked before anything runs: a misspelling is named with its nearest
valid names and the whole list, at once, instead of as a missing config file (or a Dassl KeyError)
after the first runs have computed.

Valid trainers are the names Dassl's ``TRAINER_REGISTRY`` holds that are not Dassl's own
domain-adaptation trainers: every method's trainers and their official names (``dept.core.methods``)
and whatever a ``DEPT_PLUGINS`` module registered. Valid datasets, for the runner, are the dataset
config names (``<configs>/datasets/<name>.yaml``), which is what ``--datasets`` takes.
"""
import difflib
import glob
import os


def did_you_mean(name, valid):
    """' Did you mean X?' for the valid names closest to ``name`` (case ignored: ``DTD`` is ``dtd``), or ''."""
    lowered = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(lowered[c] for c in close)}?" if close else ""


def trainer_names():
    """The trainers a user can name: Dassl's registry without Dassl's own (``dassl.*``) trainers."""
    from dassl.engine import TRAINER_REGISTRY

    return sorted(name for name, obj in TRAINER_REGISTRY._obj_map.items()
                  if not getattr(obj, "__module__", "").startswith("dassl."))


def unknown_trainer(name):
    """The message for a trainer name Dassl's registry does not hold, or None when it holds it."""
    return unknown_trainers([name])


def unknown_trainers(names):
    """The message for the names in ``names`` that Dassl's registry does not hold (each with its
    closest names, the valid ones listed once), or None when it holds them all."""
    from dassl.engine import TRAINER_REGISTRY

    missing = [n for n in dict.fromkeys(names) if n not in TRAINER_REGISTRY.registered_names()]
    if not missing:
        return None
    valid = trainer_names()
    said = " ".join(f"unknown trainer '{name}'.{did_you_mean(name, valid)}" for name in missing)
    return (f"{said} Trainers: {', '.join(valid)} (a trainer of your own is known once its module is imported: "
            "DEPT_PLUGINS=<module>, see docs/extending.md)")


def dataset_names(configs_dir):
    """The dataset config names under ``configs_dir``: what ``--datasets`` and ``--source`` take."""
    return sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(configs_dir, "datasets", "*.yaml")))


def _config_of(dataset_class, configs_dir):
    """The config name whose yaml sets ``DATASET.NAME: <dataset_class>`` (a class name given for a
    config name, e.g. DescribableTextures for dtd), or None."""
    import yaml

    for name in dataset_names(configs_dir):
        try:
            with open(os.path.join(configs_dir, "datasets", f"{name}.yaml")) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and str((data.get("DATASET") or {}).get("NAME", "")).lower() == dataset_class.lower():
            return name
    return None


def unknown_datasets(names, configs_dir, flag="--datasets"):
    """The message for the names in ``names`` that have no dataset config, or None when all have one."""
    valid = dataset_names(configs_dir)
    missing = [n for n in dict.fromkeys(names) if n not in valid]
    if not missing:
        return None
    lines = []
    for name in missing:
        config = _config_of(name, configs_dir)
        hint = (f" {name} is the dataset class of {config}: name its config, {config}." if config
                else did_you_mean(name, valid))
        lines.append(f"unknown dataset '{name}' ({flag} takes dataset config names).{hint}")
    return (" ".join(lines) + f" Datasets: {', '.join(valid)} (the yaml files in {configs_dir}/datasets; "
            "--configs-dir changes the folder)")
