"""The paper's four evaluation protocols: the runs each is made of, in chains.

A protocol is a list of *chains*: a run that trains (or, for a method that learns nothing,
evaluates the model as built) followed by the evaluations of its model. A chain runs in one place,
in order; chains are independent, so back-ends spread them (``dept.run.backends``). Where each run
goes is the layout's business (``dept.store.layout``); what the tables make of them, the results'
(``dept.results.tables``).

* **base2new** (each dataset): train on the base half of the classes (Dassl then tests the base
  test split), evaluate that model on the new half.
* **cross_dataset**: train on every ImageNet class at 16 shots, evaluate each seed's model on the
  10 other datasets, all their classes. **dg** (domain generalisation): the same ImageNet model on
  ImageNet-V2, -Sketch, -A and -R. Both share the training run: a seed never trains twice.
* **few_shot** (each dataset, each K of 1, 2, 4, 8, 16): train on every class at K shots; Dassl
  tests it after training. (The ImageNet 16-shot run of a config is also the transfer protocols'
  training run of that config: one folder, one run.)
"""
from dataclasses import dataclass

from dept.store.layout import RunKey

BENCHMARK_11 = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
CROSS_DATASET_TARGETS = BENCHMARK_11[1:]
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
FEW_SHOTS = (1, 2, 4, 8, 16)
# The embedded demo's stand-ins (no download): digits for the source and each dataset, its
# colour-inverted copy for the target (the source's classes in another domain: both a DG and a
# cross-dataset target).
DEMO_SOURCE, DEMO_TARGETS = "digits", ("digits_inverted",)


@dataclass(frozen=True)
class Protocol:
    """What a protocol is made of; the runner, the tables and the report do the rest the same way."""

    name: str  # the subcommand (with "-" for "_") and the folder of its tables
    title: str
    default_datasets: tuple  # the datasets (base2new, few_shot) or the targets (cross_dataset, dg)
    default_shots: tuple
    config_key: str  # which of a method's configs it uses (``dept.core.methods.Method.configs``)
    train_stage: str = "train"
    eval_stage: str = None  # the stage of the evaluations that follow the training run, if any
    has_source: bool = False  # one training dataset (``--source``), evaluated on the datasets
    targets: tuple = ()  # datasets whose evaluations belong to this protocol (transfer protocols)

    @property
    def command(self):
        return self.name.replace("_", "-")

    def chain(self, trainer, variant, shots, seed, dataset, targets=()):
        """The ``RunKey``s of one chain: the training run on ``dataset`` (the source for a transfer
        protocol), then the evaluations of its model (on ``targets`` for a transfer protocol)."""
        train = RunKey(self.train_stage, dataset, trainer, variant, shots, seed)
        if self.eval_stage == "test_new":
            return [train, RunKey("test_new", dataset, trainer, variant, shots, seed)]
        if self.eval_stage == "eval":
            return [train, *(RunKey("eval", t, trainer, variant, shots, seed, source=dataset) for t in targets)]
        return [train]

    def owns_target(self, dataset):
        """Whether an evaluation on ``dataset`` belongs to this protocol's tables: DG's are the
        ImageNet variants, cross-dataset's every other dataset; the demo's one target is both."""
        if dataset in DEMO_TARGETS:
            return self.has_source
        if self.name == "dg":
            return dataset in DG_TARGETS
        return self.name == "cross_dataset" and dataset not in DG_TARGETS


PROTOCOLS = {p.name: p for p in (
    Protocol("base2new", "Base-to-new generalisation", BENCHMARK_11, (16,), "base2new", train_stage="train_base",
             eval_stage="test_new"),
    Protocol("cross_dataset", "Cross-dataset transfer", CROSS_DATASET_TARGETS, (16,), "cross_dataset",
             eval_stage="eval", has_source=True),
    Protocol("dg", "Domain generalisation", DG_TARGETS, (16,), "cross_dataset", eval_stage="eval", has_source=True),
    Protocol("few_shot", "Few-shot learning", BENCHMARK_11, FEW_SHOTS, "few_shot"),
)}


def protocol_named(name):
    key = name.replace("-", "_")
    if key not in PROTOCOLS:
        raise KeyError(f"unknown protocol {name!r}; one of {', '.join(p.command for p in PROTOCOLS.values())}")
    return PROTOCOLS[key]
