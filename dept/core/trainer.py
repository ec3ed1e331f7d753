"""The Dassl trainer every prompt method of this package derives from (``PromptTrainer``).

It holds what the CoOp family shares: loading CLIP, freezing by name, the staged-LR optimizer,
one forward per batch (``model.features``) followed by named losses (``losses``, summed in one
place) or the prediction (``predict``), evaluation with the text features computed once (and the
frozen image features shared between runs, ``dept.core.feature_cache``), and
checkpoints of the trained tensors from which a run resumes bit for bit. A method is a subclass
that names its model class, and a record (``dept.core.methods``); its DePT variant is one more
line (``dept.core.mixin.DePTMixin``)::

    class CoOpDePT(DePTMixin, CoOp):
        pass

Between the backward pass and the optimizer step, ``after_backward`` sees the gradients as they
will be applied (unscaled under amp): the place for gradient surgery (ProGrad-style projections),
on every precision.

Resume is exact: a state is saved after every epoch (kilobytes: only trained tensors), with the
optimizer, scheduler and AMP scaler, the random states of Python, NumPy and torch, and, when a
signal stops the run mid-epoch, how many batches of the epoch were done and the random state the
epoch began with. A resumed run redraws the same batches (the images of the skipped ones are
loaded and transformed again, not trained on, so augmentation and DataLoader workers see the
same random streams) and ends as if it had never stopped.
"""
import datetime
import logging
import os
import shutil
import time

import torch
import torch.nn.functional as F
from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.utils import AverageMeter, MetricMeter
from tqdm import tqdm

from dept.core import feature_cache
from dept.core.class_list import ClassesOnly
from dept.core.class_list import active as active_class_list
from dept.core.clip_loader import PRECISIONS, clip_summary, load_clip
from dept.core.config import dept_options
from dept.core.interpret import nearest_words, per_class
from dept.core.methods import Method
from dept.core.model import PromptCLIP
from dept.core.optim import build_lr_scheduler, build_optimizer
from dept.core.settings import differences, format_differences, recorded_config
from dept.util import faults, interrupts
from dept.util.checkpoint import (
    BEST,
    FORMAT,
    INTERRUPTED,
    CorruptCheckpoint,
    checkpoint_epochs,
    find_checkpoint,
    latest_resumable,
    normalize_state_dict,
    progress,
    prune,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_aside,
    set_rng_state,
)
from dept.util.files import sha256

logger = logging.getLogger(__name__)


def file_summary(path, checkpoint):
    """How a run record names a checkpoint: absolute path, sha256, epoch."""
    return {"path": os.path.abspath(path), "sha256": sha256(path), "epoch": checkpoint.get("epoch")}


class PromptTrainer(TrainerX):
    """Base Dassl trainer of the CoOp family (CoOp itself is this with ``PromptCLIP``).

    A method is a subclass that says how its model is built (``model_cls``) and what it trains
    (``trainable``); what the package knows about it besides (its config node, checkpoint folders,
    configs, whether it learns) is its record, ``method`` (``dept.core.methods.Method``), which
    ``register_method`` sets. Nothing central names a method.
    """

    model_cls = PromptCLIP
    #: what it trains: parameters whose names start with these (all else is frozen)
    trainable = ("prompt_learner.",)
    #: its record; this default (CoOp's node and folders) serves a subclass registered without one
    method = Method("PromptTrainer", configs={"base2new": "vit_b16_ep10_bs4_lr35"})
    #: whether the DePT head is part of it (``DePTMixin`` sets it)
    with_dept = False

    @property
    def checkpoint_name(self):
        """The folder its checkpoints go to (the official code's name, its DePT variant's for DePT)."""
        return self.method.checkpoint_folder(self.with_dept)

    @property
    def trained(self):
        """False for a method that learns nothing (zero-shot CLIP): evaluated as built, never trained."""
        return self.method.trained

    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.method.node]

    def check_cfg(self, cfg):
        prec = cfg.TRAINER[self.method.node].PREC
        if prec not in PRECISIONS:
            raise ValueError(f"TRAINER.{self.method.node}.PREC must be one of {', '.join(PRECISIONS)}; got '{prec}'")

    def build_data_loader(self):
        """Dassl's DataManager, reading images the way the dataset class says (``dataset_wrapper``:
        ours name the file and the dataset when an image is missing or corrupt, instead of a bare
        PIL traceback in a worker); Dassl's own reader for a dataset that says nothing."""
        from dassl.data import DataManager
        from dassl.data.datasets import DATASET_REGISTRY

        dm = ClassesOnly(active_class_list()) if active_class_list() is not None else None  # no data: predictions
        dataset_cls = DATASET_REGISTRY._obj_map.get(self.cfg.DATASET.NAME)
        dm = dm or DataManager(self.cfg, dataset_wrapper=getattr(dataset_cls, "dataset_wrapper", None))
        self.train_loader_x, self.train_loader_u = dm.train_loader_x, dm.train_loader_u
        self.val_loader, self.test_loader = dm.val_loader, dm.test_loader
        self.num_classes, self.num_source_domains = dm.num_classes, dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    # -- model -------------------------------------------------------------------------------
    def build_model(self):
        cfg = self.cfg
        self.opts = dept_options(cfg)
        # What a run record reports besides the accuracy (see dept.store.record).
        self.notes = list(getattr(self.dm.dataset, "notes", None) or [])
        self.test_result = self.final_checkpoint = self.loaded_checkpoint = self.last_saved = self.prompt_words = None
        self.head_mode = None
        self._resume_batch, self._resume_rng, self._epoch_rng = 0, None, None
        clip_model, self.prec = load_clip(cfg, self.method_cfg.PREC, self.device)
        self.clip_info = clip_summary(cfg, clip_model)
        clip_model.to(self.device)  # what a method computes once from the frozen CLIP, it computes there
        # the token embeddings, to name the words a learned context ends up nearest to (kept on the CPU)
        self._vocabulary = clip_model.token_embedding.weight.detach().cpu() if self.trained else None
        self.model = self.build_custom_model(clip_model, self.dm.dataset.classnames)
        self.model.text_encoding = cfg.DEPT.TEXT_ENCODING
        for name, param in self.model.named_parameters():
            param.requires_grad_(self.trains(name))
        tensors = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.trainable_summary = {"parameters": sum(p.numel() for p in tensors.values()), "tensors": sorted(tensors)}
        logger.info("%d trainable parameters: %s", self.trainable_summary["parameters"], sorted(tensors))
        self.model.to(self.device)
        if self.trained:
            self.optim = build_optimizer(self.model, cfg.OPTIM, self.opts)
            self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        else:
            self.optim = self.sched = None
        self.register_model(self.checkpoint_name, self.model, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler("cuda") if self.prec == "amp" else None

    def build_custom_model(self, clip_model, classnames):
        return self.model_cls(clip_model, classnames, self.method_cfg)

    def class_template(self):
        """The dataset's hand-crafted prompt ("a photo of a {}, a type of pet."), this method's own
        where the dataset names one (``method_templates``), for methods that read frozen CLIP text."""
        dataset = self.dm.dataset
        own = (getattr(dataset, "method_templates", None) or {}).get(self.method.paper_name or type(self).__name__)
        return own or getattr(dataset, "template", None) or "a photo of a {}."

    #: what the official implementation saves: "prompt_learner" (the baselines save their prompt
    #: learner alone, keyed ``ctx``, ``meta_net...``), another child's name, or "" (the whole model)
    official_checkpoint_part = "prompt_learner"

    @staticmethod
    def official_names(state):
        """A method's official parameter names -> ours (identity where they are the same)."""
        return state

    @classmethod
    def official_state(cls, state):
        """A checkpoint of the official implementation in our names (before the DePT head's names are
        mapped and the frozen weights dropped)."""
        part = cls.official_checkpoint_part
        whole = ("prompt_learner.", "image_encoder.", "text_encoder.", "logit_scale", "film_lp_", "linear_probe_")
        if part and not any(k.startswith((*whole, f"{part}.")) for k in state):
            state = {f"{part}.{k}": v for k, v in state.items()}
        return cls.official_names(state)

    def trains(self, name):
        """Whether parameter ``name`` trains: the method's prefixes, or (official semantics) any
        DEPT.NAMES_TO_UPDATE / TRAINER.NAMES_TO_UPDATE entry contained in the name, when set."""
        if self.opts.names_to_update:
            return any(key in name for key in self.opts.names_to_update)
        return name.startswith(self.trainable)

    # -- one forward, then losses or prediction ----------------------------------------------
    def losses(self, features, labels):
        """Named losses of one batch (``model.features`` output); their sum is what is optimised."""
        return {"itm": F.cross_entropy(features.logits.float(), labels),
                **self.model.extra_losses(features, labels)}

    def predict(self, features):
        """Class scores at evaluation (the ITM logits; DePT fuses its head in)."""
        return features.logits

    def model_inference(self, images):
        return self.predict(self.model.features(images))

    def forward_backward(self, batch):
        images, labels = self.parse_batch_train(batch)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.prec == "amp"):
            features = self.model.features(images)
            losses = self.losses(features, labels)
        self.optim.zero_grad()
        loss = self.backward(losses)
        if self.scaler is not None:
            self.scaler.unscale_(self.optim)  # after_backward sees the gradients that will be applied
        self.after_backward(losses)
        if self.scaler is not None:
            self.scaler.step(self.optim)  # skips the step when a gradient is not finite
            self.scaler.update()
        else:
            self.optim.step()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        summary = {"loss": loss.item(), "acc": compute_accuracy(features.logits, labels)[0].item()}
        if len(losses) > 1:
            summary.update({name: value.item() for name, value in losses.items()})
        return summary

    def backward(self, losses):
        """Back-propagate one batch's named losses; returns their sum (what is logged as the loss).

        A method that needs the gradient of each term apart (ProGrad projects the gradient of the
        cross-entropy onto that of its knowledge term) back-propagates them one by one here,
        through ``scaled`` so that it works under amp too (what it keeps of each is then multiplied
        by ``loss_scale()``), and combines them in ``after_backward``.
        """
        loss = sum(losses.values())
        if self.scaler is not None:
            self.scaled(loss).backward()
        else:
            self.model_backward(loss)
        return loss

    def scaled(self, loss):
        """``loss`` as it is back-propagated: multiplied by the amp loss scale, else itself."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def loss_scale(self):
        """The factor gradients back-propagated through ``scaled`` carry (1 without amp)."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def after_backward(self, losses):
        """Hook between the backward pass and the optimizer step: ``param.grad`` holds the gradients
        the step will apply (unscaled under amp; a step with a non-finite one is skipped there).
        Gradient surgery goes here; nothing by default."""

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    # -- the training loop -------------------------------------------------------------------
    def run_epoch(self):
        """Dassl's TrainerX epoch, resumable mid-epoch and stopped cleanly by SIGINT/SIGTERM."""
        self.set_model_mode("train")
        losses, batch_time, data_time = MetricMeter(), AverageMeter(), AverageMeter()
        self.num_batches = len(self.train_loader_x)
        skip, self._resume_batch = self._resume_batch, 0
        if skip:
            set_rng_state(self._epoch_rng)  # the batches are drawn as the interrupted epoch drew them
        else:
            self._epoch_rng = rng_state()
        batches = iter(self.train_loader_x)
        for _ in range(skip):
            next(batches)
        if skip:
            set_rng_state(self._resume_rng)
            logger.info("Resuming epoch %d at batch %d of %d", self.epoch + 1, skip + 1, self.num_batches)
        end = time.time()
        # A progress bar on a terminal only (disable=None): logs get Dassl's step lines, and the
        # protocol runner its own progress lines.
        bar = tqdm(total=self.num_batches, initial=skip, desc=f"epoch {self.epoch + 1}/{self.max_epoch}",
                   disable=None, leave=False, dynamic_ncols=True)
        with interrupts.deferred(), bar:
            for batch_idx in range(skip, self.num_batches):
                self.batch_idx = batch_idx
                batch = next(batches)
                data_time.update(time.time() - end)
                losses.update(self.forward_backward(batch))
                batch_time.update(time.time() - end)
                self._print_step(losses, batch_time, data_time)
                n_iter = self.epoch * self.num_batches + self.batch_idx
                for name, meter in losses.meters.items():
                    self.write_scalar("train/" + name, meter.avg, n_iter)
                self.write_scalar("train/lr", self.get_current_lr(), n_iter)
                bar.update(1)
                faults.reached("step")
                done = self.batch_idx + 1
                if interrupts.pending() is not None and done < self.num_batches:
                    self._save_mid_epoch(done)
                    raise interrupts.RunInterrupted(
                        interrupts.pending(), saved=self.last_saved,
                        where=f"at epoch {self.epoch + 1}/{self.max_epoch}, batch {done}/{self.num_batches}")
                end = time.time()

    def _print_step(self, losses, batch_time, data_time):
        """The step line Dassl's TrainerX prints (same format, so its log parsers still work)."""
        meet_freq = (self.batch_idx + 1) % self.cfg.TRAIN.PRINT_FREQ == 0
        if not (meet_freq or self.num_batches < self.cfg.TRAIN.PRINT_FREQ):
            return
        remaining = self.num_batches - self.batch_idx - 1 + (self.max_epoch - self.epoch - 1) * self.num_batches
        eta = str(datetime.timedelta(seconds=int(batch_time.avg * remaining)))
        print(f"epoch [{self.epoch + 1}/{self.max_epoch}] batch [{self.batch_idx + 1}/{self.num_batches}] "
              f"time {batch_time.val:.3f} ({batch_time.avg:.3f}) data {data_time.val:.3f} ({data_time.avg:.3f}) "
              f"{losses} lr {self.get_current_lr():.4e} eta {eta}")

    def after_epoch(self):
        """Save after every epoch (kept: the newest, and each TRAIN.CHECKPOINT_FREQ-th)."""
        with interrupts.deferred():
            if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
                result = self.test(split="val")
                if result > self.best_result:
                    self.best_result = result
                    self.save_model(self.epoch, self.output_dir, val_result=result, model_name=BEST)
            self.save_model(self.epoch, self.output_dir)
        if interrupts.pending() is not None:
            raise interrupts.RunInterrupted(interrupts.pending(), saved=self.last_saved,
                                            where=f"after epoch {self.epoch + 1}/{self.max_epoch}")

    def after_train(self):
        faults.reached("test")
        best = self.cfg.TEST.FINAL_MODEL == "best_val"
        path = find_checkpoint(self.output_dir, [self.checkpoint_name], best=best)
        self.final_checkpoint = file_summary(path, read_checkpoint(path))
        ctx = getattr(self.model.prompt_learner, "ctx", None)
        if isinstance(ctx, torch.Tensor) and ctx.dim() == 2 and ctx.requires_grad and self._vocabulary is not None:
            self.prompt_words = nearest_words(ctx, self._vocabulary)  # the run record keeps them
        super().after_train()

    # -- evaluation --------------------------------------------------------------------------
    def before_test(self):
        """Hook run before every evaluation (DePT decides there whether its head applies)."""

    def test(self, split=None):
        self.set_model_mode("eval")
        self.before_test()
        with self.model.cached_text_features():
            result = feature_cache.evaluate(self, split)  # None where the shared image features do not serve
            if result is None:
                result = super().test(split)
        self.test_result = {"split": split or self.cfg.TEST.SPLIT, "accuracy": float(result),
                            "per_class": per_class(self.evaluator._y_true, self.evaluator._y_pred, self.lab2cname)}
        return result

    # -- checkpoints -------------------------------------------------------------------------
    def method_state(self):
        """What a method carries across epochs besides its tensors, as tensors and plain values
        (PromptSRC's prompt aggregation); saved in every checkpoint, restored on resume."""
        return None

    def load_method_state(self, state):
        """Restore what ``method_state`` saved (None when it saved nothing)."""

    def _state_extras(self, batch=0):
        return {
            "batch": batch, "rng": rng_state(), "config": recorded_config(self.cfg), "trainer": type(self).__name__,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best_result": float(self.best_result), "method_state": self.method_state(),
        }

    def train(self):
        if not self.trained:
            raise ValueError(f"{type(self).__name__} learns nothing: evaluate it with --eval-only (no --model-dir).")
        if not self.trainable_summary["parameters"]:
            shapes = ", ".join(f"{n} {tuple(p.shape)}" for n, p in self.model.named_parameters() if p.requires_grad)
            raise ValueError(
                f"{type(self).__name__} has nothing to train: its trainable tensors hold 0 parameters"
                + (f" ({shapes})" if shapes else "") + ", so the run would report the model as built as if trained. "
                f"Check its settings (TRAINER.{self.method.node}.*, e.g. N_CTX); to evaluate a model as built, use "
                "--eval-only --untrained, or zero-shot CLIP (ZeroshotCLIP).")
        super().train()

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        folder = os.path.join(directory, self.checkpoint_name)
        path = os.path.join(folder, model_name or f"model.pth.tar-{epoch + 1}")
        save_checkpoint(path, self.model, epoch + 1, self.optim, self.sched, val_result, **self._state_extras())
        if not model_name:
            self.last_saved = path
            prune(folder, keep_epoch=epoch + 1, every=self.cfg.TRAIN.CHECKPOINT_FREQ)
        if is_best and os.path.basename(path) != BEST:  # Dassl's signature: also keep it as the best
            shutil.copy(path, os.path.join(folder, BEST))
        faults.reached("checkpoint")

    def _save_mid_epoch(self, done):
        path = os.path.join(self.output_dir, self.checkpoint_name, INTERRUPTED)
        save_checkpoint(path, self.model, self.epoch, self.optim, self.sched, None,
                        epoch_rng=self._epoch_rng, **self._state_extras(batch=done))
        self.last_saved = path

    def load_model(self, directory, epoch=None):
        """Load trained tensors for evaluation; ``epoch`` None or -1 = the last epoch saved
        (the best-validation one when TEST.FINAL_MODEL is best_val)."""
        if not directory:
            raise ValueError("No model directory: pass --model-dir with the output directory of a training run.")
        best = self.cfg.TEST.FINAL_MODEL == "best_val"
        names = [self.checkpoint_name, *(n for n in self.method.official_checkpoints if n != self.checkpoint_name)]
        path = find_checkpoint(directory, names, epoch, best=best)
        try:
            checkpoint = read_checkpoint(path)
        except CorruptCheckpoint as err:
            epochs = checkpoint_epochs(os.path.dirname(path))
            raise CorruptCheckpoint(path, f"{str(err).split(': ', 1)[-1]}. Re-run its training (it resumes from the "
                                          f"last good state; the base2new runner does this itself), or pass "
                                          f"--load-epoch with one of the epochs saved there: {epochs}") from err
        logger.info("Loading %s (epoch %s)", path, checkpoint.get("epoch"))
        self.apply_state(normalize_state_dict(checkpoint, self.official_state), checkpoint)
        self.loaded_checkpoint = file_summary(path, checkpoint)

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

    def _drop_states_without_their_best(self, folder):
        """With TEST.FINAL_MODEL best_val, the best model is a file of its own that no later state can
        rebuild: when it is unreadable, every state is set aside and the run trains from the start
        (which ends exactly as the first time did), rather than finishing with no best model."""
        best = os.path.join(folder, BEST)
        if self.cfg.TEST.FINAL_MODEL != "best_val" or not os.path.isfile(best):
            return
        try:
            read_checkpoint(best)
        except CorruptCheckpoint as err:
            states = [os.path.join(folder, name) for name in
                      [f"model.pth.tar-{e}" for e in checkpoint_epochs(folder)] + [INTERRUPTED]
                      if os.path.isfile(os.path.join(folder, name))]
            logger.warning("%s; it is renamed to %s. No later state can rebuild the best-validation model, so "
                           "%d state(s) are set aside too and the run trains again from the start.",
                           err, set_aside(best), len(states))
            for state in states:
                set_aside(state, why="set-aside")

    def resume_model_if_exist(self, directory):
        """Restore the most advanced good state under ``directory`` (every part of it), or start at 0."""
        folder = os.path.join(directory, self.checkpoint_name)
        self._drop_states_without_their_best(folder)
        path, checkpoint = latest_resumable(folder)
        if path is None:
            logger.info("No checkpoint found in %s: training from scratch.", folder)
            return 0
        if checkpoint.get("format") != FORMAT:
            raise ValueError(f"{path} was written by the official code and holds no usable optimizer state: "
                             "it can be evaluated (--eval-only --model-dir) but not resumed.")
        if "config" not in checkpoint or "rng" not in checkpoint:
            raise ValueError(f"{path} was written by an older dept without its config and random states, so a "
                             f"resumed run could not be checked or exact: move {folder} away to train anew.")
        found = differences(checkpoint["config"], self.cfg)
        if found:
            raise ValueError(
                f"{path} was trained with other settings than this run ({format_differences(found)}). "
                f"Resuming would mix them: use another --output-dir, or move {folder} away to train anew."
            )
        self.apply_state(normalize_state_dict(checkpoint), checkpoint)
        self.optim.load_state_dict(checkpoint["optimizer"])
        self.sched.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.best_result = checkpoint.get("best_result", self.best_result)
        self.load_method_state(checkpoint.get("method_state"))
        epoch, batch = progress(checkpoint)
        if batch:
            self._resume_batch, self._resume_rng, self._epoch_rng = batch, checkpoint["rng"], checkpoint["epoch_rng"]
        else:
            set_rng_state(checkpoint["rng"])
        self.last_saved = path
        logger.info("Resumed from %s (epoch %d%s)", path, epoch, f", batch {batch}" if batch else "")
        return epoch


__all__ = ["PromptTrainer", "file_summary"]
