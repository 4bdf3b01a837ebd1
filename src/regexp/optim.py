"""Optimizers, learning-rate schedulers and losses."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from regexp import config

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
}

# Scheduler classes; their knobs are the config's fields under their PyTorch names.
SCHEDULERS: dict[str, type | None] = {
    "none": None,
    "step": torch.optim.lr_scheduler.StepLR,
}

LOSSES: dict[str, type[nn.Module]] = {
    "mse": nn.MSELoss,
    "ce": nn.CrossEntropyLoss,
}

# Which losses fit which task; `auto` takes the first.
LOSSES_FOR = {"regression": ["mse"], "classification": ["ce"]}


def _knobs(cfg) -> dict:
    """The config's fields as keyword arguments for PyTorch (lists become tuples)."""
    return {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in dataclasses.asdict(cfg).items()
        if k != "name"
    }


def build_optimizer(model: nn.Module, cfg: config.Optim) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.name](model.parameters(), **_knobs(cfg))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: config.Sched):
    cls = SCHEDULERS[cfg.name]
    return None if cls is None else cls(optimizer, **_knobs(cfg))


def build_loss(name: str, task: str) -> nn.Module:
    """The loss `name` names; `auto` picks mse for regression and ce for classification."""
    fitting = LOSSES_FOR[task]
    if name == "auto":
        name = fitting[0]
    if name not in fitting:
        raise config.ConfigError("loss", name, f"one that fits a {task} task: {', '.join(fitting)}")
    return LOSSES[name]()
