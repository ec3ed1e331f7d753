"""Dassl trainers for prompt methods (``PromptTrainer``) and the DePT variant of any of them.

``PromptTrainer`` holds what every CoOp-family method shares: loading CLIP, freezing by name,
the staged-LR optimizer, named losses summed in one place, evaluation with the text features
computed once, and checkpoints of the trained tensors only. A method is a subclass that names its
model class and config node. Its DePT variant is one more line::

    class CoOpDePT(DePTMixin, CoOp):
        pass

``DePTMixin`` attaches the CAT head, replaces the ITM loss by the λ-weighted pair, fuses the heads
at inference where the head was trained on the evaluated classes, and loads official DePT
checkpoints.
"""
import logging
import os
import shutil

import torch
import torch.nn.functional as F
from dassl.engine import TrainerX

from dept.checkpoint import (
    OFFICIAL_NAMES,
    find_checkpoint,
    normalize_state_dict,
    read_checkpoint,
    save_checkpoint,
)
from dept.clip_loader import load_clip
from dept.config import dept_options
from dept.head import DePTHead
from dept.model import PromptCLIP
from dept.optim import build_lr_scheduler, build_optimizer

logger = logging.getLogger(__name__)


def class_keys(dataset):
    """The dataset's classes in label order, as identities: WNIDs where the dataset has them
    (ImageNet and its variants; CLIP's names repeat "missile" and "sunglasses"), else names."""
    return list(getattr(dataset, "wnids", None) or dataset.classnames)


class PromptTrainer(TrainerX):
    """Base Dassl trainer of the CoOp family (CoOp itself is this with ``PromptCLIP``)."""

    model_cls = PromptCLIP
    method_key = "COOP"  # config node under TRAINER holding N_CTX, PREC, ...
    checkpoint_name = "prompt_learner"

    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.method_key]

    def check_cfg(self, cfg):
        prec = cfg.TRAINER[self.method_key].PREC
        if prec not in ("fp16", "fp32", "amp"):
            raise ValueError(f"TRAINER.{self.method_key}.PREC must be fp16, fp32 or amp; got '{prec}'")

    def build_data_loader(self):
        """Dassl's DataManager, reading images through a wrapper that names the file and the dataset
        when an image is missing or corrupt (instead of a bare PIL traceback in a worker)."""
        from dassl.data import DataManager

        from dept.datasets import CheckedDatasetWrapper

        dm = DataManager(self.cfg, dataset_wrapper=CheckedDatasetWrapper)
        self.train_loader_x, self.train_loader_u = dm.train_loader_x, dm.train_loader_u
        self.val_loader, self.test_loader = dm.val_loader, dm.test_loader
        self.num_classes, self.num_source_domains = dm.num_classes, dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    # -- model -------------------------------------------------------------------------------
    def build_model(self):
        cfg = self.cfg
        self.opts = dept_options(cfg)
        clip_model, self.prec = load_clip(cfg, self.method_cfg.PREC, self.device)
        size, clip_size = cfg.INPUT.SIZE[0], clip_model.visual.input_resolution
        if size != clip_size:
            raise ValueError(f"INPUT.SIZE is {size} but {cfg.MODEL.BACKBONE.NAME} takes {clip_size}-pixel "
                             f"images: set INPUT.SIZE ({clip_size}, {clip_size}).")
        self.model = self.build_custom_model(clip_model, self.dm.dataset.classnames)
        self.model.text_encoding = cfg.DEPT.TEXT_ENCODING
        for name, param in self.model.named_parameters():
            param.requires_grad_(any(key in name for key in self.opts.names_to_update))
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        logger.info("Training %d parameters: %s", trainable,
                    sorted(n for n, p in self.model.named_parameters() if p.requires_grad))
        self.model.to(self.device)
        self.optim = build_optimizer(self.model, cfg.OPTIM, self.opts)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.checkpoint_name, self.model, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler("cuda") if self.prec == "amp" else None

    def build_custom_model(self, clip_model, classnames):
        return self.model_cls(clip_model, classnames, self.method_cfg)

    # -- training ----------------------------------------------------------------------------
    def head_losses(self, itm, image_features, text_features, labels):
        return {"itm": F.cross_entropy(itm.float(), labels)}

    def compute_losses(self, images, labels):
        """Named losses of one batch; their sum is what is optimised."""
        model = self.model
        image_features = model.encode_image(images)
        text_features = model.encode_text(image_features)
        itm = model.itm_logits(image_features, text_features)
        losses = self.head_losses(itm, image_features, text_features, labels)
        losses.update(model.extra_losses(image_features, text_features))
        return losses

    def forward_backward(self, batch):
        images, labels = self.parse_batch_train(batch)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.prec == "amp"):
            losses = self.compute_losses(images, labels)
            loss = sum(losses.values())
        self.optim.zero_grad()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            self.model_backward(loss)
            self.optim.step()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        summary = {"loss": loss.item()}
        if len(losses) > 1:
            summary.update({name: value.item() for name, value in losses.items()})
        return summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    # -- inference ---------------------------------------------------------------------------
    def predict(self, itm, image_features, text_features):
        return itm

    def model_inference(self, images):
        model = self.model
        image_features = model.encode_image(images)
        text_features = model.encode_text(image_features)
        itm = model.itm_logits(image_features, text_features)
        return self.predict(itm, image_features, text_features)

    def before_test(self):
        """Hook run before every evaluation (DePT decides there whether its head applies)."""

    def test(self, split=None):
        self.set_model_mode("eval")
        self.before_test()
        with self.model.cached_text_features():
            return super().test(split)

    # -- checkpoints -------------------------------------------------------------------------
    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        name = self.checkpoint_name
        path = os.path.join(directory, name, model_name or f"model.pth.tar-{epoch + 1}")
        save_checkpoint(path, self.model, epoch + 1, self.optim, self.sched, val_result)
        if is_best:
            shutil.copy(path, os.path.join(directory, name, "model-best.pth.tar"))

    def load_model(self, directory, epoch=None):
        """Load trained tensors for evaluation; ``epoch`` None or -1 = the last epoch saved
        (the best-validation one when TEST.FINAL_MODEL is best_val)."""
        if not directory:
            logger.info("No --model-dir given: evaluating the model as initialised.")
            return
        best = self.cfg.TEST.FINAL_MODEL == "best_val"
        path = find_checkpoint(directory, [self.checkpoint_name, *OFFICIAL_NAMES], epoch, best=best)
        checkpoint = read_checkpoint(path)
        logger.info("Loading %s (epoch %s)", path, checkpoint.get("epoch"))
        self.apply_state(normalize_state_dict(checkpoint), checkpoint)

    def apply_state(self, state, checkpoint):
        """Copy checkpoint tensors into the model, with a clear error on any shape mismatch."""
        own = dict(self.model.named_parameters())
        unused = sorted(k for k in state if k not in own)
        if unused:
            logger.info("Ignoring checkpoint tensors this model does not have: %s", unused)
        for key, value in state.items():
            if key not in own:
                continue
            if own[key].shape != value.shape:
                raise ValueError(
                    f"Checkpoint tensor '{key}' has shape {tuple(value.shape)} but this model's has "
                    f"{tuple(own[key].shape)}: the checkpoint was trained with another number of classes "
                    f"or another context size (this run has {len(self.dm.dataset.classnames)} classes). "
                    "Evaluate it with the dataset, split and TRAINER options it was trained with."
                )
            with torch.no_grad():
                own[key].copy_(value)

    def resume_model_if_exist(self, directory):
        folder = os.path.join(directory, self.checkpoint_name)
        pointer = os.path.join(folder, "checkpoint")
        if not os.path.isfile(pointer):
            logger.info("No checkpoint found in %s: training from scratch.", folder)
            return 0
        with open(pointer) as f:
            path = os.path.join(folder, f.readline().strip())
        checkpoint = read_checkpoint(path)
        if checkpoint.get("format") is None:
            raise ValueError(f"{path} was written by the official code and holds no usable optimizer state: "
                             "it can be evaluated (--eval-only --model-dir) but not resumed.")
        self.apply_state(normalize_state_dict(checkpoint), checkpoint)
        self.optim.load_state_dict(checkpoint["optimizer"])
        self.sched.load_state_dict(checkpoint["scheduler"])
        logger.info("Resumed from %s (epoch %d)", path, checkpoint["epoch"])
        return checkpoint["epoch"]


class DePTMixin:
    """DePT for any ``PromptTrainer``: ``class XDePT(DePTMixin, X): pass``."""

    checkpoint_name = "PromptLearner"  # as the official DePT trainers register their model

    def build_custom_model(self, clip_model, classnames):
        model = super().build_custom_model(clip_model, classnames)
        model.dept_head = DePTHead.from_options(model.embed_dim, class_keys(self.dm.dataset), self.opts)
        self._head_active = True
        return model

    @property
    def head(self):
        return self.model.dept_head

    def head_losses(self, itm, image_features, text_features, labels):
        return self.head.losses(itm, image_features, text_features, labels, self.model.logit_scale)

    def predict(self, itm, image_features, text_features):
        if not self._head_active:
            return itm
        return self.head.predict(itm, image_features, text_features, self.model.logit_scale)

    def before_test(self):
        """The head applies iff it was trained on every evaluated class (base: yes; new: no)."""
        classes = class_keys(self.dm.dataset)
        rows = self.head.rows_for(classes)
        self._head_active = rows is not None
        self.head.rows = None if rows == list(range(len(self.head.classes))) else rows
        logger.info("Evaluating %d classes with %s", len(classes),
                    f"ITM + CAT fused ({self.head.fusion})" if self._head_active
                    else "ITM only (the CAT head was not trained on these classes)")
        super().before_test()

    def apply_state(self, state, checkpoint):
        head_state = {k[len("dept_head."):]: v for k, v in state.items() if k.startswith("dept_head.")}
        rest = {k: v for k, v in state.items() if not k.startswith("dept_head.")}
        super().apply_state(rest, checkpoint)
        if not head_state:
            return
        classes = checkpoint.get("head_classes") or self._official_head_classes(head_state)
        if classes != self.head.classes:
            head = DePTHead.from_options(self.model.embed_dim, classes, self.opts)
            self.model.dept_head = head.to(self.device)
        self.head.load_state_dict(head_state)
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
