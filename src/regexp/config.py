"""The config schema and the checks a value must pass.

Every option of a config group (conf/<group>/<name>.yaml) has a dataclass here, registered
in Hydra's ConfigStore as `schema/<group>/<name>`; the YAML file names it in its defaults
list, so Hydra types every key and refuses a misspelt key or a wrong type while composing.
`validate` then turns the composed config into these dataclasses and checks the values
that a type cannot express (ranges, names of registry entries).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class UserError(Exception):
    """Something the user can fix: reported by the CLI in one line, exit code 2, no traceback."""


class ConfigError(UserError):
    """A config value that is not allowed: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={_show(value)} is not allowed: {allowed}")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return "null" if value is None else str(value)


def conf_dir() -> Path:
    """conf/ as shipped inside the installed package, else the checkout's top-level conf/."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


_store = ConfigStore.instance()


def option(group: str):
    """Register a dataclass as the schema of one option of `group`, under its `name` default."""

    def register(cls):
        name = next(f.default for f in fields(cls) if f.name == "name")
        _store.store(group=f"schema/{group}", name=name, node=cls)
        return cls

    return register


# --- data (data.py) -----------------------------------------------------------------------


@dataclass
class Data:
    name: str = MISSING
    # Subsample the training set to this many examples (stratified), to provoke overfitting.
    n_train: Optional[int] = None


@option("data")
@dataclass
class ToyRegression(Data):
    """The lesson-24 data: y = w*x + noise on x = linspace(x_range)."""

    name: str = "toy_regression"
    n_train: Optional[int] = 10
    n_valid: int = 10
    w: float = 1.5
    noise_train: float = 0.5
    noise_valid: float = 0.3
    x_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])


@option("data")
@dataclass
class Digits(Data):
    """scikit-learn's bundled 8x8 digits, split into train and valid by stratified sampling."""

    name: str = "digits"
    valid_fraction: float = 0.2
    label_noise: float = 0.0
    standardize: bool = True


# --- model and norm (models.py) ----------------------------------------------------------


@dataclass
class Model:
    name: str = MISSING
    activation: str = "relu"
    dropout: float = 0.0  # p, the probability that a unit is zeroed in training


@option("model")
@dataclass
class MLP(Model):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [200, 200, 200])
    bias: bool = True


@dataclass
class Norm:
    name: str = MISSING


@option("norm")
@dataclass
class NoNorm(Norm):
    name: str = "none"


@option("norm")
@dataclass
class BatchNorm(Norm):
    name: str = "bn"
    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True
    track_running_stats: bool = True


# --- init (init.py) -----------------------------------------------------------------------


@dataclass
class Init:
    name: str = MISSING


@option("init")
@dataclass
class DefaultInit(Init):
    """PyTorch's own initialization of each layer."""

    name: str = "default"


# --- optim and sched (optim.py) ----------------------------------------------------------


@dataclass
class Optim:
    name: str = MISSING
    lr: float = 0.01
    # lambda, with PyTorch's meaning: coupled L2 (added to the gradient) in sgd, adam, rmsprop
    # and adagrad; decoupled (the weights shrink directly) in adamw.
    weight_decay: float = 0.0
    # false: biases and norm-layer parameters go into a param group with no decay.
    decay_norm_and_bias: bool = True


@option("optim")
@dataclass
class SGD(Optim):
    name: str = "sgd"
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False


@option("optim")
@dataclass
class Adam(Optim):
    name: str = "adam"
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False


@option("optim")
@dataclass
class AdamW(Adam):
    name: str = "adamw"
    weight_decay: float = 0.01  # PyTorch's default for AdamW


@option("optim")
@dataclass
class RMSprop(Optim):
    name: str = "rmsprop"
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False


@option("optim")
@dataclass
class Adagrad(Optim):
    name: str = "adagrad"
    lr_decay: float = 0.0
    eps: float = 1e-10
    initial_accumulator_value: float = 0.0


@dataclass
class Sched:
    name: str = MISSING


@option("sched")
@dataclass
class NoSched(Sched):
    name: str = "none"


@option("sched")
@dataclass
class StepLR(Sched):
    name: str = "step"
    step_size: int = 20
    gamma: float = 0.8


@option("sched")
@dataclass
class MultiStepLR(Sched):
    name: str = "multistep"
    milestones: list[int] = field(default_factory=lambda: [20, 60, 90, 135, 180])
    gamma: float = 0.8


@option("sched")
@dataclass
class ExponentialLR(Sched):
    name: str = "exponential"
    gamma: float = 0.8


@option("sched")
@dataclass
class CosineAnnealingLR(Sched):
    name: str = "cosine"
    T_max: Optional[int] = None  # null: train.epochs
    eta_min: float = 0.0


@option("sched")
@dataclass
class ReduceLROnPlateau(Sched):
    """Stepped with the valid loss of each epoch."""

    name: str = "plateau"
    mode: str = "min"
    factor: float = 0.1
    patience: int = 10


# --- the run --------------------------------------------------------------------------------


@dataclass
class Reg:
    """Explicit penalties added to the training objective (not to the logged data loss)."""

    l1: float = 0.0  # l1 * sum |w|
    l2: float = 0.0  # (l2 / 2) * sum w^2
    include_bias: bool = False  # also penalize biases and norm-layer parameters


@dataclass
class Train:
    epochs: int = 2000
    batch_size: Optional[int] = None  # null: full batch, as in the lessons
    clip_grad_norm: Optional[float] = None  # max total gradient norm; null: no clipping


@dataclass
class Log:
    hist_every: int = 200  # weight and gradient histograms every this many epochs; 0: never
    figure_every: int = 200
    # weights/l2_norm, l1_norm, sparsity every this many epochs, and in the first and last;
    # null: about 50 times a run (every train.epochs/50); 0: never
    weight_stats_every: Optional[int] = None


@dataclass
class Config:
    data: Data = MISSING
    model: Model = MISSING
    norm: Norm = MISSING
    init: Init = MISSING
    optim: Optim = MISSING
    sched: Sched = MISSING
    loss: str = "auto"
    reg: Reg = field(default_factory=Reg)
    train: Train = field(default_factory=Train)
    log: Log = field(default_factory=Log)
    seed: int = 0
    device: str = "auto"


_store.store(name="schema", node=Config)


# --- checks ---------------------------------------------------------------------------------

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def validate(cfg: DictConfig) -> Config:
    """The composed config as dataclasses, after every check a value must pass."""
    known = {f.name for f in fields(Config)}
    for key in cfg:
        if key not in known:
            raise ConfigError(key, cfg[key], f"no such key (keys: {', '.join(sorted(known))})")
    conf: Config = OmegaConf.to_object(cfg)
    check(conf)
    return conf


def check(conf: Config) -> None:
    from regexp import data, init, models, optim  # the registries of names

    def need(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise ConfigError(key, value, allowed)

    def known(key: str, value: str, names) -> None:
        names = sorted(names)
        close = difflib.get_close_matches(value, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        need(value in names, key, value, f"one of {', '.join(names)}{hint}")

    known("data", conf.data.name, data.LOADERS)
    known("model", conf.model.name, models.MODELS)
    known("norm", conf.norm.name, models.NORMS)
    known("init", conf.init.name, init.INITIALIZERS)
    known("optim", conf.optim.name, optim.OPTIMIZERS)
    known("sched", conf.sched.name, optim.SCHEDULERS)
    known("loss", conf.loss, ["auto", *optim.LOSSES])
    known("model.activation", conf.model.activation, models.ACTIVATIONS)
    need(
        DEVICE.fullmatch(conf.device) is not None,
        "device",
        conf.device,
        "auto, cpu, cuda, cuda:N or mps",
    )

    d = conf.data
    need(d.n_train is None or d.n_train >= 1, "data.n_train", d.n_train, "null or an integer >= 1")
    if isinstance(d, Digits):
        need(0 < d.valid_fraction < 1, "data.valid_fraction", d.valid_fraction, "between 0 and 1")
        need(0 <= d.label_noise <= 1, "data.label_noise", d.label_noise, "between 0 and 1")
    if isinstance(d, ToyRegression):
        need(d.n_valid >= 1, "data.n_valid", d.n_valid, "an integer >= 1")
        need(
            len(d.x_range) == 2 and d.x_range[0] < d.x_range[1],
            "data.x_range",
            d.x_range,
            "[low, high] with low < high",
        )

    m = conf.model
    need(0 <= m.dropout < 1, "model.dropout", m.dropout, "a probability p with 0 <= p < 1")
    if isinstance(m, MLP):
        need(all(h >= 1 for h in m.hidden), "model.hidden", m.hidden, "widths >= 1")

    _check_optim(conf.optim, need)
    _check_sched(conf.sched, need)
    r = conf.reg
    need(r.l1 >= 0, "reg.l1", r.l1, "a penalty strength >= 0")
    need(r.l2 >= 0, "reg.l2", r.l2, "a penalty strength >= 0")

    t = conf.train
    need(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
    need(
        t.batch_size is None or t.batch_size >= 1,
        "train.batch_size",
        t.batch_size,
        "null (full batch) or an integer >= 1",
    )
    need(conf.log.hist_every >= 0, "log.hist_every", conf.log.hist_every, "an integer >= 0")
    need(conf.log.figure_every >= 0, "log.figure_every", conf.log.figure_every, "an integer >= 0")
    every = conf.log.weight_stats_every
    need(every is None or every >= 0, "log.weight_stats_every", every, "null or an integer >= 0")
    clip = t.clip_grad_norm
    need(clip is None or clip > 0, "train.clip_grad_norm", clip, "null (off) or a norm > 0")


def _check_optim(o: Optim, need) -> None:
    """The values PyTorch's optimizers would refuse with a traceback, refused in one line."""
    need(o.lr > 0, "optim.lr", o.lr, "a learning rate > 0")
    need(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "a weight decay >= 0")
    if isinstance(o, (SGD, RMSprop)):
        need(o.momentum >= 0, "optim.momentum", o.momentum, "a momentum >= 0")
    if isinstance(o, (Adam, RMSprop, Adagrad)):
        need(o.eps > 0, "optim.eps", o.eps, "an epsilon > 0")
    if isinstance(o, SGD):
        need(
            not o.nesterov or (o.momentum > 0 and o.dampening == 0),
            "optim.nesterov",
            o.nesterov,
            "true only with optim.momentum > 0 and optim.dampening=0",
        )
    if isinstance(o, Adam):
        need(
            len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
            "optim.betas",
            o.betas,
            "[beta1, beta2], each in [0, 1)",
        )
    if isinstance(o, RMSprop):
        need(0 <= o.alpha < 1, "optim.alpha", o.alpha, "a smoothing constant in [0, 1)")
    if isinstance(o, Adagrad):
        need(o.lr_decay >= 0, "optim.lr_decay", o.lr_decay, "a decay >= 0")
        need(
            o.initial_accumulator_value >= 0,
            "optim.initial_accumulator_value",
            o.initial_accumulator_value,
            "a value >= 0",
        )


def _check_sched(s: Sched, need) -> None:
    if isinstance(s, (StepLR, MultiStepLR, ExponentialLR)):
        need(s.gamma > 0, "sched.gamma", s.gamma, "a factor > 0")
    if isinstance(s, StepLR):
        need(s.step_size >= 1, "sched.step_size", s.step_size, "an integer >= 1")
    if isinstance(s, MultiStepLR):
        need(
            len(s.milestones) > 0 and all(m >= 1 for m in s.milestones),
            "sched.milestones",
            s.milestones,
            "a list of epochs >= 1, e.g. [20,60,90]",
        )
    if isinstance(s, CosineAnnealingLR):
        need(s.T_max is None or s.T_max >= 1, "sched.T_max", s.T_max, "null or an integer >= 1")
        need(s.eta_min >= 0, "sched.eta_min", s.eta_min, "a learning rate >= 0")
    if isinstance(s, ReduceLROnPlateau):
        need(s.mode in ("min", "max"), "sched.mode", s.mode, "min or max")
        need(0 < s.factor < 1, "sched.factor", s.factor, "a factor in (0, 1)")
        need(s.patience >= 0, "sched.patience", s.patience, "an integer >= 0")


# --- `regexp train --help` lists the groups of conf/ (not the schema/ groups above) ----------


def _groups_help() -> str:
    lines = []
    for group in sorted(p for p in conf_dir().iterdir() if p.is_dir() and p.name != "hydra"):
        names = sorted(f.stem for f in group.glob("*.yaml"))
        plus = "+" if group.name == "experiment" else ""  # not in the defaults: appended with +
        lines.append(f"  {plus}{group.name}: {', '.join(names)}")
    return "\n".join(lines)


if not OmegaConf.has_resolver("regexp_groups"):
    OmegaConf.register_new_resolver("regexp_groups", _groups_help)
