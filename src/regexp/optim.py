"""Optimizers and their param groups, learning-rate schedulers, L1/L2 penalties and losses."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from omegaconf import MISSING

from regexp.errors import ConfigError
from regexp.lazy import lazy
from regexp.models import weights
from regexp.options import need, option

torch = lazy("torch")
nn = lazy("torch.nn")
F = lazy("torch.nn.functional")


# --- optimizers: each option's `torch_class` is the torch.optim class it configures, its
# knobs the fields under their PyTorch names --------------------------------------------------


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

    def build(self, groups: list[dict]):
        cls = getattr(torch.optim, self.torch_class)
        return cls(groups, **_knobs(self, "decay_norm_and_bias"))

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


# --- schedulers, stepped once per epoch (plateau with the valid loss) ------------------------


@dataclass
class Sched:
    name: str = MISSING
    torch_class = ""  # (not a config key); none: no scheduler

    def build(self, optimizer, epochs: int):
        """The torch.optim.lr_scheduler this option configures, over a run of `epochs`."""
        return getattr(torch.optim.lr_scheduler, self.torch_class)(optimizer, **_knobs(self))

    def check(self) -> None:
        gamma = getattr(self, "gamma", 1)
        need(gamma > 0, "sched.gamma", gamma, "a factor > 0")


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

    def build(self, optimizer, epochs: int):
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.milestones), self.gamma)

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


@option("sched")
@dataclass
class CosineAnnealingLR(Sched):
    name: str = "cosine"
    T_max: int | None = None  # null: train.epochs
    eta_min: float = 0.0
    torch_class = "CosineAnnealingLR"

    def build(self, optimizer, epochs: int):
        t_max = epochs if self.T_max is None else self.T_max  # null spans the run
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, t_max, self.eta_min)

    def check(self) -> None:
        super().check()
        need(self.T_max is None or self.T_max >= 1, "sched.T_max", self.T_max, "null or >= 1")
        need(self.eta_min >= 0, "sched.eta_min", self.eta_min, "a learning rate >= 0")


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

    def check(self) -> None:
        super().check()
        need(self.step_size >= 1, "sched.step_size", self.step_size, "an integer >= 1")


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


def build_optimizer(model: nn.Module, cfg: Optim):
    return cfg.build(param_groups(model, cfg.decay_norm_and_bias))


def build_scheduler(optimizer, cfg: Sched, epochs: int):
    """The scheduler `cfg` names, or None; cosine's T_max=null spans the `epochs` of the run."""
    return cfg.build(optimizer, epochs)


def build_penalty(model: nn.Module, cfg: Reg) -> Callable[[], torch.Tensor] | None:
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


@dataclass
class Penalty:
    """reg.l1 * sum|w| + (reg.l2 / 2) * sum w^2 per member, over the entries `mask` marks (the
    weights, or every parameter with reg.include_bias); `l1` and `l2` are (K, 1)."""

    l1: torch.Tensor
    l2: torch.Tensor
    mask: torch.Tensor  # (P,), 1 where penalized

    def value(self, flat: torch.Tensor) -> torch.Tensor:
        w = flat * self.mask
        return (self.l1 * w.abs()).sum(1) + (self.l2 / 2 * w * w).sum(1)

    def add_grad(self, flat: torch.Tensor, grad: torch.Tensor) -> None:
        """Its gradient, l1 * sign(w) + l2 * w, added to `grad` (no autograd needed)."""
        grad.addcmul_(torch.sign(flat), self.l1 * self.mask).addcmul_(flat, self.l2 * self.mask)


# --- TEMPORARY (replaced by the stacked updates of the optimizer options) --------------------


class _DevSGD:
    def __init__(self, cfgs, params, decayed=None):
        col = lambda key: torch.tensor(
            [float(getattr(c, key)) for c in cfgs], device=params.device
        ).view(-1, 1)  # noqa: E731
        self.lr, self.momentum, self.wd = col("lr"), col("momentum"), col("weight_decay")
        self.dampening = col("dampening")
        self.decay = self.wd if decayed is None else self.wd * decayed
        self.buf = None
        self.steps = 0

    def step(self, params, grads, active=None):
        with torch.no_grad():
            g = grads.add(params * self.decay) if bool((self.wd != 0).any()) else grads
            if bool((self.momentum != 0).any()):
                if self.buf is None:
                    self.buf = g.clone()
                else:
                    self.buf.mul_(self.momentum).add_(g * (1 - self.dampening))
                g = self.buf
            params.addcmul_(g, -self.lr)

    def state_dict(self, k):
        return {"buf": None if self.buf is None else self.buf[k].clone()}

    def load_state_dict(self, k, state):
        if state["buf"] is not None:
            if self.buf is None:
                self.buf = torch.zeros_like(self.lr.expand(-1, state["buf"].numel())).clone()
            self.buf[k] = state["buf"]


def build_update(cfgs, params, decayed=None):
    return _DevSGD(cfgs, params, decayed)


def build_schedule(cfgs, epochs, base_lr):
    if cfgs[0].name == "none":
        return None
    raise NotImplementedError
