"""The Dassl trainer every prompt method of this package derives from (``PromptTrainer``).

It holds what the CoOp family shares: loading CLIP, freezing by name, the staged-LR optimizer,
one forward per batch (``model.features``) followed by named losses (``losses``, summed in one
place) or the prediction (``predict``), evaluation with the text features computed once, and
checkpoints of the trained tensors from which a run resumes bit for bit. A method is a subclass
that names its model class and config node; its DePT variant is one more line::

    class CoOpDePT(DePTMixin, CoOp):
        pass

(``dept.mixin.DePTMixin``, re-exported here).

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

from dept import faults, interrupts
from dept.checkpoint import (
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
from dept.clip_loader import load_clip
from dept.config import dept_options
from dept.files import sha256
from dept.model import PromptCLIP
from dept.optim import build_lr_scheduler, build_optimizer
from dept.run_record import config_differences, format_differences

logger = logging.getLogger(__name__)


def clip_summary(cfg, clip_model):
    """What the run record keeps of the CLIP it loaded: name, file, and architecture sizes."""
    visual = clip_model.visual
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    return {
        "name": cfg.MODEL.BACKBONE.NAME,
        "path": cfg.MODEL.BACKBONE.get("PATH", "") or os.environ.get("DEPT_CLIP_PATH", "") or None,
        "arch": {
            "embed_dim": int(clip_model.text_projection.shape[1]),
            "vision_width": int(visual.conv1.weight.shape[0]),
            "vision_layers": len(blocks) if blocks is not None else None,
            "vision_patch_size": int(visual.conv1.kernel_size[0]) if blocks is not None else None,
            "image_resolution": int(visual.input_resolution),
            "transformer_width": int(clip_model.ln_final.weight.shape[0]),
            "transformer_layers": len(clip_model.transformer.resblocks),
        },
    }


def file_summary(path, checkpoint):
    """How a run record names a checkpoint: absolute path, sha256, epoch."""
    return {"path": os.path.abspath(path), "sha256": sha256(path), "epoch": checkpoint.get("epoch")}


class PromptTrainer(TrainerX):
    """Base Dassl trainer of the CoOp family (CoOp itself is this with ``PromptCLIP``).

    What a method owns, as class attributes (nothing central names a method):
    """

    model_cls = PromptCLIP
    #: the config node under TRAINER holding N_CTX, PREC, ... (added by ``add_config``)
    method_key = "COOP"
    #: what it trains: parameters whose names start with these (all else is frozen)
    trainable = ("prompt_learner.",)
    #: its checkpoint folder, and its DePT variant's (the official code's names)
    checkpoint_name = "prompt_learner"
    dept_checkpoint_name = "PromptLearner"
    #: other folders its official checkpoints may be in, tried after ``checkpoint_name``
    official_checkpoint_names = ("prompt_learner", "PromptLearner")
    #: the base-to-new config the runner uses (configs/trainers/<trainer>/<default_config>.yaml)
    default_config = "vit_b16_ep10_bs4_lr35"
    #: other protocols' configs where the method's paper has its own ("cross_dataset", also used by
    #: DG; "few_shot"); the default config otherwise (dept.protocols.protocol_config)
    protocol_configs = {}
    #: its name in the paper's tables (dept/reference/dept_paper_*.csv); None: not in them
    paper_method = None
    #: the config of the tiny demo and of the tests (configs/trainers/<trainer>/<demo_config>.yaml)
    demo_config = "demo_tiny"
    #: False for a method that learns nothing (zero-shot CLIP): evaluated as built, never trained
    trained = True

    @classmethod
    def add_config(cls, cfg):
        """Add this method's keys (``TRAINER.<method_key>``) where missing: the single source of
        its defaults, each commented. CoOp's: ``dept.config.coop_node``."""
        from dept.config import add_missing, coop_node

        add_missing(cfg.TRAINER, {"COOP": coop_node()})

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
        # What a run record reports besides the accuracy (see dept.run_record).
        self.notes = list(getattr(self.dm.dataset, "notes", None) or [])
        self.test_result = self.final_checkpoint = self.loaded_checkpoint = self.last_saved = None
        self.head_mode = None
        self._resume_batch, self._resume_rng, self._epoch_rng = 0, None, None
        clip_model, self.prec = load_clip(cfg, self.method_cfg.PREC, self.device)
        self.clip_info = clip_summary(cfg, clip_model)
        size, clip_size = tuple(cfg.INPUT.SIZE), clip_model.visual.input_resolution
        if size != (clip_size, clip_size):
            raise ValueError(f"INPUT.SIZE is {size} but {cfg.MODEL.BACKBONE.NAME} takes {clip_size}×{clip_size}-pixel "
                             f"images: set INPUT.SIZE ({clip_size}, {clip_size}).")
        clip_model.to(self.device)  # what a method computes once from the frozen CLIP, it computes there
        self.model = self.build_custom_model(clip_model, self.dm.dataset.classnames)
        self.model.text_encoding = cfg.DEPT.TEXT_ENCODING
        for name, param in self.model.named_parameters():
            param.requires_grad_(self.trains(name))
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        logger.info("%d trainable parameters: %s", trainable,
                    sorted(n for n, p in self.model.named_parameters() if p.requires_grad))
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
        own = (getattr(dataset, "method_templates", None) or {}).get(self.paper_method or type(self).__name__)
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
        summary = {"loss": loss.item(), "acc": compute_accuracy(features.logits, labels)[0].item()}
        if len(losses) > 1:
            summary.update({name: value.item() for name, value in losses.items()})
        return summary

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
        super().after_train()

    # -- evaluation --------------------------------------------------------------------------
    def before_test(self):
        """Hook run before every evaluation (DePT decides there whether its head applies)."""

    def test(self, split=None):
        self.set_model_mode("eval")
        self.before_test()
        with self.model.cached_text_features():
            result = super().test(split)
        self.test_result = {"split": split or self.cfg.TEST.SPLIT, "accuracy": float(result)}
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
            "batch": batch, "rng": rng_state(), "config": self.cfg.dump(), "trainer": type(self).__name__,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best_result": float(self.best_result), "method_state": self.method_state(),
        }

    def train(self):
        if not self.trained:
            raise ValueError(f"{type(self).__name__} learns nothing: evaluate it with --eval-only (no --model-dir).")
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
        names = [self.checkpoint_name, *(n for n in self.official_checkpoint_names if n != self.checkpoint_name)]
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
        differences = config_differences(checkpoint["config"], self.cfg)
        if differences:
            raise ValueError(
                f"{path} was trained with other settings than this run ({format_differences(differences)}). "
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


from dept.mixin import DePTMixin  # noqa: E402  (re-exported: ``from dept.engine import DePTMixin``)

__all__ = ["PromptTrainer", "DePTMixin", "clip_summary"]
