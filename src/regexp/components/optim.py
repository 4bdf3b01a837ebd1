"""The optimizer options (each option's schema and the torch.optim optimizer it configures),
param groups, the L1/L2 penalties' schema and the losses. A population's step for each option
is in engine/updates.py; the learning-rate schedules are in schedules.py."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import MISSING

from regexp.components.lazy import lazy
from regexp.components.models import weights
from regexp.components.options import knobs, need, option
from regexp.components.schedules import Sched
from regexp.errors import ConfigError

torch = lazy("torch")
nn = lazy("torch.nn")
F = lazy("torch.nn.functional")


# --- optimizers: each option's `torch_class` is the torch.optim class it configures, its
# knobs the fields under their PyTorch names (engine/updates.py has its step for a population) ---


@dataclass
class Optim:
    name: str = MISSING
    lr: float = 0.01
    # lambda, with PyTorch's meaning: coupled L2 (added to the gradient) in sgd, adam, rmsprop
    # and adagrad; decoupled (the weights shrink directly) in adamw.
    weight_decay: float = 0.0
    # false: biases and norm-layer parameters go into a param group with no decay.
    decay_norm_and_bias: bool = True
    torch_class = ""  # (not a config key)

    def knobs(self) -> dict:
        """The hyperparameters under PyTorch's names: the torch optimizer's keyword arguments,
        and each member's in a population's update."""
        return knobs(self, "decay_norm_and_bias")

    def build(self, groups: list[dict]):
        cls = getattr(torch.optim, self.torch_class)
        return cls(groups, **self.knobs())

    def check(self) -> None:
        """The values PyTorch's optimizers would refuse with a traceback, refused in one line."""
        need(self.lr > 0, "optim.lr", self.lr, "a learning rate > 0")
        decay = self.weight_decay
        need(decay >= 0, "optim.weight_decay", decay, "a weight decay >= 0")


@option("optim")
@dataclass
class SGD(Optim):
    name: str = "sgd"
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    torch_class = "SGD"

    def check(self) -> None:
        super().check()
        need(self.momentum >= 0, "optim.momentum", self.momentum, "a momentum >= 0")
        need(
            not self.nesterov or (self.momentum > 0 and self.dampening == 0),
            "optim.nesterov",
            self.nesterov,
            "true only with optim.momentum > 0 and optim.dampening=0",
        )


@option("optim")
@dataclass
class GD(SGD):
    """Plain (stochastic) gradient descent: torch.optim.SGD without momentum."""

    name: str = "gd"

    def check(self) -> None:
        super().check()
        m = self.momentum
        need(m == 0, "optim.momentum", m, "0 with optim=gd; optim=sgd has one")


@option("optim")
@dataclass
class Adam(Optim):
    name: str = "adam"
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False
    torch_class = "Adam"

    def check(self) -> None:
        super().check()
        need(self.eps > 0, "optim.eps", self.eps, "an epsilon > 0")
        need(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas",
            self.betas,
            "[beta1, beta2], each in [0, 1)",
        )


@option("optim")
@dataclass
class AdamW(Adam):
    name: str = "adamw"
    weight_decay: float = 0.01  # PyTorch's default for AdamW
    torch_class = "AdamW"


@option("optim")
@dataclass
class RMSprop(Optim):
    name: str = "rmsprop"
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False
    torch_class = "RMSprop"

    def check(self) -> None:
        super().check()
        need(self.momentum >= 0, "optim.momentum", self.momentum, "a momentum >= 0")
        need(self.eps > 0, "optim.eps", self.eps, "an epsilon > 0")
        need(0 <= self.alpha < 1, "optim.alpha", self.alpha, "a smoothing constant in [0, 1)")


@option("optim")
@dataclass
class Adagrad(Optim):
    name: str = "adagrad"
    lr_decay: float = 0.0
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0
    torch_class = "Adagrad"

    def check(self) -> None:
        super().check()
        need(self.eps > 0, "optim.eps", self.eps, "an epsilon > 0")
        need(self.lr_decay >= 0, "optim.lr_decay", self.lr_decay, "a decay >= 0")
        value = self.initial_accumulator_value
        need(value >= 0, "optim.initial_accumulator_value", value, "a value >= 0")


# --- penalties ------------------------------------------------------------------------------


@dataclass
class Reg:
    """Explicit penalties added to the training objective (not to the logged data loss)."""

    l1: float = 0.0  # l1 * sum |w|
    l2: float = 0.0  # (l2 / 2) * sum w^2
    include_bias: bool = False  # also penalize biases and norm-layer parameters

    def check(self) -> None:
        need(self.l1 >= 0, "reg.l1", self.l1, "a penalty strength >= 0")
        need(self.l2 >= 0, "reg.l2", self.l2, "a penalty strength >= 0")


@functools.cache
def _binary_cross_entropy() -> type:
    """The bce loss class, defined on first use (a torch.nn subclass needs torch imported)."""

    class BinaryCrossEntropy(nn.BCEWithLogitsLoss):
        """Binary cross-entropy of one logit per example against 0/1 class labels. The sigmoid
        is inside the loss (log-sum-exp), which is numerically stable where sigmoid-then-log
        is not."""

        def forward(self, logits, target):
            return super().forward(logits.squeeze(1), target.to(logits.dtype))

    return BinaryCrossEntropy


# loss= -> its torch.nn loss class
LOSSES: dict[str, Callable[[], type]] = {
    "mse": lambda: nn.MSELoss,
    "l1": lambda: nn.L1Loss,
    "smooth_l1": lambda: nn.SmoothL1Loss,
    "ce": lambda: nn.CrossEntropyLoss,
    "bce": _binary_cross_entropy,
}

# Which losses fit which task; `auto` takes the first.
LOSSES_FOR = {"regression": ["mse", "l1", "smooth_l1"], "classification": ["ce", "bce"]}


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


def build_optimizer(model: nn.Module, cfg: Optim):
    return cfg.build(param_groups(model, cfg.decay_norm_and_bias))


def build_scheduler(optimizer, cfg: Sched, epochs: int):
    """The scheduler `cfg` names, or None; cosine's T_max=null spans the `epochs` of the run."""
    return cfg.build(optimizer, epochs)


def resolve_loss(name: str, task: str, n_outputs: int) -> str:
    """The loss `name` means for a `task` with `n_outputs` (targets or classes); refuses a
    loss that does not fit, before anything is built."""
    fitting = LOSSES_FOR[task]
    if name == "auto":
        return fitting[0]
    if name not in fitting:
        raise ConfigError("loss", name, f"one that fits a {task} task: {', '.join(fitting)}")
    if name == "bce" and n_outputs != 2:
        raise ConfigError(
            "loss", name, f"a loss for {n_outputs} classes: ce (bce is for 2 classes)"
        )
    return name


def model_outputs(name: str, task: str, n_outputs: int) -> int:
    """How many outputs the model needs for loss `name`: bce takes one logit for two classes."""
    return 1 if resolve_loss(name, task, n_outputs) == "bce" else n_outputs


def build_loss(name: str, task: str, n_outputs: int, reduction: str = "mean") -> nn.Module:
    """The loss `name` names; `auto` picks mse for regression and ce for classification. A
    population's loss is unreduced (reduction none): each member's is its own mean."""
    return LOSSES[resolve_loss(name, task, n_outputs)]()(reduction=reduction)
