"""A trainer built on a list of class names instead of a dataset: predictions on any classes.

Training and evaluation read a Dassl dataset; a prediction needs only what the model is built from:
the class names (and their identities, WNIDs for ImageNet) and the dataset's prompt templates. With
``class_list(ClassList(...))`` around Dassl's ``build_trainer``, a ``PromptTrainer`` builds its model
on those classes and reads no data at all: this is how an exported model is loaded on a machine
without the dataset, and how a run's learned prompts classify a class list of the user's (the
new-class path: ITM with the learned prompts; the DePT head only where it was trained on every class).
"""
import contextlib
import contextvars
from dataclasses import dataclass, field

_ACTIVE = contextvars.ContextVar("dept_class_list", default=None)


@dataclass
class ClassList:
    """What a model is built from, in place of a dataset (the attributes the trainers read of one)."""

    classnames: list
    #: identities of the classes, where names are not (ImageNet's WNIDs); None: the names
    wnids: list = None
    template: str = "a photo of a {}."
    method_templates: dict = field(default_factory=dict)
    template_in_ensemble: bool = True
    notes: list = field(default_factory=list)

    def __post_init__(self):
        names = [str(name).strip() for name in self.classnames]
        if not names:
            raise ValueError("The class list is empty: give at least one class name.")
        if any(not name for name in names):
            raise ValueError(f"The class list has an empty name (at position {names.index('') + 1}).")
        keys = self.wnids or names
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"The class list names {repeated[:5]} more than once: each class once.")
        self.classnames = names

    @classmethod
    def of_dataset(cls, dataset_cls, classnames, wnids=None):
        """The class list ``classnames`` with the prompt templates of a dataset class (read from the class,
        so no data is read)."""
        return cls(classnames, wnids, template=getattr(dataset_cls, "template", None) or "a photo of a {}.",
                   method_templates=dict(getattr(dataset_cls, "method_templates", None) or {}),
                   template_in_ensemble=getattr(dataset_cls, "template_in_ensemble", True))

    def templates(self):
        """The templates as plain values (what an export keeps)."""
        return {"template": self.template, "method_templates": dict(self.method_templates),
                "template_in_ensemble": bool(self.template_in_ensemble)}


class ClassesOnly:
    """Where a trainer keeps its data manager: the class list as its dataset, and no loaders."""

    def __init__(self, classes):
        self.dataset = classes
        self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = None
        self.num_classes = len(classes.classnames)
        self.num_source_domains = 1
        self.lab2cname = dict(enumerate(classes.classnames))


@contextlib.contextmanager
def class_list(classes):
    """Trainers built inside this context are built on ``classes`` (a ``ClassList``), without data."""
    token = _ACTIVE.set(classes)
    try:
        yield classes
    finally:
        _ACTIVE.reset(token)


def active():
    """The ``ClassList`` trainers are being built on, or None (build from the dataset)."""
    return _ACTIVE.get()


def read_class_names(path):
    """Class names from a text file: one per line; blank lines and lines starting with # skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read the class list ({err}); give a text file with one class name "
                         "per line") from None
    if not names:
        raise ValueError(f"{path} holds no class name: give one class name per line")
    return names
