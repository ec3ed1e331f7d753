"""A finished run's features on its dataset's whole test set (every class), fed to a measure.

The run is rebuilt from its own record (``dept_run.json``: the resolved config it ran with), its
trained tensors loaded as an evaluation loads them, and its model's one forward pass
(``PromptCLIP.features``) read batch by batch: the image features after whatever the method does to
them (CLIP-Adapter's adapter) and the text features of its prompts. For a DePT run the same features
are also read through the CAT head's channel-wise transforms (cwT), the space its linear head sees.
Nothing is written into the run's folder.
"""
import os

from dept.analysis.loaded import RunError, build_trainer, check_run  # noqa: F401 (this module's API)
from dept.core.methods import learns
from dept.store.layout import Layout


def feature_dim(record):
    """D of the run's CLIP features, from the record (so a window can be checked before any compute)."""
    arch = (record.get("clip") or {}).get("arch") or {}
    return arch.get("embed_dim")


def describe(run_dir, record):
    """A short label for a run: its trainer, what it trained on, its seed (from the layout when it
    lies under an output root, else the folder's name)."""
    key = _layout_key(run_dir)
    if key is None:
        return f"{record.get('trainer')} ({os.path.basename(os.path.normpath(run_dir))})"
    classes = {"train_base": "base", "train": "all classes"}.get(key.stage, key.stage)
    if not learns(key.trainer):
        classes = "zero-shot"
    return f"{key.trainer} ({classes}) {key.dataset} seed{key.seed}"


def _layout_key(run_dir):
    """The run's ``RunKey`` under whichever ancestor is its output root, or None."""
    path = os.path.abspath(run_dir)
    for _ in range(8):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
        key = Layout(path).key(os.path.abspath(run_dir))
        if key is not None:
            return key
    return None


def feed(trainer, measures):
    """Every test batch's features into ``measures`` ({space: measure with ``add(image, text, labels)``};
    spaces "itm" and, for a DePT model with cwT, "cwt")."""
    import torch

    model = trainer.model
    head = getattr(model, "dept_head", None)
    trainer.set_model_mode("eval")
    with torch.no_grad(), model.cached_text_features():
        for batch in trainer.test_loader:
            images, labels = trainer.parse_batch_test(batch)
            features = model.features(images)
            measures["itm"].add(features.image, features.text, labels)
            if "cwt" in measures:
                measures["cwt"].add(head.film_img(features.image.float()), head.film_text(features.text.float()),
                                    labels)


def spaces(trainer):
    """The feature spaces a run's model has: ITM, and the cwT space of a DePT head with cwT."""
    head = getattr(trainer.model, "dept_head", None)
    has_cwt = head is not None and hasattr(head.film_img, "scale")
    return ("itm", "cwt") if has_cwt else ("itm",)
