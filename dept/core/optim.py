"""Optimizer with DePT's staged learning rate, and a warm-up scheduler that torch 2.6+ accepts.

Dassl's warm-up schedulers pass ``verbose`` to torch's ``LRScheduler`` (a TypeError on current
torch) and keep a pickled successor scheduler in their state (which ``torch.load`` refuses since
torch 2.6). ``WarmupScheduler`` computes the same learning rates in closed form and its state is
plain numbers.
"""
import logging
import math

from torch.optim.lr_scheduler import LRScheduler

logger = logging.getLogger(__name__)


def param_groups(model, opts, base_lr):
    """Trainable parameters in two groups: prompts etc. at LR·BASE_LR_MULT, DePT layers at LR·LR_MULT.

    A parameter is "new" when its qualified name contains one of ``opts.new_layers`` (official:
    the model child's name contains it). Frozen parameters are left out: they get no gradient, so
    the official code's inclusion of them changes nothing.
    """
    base, new = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_new = opts.staged_lr and any(layer in name for layer in opts.new_layers)
        (new if is_new else base).append((name, param))
    groups = []
    base_mult = opts.base_lr_mult if opts.staged_lr else 1.0
    if base:
        groups.append({"params": [p for _, p in base], "lr": base_lr * base_mult, "names": [n for n, _ in base]})
    if new:
        groups.append({"params": [p for _, p in new], "lr": base_lr * opts.lr_mult, "names": [n for n, _ in new]})
    if not groups:
        raise ValueError(
            "No parameter is trainable: check DEPT.NAMES_TO_UPDATE (official: TRAINER.NAMES_TO_UPDATE)."
        )
    return groups


def build_optimizer(model, optim_cfg, opts):
    """Dassl's optimizer factory over our parameter groups (SGD, Adam, ... as OPTIM.NAME says)."""
    from dassl.optim import build_optimizer as dassl_build_optimizer

    groups = param_groups(model, opts, optim_cfg.LR)
    for group in groups:
        logger.info("lr %.6g for %d tensors: %s", group["lr"], len(group["params"]),
                    ", ".join(group["names"][:6]) + (" ..." if len(group["names"]) > 6 else ""))
    cfg = optim_cfg.clone()
    cfg.defrost()
    cfg.STAGED_LR = False  # the groups above already carry the staging; silences Dassl's warning
    return dassl_build_optimizer(None, cfg, param_groups=[
        {k: v for k, v in group.items() if k != "names"} for group in groups
    ])


class WarmupScheduler(LRScheduler):
    """Dassl's schedules (cosine, single_step, multi_step) with constant or linear warm-up.

    Stepped once per epoch. ``last_epoch`` e (0-based) gives, with W warm-up epochs:
    e < W: the warm-up LR; e >= W: the successor schedule at step e - W (Dassl's WARMUP_RECOUNT).
    For 10 epochs, cosine, 1 constant warm-up epoch: 1e-5, then lr·(1+cos(π·k/10))/2, k = 0..8.
    """

    def __init__(self, optimizer, kind="cosine", max_epoch=10, stepsize=(), gamma=0.1,
                 warmup_epoch=0, warmup_type="constant", warmup_lr=1e-5, last_epoch=-1):
        self.kind = kind
        self.max_epoch = max_epoch
        self.stepsize = list(stepsize) if isinstance(stepsize, (list, tuple)) else [stepsize]
        self.gamma = gamma
        self.warmup_epoch = warmup_epoch
        self.warmup_type = warmup_type
        self.warmup_lr = warmup_lr
        super().__init__(optimizer, last_epoch)

    def state_dict(self):
        """Progress only: the schedule's shape comes from the config, so a resumed run that
        changed MAX_EPOCH follows the new one."""
        return {k: self.__dict__[k] for k in ("last_epoch", "_step_count", "_last_lr") if k in self.__dict__}

    def _successor(self, base_lr, step):
        if self.kind == "cosine":
            return base_lr * (1 + math.cos(math.pi * step / self.max_epoch)) / 2
        if self.kind == "single_step":
            size = self.stepsize[-1] if self.stepsize[-1] > 0 else self.max_epoch
            return base_lr * self.gamma ** (step // size)
        if self.kind == "multi_step":
            return base_lr * self.gamma ** sum(step >= m for m in self.stepsize)
        raise ValueError(f"Unknown LR_SCHEDULER '{self.kind}': use cosine, single_step or multi_step")

    def get_lr(self):
        e = self.last_epoch
        if e < self.warmup_epoch:
            if self.warmup_type == "constant":
                return [self.warmup_lr for _ in self.base_lrs]
            # Dassl's linear warm-up: min_lr at epoch 0, then lr·e/W.
            return [self.warmup_lr if e == 0 else lr * e / self.warmup_epoch for lr in self.base_lrs]
        return [self._successor(lr, e - self.warmup_epoch) for lr in self.base_lrs]


def build_lr_scheduler(optimizer, optim_cfg):
    """A ``WarmupScheduler`` from Dassl's OPTIM keys (LR_SCHEDULER, MAX_EPOCH, WARMUP_*)."""
    warmup = optim_cfg.WARMUP_EPOCH if optim_cfg.WARMUP_EPOCH > 0 else 0
    if warmup and not optim_cfg.WARMUP_RECOUNT:
        raise ValueError("OPTIM.WARMUP_RECOUNT False is not supported; every CoOp-family config uses True.")
    if warmup and optim_cfg.WARMUP_TYPE not in ("constant", "linear"):
        raise ValueError(f"OPTIM.WARMUP_TYPE must be constant or linear, got '{optim_cfg.WARMUP_TYPE}'")
    warmup_lr = optim_cfg.WARMUP_CONS_LR if optim_cfg.WARMUP_TYPE == "constant" else optim_cfg.WARMUP_MIN_LR
    return WarmupScheduler(
        optimizer, kind=optim_cfg.LR_SCHEDULER, max_epoch=optim_cfg.MAX_EPOCH,
        stepsize=optim_cfg.STEPSIZE, gamma=optim_cfg.GAMMA, warmup_epoch=warmup,
        warmup_type=optim_cfg.WARMUP_TYPE, warmup_lr=warmup_lr,
    )
