"""The paper's four evaluation protocols: which runs each is made of, where they go, what they report.

Every protocol is a list of *chains*: one run that trains (or, for a method that learns nothing,
evaluates the model as built) followed by the evaluations of its checkpoint. A chain runs in one
place, in order; chains are independent of each other, so back-ends spread them (``dept.backends``).

* **base2new** (each dataset): train on the base half of the classes (Dassl then tests the base
  test split), evaluate that checkpoint on the new half. CoCoOp's layout::

      <output>/base2new/train_base/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<S>
      <output>/base2new/test_new/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<S>

* **cross_dataset**: train on every ImageNet class at 16 shots, evaluate the one checkpoint of each
  seed on the 10 other datasets, all their classes. **dg** (domain generalisation): the same
  ImageNet checkpoint on ImageNet-V2, -Sketch, -A and -R. The training run is shared: the DG and
  cross-dataset evaluations of a seed never train twice. The layout of the CoCoOp/MaPLe ``xd_*.sh``
  scripts::

      <output>/<source>/<Trainer>/<cfg>_<K>shots/seed<S>                       (training)
      <output>/evaluation/<Trainer>/<cfg>_<K>shots/<target>/seed<S>            (each target)
      <output>/evaluation/<Trainer>/<cfg>_<K>shots/from_<source>/<target>/seed<S>  (a source not ImageNet)

* **few_shot** (each dataset, each K of 1, 2, 4, 8, 16): train on every class at K shots; Dassl
  tests it after training. CoOp's ``main.sh`` layout: ``<output>/<dataset>/<Trainer>/<cfg>_<K>shots/seed<S>``
  (the ImageNet 16-shot run of a config is the cross-dataset training run of that config).

Tables go to ``<output>/<protocol>/results/``. Every log ends with the ``* accuracy: X%`` lines
the official ``parse_test_res.py`` reads.
"""
import os
from dataclasses import dataclass

BENCHMARK_11 = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
CROSS_DATASET_TARGETS = BENCHMARK_11[1:]
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
OFFICIAL_SOURCE = "imagenet"  # the source of the official cross-dataset and DG scripts
SOURCE_PREFIX = "from_"
FEW_SHOTS = (1, 2, 4, 8, 16)
# The embedded demo's stand-ins (no download): digits for the source and each dataset, its
# colour-inverted copy for a target (same classes, another domain).
DEMO_SOURCE, DEMO_TARGETS = "digits", ("digits_inverted",)


@dataclass(frozen=True)
class Protocol:
    """What differs between protocols; the runner does the rest the same way for all."""

    name: str  # the subcommand and the folder name
    title: str
    default_datasets: tuple  # the datasets (base2new, few_shot) or the targets (cross_dataset, dg)
    default_shots: tuple
    config_key: str  # which of a trainer's ``protocol_configs`` it uses (else its default config)
    has_source: bool = False  # one training dataset (``--source``), evaluated on the datasets
    train_subsample: str = "all"
    eval_subsample: str = "all"

    @property
    def command(self):
        return self.name.replace("_", "-")


PROTOCOLS = {p.name: p for p in (
    Protocol("base2new", "base-to-new generalisation", BENCHMARK_11, (16,), "base2new",
             train_subsample="base", eval_subsample="new"),
    Protocol("cross_dataset", "cross-dataset transfer", CROSS_DATASET_TARGETS, (16,), "cross_dataset",
             has_source=True),
    Protocol("dg", "domain generalisation", DG_TARGETS, (16,), "cross_dataset", has_source=True),
    Protocol("few_shot", "few-shot learning", BENCHMARK_11, FEW_SHOTS, "few_shot"),
)}


def protocol_named(name):
    key = name.replace("-", "_")
    if key not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}; one of {', '.join(p.command for p in PROTOCOLS.values())}")
    return PROTOCOLS[key]


def train_dir(protocol, output, dataset, shots, trainer, variant, seed):
    """The folder of a chain's first run (training, or the as-built evaluation of zero-shot CLIP)."""
    if protocol.name == "base2new":
        return os.path.join(output, "base2new", "train_base", dataset, f"shots_{shots}", trainer, variant,
                            f"seed{seed}")
    return os.path.join(output, dataset, trainer, f"{variant}_{shots}shots", f"seed{seed}")


def eval_dir(protocol, output, dataset, shots, trainer, variant, seed, source=None):
    """The folder of an evaluation of the chain's checkpoint on ``dataset``. The official scripts'
    layout has no place for the source (theirs is always ImageNet): evaluations of a model trained
    on another ``source`` go one level down, ``from_<source>``, so two sources never share a folder."""
    if protocol.name == "base2new":
        return os.path.join(output, "base2new", "test_new", dataset, f"shots_{shots}", trainer, variant,
                            f"seed{seed}")
    cell = os.path.join(output, "evaluation", trainer, f"{variant}_{shots}shots", source_folder(source))
    return os.path.join(cell, dataset, f"seed{seed}")


def source_folder(source):
    """``from_<source>`` for a source other than ImageNet, else "" (the official layout)."""
    return f"{SOURCE_PREFIX}{source}" if source and source != OFFICIAL_SOURCE else ""


def source_suffix(source):
    """What a transfer table's file name adds for a source other than ImageNet ("" for ImageNet)."""
    return "_" + source_folder(source) if source_folder(source) else ""


def protocol_config(trainer_cls, protocol, default):
    """The trainer's config name for ``protocol``: its ``protocol_configs`` entry, else ``default``
    (its base-to-new config), as the original papers do (MaPLe, PromptSRC: own cross-dataset and
    few-shot settings; CoOp-family: one config)."""
    configs = getattr(trainer_cls, "protocol_configs", None) or {}
    return configs.get(protocol.config_key) or default
