"""The learning-rate schedules of a population against torch's schedulers run member by
member: each member's lr, epoch by epoch, must be the float torch's scheduler leaves in
param_groups, exactly."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
import torch
from test_config import options
from torch import nn

from regexp.components import schedules

EPOCHS = 200


@dataclass
class Plateau(schedules.ReduceLROnPlateau):
    """Plateau with every knob of torch's (the schema has cooldown and min_lr), to test the
    threshold logic too."""

    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_lr: float = 0.0
    eps: float = 1e-8


SCHEDULES = {
    "none": [schedules.NoSched()] * 2,
    "step": [schedules.StepLR(step_size=20, gamma=0.8), schedules.StepLR(step_size=7, gamma=0.5)],
    "multistep": [
        schedules.MultiStepLR(milestones=[20, 60, 90, 135, 180], gamma=0.8),
        schedules.MultiStepLR(milestones=[3, 3, 50], gamma=0.3),  # twice at 3
    ],
    "exponential": [schedules.ExponentialLR(gamma=0.8), schedules.ExponentialLR(gamma=0.97)],
    "cosine": [  # T_max null: the run; 30: restarts past it
        schedules.CosineAnnealingLR(),
        schedules.CosineAnnealingLR(T_max=30, eta_min=1e-3),
    ],
    "lambda": [  # the course's two: 0.1 ** (epoch // 20) and 0.95 ** epoch
        schedules.LambdaLR(),
        schedules.LambdaLR(gamma=0.95, step_size=1),
        schedules.LambdaLR(gamma=0.5, step_size=7),
    ],
    "plateau": [
        schedules.ReduceLROnPlateau(patience=5),
        schedules.ReduceLROnPlateau(mode="max", factor=0.5, patience=2),
        Plateau(patience=3, cooldown=4, threshold=1e-2, min_lr=1e-3),
        Plateau(factor=0.7, patience=0, threshold=0.05, threshold_mode="abs", eps=1e-3),
        Plateau(mode="max", patience=1, threshold_mode="abs", cooldown=2),
        schedules.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=3, min_lr=0.02),
    ],
}


def stalling(epoch: int, member: int) -> float:
    """A valid loss that falls, stalls, wobbles and falls again, each member its own."""
    if epoch < 30 + 10 * member:
        return 1.0 / (1 + epoch)
    if epoch < 120:
        return 0.03 + 0.001 * ((epoch * (member + 3)) % 7)
    return 0.03 / (1 + 0.01 * (epoch - 119)) + 1e-4 * (epoch % 3)


def torch_lrs(cfg: schedules.Sched, base_lr: float, epochs: int, member: int) -> list[float]:
    """The lr of every epoch of one member alone under torch's own scheduler."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = cfg.build(optimizer, epochs)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(stalling(epoch, member))
        elif scheduler is not None:
            scheduler.step()
    return lrs


def test_every_schedule_option_is_tested():
    assert sorted(SCHEDULES) == options("sched")


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_populations_schedule_gives_each_member_torchs_lr_exactly(name):
    cfgs = SCHEDULES[name]
    base = [0.1, 0.03, 0.5, 0.2, 1.0, 0.3][: len(cfgs)]
    schedule = schedules.build_schedule(cfgs, EPOCHS, base)
    ours = []
    for epoch in range(EPOCHS):
        ours.append(schedule.lrs())
        schedule.step([stalling(epoch, k) for k in range(len(cfgs))])
    for k, cfg in enumerate(cfgs):
        theirs = torch_lrs(cfg, base[k], EPOCHS, k)
        assert [lrs[k] for lrs in ours] == theirs, k  # floats, exactly
        if name not in ("none", "cosine"):
            assert len(set(theirs)) > 2  # and the schedule did move


def test_members_may_follow_different_schedules():
    cfgs = [schedules.NoSched(), schedules.StepLR(step_size=3), SCHEDULES["plateau"][2]]
    schedule = schedules.build_schedule(cfgs, 50, [0.1, 0.2, 0.3])
    ours = []
    for epoch in range(50):
        ours.append(schedule.lrs())
        schedule.step([stalling(epoch, k) for k in range(3)])
    for k, cfg in enumerate(cfgs):
        assert [lrs[k] for lrs in ours] == torch_lrs(cfg, [0.1, 0.2, 0.3][k], 50, k)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_a_member_schedule_saved_and_loaded_goes_on_as_if_uninterrupted(name):
    cfgs = SCHEDULES[name]
    base = [0.1] * len(cfgs)
    losses = [[stalling(e, k) for k in range(len(cfgs))] for e in range(EPOCHS)]
    through = schedules.build_schedule(cfgs, EPOCHS, base)
    first = schedules.build_schedule(cfgs, EPOCHS, base)
    for epoch in range(73):
        through.step(losses[epoch])
        first.step(losses[epoch])
    fresh = schedules.build_schedule(cfgs, EPOCHS, base)
    for k in range(len(cfgs)):
        buffer = io.BytesIO()
        torch.save(first.state_dict(k), buffer)
        buffer.seek(0)
        fresh.load_state_dict(k, torch.load(buffer, weights_only=True))
    for epoch in range(73, EPOCHS):
        through.step(losses[epoch])
        fresh.step(losses[epoch])
        assert fresh.lrs() == through.lrs()


def test_plateau_needs_the_valid_losses_and_a_state_must_fit():
    schedule = schedules.build_schedule([schedules.ReduceLROnPlateau()], 10, [0.1])
    with pytest.raises(ValueError, match="valid losses"):
        schedule.step()
    step = schedules.build_schedule([schedules.StepLR()], 10, [0.1])
    step.step()  # the others need no losses
    with pytest.raises(ValueError, match="does not fit"):
        schedule.load_state_dict(0, step.state_dict(0))
