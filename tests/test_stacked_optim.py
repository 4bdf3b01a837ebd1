"""A population's optimizer steps and lr schedules against torch.optim run member by member:
each member's numbers must be those torch gives it alone."""

from __future__ import annotations

import io
import math
import subprocess
import sys

import pytest
import torch
from test_config import options
from torch import nn

from regexp.components import optim, schedules
from regexp.components.options import OPTIONS
from regexp.engine import updates

# A small MLP's parameter shapes (1-16-16-1), weights and biases interleaved as in a model.
SHAPES = [(16, 1), (16,), (16, 16), (16,), (1, 16), (1,)]
P = sum(math.prod(s) for s in SHAPES)
STEPS = 20
TOLERANCE = 1e-6  # max relative difference to torch.optim, the brief's bound

# Each option with K = 3 members that differ in every knob that may differ; a boolean that
# changes the algorithm is a variant of its own.
POPULATIONS = {
    "sgd": [
        dict(lr=0.05, momentum=0.9, weight_decay=1e-2),
        dict(lr=0.1, momentum=0.5, dampening=0.3),
        dict(lr=0.02, momentum=0.0, dampening=0.2, weight_decay=1e-3),  # no momentum
    ],
    "sgd-nesterov": [
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
        dict(lr=0.01, momentum=0.5, nesterov=True),
        dict(lr=0.02, momentum=0.99, nesterov=True, weight_decay=0.1),
    ],
    "gd": [dict(lr=0.05, weight_decay=1e-2), dict(lr=0.1), dict(lr=0.3, weight_decay=0.5)],
    "adam": [
        dict(lr=1e-3, weight_decay=1e-2),
        dict(lr=3e-2, betas=[0.8, 0.99], eps=1e-6),
        dict(lr=1e-2, betas=[0.5, 0.9], eps=1e-3, weight_decay=0.1),
    ],
    "adam-amsgrad": [
        dict(lr=1e-3, amsgrad=True, weight_decay=1e-2),
        dict(lr=3e-2, betas=[0.8, 0.99], amsgrad=True),
        dict(lr=1e-2, betas=[0.0, 0.5], eps=1e-4, amsgrad=True),
    ],
    "adamw": [
        dict(lr=1e-3),
        dict(lr=3e-2, betas=[0.8, 0.99], eps=1e-6, weight_decay=0.0),
        dict(lr=1e-2, betas=[0.5, 0.9], weight_decay=0.3),
    ],
    "adamw-amsgrad": [
        dict(lr=1e-3, amsgrad=True),
        dict(lr=3e-2, betas=[0.8, 0.99], amsgrad=True, weight_decay=0.1),
        dict(lr=1e-2, amsgrad=True, weight_decay=0.0),
    ],
    "rmsprop": [
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=1e-3, alpha=0.9, eps=1e-6, momentum=0.9),
        dict(lr=3e-3, alpha=0.5, momentum=0.5, weight_decay=0.1),
    ],
    "rmsprop-centered": [
        dict(lr=1e-2, centered=True, momentum=0.9),
        dict(lr=1e-3, alpha=0.9, centered=True, weight_decay=1e-2),  # no momentum
        dict(lr=3e-3, alpha=0.5, eps=1e-4, centered=True, momentum=0.3),
    ],
    "adagrad": [
        dict(lr=1e-2, weight_decay=1e-2),
        dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1),
        dict(lr=0.03, eps=1e-6, lr_decay=1e-3, initial_accumulator_value=1.0),
    ],
}


def configs(population: str) -> list[optim.Optim]:
    cls = OPTIONS["optim"][population.split("-")[0]]
    return [cls(**knobs) for knobs in POPULATIONS[population]]


def decay_mask() -> torch.Tensor:
    """True on the weights: decay_norm_and_bias=false leaves the biases alone."""
    return torch.cat([torch.full((math.prod(s),), len(s) > 1) for s in SHAPES])


def start(k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, P, generator=torch.Generator().manual_seed(seed))


def gradients(k: int, steps: int = STEPS, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(k, P, generator=g) * 0.5 for _ in range(steps)]


class Alone:
    """One member trained alone by torch.optim: its parameters as the model's separate
    tensors, in two param groups without decay on the biases."""

    def __init__(self, cfg: optim.Optim, flat: torch.Tensor, decayed: bool, foreach: bool):
        chunks = flat.clone().split([math.prod(s) for s in SHAPES])
        self.params = [nn.Parameter(c.view(s)) for c, s in zip(chunks, SHAPES, strict=True)]
        groups = [{"params": self.params}]
        if decayed:
            groups = [
                {"params": [p for p in self.params if p.dim() > 1]},
                {"params": [p for p in self.params if p.dim() == 1], "weight_decay": 0.0},
            ]
        cls = getattr(torch.optim, cfg.torch_class)
        self.optimizer = cls(groups, foreach=foreach, **cfg.knobs())

    def step(self, grad: torch.Tensor) -> None:
        chunks = grad.split([math.prod(s) for s in SHAPES])
        for p, g in zip(self.params, chunks, strict=True):
            p.grad = g.view(p.shape).clone()
        self.optimizer.step()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.params])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest |a - b| / |b| (0 where both are 0)."""
    return ((a - b).abs() / b.abs()).nan_to_num(0.0).max().item()


def compare(cfgs, decayed, foreach, active=None, lr_at=None):
    """Step a population and each member alone over the same gradients; the largest
    relative difference of any parameter after any step, and whether all were bitwise."""
    k = len(cfgs)
    flat, mask = start(k), decay_mask() if decayed else None
    alone = [Alone(cfg, flat[i], decayed, foreach) for i, cfg in enumerate(cfgs)]
    update = updates.build_update(cfgs, flat, mask)
    worst, exact = 0.0, True
    for t, grad in enumerate(gradients(k)):
        if lr_at and t in lr_at:
            update.set_lr(lr_at[t])
            for member, lr in zip(alone, lr_at[t], strict=True):
                member.set_lr(lr)
        on = [True] * k if active is None else active(t)
        update.step(flat, grad, None if active is None else torch.tensor(on))
        for i, member in enumerate(alone):
            if on[i]:
                member.step(grad[i])
            theirs = member.flat()
            worst = max(worst, relative(flat[i], theirs))
            exact = exact and torch.equal(flat[i], theirs)
    return worst, exact


def test_every_optimizer_option_is_tested():
    assert sorted({name.split("-")[0] for name in POPULATIONS}) == options("optim")


@pytest.mark.slow
@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("decayed", [False, True], ids=["all-decayed", "no-decay-on-biases"])
@pytest.mark.parametrize("population", sorted(POPULATIONS))
def test_a_population_steps_each_member_as_torch_optim_steps_it_alone(population, decayed, foreach):
    # lr changes twice on the way, as a schedule changes it between epochs.
    cfgs = configs(population)
    lr_at = {7: [c.lr * 0.5 for c in cfgs], 13: [c.lr * 0.1 for c in cfgs]}
    worst, _ = compare(cfgs, decayed, foreach, lr_at=lr_at)
    assert worst <= TOLERANCE, worst


@pytest.mark.parametrize("population", ["sgd", "adam", "rmsprop-centered", "adagrad"])
def test_a_frozen_member_is_left_alone_and_resumes_as_if_never_paused(population):
    # Member 1 is frozen for steps 5-11, member 2 from the start to step 3: alone, each just
    # skips those steps (its first step, where momentum starts, comes late).
    def active(t):
        return [True, not 5 <= t < 12, t > 3]

    worst, _ = compare(configs(population), True, False, active=active)
    assert worst <= TOLERANCE, worst


def test_a_frozen_member_keeps_its_exact_bits_even_with_nan_gradients():
    cfgs = configs("adam")
    flat = start(3)
    update = updates.build_update(cfgs, flat)
    for grad in gradients(3, steps=3):
        update.step(flat, grad)
    before = flat.clone(), {n: t.clone() for n, t in update.state.items()}
    grad = torch.randn(3, P)
    grad[1] = math.nan
    update.step(flat, grad, torch.tensor([True, False, True]))
    assert torch.equal(flat[1], before[0][1]) and update.steps == [4, 3, 4]
    for name, t in update.state.items():
        assert torch.equal(t[1], before[1][name][1]), name
    assert not torch.equal(flat[0], before[0][0])


@pytest.mark.parametrize(
    "population,knob",
    [("sgd-nesterov", "nesterov"), ("adam-amsgrad", "amsgrad"), ("rmsprop-centered", "centered")],
)
def test_a_knob_that_changes_the_algorithm_is_refused_when_members_differ(population, knob):
    cfgs = configs(population)
    setattr(cfgs[1], knob, False)
    with pytest.raises(ValueError, match=f"optim.{knob} differs between the members"):
        updates.build_update(cfgs, start(3))


def test_a_population_has_one_optimizer_but_sgd_and_gd_share_theirs():
    with pytest.raises(ValueError, match="one population, one optimizer: got optim=adam, sgd"):
        updates.build_update([optim.SGD(), optim.Adam()], start(2))
    cfgs = [optim.SGD(lr=0.1, momentum=0.9), optim.GD(lr=0.2)]
    assert compare(cfgs, False, False)[0] <= TOLERANCE


@pytest.mark.parametrize("population", sorted(POPULATIONS))
def test_a_member_saved_and_loaded_into_a_fresh_update_goes_on_as_if_uninterrupted(population):
    cfgs, mask = configs(population), decay_mask()
    grads = gradients(3, steps=15)
    flat = start(3)
    through = updates.build_update(cfgs, flat, mask)
    for grad in grads:
        through.step(flat, grad)

    resumed = start(3)
    first = updates.build_update(cfgs, resumed, mask)
    for grad in grads[:7]:
        first.step(resumed, grad)
    saved = []
    for k in range(3):  # each member to its own file and back
        buffer = io.BytesIO()
        torch.save(first.state_dict(k), buffer)
        buffer.seek(0)
        saved.append(torch.load(buffer, weights_only=True))
    fresh = updates.build_update(cfgs, resumed, mask)
    for k in (2, 0, 1):
        fresh.load_state_dict(k, saved[k])
    for grad in grads[7:]:
        fresh.step(resumed, grad)
    assert torch.equal(resumed, flat)

    # A member resumed alone, as a population of one, goes on as it did in the population.
    lone = resumed[1:2].clone()
    lone_flat = start(3)[1:2]
    lone_update = updates.build_update(cfgs[1:2], lone_flat, mask)
    for grad in grads[:7]:
        lone_update.step(lone_flat, grad[1:2])
    alone = updates.build_update(cfgs[1:2], lone_flat, mask)
    alone.load_state_dict(0, saved[1])
    for grad in grads[7:]:
        alone.step(lone_flat, grad[1:2])
    assert torch.equal(lone_flat, lone)


def test_a_state_of_another_optimizer_is_refused():
    sgd = updates.build_update([optim.SGD(momentum=0.9)], start(1))
    adam = updates.build_update([optim.Adam()], start(1))
    with pytest.raises(ValueError, match="does not fit"):
        sgd.load_state_dict(0, adam.state_dict(0))


def test_the_update_steps_parameters_that_require_grad_in_place():
    flat = start(2).requires_grad_()
    update = updates.build_update([optim.SGD(lr=0.1), optim.SGD(lr=0.2)], flat)
    (flat**2).sum().backward()
    before = flat.detach().clone()
    update.step(flat, flat.grad)
    expected = before - torch.tensor([[0.1], [0.2]]) * 2 * before
    assert torch.allclose(flat.detach(), expected, rtol=1e-6, atol=0)


# --- with a schedule ------------------------------------------------------------------------


def test_a_schedule_writes_the_updates_lr_and_the_update_follows():
    cfgs = [optim.SGD(lr=0.1, momentum=0.9), optim.SGD(lr=0.3)]
    flat = start(2)
    update = updates.build_update(cfgs, flat)
    schedule = schedules.build_schedule(
        [schedules.StepLR(step_size=1, gamma=0.5)] * 2, 5, update.lr[:, 0].tolist()
    )
    alone = [Alone(cfg, flat[i], False, False) for i, cfg in enumerate(cfgs)]
    for grad in gradients(2, steps=5):
        update.step(flat, grad)
        for member, g in zip(alone, grad, strict=True):
            member.step(g)
        schedule.step()
        update.set_lr(schedule.lrs())
        for member, lr in zip(alone, schedule.lrs(), strict=True):
            member.set_lr(lr)
    assert update.lr[:, 0].tolist() == [0.1 / 32, 0.3 / 32]
    for i, member in enumerate(alone):
        assert relative(flat[i], member.flat()) <= TOLERANCE


@pytest.mark.slow
def test_a_population_steps_and_schedules_without_building_torch_optim():
    # Building a torch.optim optimizer imports torch._dynamo and sympy: a second of start-up.
    code = """
import sys, torch
from regexp.components import optim, schedules
from regexp.engine import updates
flat = torch.randn(2, 10)
for cfg in (optim.SGD(momentum=0.9), optim.Adam(), optim.RMSprop(), optim.Adagrad()):
    update = updates.build_update([cfg, cfg], flat)
    update.step(flat, torch.randn(2, 10))
schedule = schedules.build_schedule([schedules.ReduceLROnPlateau()] * 2, 5, [0.1, 0.2])
schedule.step([1.0, 2.0])
update.set_lr(schedule.lrs())
print(sorted(m for m in ("torch._dynamo", "sympy") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("population", ["sgd", "sgd-nesterov", "gd"])
def test_sgd_steps_each_member_bit_for_bit_as_torch_optim_fused_or_not(population):
    # The fused step (one pass over most of each row) and the step by columns (the rest:
    # P is not a multiple of the fused part's length) round as torch's single-tensor step.
    if not hasattr(torch, "_fused_sgd_"):
        pytest.skip("this torch has no fused SGD step")
    cfgs = configs(population)
    cfgs = [*cfgs, *configs(population)[:2]] * 2  # (members enough for the fused step)
    assert P % updates.FUSED_MULTIPLE and len(cfgs) >= updates.FUSED_FROM_MEMBERS
    assert updates.build_update(cfgs, start(len(cfgs))).fused is not None
    for decayed in (False, True):
        assert compare(cfgs, decayed, False, lr_at={7: [c.lr * 0.5 for c in cfgs]})[1]

    def active(t):  # a member frozen for a while, and one whose first step comes late
        return [True, not 5 <= t < 12, t > 3, *[True] * (len(cfgs) - 3)]

    assert compare(cfgs, False, False, active=active)[1]


def test_sgd_without_weight_decay_steps_fused_with_momentum_from_enough_members():
    # Without decay the fused step pays only with momentum and from FUSED_FROM_MEMBERS
    # members; where it steps, it is torch.optim's step bit for bit all the same.
    if not hasattr(torch, "_fused_sgd_"):
        pytest.skip("this torch has no fused SGD step")
    enough = updates.FUSED_FROM_MEMBERS
    knobs = [dict(lr=0.05, momentum=0.9), dict(lr=0.1, momentum=0.5, dampening=0.3)]
    cfgs = [optim.SGD(**knobs[i % 2]) for i in range(enough)]
    assert updates.build_update(cfgs, start(enough)).fused is not None
    assert compare(cfgs, False, False, lr_at={7: [c.lr * 0.5 for c in cfgs]})[1]
    assert updates.build_update(cfgs[:-1], start(enough - 1)).fused is None
    plain = [optim.SGD(lr=0.05 * (i + 1)) for i in range(enough)]  # no momentum: one pass
    assert updates.build_update(plain, start(enough)).fused is None
