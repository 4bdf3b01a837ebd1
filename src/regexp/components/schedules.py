"""Learning-rate schedules, stepped once per epoch (plateau with the valid loss): each option's
schema, the torch.optim.lr_scheduler it configures, and its lr for each member of a population.

A population's schedule needs no torch.optim (whose import costs a second of start-up): each
option replays its torch scheduler's own recursive formula (`get_lr()`, "chainable") in Python
floats, member by member, so that a member's lr is, number for number, the one torch's
scheduler leaves in `param_groups[0]["lr"]`. That is K Python floats an epoch: no tensors.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from omegaconf import MISSING

from regexp.components.lazy import lazy
from regexp.components.options import knobs, need, option

torch = lazy("torch")


@dataclass
class Sched:
    name: str = MISSING
    torch_class = ""  # (not a config key); none: no scheduler

    def knobs(self, epochs: int) -> dict:
        """The keyword arguments of the torch scheduler, over a run of `epochs`."""
        return knobs(self)

    def build(self, optimizer, epochs: int):
        """The torch.optim.lr_scheduler this option configures, over a run of `epochs`."""
        scheduler = getattr(torch.optim.lr_scheduler, self.torch_class)
        return scheduler(optimizer, **self.knobs(epochs))

    def check(self) -> None:
        gamma = getattr(self, "gamma", 1)
        need(gamma > 0, "sched.gamma", gamma, "a factor > 0")

    # A member of a population: its state is a dict of Python numbers (what the torch
    # scheduler keeps that changes), `lr` its current learning rate.

    def start(self, base_lr: float, epochs: int) -> dict:
        """A member's state once the torch scheduler is built (its constructor's first step)."""
        return {"lr": base_lr, "base_lr": base_lr, "last_epoch": 0}

    def advance(self, state: dict, valid_loss: float, epochs: int) -> None:
        """One epoch's `scheduler.step()`."""
        state["last_epoch"] += 1
        state["lr"] = self.next_lr(state["lr"], state["base_lr"], state["last_epoch"], epochs)

    def next_lr(self, lr: float, base_lr: float, epoch: int, epochs: int) -> float:
        """torch's get_lr() at last_epoch `epoch`, from the current `lr`."""
        return lr


@option("sched")
@dataclass
class NoSched(Sched):
    name: str = "none"

    def build(self, optimizer, epochs: int) -> None:
        return None


@option("sched")
@dataclass
class StepLR(Sched):
    name: str = "step"
    step_size: int = 20
    gamma: float = 0.8
    torch_class = "StepLR"

    def next_lr(self, lr, base_lr, epoch, epochs):
        return lr * self.gamma if epoch % self.step_size == 0 else lr

    def check(self) -> None:
        super().check()
        need(self.step_size >= 1, "sched.step_size", self.step_size, "an integer >= 1")


@option("sched")
@dataclass
class MultiStepLR(Sched):
    name: str = "multistep"
    milestones: list[int] = field(default_factory=lambda: [20, 60, 90, 135, 180])
    gamma: float = 0.8
    torch_class = "MultiStepLR"

    def knobs(self, epochs: int) -> dict:
        return {"milestones": list(self.milestones), "gamma": self.gamma}

    def next_lr(self, lr, base_lr, epoch, epochs):
        times = Counter(self.milestones)[epoch]  # a milestone listed twice decays twice
        return lr * self.gamma**times if times else lr

    def check(self) -> None:
        super().check()
        need(
            len(self.milestones) > 0 and all(m >= 1 for m in self.milestones),
            "sched.milestones",
            self.milestones,
            "a list of epochs >= 1, e.g. [20,60,90]",
        )


@option("sched")
@dataclass
class ExponentialLR(Sched):
    name: str = "exponential"
    gamma: float = 0.8
    torch_class = "ExponentialLR"

    def next_lr(self, lr, base_lr, epoch, epochs):
        return lr * self.gamma


@option("sched")
@dataclass
class CosineAnnealingLR(Sched):
    name: str = "cosine"
    T_max: int | None = None  # null: train.epochs
    eta_min: float = 0.0
    torch_class = "CosineAnnealingLR"

    def knobs(self, epochs: int) -> dict:
        t_max = epochs if self.T_max is None else self.T_max  # null spans the run
        return {"T_max": t_max, "eta_min": self.eta_min}

    def next_lr(self, lr, base_lr, epoch, epochs):
        # torch's recursive form, term for term (not the closed form: they differ in the
        # last digits), including the restart once past T_max.
        t_max, eta_min = self.knobs(epochs)["T_max"], self.eta_min
        if (epoch - 1 - t_max) % (2 * t_max) == 0:
            return lr + (base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        return (1 + math.cos(math.pi * epoch / t_max)) / (
            1 + math.cos(math.pi * (epoch - 1) / t_max)
        ) * (lr - eta_min) + eta_min

    def check(self) -> None:
        super().check()
        need(self.T_max is None or self.T_max >= 1, "sched.T_max", self.T_max, "null or >= 1")
        need(self.eta_min >= 0, "sched.eta_min", self.eta_min, "a learning rate >= 0")


# ReduceLROnPlateau's knobs a schema does not set take torch's defaults.
PLATEAU = {"threshold": 1e-4, "threshold_mode": "rel", "cooldown": 0, "min_lr": 0.0, "eps": 1e-8}


@option("sched")
@dataclass
class ReduceLROnPlateau(Sched):
    """Stepped with the valid loss of each epoch."""

    name: str = "plateau"
    mode: str = "min"
    factor: float = 0.1
    patience: int = 10
    cooldown: int = 0  # epochs after a reduction before bad epochs count again
    min_lr: float = 0.0  # the lr never falls below this
    torch_class = "ReduceLROnPlateau"

    def start(self, base_lr: float, epochs: int) -> dict:
        worst = math.inf if self.mode == "min" else -math.inf
        return {**super().start(base_lr, epochs), "best": worst, "bad_epochs": 0, "cooldown": 0}

    def advance(self, state: dict, valid_loss: float, epochs: int) -> None:
        # torch's step(metrics), line for line.
        k = {**PLATEAU, **self.knobs(epochs)}
        current = float(valid_loss)
        state["last_epoch"] += 1
        if self.better(current, state["best"], k["threshold"], k["threshold_mode"]):
            state["best"], state["bad_epochs"] = current, 0
        else:
            state["bad_epochs"] += 1
        if state["cooldown"] > 0:
            state["cooldown"] -= 1
            state["bad_epochs"] = 0  # bad epochs in cooldown do not count
        if state["bad_epochs"] > self.patience:
            old = state["lr"]
            new = max(old * self.factor, k["min_lr"])
            if old - new > k["eps"]:
                state["lr"] = new
            state["cooldown"], state["bad_epochs"] = k["cooldown"], 0

    def better(self, a: float, best: float, threshold: float, relative: str) -> bool:
        if self.mode == "min":
            return a < best * (1.0 - threshold) if relative == "rel" else a < best - threshold
        return a > best * (threshold + 1.0) if relative == "rel" else a > best + threshold

    def check(self) -> None:
        super().check()
        need(self.mode in ("min", "max"), "sched.mode", self.mode, "min or max")
        need(0 < self.factor < 1, "sched.factor", self.factor, "a factor in (0, 1)")
        need(self.patience >= 0, "sched.patience", self.patience, "an integer >= 0")
        need(self.cooldown >= 0, "sched.cooldown", self.cooldown, "an integer >= 0")
        need(self.min_lr >= 0, "sched.min_lr", self.min_lr, "a learning rate >= 0")


@option("sched")
@dataclass
class LambdaLR(Sched):
    """torch's LambdaLR with lr_lambda(epoch) = gamma ** (epoch // step_size): a config holds
    no Python function, so it takes the course's forms, 0.1 ** (epoch // 20) (these defaults)
    and 0.95 ** epoch (gamma 0.95, step_size 1)."""

    name: str = "lambda"
    gamma: float = 0.1
    step_size: int = 20
    torch_class = "LambdaLR"

    def build(self, optimizer, epochs: int):
        gamma, step_size = self.gamma, self.step_size
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: gamma ** (e // step_size))

    def next_lr(self, lr, base_lr, epoch, epochs):
        return base_lr * self.gamma ** (epoch // self.step_size)  # not chainable: from base

    def check(self) -> None:
        super().check()
        need(self.step_size >= 1, "sched.step_size", self.step_size, "an integer >= 1")


# --- a population's schedule --------------------------------------------------------------------


class Schedule:
    """The lr of each member of a population, each under its own option and knobs (members
    may even follow different options), stepped once per epoch."""

    def __init__(self, cfgs: list[Sched], epochs: int, base_lr: list[float]):
        if len(cfgs) != len(base_lr):
            raise ValueError(f"{len(cfgs)} schedules for {len(base_lr)} learning rates")
        self.cfgs, self.epochs = list(cfgs), epochs
        self.members = [cfg.start(lr, epochs) for cfg, lr in zip(cfgs, base_lr, strict=True)]

    def lrs(self) -> list[float]:
        """Each member's current lr, the float torch's scheduler leaves in param_groups."""
        return [state["lr"] for state in self.members]

    def step(self, valid_losses: list[float] | None = None) -> None:
        """Once per epoch, after it: plateau steps each member on its own valid loss."""
        losses = [math.nan] * len(self.cfgs) if valid_losses is None else valid_losses
        if valid_losses is None and any(isinstance(c, ReduceLROnPlateau) for c in self.cfgs):
            raise ValueError("sched=plateau steps on the valid losses: pass them")
        for cfg, state, loss in zip(self.cfgs, self.members, losses, strict=True):
            cfg.advance(state, loss, self.epochs)

    def state_dict(self, k: int) -> dict:
        """Member k's state: Python numbers, loadable with torch.load(weights_only=True)."""
        return {"name": self.cfgs[k].name, **self.members[k]}

    def load_state_dict(self, k: int, state: dict) -> None:
        state = dict(state)
        name = state.pop("name")
        if name != self.cfgs[k].name or set(state) != set(self.members[k]):
            raise ValueError(f"a sched={name} state does not fit sched={self.cfgs[k].name}")
        self.members[k] = state


def build_schedule(cfgs: list[Sched], epochs: int, base_lr: list[float]) -> Schedule:
    """The schedule of a population whose members start at `base_lr`, over `epochs`."""
    return Schedule(cfgs, epochs, base_lr)
