"""Optimizers and their param groups, learning-rate schedulers, L1/L2 penalties and losses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from regexp import config
from regexp.models import weights

# Optimizer classes; their knobs are the config's fields under their PyTorch names.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "gd": torch.optim.SGD,  # the same without momentum: the lessons' plain gradient descent
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}

# Scheduler classes, stepped once per epoch (plateau with the valid loss).
SCHEDULERS: dict[str, type | None] = {
    "none": None,
    "step": torch.optim.lr_scheduler.StepLR,
    "multistep": torch.optim.lr_scheduler.MultiStepLR,
    "exponential": torch.optim.lr_scheduler.ExponentialLR,
    "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
    "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
}


class BinaryCrossEntropy(nn.BCEWithLogitsLoss):
    """Binary cross-entropy of one logit per example against 0/1 class labels. The sigmoid
    is inside the loss (log-sum-exp), which is numerically stable where sigmoid-then-log
    is not."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(logits.squeeze(1), target.to(logits.dtype))


LOSSES: dict[str, type[nn.Module]] = {
    "mse": nn.MSELoss,
    "l1": nn.L1Loss,
    "smooth_l1": nn.SmoothL1Loss,
    "ce": nn.CrossEntropyLoss,
    "bce": BinaryCrossEntropy,
}

# Which losses fit which task; `auto` takes the first.
LOSSES_FOR = {"regression": ["mse", "l1", "smooth_l1"], "classification": ["ce", "bce"]}


def _knobs(cfg, *skip: str) -> dict:
    """The config's fields as keyword arguments for PyTorch (lists become tuples)."""
    return {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in dataclasses.asdict(cfg).items()
        if k not in ("name", *skip)
    }


def param_groups(model: nn.Module, decay_norm_and_bias: bool = True) -> list[dict]:
    """The model's parameters as optimizer param groups: one group, or, without decay on
    biases and norm parameters, the weights in one group and the rest in a group with
    weight_decay 0."""
    params = list(model.parameters())
    if decay_norm_and_bias:
        return [{"params": params}]
    decayed = {id(w) for w in weights(model)}
    groups = [
        {"params": [p for p in params if id(p) in decayed]},
        {"params": [p for p in params if id(p) not in decayed], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: config.Optim) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.decay_norm_and_bias)
    return OPTIMIZERS[cfg.name](groups, **_knobs(cfg, "decay_norm_and_bias"))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: config.Sched, epochs: int):
    """The scheduler `cfg` names, or None; cosine's T_max=null spans the `epochs` of the run."""
    cls = SCHEDULERS[cfg.name]
    if cls is None:
        return None
    knobs = _knobs(cfg)
    if isinstance(cfg, config.CosineAnnealingLR) and cfg.T_max is None:
        knobs["T_max"] = epochs
    if isinstance(cfg, config.MultiStepLR):
        knobs["milestones"] = list(cfg.milestones)
    return cls(optimizer, **knobs)


def build_penalty(model: nn.Module, cfg: config.Reg) -> Callable[[], torch.Tensor] | None:
    """A function giving reg.l1 * sum|w| + (reg.l2 / 2) * sum w^2 over the model's weights (all
    its parameters with include_bias), to add to the objective; None when both are 0."""
    if cfg.l1 == 0 and cfg.l2 == 0:
        return None
    params = list(model.parameters()) if cfg.include_bias else weights(model)
    l1, half_l2 = cfg.l1, cfg.l2 / 2

    def penalty() -> torch.Tensor:
        # One flat tensor: a few ops per step, whatever the number of layers.
        flat = torch.cat([p.reshape(-1) for p in params])
        if l1 == 0:
            return half_l2 * torch.dot(flat, flat)
        if half_l2 == 0:
            return l1 * flat.abs().sum()
        return l1 * flat.abs().sum() + half_l2 * torch.dot(flat, flat)

    return penalty


def resolve_loss(name: str, task: str, n_outputs: int) -> str:
    """The loss `name` means for a `task` with `n_outputs` (targets or classes); refuses a
    loss that does not fit, before anything is built."""
    fitting = LOSSES_FOR[task]
    if name == "auto":
        return fitting[0]
    if name not in fitting:
        raise config.ConfigError("loss", name, f"one that fits a {task} task: {', '.join(fitting)}")
    if name == "bce" and n_outputs != 2:
        raise config.ConfigError(
            "loss", name, f"a loss for {n_outputs} classes: ce (bce is for 2 classes)"
        )
    return name


def model_outputs(name: str, task: str, n_outputs: int) -> int:
    """How many outputs the model needs for loss `name`: bce takes one logit for two classes."""
    return 1 if resolve_loss(name, task, n_outputs) == "bce" else n_outputs


def build_loss(name: str, task: str, n_outputs: int) -> nn.Module:
    """The loss `name` names; `auto` picks mse for regression and ce for classification."""
    return LOSSES[resolve_loss(name, task, n_outputs)]()
