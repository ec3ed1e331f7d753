"""One record per prompt method: everything the package knows about a method besides its code.

A method's file (``trainers/<method>.py``) defines its trainer, its DePT variant and one
``Method``, and hands the three to ``register_method``. Whatever needs a fact about a method asks
here, never a class attribute or a table of its own: the trainer (its config node, checkpoint
folders, whether it trains), ``add_dept_config`` (its keys), the run settings (which config node is
its own: ``dept.core.settings``), the runner (its config for each protocol), the report (its name
in the paper), the tests and the benchmark (its configs). Registration puts both trainers in
Dassl's ``TRAINER_REGISTRY`` under their names and the official ones (``dept.core.registry``).
``learns`` and ``config_for`` answer for any trainer name, with or without a record.

A trainer registered some other way (a user's own) has no record: ``method_of`` then reads what
its name says (``<Method>DePT`` or ``ExtrasLinearProbe<Method>`` is that method with DePT).
"""
from dataclasses import dataclass, field
from types import MappingProxyType

#: what a protocol looks up in ``Method.configs`` (DG uses the cross-dataset config, as the
#: official scripts do); a protocol a method has no entry for uses its base-to-new config
CONFIG_KEYS = ("base2new", "cross_dataset", "few_shot")

_METHODS = {}  # name -> Method
_TRAINERS = {}  # every registered name of a method's trainer -> (Method, 1 with DePT / 0 without)


@dataclass(frozen=True)
class Method:
    """A prompt method (CoOp, MaPLe, ...), as its trainers, configs, reports and checkpoints name it."""

    #: the plain trainer's registered name ("CoOp"); its DePT variant is "<name>DePT"
    name: str
    #: configs/trainers/<trainer>/<config>.yaml per protocol ("base2new" required; see CONFIG_KEYS)
    configs: dict
    #: TRAINER.<node> holds its keys; a run's settings are the shared keys and this node
    node: str = "COOP"
    #: ``keys(cfg)`` adds TRAINER.<node> with its defaults where missing (``dept.core.config.add_missing``)
    keys: object = None
    #: its name in the paper's tables (dept/reference/dept_paper_*.csv); None: not in them
    paper_name: str = None
    #: the folder its checkpoints go to, and its DePT variant's (the official code's names)
    checkpoint: str = "prompt_learner"
    dept_checkpoint: str = "PromptLearner"
    #: other folders its official checkpoints may be in, tried after its own
    official_checkpoints: tuple = ("prompt_learner", "PromptLearner")
    #: other registered names of its plain trainer, and of its DePT trainer (the official ones)
    aliases: tuple = ()
    dept_aliases: tuple = ()
    #: False for a method that learns nothing (zero-shot CLIP): evaluated as built, never trained
    trained: bool = True
    #: True when its image features are CLIP's own, frozen and unprompted (before any adapter): its
    #: evaluations may share them through the feature cache (``dept.core.feature_cache``). False
    #: (the default, always safe) for a method that prompts or trains the image encoder.
    frozen_image_encoder: bool = False
    #: the config of the tiny demo and of the tests
    demo_config: str = "demo_tiny"
    #: whether it puts prompts into the image encoder's tokens, which needs a ViT (a ResNet CLIP is
    #: refused: ``dept.core.backbones``): True, or ``f(its config node)`` for a method whose configs
    #: decide (IVLP's language-only config has none)
    visual_prompts: object = False
    trainer: type = field(default=None, compare=False, repr=False)
    dept_trainer: type = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if "base2new" not in self.configs:
            raise ValueError(f"Method {self.name}: configs needs a 'base2new' entry (its default config)")
        unknown = set(self.configs) - set(CONFIG_KEYS)
        if unknown:
            raise ValueError(f"Method {self.name}: configs has {sorted(unknown)}; the keys are {CONFIG_KEYS}")
        object.__setattr__(self, "configs", MappingProxyType(dict(self.configs)))

    def config(self, key="base2new"):
        """Its config name for a protocol's config key (``Protocol.config_key``)."""
        return self.configs.get(key) or self.configs["base2new"]

    def uses_visual_prompts(self, node):
        """Whether a run with this config node (``TRAINER.<node>``) prompts the image encoder."""
        if callable(self.visual_prompts):
            return node is not None and bool(self.visual_prompts(node))
        return bool(self.visual_prompts)

    def checkpoint_folder(self, with_dept):
        return self.dept_checkpoint if with_dept else self.checkpoint


def register_method(method, trainer, dept_trainer=None):
    """Register ``trainer`` (and ``dept_trainer``, its DePT variant) in Dassl's TRAINER_REGISTRY with
    their official names, and ``method`` as their record (``trainer.method``). Idempotent."""
    from dassl.engine import TRAINER_REGISTRY

    from dept.core.registry import register

    if trainer.__name__ != method.name:
        raise ValueError(f"Method {method.name}: its trainer class is named {trainer.__name__}")
    object.__setattr__(method, "trainer", trainer)
    object.__setattr__(method, "dept_trainer", dept_trainer)
    _METHODS[method.name] = method
    for cls, with_dept, aliases in ((trainer, 0, method.aliases), (dept_trainer, 1, method.dept_aliases)):
        if cls is None:
            continue
        cls.method = method
        for name in register(TRAINER_REGISTRY, cls, aliases=aliases):
            _TRAINERS[name] = (method, with_dept)
    return method


def registered():
    """{name: Method} of every registered method, in registration order (``import dept`` registers ours)."""
    return dict(_METHODS)


def trainers():
    """{class name: class} of every registered method's trainers that Dassl's registry holds under
    their names (a user's own class of the same name holds it instead). The common tests iterate
    over this, as timm's iterate ``list_models()``: a new method is checked as soon as it registers."""
    return {name: cls for name, cls in sorted(_held_classes().items())}


def _held_classes():
    from dassl.engine import TRAINER_REGISTRY

    out = {}
    for method in _METHODS.values():
        for cls in (method.trainer, method.dept_trainer):
            if cls is not None and TRAINER_REGISTRY._obj_map.get(cls.__name__) is cls:
                out[cls.__name__] = cls
    return out


def method_of(trainer):
    """(its Method or None, 1 with DePT / 0 without) of a trainer name: the record of the class
    Dassl's registry holds under that name, or None for a name no record's class holds."""
    found = _TRAINERS.get(trainer)
    if found is not None:
        from dassl.engine import TRAINER_REGISTRY

        method, with_dept = found
        if TRAINER_REGISTRY._obj_map.get(trainer) is (method.dept_trainer if with_dept else method.trainer):
            return found
    if trainer.startswith("ExtrasLinearProbe") or trainer.endswith("DePT"):
        return None, 1
    return None, 0


def method_name(trainer):
    """(the method's name, 1 with DePT / 0 without): the record's, or what the trainer's name says."""
    method, with_dept = method_of(trainer)
    if method is not None:
        return method.name, with_dept
    if trainer.startswith("ExtrasLinearProbe"):
        return trainer[len("ExtrasLinearProbe"):], 1
    if trainer.endswith("DePT"):
        return trainer[: -len("DePT")], 1
    return trainer, 0


def learns(trainer):
    """False for a trainer whose method is evaluated as built (zero-shot CLIP); True for any other."""
    method, _ = method_of(trainer)
    return method is None or method.trained


def config_for(trainer, config_key, default=None):
    """The trainer's config name for a protocol's config key (``Method.config``), else ``default``."""
    method, _ = method_of(trainer)
    return method.config(config_key) if method is not None else default
