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
    # Subsample the training set to this many examples (stratified), to provoke overfitting;
    # the generated datasets make this many.
    n_train: Optional[int] = None
    # Inputs to mean 0 and std 1 per feature (or image channel), with the training statistics.
    standardize: bool = False


@dataclass
class ClassificationData(Data):
    label_noise: float = 0.0  # share of training labels replaced at random by another class


@option("data")
@dataclass
class ToyRegression(Data):
    """The lesson-24 data: y = w*f(x) + noise on x = linspace(x_range)."""

    name: str = "toy_regression"
    n_train: int = 10
    n_valid: int = 10
    w: float = 1.5
    function: str = "linear"  # f: linear (x), sin (sin(pi*x)) or cubic (x^3)
    noise_train: float = 0.5
    noise_valid: float = 0.3
    x_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])


@dataclass
class Toy2D(ClassificationData):
    """A 2-D two-class toy (TensorFlow Playground's shapes), in about [-1, 1]^2."""

    n_train: int = 200
    n_valid: int = 1000
    noise: float = 0.1  # the std of the Gaussian jitter added to each coordinate


@option("data")
@dataclass
class Moons(Toy2D):
    name: str = "moons"
    noise: float = 0.2


@option("data")
@dataclass
class Circles(Toy2D):
    name: str = "circles"


@option("data")
@dataclass
class Spiral(Toy2D):
    name: str = "spiral"
    noise: float = 0.05


@option("data")
@dataclass
class Xor(Toy2D):
    name: str = "xor"


@option("data")
@dataclass
class Gauss(Toy2D):
    name: str = "gauss"


@option("data")
@dataclass
class Digits(ClassificationData):
    """scikit-learn's bundled 8x8 digits, split into train and valid by stratified sampling."""

    name: str = "digits"
    valid_fraction: float = 0.2
    standardize: bool = True


@dataclass
class FileData(ClassificationData):
    """An image set read from its published files in `root` (train and test split fixed)."""

    root: str = "data"
    download: bool = False  # fetch missing files from the usual mirrors, checksums verified
    standardize: bool = True


@option("data")
@dataclass
class MNIST(FileData):
    name: str = "mnist"


@option("data")
@dataclass
class FashionMNIST(FileData):
    name: str = "fashion_mnist"


@option("data")
@dataclass
class CIFAR10(FileData):
    name: str = "cifar10"


# --- model and norm (models.py) ----------------------------------------------------------


@dataclass
class Model:
    name: str = MISSING
    activation: str = "relu"
    dropout: float = 0.0  # p, the probability that a unit is zeroed in training
    bias: bool = True  # the Linear and Conv layers' biases


@option("model")
@dataclass
class MLP(Model):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [200, 200, 200])


@option("model")
@dataclass
class CNN(Model):
    """LeNet-style: (conv, norm, activation, max-pool) per channel count, then an MLP head."""

    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [6, 16])
    kernel: int = 5
    padding: Optional[int] = None  # null: 0 where the input is large enough, else kernel // 2
    pool: int = 2  # max-pool size and stride; 1: no pooling
    head: list[int] = field(default_factory=lambda: [120, 84])
    dropout2d: float = 0.0  # p of Dropout2d after each conv block (whole channels zeroed)
    head_norm_layers: Optional[int] = None  # the first n hidden head layers get the norm; null: all


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
    momentum: Optional[float] = 0.1  # null: a cumulative average
    affine: bool = True
    track_running_stats: bool = True


@option("norm")
@dataclass
class LayerNorm(Norm):
    name: str = "ln"
    eps: float = 1e-5
    affine: bool = True


@option("norm")
@dataclass
class InstanceNorm(Norm):
    name: str = "in"
    eps: float = 1e-5
    momentum: Optional[float] = 0.1
    affine: bool = False
    track_running_stats: bool = False


@option("norm")
@dataclass
class GroupNorm(Norm):
    name: str = "gn"
    groups: int = 2  # must divide every normalized layer's channels
    eps: float = 1e-5
    affine: bool = True


# --- init (init.py) -----------------------------------------------------------------------


@dataclass
class Init:
    name: str = MISSING
    layers: str = "all"  # whose weights: all (Linear and Conv), linear or conv
    bias: str = "default"  # default (PyTorch's), zeros, ones or constant (init.bias_value)
    bias_value: float = 0.0


@option("init")
@dataclass
class DefaultInit(Init):
    """PyTorch's own initialization of each layer."""

    name: str = "default"


@dataclass
class Kaiming(Init):
    a: float = 0.0  # the negative slope of a leaky_relu
    mode: str = "fan_in"
    nonlinearity: str = "relu"


@option("init")
@dataclass
class KaimingNormal(Kaiming):
    name: str = "kaiming_normal"


@option("init")
@dataclass
class KaimingUniform(Kaiming):
    name: str = "kaiming_uniform"


@dataclass
class Xavier(Init):
    gain: float = 1.0


@option("init")
@dataclass
class XavierNormal(Xavier):
    name: str = "xavier_normal"


@option("init")
@dataclass
class XavierUniform(Xavier):
    name: str = "xavier_uniform"


@option("init")
@dataclass
class Normal(Init):
    name: str = "normal"
    mean: float = 0.0
    std: float = 0.01


@option("init")
@dataclass
class Uniform(Init):
    name: str = "uniform"
    low: Optional[float] = None  # both null: (-1/sqrt(fan_in), 1/sqrt(fan_in))
    high: Optional[float] = None


@option("init")
@dataclass
class Zeros(Init):
    name: str = "zeros"


@option("init")
@dataclass
class Ones(Init):
    name: str = "ones"


@option("init")
@dataclass
class Constant(Init):
    name: str = "constant"
    value: float = 0.1


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
class GD(SGD):
    """Plain (stochastic) gradient descent: torch.optim.SGD without momentum."""

    name: str = "gd"


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
    # Save checkpoint.pt every this many epochs; null: every minute of training. Always at the
    # end and when interrupted.
    checkpoint_every: Optional[int] = None
    clip_grad_norm: Optional[float] = None  # max total gradient norm; null: no clipping


@dataclass
class Log:
    hist_every: int = 200  # weight and gradient histograms every this many epochs; 0: never
    # The fit (1-D regression) or decision boundary (2-D data) every this many epochs and at
    # the end, as TensorBoard images and a PNG in the run dir; 0: never.
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
    resume: Optional[str] = None  # a run dir: continue that run from its checkpoint
    # torch's CPU threads; null: torch's default in a single run, the cores shared out among
    # the jobs a parallel launcher runs at once
    threads: Optional[int] = None


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

    need(0 <= conf.seed < 2**32, "seed", conf.seed, "an integer from 0 to 2**32 - 1")

    d = conf.data
    need(d.n_train is None or d.n_train >= 1, "data.n_train", d.n_train, "null or an integer >= 1")
    if isinstance(d, ClassificationData):
        need(0 <= d.label_noise <= 1, "data.label_noise", d.label_noise, "between 0 and 1")
    if isinstance(d, Digits):
        need(0 < d.valid_fraction < 1, "data.valid_fraction", d.valid_fraction, "between 0 and 1")
    if isinstance(d, (ToyRegression, Toy2D)):
        need(d.n_valid >= 1, "data.n_valid", d.n_valid, "an integer >= 1")
    if isinstance(d, Toy2D):
        need(d.noise >= 0, "data.noise", d.noise, "a standard deviation >= 0")
    if isinstance(d, ToyRegression):
        known("data.function", d.function, data.FUNCTIONS)
        for key in ("noise_train", "noise_valid"):
            value = getattr(d, key)
            need(value >= 0, f"data.{key}", value, "a standard deviation >= 0")
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
    if isinstance(m, CNN):
        need(m.channels and min(m.channels) >= 1, "model.channels", m.channels, "counts >= 1")
        need(all(h >= 1 for h in m.head), "model.head", m.head, "widths >= 1")
        need(m.kernel >= 1, "model.kernel", m.kernel, "a kernel size >= 1")
        need(m.pool >= 1, "model.pool", m.pool, "a pool size >= 1 (1: no pooling)")
        need(m.padding is None or m.padding >= 0, "model.padding", m.padding, "null or >= 0")
        need(0 <= m.dropout2d < 1, "model.dropout2d", m.dropout2d, "a probability 0 <= p < 1")
        need(
            m.head_norm_layers is None or 0 <= m.head_norm_layers <= len(m.head),
            "model.head_norm_layers",
            m.head_norm_layers,
            f"null (all) or 0 to {len(m.head)}, the number of model.head layers",
        )

    n = conf.norm
    need(getattr(n, "eps", 1) > 0, "norm.eps", getattr(n, "eps", None), "an epsilon > 0")
    momentum = getattr(n, "momentum", None)
    need(momentum is None or 0 <= momentum <= 1, "norm.momentum", momentum, "null or in [0, 1]")
    if isinstance(n, GroupNorm):
        need(n.groups >= 1, "norm.groups", n.groups, "a number of groups >= 1")

    i = conf.init
    known("init.layers", i.layers, init.LAYERS)
    known("init.bias", i.bias, init.BIASES)
    need(
        m.bias or i.bias == "default",
        "init.bias",
        i.bias,
        "default with model.bias=false, which leaves no biases to set",
    )
    need(
        not (i.layers == "conv" and isinstance(m, MLP)),
        "init.layers",
        i.layers,
        "all or linear with model=mlp, which has no conv layers",
    )
    if isinstance(i, Kaiming):
        known("init.mode", i.mode, ["fan_in", "fan_out"])
        known("init.nonlinearity", i.nonlinearity, init.NONLINEARITIES)
    if isinstance(i, Xavier):
        need(i.gain > 0, "init.gain", i.gain, "a gain > 0")
    if isinstance(i, Normal):
        need(i.std >= 0, "init.std", i.std, "a standard deviation >= 0")
    if isinstance(i, Uniform):
        need(
            (i.low is None and i.high is None) or (None not in (i.low, i.high) and i.low < i.high),
            "init.low",
            i.low,
            "init.low < init.high, or both null for (-1/sqrt(fan_in), 1/sqrt(fan_in))",
        )

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
    need(
        t.checkpoint_every is None or t.checkpoint_every >= 1,
        "train.checkpoint_every",
        t.checkpoint_every,
        "null (every minute) or an integer >= 1",
    )
    need(
        conf.threads is None or conf.threads >= 1,
        "threads",
        conf.threads,
        "null (automatic) or an integer >= 1",
    )
    if conf.resume is not None:
        checkpoint_of(conf.resume)


def _check_optim(o: Optim, need) -> None:
    """The values PyTorch's optimizers would refuse with a traceback, refused in one line."""
    need(o.lr > 0, "optim.lr", o.lr, "a learning rate > 0")
    need(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "a weight decay >= 0")
    if isinstance(o, (SGD, RMSprop)):
        need(o.momentum >= 0, "optim.momentum", o.momentum, "a momentum >= 0")
    if isinstance(o, GD):
        need(o.momentum == 0, "optim.momentum", o.momentum, "0 with optim=gd; optim=sgd has one")
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


def check_more_epochs(epochs: int, done: int, run_dir) -> None:
    """A resumed run must have epochs left to train."""
    if done >= epochs:
        raise ConfigError(
            "train.epochs", epochs, f"more than the {done} epochs the run in {run_dir} has done"
        )


def checkpoint_of(run_dir: str) -> Path:
    """The checkpoint of the run in `run_dir`, which `resume=` continues."""
    checkpoint = Path(run_dir) / "checkpoint.pt"
    if not checkpoint.is_file():
        what = "no such dir" if not Path(run_dir).is_dir() else "it holds no checkpoint.pt"
        raise ConfigError("resume", run_dir, f"the dir of a run to continue ({what})")
    return checkpoint


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
