"""DePT for any CoOp-family Dassl trainer: ``class XDePT(DePTMixin, X): pass``.

The mixin attaches the CAT head (``dept.core.head.DePTHead``) to the trainer's model, trains it with
the λ-weighted pair of losses, fuses the two heads at evaluation on the classes the head was
trained on (ITM only elsewhere), and saves and loads the head with the rest.

``X`` is either one of this package's trainers (a ``dept.core.trainer.PromptTrainer``: the head is part
of the model and of its one forward pass), or any Dassl trainer of the CoOp family whose model
follows the family's convention: children ``image_encoder``, ``text_encoder``, ``prompt_learner``
and ``logit_scale``, and ``forward(images)`` returning the ITM logits. For the latter the mixin
wraps what the trainer already does (``ConventionDePT``): it reads the image and text features
from the two encoders' outputs during the model's own forward, adds λ·L_CAT to the trainer's own
loss (which takes the weight 1-λ), trains the head with its own optimizer at the staged learning
rate, and keeps the head in ``<output>/DePTHead/`` beside the trainer's own checkpoints. A class
that cannot work (not a Dassl trainer; the mixin listed after the trainer, where it would be
silently shadowed) is refused when it is defined.
"""
import logging
import os

import torch
from torch import nn

from dept.core.head import DePTHead
from dept.core.trainer import PromptTrainer

logger = logging.getLogger(__name__)

CONVENTION = ("image_encoder", "text_encoder", "prompt_learner", "logit_scale")


def class_keys(dataset):
    """The dataset's classes in label order, as identities: WNIDs where the dataset has them
    (ImageNet and its variants; CLIP's names repeat "missile" and "sunglasses"), else names."""
    return list(getattr(dataset, "wnids", None) or dataset.classnames)


def _unwrap(model):
    return model.module if isinstance(model, nn.DataParallel) else model


def _host(cls):
    """The first class in ``cls``'s MRO that is a Dassl trainer and not part of DePT."""
    from dassl.engine.trainer import SimpleTrainer

    for base in cls.__mro__[1:]:
        if issubclass(base, SimpleTrainer) and not issubclass(base, DePTMixin):
            return base
    return None


class DePTMixin:
    """DePT for any CoOp-family trainer: ``class XDePT(DePTMixin, X): pass`` (see the module doc)."""

    #: the DePT head's parameters, trained beside the method's own
    dept_trainable = ("dept_head.",)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_dept_internal"):
            return
        host = _host(cls)
        if host is None:
            raise TypeError(f"{cls.__name__}: DePTMixin goes before a Dassl trainer class, e.g. "
                            f"class {cls.__name__}(DePTMixin, CoOp); {cls.__name__} has no Dassl trainer base.")
        mro = cls.__mro__
        if mro.index(DePTMixin) > mro.index(host):
            raise TypeError(f"{cls.__name__}: list DePTMixin before {host.__name__} "
                            f"(class {cls.__name__}(DePTMixin, {host.__name__})); after it, {host.__name__}'s "
                            "methods would shadow DePT's and it would train without the CAT head.")
        cls.with_dept = True
        if issubclass(cls, PromptTrainer):  # the head is part of its model; it trains too
            cls.trainable = tuple(host.trainable) + cls.dept_trainable
            cls.official_checkpoint_part = ""  # the official DePT trainers save the whole model
            return
        if issubclass(cls, ConventionDePT):
            return
        if DePTMixin not in cls.__bases__:
            raise TypeError(f"{cls.__name__}: for a trainer that is not a dept PromptTrainer ({host.__name__}), "
                            "list DePTMixin itself among the bases: class X(DePTMixin, YourTrainer).")
        # A trainer of the CoOp family that is not ours: DePT through the family's convention.
        cls.__bases__ = tuple(ConventionDePT if base is DePTMixin else base for base in cls.__bases__)

    # -- the head --------------------------------------------------------------------------------
    @property
    def head(self):
        return _unwrap(self.model).dept_head

    def _new_head(self, dim):
        self._head_active, self._head_trained, self._head_dim = True, False, dim
        return DePTHead.from_options(dim, class_keys(self.dm.dataset), self.opts)

    def _decide_head(self):
        """Before an evaluation: the head applies iff it was trained on every evaluated class (base:
        yes; new classes or another dataset: no). An untrained head is never fused in."""
        classes = class_keys(self.dm.dataset)
        # A head never trained nor loaded has learned no class: on new classes DePT uses ITM alone
        # anyway, elsewhere fusing it in would report a random head's number as DePT's.
        untrained_new = not self._head_trained and self.cfg.DATASET.SUBSAMPLE_CLASSES == "new"
        rows = None if untrained_new else self.head.rows_for(classes)
        self._head_active = rows is not None
        self.head.rows = None if rows == list(range(len(self.head.classes))) else rows
        if self._head_active and not self._head_trained:
            why = (f"the checkpoint it loaded has no DePT head (trained without DePT, e.g. by "
                   f"{_host(type(self)).__name__}, or an official non-DePT file). Evaluate it with the trainer it "
                   "was trained with, or train this one." if self._loaded_a_model() else
                   "nothing was loaded (--untrained: the model as initialised), so the head is untrained. Load a "
                   "training run of this trainer (--model-dir), or evaluate new classes, where DePT uses ITM alone.")
            raise ValueError(f"{type(self).__name__} would fuse an untrained CAT head into the predictions for "
                             f"these {len(classes)} classes: {why}")
        self.head_mode = f"fused ({self.head.fusion})" if self._head_active else "itm"
        logger.info("Evaluating %d classes with %s", len(classes),
                    f"ITM + CAT fused ({self.head.fusion})" if self._head_active
                    else "ITM only (the CAT head was not trained on these classes)")

    def _loaded_a_model(self):
        """Whether a checkpoint was loaded (ours record it; a convention trainer's load_model is wrapped)."""
        return getattr(self, "loaded_checkpoint", None) is not None or getattr(self, "_dept_loaded", False)

    def _load_head(self, head_state, checkpoint):
        """Load a checkpoint's head tensors (our names), rebuilding the head for the classes it was
        trained on (which may be a superset of this run's, e.g. ImageNet for ImageNet-R)."""
        classes = checkpoint.get("head_classes") or self._official_head_classes(head_state)
        if classes != self.head.classes:
            head = DePTHead.from_options(self._head_dim, classes, self.opts)
            _unwrap(self.model).dept_head = head.to(self.device)
        self.head.load_state_dict(head_state)
        self._head_trained = True
        current = class_keys(self.dm.dataset)
        if self.cfg.DATASET.SUBSAMPLE_CLASSES == "base" and self.head.rows_for(current) is None:
            raise ValueError(
                f"The checkpoint's CAT head was trained on {len(classes)} classes that are not this run's "
                f"{len(current)} base classes (first: {classes[:3]} vs {current[:3]}): it was trained on "
                "another dataset or split."
            )

    def _official_head_classes(self, head_state):
        """Official checkpoints do not record the head's classes: infer them as the official code did."""
        rows = head_state["linear_probe.weight"].shape[0] if "linear_probe.weight" in head_state else 0
        current = class_keys(self.dm.dataset)
        # ImageNet labels are the sorted WNIDs, so a 1000-row head's row i is the i-th sorted WNID.
        source = sorted(getattr(self.dm.dataset, "source_wnids", None) or [])
        if rows == len(current) and self.cfg.DATASET.SUBSAMPLE_CLASSES != "new":
            return current
        if rows and rows == len(source):  # e.g. ImageNet-A/R evaluated with an ImageNet head
            return source
        return [f"<class {i} of the checkpoint>" for i in range(rows)]

    # -- on a dept PromptTrainer: the head is part of the model's forward -------------------------
    def build_custom_model(self, clip_model, classnames):
        model = super().build_custom_model(clip_model, classnames)
        model.dept_head = self._new_head(model.embed_dim)
        return model

    def losses(self, features, labels):
        """The method's own losses, its main one ("itm", the cross-entropy of its logits) weighted by
        1-λ and its regularisers as they are, and λ·L_CAT ("cat")."""
        self._head_trained = True  # losses are computed only to be optimised
        losses = super().losses(features, labels)
        if "itm" not in losses or "cat" in losses:
            raise TypeError(
                f"{type(self).__name__}: DePT weighs the method's main loss, named 'itm', by 1-λ and adds its own "
                f"'cat'; {_host(type(self)).__name__}.losses returned {sorted(losses)}. Name the main loss 'itm' "
                "(and no other 'cat').")
        losses["itm"] = (1 - self.head.weight) * losses["itm"]
        losses["cat"] = self.head.cat_loss(features.image, features.text, labels, self.model.logit_scale)
        return losses

    def predict(self, features):
        if not self._head_active:
            return features.logits
        return self.head.predict(features.logits, features.image, features.text, self.model.logit_scale)

    def before_test(self):
        self._decide_head()
        super().before_test()

    def apply_state(self, state, checkpoint):
        head_state = {k[len("dept_head."):]: v for k, v in state.items() if k.startswith("dept_head.")}
        super().apply_state({k: v for k, v in state.items() if not k.startswith("dept_head.")}, checkpoint)
        if head_state:
            self._load_head(head_state, checkpoint)


class _Captured:
    """The encoders' outputs during one forward of a convention model."""

    def __init__(self):
        self.image, self.text = [], []

    def features(self):
        if not self.image or not self.text:
            raise RuntimeError("The model's forward did not call its image_encoder and text_encoder modules, so "
                               "DePT cannot read the features (the CoOp-family convention).")
        text = self.text[0] if len(self.text) == 1 else torch.stack(self.text)  # per-image prompts: B×C×D
        return self.image[-1], text


class ConventionDePT(DePTMixin):
    """DePT on a CoOp-family Dassl trainer that is not a dept PromptTrainer (see the module doc).

    ``DePTMixin`` puts this class in its place among the bases of such a trainer's DePT variant.
    """

    _dept_internal = True
    head_folder = "DePTHead"

    def build_model(self):
        from dept.core.config import dept_options
        from dept.core.optim import build_lr_scheduler, build_optimizer

        super().build_model()
        model = _unwrap(self.model)
        missing = [name for name in CONVENTION if not hasattr(model, name)]
        if missing:
            raise TypeError(
                f"{type(self).__name__}: DePT needs the model of {_host(type(self)).__name__} to follow the CoOp "
                f"family's convention (children {', '.join(CONVENTION)}; forward(images) returns logits); "
                f"{type(model).__name__} has no {missing}."
            )
        self.opts = dept_options(self.cfg)
        self.head_mode = None
        dim = getattr(model.image_encoder, "output_dim", None) or model.text_encoder.text_projection.shape[1]
        model.dept_head = self._new_head(dim).to(self.device)
        holder = nn.Module()
        holder.dept_head = model.dept_head
        self._head_holder = holder
        self._head_optim = build_optimizer(holder, self.cfg.OPTIM, self.opts)
        self._head_sched = build_lr_scheduler(self._head_optim, self.cfg.OPTIM)
        self._capture = None
        model.image_encoder.register_forward_hook(lambda m, i, out: self._capture and self._capture.image.append(out))
        model.text_encoder.register_forward_hook(lambda m, i, out: self._capture and self._capture.text.append(out))
        logger.info("DePT on %s: CAT head over %d channels for %d classes, lr %.6g (its own optimizer)",
                    _host(type(self)).__name__, dim, len(self.head.classes), self._head_optim.param_groups[0]["lr"])

    def _holder(self):
        self._head_holder.dept_head = self.head
        return self._head_holder

    # training: the trainer's own loss takes the weight 1-λ, the CAT loss λ
    def parse_batch_train(self, batch):
        parsed = super().parse_batch_train(batch)
        self._labels = parsed[1]
        return parsed

    def forward_backward(self, batch):
        self._capture, self._terms, self._head_trained = _Captured(), None, True
        try:
            summary = super().forward_backward(batch)
        finally:
            self._capture = None
        if self._terms is None:
            raise RuntimeError(
                f"{_host(type(self)).__name__}.forward_backward did not call model_backward_and_update(loss), so "
                "DePT could not add its CAT loss (e.g. an AMP path that calls the scaler itself): use fp32/fp16, "
                "or call model_backward_and_update there."
            )
        summary.update(self._terms)
        return summary

    def model_backward_and_update(self, loss, names=None):
        if self._capture is None:
            return super().model_backward_and_update(loss, names)
        image, text = self._capture.features()
        cat_logits, targets = self.head.cat_logits(image, text, self._labels, _unwrap(self.model).logit_scale)
        weight = self.head.weight
        cat = weight * torch.nn.functional.cross_entropy(cat_logits, targets)
        itm = (1 - weight) * loss
        self._head_optim.zero_grad()
        super().model_backward_and_update(itm + cat, names)
        self._head_optim.step()
        self._terms = {"itm": float(itm.item()), "cat": float(cat.item())}

    def update_lr(self, names=None):
        super().update_lr(names)
        self._head_sched.step()

    # evaluation
    def test(self, split=None):
        self.set_model_mode("eval")
        self._decide_head()
        return super().test(split)

    def model_inference(self, input):
        self._capture = _Captured()
        try:
            logits = super().model_inference(input)
            if not self._head_active:
                return logits
            image, text = self._capture.features()
        finally:
            self._capture = None
        return self.head.predict(logits, image, text, _unwrap(self.model).logit_scale)

    # checkpoints: the trainer's own, and the head in <output>/DePTHead/
    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        from dept.util.checkpoint import save_checkpoint

        super().save_model(epoch, directory, is_best=is_best, val_result=val_result, model_name=model_name)
        path = os.path.join(directory, self.head_folder, model_name or f"model.pth.tar-{epoch + 1}")
        save_checkpoint(path, self._holder(), epoch + 1, self._head_optim, self._head_sched, val_result)

    def _read_head(self, directory, epoch=None):
        from dept.util.checkpoint import find_checkpoint, read_checkpoint

        try:
            path = find_checkpoint(directory, [self.head_folder], epoch)
        except FileNotFoundError:
            return None, None
        return path, read_checkpoint(path)

    def load_model(self, directory, epoch=None):
        super().load_model(directory, epoch)
        self._dept_loaded = True  # a missing head is then the checkpoint's, not an untrained run's
        path, checkpoint = self._read_head(directory, epoch)
        if checkpoint is not None:
            logger.info("Loading the CAT head from %s", path)
            state = checkpoint["state_dict"]
            self._load_head({k[len("dept_head."):]: v for k, v in state.items()}, checkpoint)

    def resume_model_if_exist(self, directory):
        start = super().resume_model_if_exist(directory)
        if start:
            path, checkpoint = self._read_head(directory, start)
            if checkpoint is None:
                raise FileNotFoundError(f"{directory} has the trainer's state of epoch {start} but no CAT head of that "
                                        f"epoch in {self.head_folder}/: move the folder away to train anew.")
            self._load_head({k[len("dept_head."):]: v for k, v in checkpoint["state_dict"].items()}, checkpoint)
            self._head_optim.load_state_dict(checkpoint["optimizer"])
            self._head_sched.load_state_dict(checkpoint["scheduler"])
        return start
