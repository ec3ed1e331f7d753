"""Staged learning rate and the warm-up + cosine schedule (values of the official runs)."""
import math

import pytest
import torch
from conftest import coop_cfg
from torch import nn

pytestmark = pytest.mark.dassl


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.prompt_learner = nn.Linear(2, 2)
        self.dept_head = nn.ModuleDict({"film_img": nn.Linear(2, 2), "linear_probe": nn.Linear(2, 3)})
        self.image_encoder = nn.Linear(2, 2).requires_grad_(False)


def schedule(cfg, model):
    from dept.core.config import dept_options
    from dept.core.optim import build_lr_scheduler, build_optimizer

    optim = build_optimizer(model, cfg.OPTIM, dept_options(cfg))
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    lrs = []
    for _ in range(cfg.OPTIM.MAX_EPOCH):
        lrs.append([g["lr"] for g in optim.param_groups])
        optim.step()
        sched.step()
    return optim, lrs


def official_cfg():
    return coop_cfg(**{"OPTIM.LR": 0.0035, "OPTIM.MAX_EPOCH": 10, "OPTIM.WARMUP_EPOCH": 1,
                       "OPTIM.WARMUP_TYPE": "constant", "OPTIM.WARMUP_CONS_LR": 1e-5,
                       "OPTIM.LR_SCHEDULER": "cosine"})


def test_staged_groups_prompt_at_lr_head_and_cwt_at_lr_times_6_5():
    optim, lrs = schedule(official_cfg(), Toy())
    groups = optim.param_groups
    assert [len(g["params"]) for g in groups] == [2, 4]  # frozen image encoder left out
    assert lrs[1] == pytest.approx([0.0035, 0.02275])


def test_warmup_then_cosine_as_the_official_runs():
    _, lrs = schedule(official_cfg(), Toy())
    factors = [1.0, 0.976, 0.905, 0.794, 0.655, 0.5, 0.345, 0.206, 0.095]
    assert lrs[0] == pytest.approx([1e-5, 1e-5])  # constant warm-up for both groups
    for epoch, f in enumerate(factors, start=1):
        assert lrs[epoch][0] == pytest.approx(0.0035 * f, abs=2e-6)
        assert lrs[epoch][1] == pytest.approx(0.02275 * (1 + math.cos(math.pi * (epoch - 1) / 10)) / 2)


def test_scheduler_state_is_plain_and_resumes_to_the_same_lr(tmp_path):
    from dept.core.config import dept_options
    from dept.core.optim import build_lr_scheduler, build_optimizer

    cfg = official_cfg()
    model = Toy()
    optim = build_optimizer(model, cfg.OPTIM, dept_options(cfg))
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    for _ in range(4):
        optim.step()
        sched.step()
    path = tmp_path / "sched.pt"
    torch.save({"s": sched.state_dict(), "o": optim.state_dict()}, path)
    state = torch.load(path, weights_only=True)  # plain values only
    optim2 = build_optimizer(Toy(), cfg.OPTIM, dept_options(cfg))
    sched2 = build_lr_scheduler(optim2, cfg.OPTIM)
    optim2.load_state_dict(state["o"])
    sched2.load_state_dict(state["s"])
    optim.step()
    sched.step()
    optim2.step()
    sched2.step()
    assert [g["lr"] for g in optim2.param_groups] == pytest.approx([g["lr"] for g in optim.param_groups])


def test_staging_off_puts_everything_at_lr():
    cfg = official_cfg()
    cfg.DEPT.STAGED_LR = False
    _, lrs = schedule(cfg, Toy())
    assert lrs[1] == pytest.approx([0.0035])


def test_no_trainable_parameter_is_a_clear_error():
    from dept.core.config import dept_options
    from dept.core.optim import build_optimizer

    cfg = official_cfg()
    with pytest.raises(ValueError, match="NAMES_TO_UPDATE"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), cfg.OPTIM, dept_options(cfg))
