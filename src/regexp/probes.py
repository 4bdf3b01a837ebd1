"""`regexp probe NAME`: the lessons' small demonstrations that need no training.

Each probe computes its numbers with the project's own layers, initializers, optimizers and
schedulers, prints them as a table and draws a figure. By default it is the course's own
demonstration, with the course's settings (and for depth, init and optim the course's random
state), so that a learner sees the numbers the course's script prints. Overrides go
through the same config as `regexp train` (init=, norm=, optim=, sched=, model.dropout=, ...):
an override narrows a probe to that choice, where without one it compares the lessons'
choices side by side. lr and optim take demo=notes for the course notes' settings instead.

Why it is long: each demonstration is a function of some fifty lines with its table, and one
table of them (PROBES, TAKES) serves `regexp probe --help` and the checks of its overrides.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy
import torch
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

from regexp import config, process
from regexp.components import init, models, optim, schedules
from regexp.console import console as default_console
from regexp.errors import ConfigError, UserError
from regexp.figures import plots


@dataclass
class Probe:
    """What a probe found: tables to print and a figure's data."""

    title: str
    tables: list[Table] = field(default_factory=list)
    figure: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for i, column in enumerate(columns):
        # The names in the first column stay whole; rich narrows the others to fit.
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=i == 0)
    return table


# --- dropout: experiment 3 ----------------------------------------------------------------


def dropout(conf: config.Config, given: set[str], draws: int = 1000) -> Probe:
    """Dropout(p), then Linear(10000 -> 1, no bias) with all weights 1, on an input of ones:
    in train mode about (1-p) of the units survive, each scaled by 1/(1-p), so the output
    stays near 10000; in eval mode dropout is off and the output is exactly 10000. The masks
    come from torch.manual_seed(seed), so that the printed numbers repeat."""
    ps = [conf.model.dropout] if "model.dropout" in given else [0.1, 0.5, 0.9]
    torch.manual_seed(conf.seed)
    width = 10000
    x = torch.ones(1, width)
    linear = nn.Linear(width, 1, bias=False)
    nn.init.ones_(linear.weight)
    table = _table(
        "Dropout(p) then Linear(10000 -> 1, weights 1) on ones",
        "p",
        "kept (train)",
        "scale 1/(1-p)",
        "train output (mean of draws)",
        "train output (one draw)",
        "eval output",
    )
    outputs = {}
    with torch.no_grad():
        for p in ps:
            layer = nn.Dropout(p)
            layer.train()
            masked = torch.stack([layer(x) for _ in range(draws)])  # (draws, 1, width)
            train = linear(masked).flatten()
            layer.eval()
            evaluated = linear(layer(x)).item()
            kept = (masked[0] != 0).float().mean().item()
            outputs[p] = train.tolist()
            table.add_row(
                f"{p:g}",
                f"{kept:.3f}",
                f"{1 / (1 - p):.3f}",
                f"{train.mean().item():.1f}",
                f"{train[0].item():.1f}",
                f"{evaluated:.1f}",
            )
    return Probe(
        "dropout",
        [table],
        {"outputs": outputs, "eval": float(width)},
        [
            "train mode: each surviving unit is scaled by 1/(1-p), so the expected output "
            "is unchanged; eval mode: dropout is off, no rescaling needed"
        ],
    )


# --- norm: experiments 6 and 7 ---------------------------------------------------------------


NORM_NOTES = [
    "running = (1 - momentum) * running + momentum * batch statistic; "
    "LayerNorm's shape must be the input's trailing dims; "
    "GroupNorm needs the channels divisible by the groups"
]


def norm(conf: config.Config, given: set[str]) -> Probe:
    """BatchNorm1d/2d/3d on constant maps (channel i holds i+1, batch 3) over two passes, and
    the parameter shapes of BN, LN, IN and GN on one batch of (8, 6, 3, 4) maps."""
    bn = conf.norm if isinstance(conf.norm, models.BatchNorm) and "norm" in given else None
    momentum = bn.momentum if bn is not None else 0.3
    eps = bn.eps if bn is not None else 1e-5
    running, trajectories = _running_stats(momentum, eps)
    return Probe(
        "norm",
        [running, _norm_shapes()],
        {"trajectories": trajectories, "momentum": momentum},
        NORM_NOTES,
    )


def _running_stats(momentum: float, eps: float):
    """BatchNorm1d/2d/3d's running statistics over two passes of constant maps: a table, and
    each layer's (means, variances) pass by pass."""
    channels, batch, passes = 5, 3, 2
    running = _table(
        f"BatchNorm, momentum {momentum}: running stats of the channel holding 2 "
        f"(batch mean 2, batch var 0)",
        "layer",
        "input",
        "pass",
        "running_mean",
        "running_var",
        "shape of mean, var, weight, bias",
    )
    trajectories = {}
    for layer_cls, shape in (
        (nn.BatchNorm1d, (1,)),
        (nn.BatchNorm2d, (2, 2)),
        (nn.BatchNorm3d, (2, 2, 3)),
    ):
        layer = layer_cls(channels, eps=eps, momentum=momentum)
        maps = torch.stack([torch.full(shape, i + 1.0) for i in range(channels)])
        x = maps.expand(batch, *maps.shape).clone()
        means, variances = [layer.running_mean[1].item()], [layer.running_var[1].item()]
        shapes = ", ".join(
            str(tuple(t.shape))
            for t in (layer.running_mean, layer.running_var, layer.weight, layer.bias)
        )
        running.add_row(
            layer_cls.__name__,
            str(tuple(x.shape)),
            "0",
            f"{means[0]:.4g}",
            f"{variances[0]:.4g}",
            shapes,
        )
        for i in range(passes):
            layer(x)
            means.append(layer.running_mean[1].item())
            variances.append(layer.running_var[1].item())
            running.add_row("", "", str(i + 1), f"{means[-1]:.4g}", f"{variances[-1]:.4g}", "")
        trajectories[layer_cls.__name__] = (means, variances)
    return running, trajectories


def _norm_shapes():
    """The parameter shapes of BN, LN, IN and GN on one batch of (8, 6, 3, 4) maps: a table."""
    x = torch.stack([torch.full((3, 4), float(i + 1)) for i in range(6)]).expand(8, 6, 3, 4)
    x = x + 0.1 * torch.randn(8, 6, 3, 4, generator=torch.Generator().manual_seed(0))
    shapes = _table(
        "Norm layers on a batch of maps (8, 6, 3, 4)",
        "layer",
        "normalizes over",
        "weight shape",
        "running stats",
        "output mean, std",
    )
    layers = [
        ("BatchNorm2d(6)", lambda: nn.BatchNorm2d(6), "each channel over (N, H, W)"),
        ("LayerNorm([6, 3, 4])", lambda: nn.LayerNorm([6, 3, 4]), "each sample over (C, H, W)"),
        ("LayerNorm([3, 4])", lambda: nn.LayerNorm([3, 4]), "each (sample, channel) over (H, W)"),
        (
            "InstanceNorm2d(6, affine)",
            lambda: nn.InstanceNorm2d(6, affine=True),
            "each (sample, channel) over (H, W)",
        ),
        ("GroupNorm(2, 6)", lambda: nn.GroupNorm(2, 6), "each sample over 3 channels x (H, W)"),
        ("GroupNorm(3, 6)", lambda: nn.GroupNorm(3, 6), "each sample over 2 channels x (H, W)"),
        ("GroupNorm(4, 6)", lambda: nn.GroupNorm(4, 6), ""),
    ]
    for name, make, over in layers:
        try:
            layer = make()
            out = layer(x)
        except (ValueError, RuntimeError) as exc:
            shapes.add_row(name, "refused: " + str(exc).splitlines()[0][:60], "-", "-", "-")
            continue
        stats = "yes" if getattr(layer, "running_mean", None) is not None else "no"
        shapes.add_row(
            name,
            over,
            str(tuple(layer.weight.shape)),
            stats,
            f"{out.mean().item():.2g}, {out.std().item():.3g}",
        )
    return shapes


# --- depth and init: experiment 4 and the initialization lesson ------------------------------

DEPTH, WIDTH, BATCH = 100, 256, 16
COURSE_SEED = 1  # the course's scripts start with set_seed(1)
LAYER_MARKS = [0, 1, 4, 9, 19, 29, 49, 74, 99]  # counted from 0, as the course prints layer:i

# Without overrides: the lesson's comparisons.
DEPTH_INITS = {
    "default": init.DefaultInit(),
    "normal(std=1)": init.Normal(std=1.0),
    "kaiming_normal": init.KaimingNormal(),
}
TANH_INITS = {  # the course's Xavier: xavier_uniform_(w, gain=nn.init.calculate_gain("tanh"))
    "default": init.DefaultInit(),
    "xavier_uniform(gain=5/3)": init.XavierUniform(gain=5 / 3),
}


def depth(conf: config.Config, given: set[str]) -> Probe:
    """The std of every layer's output and of its gradient in the course's 100-layer ReLU net,
    under each initializer, with and without batch norm: PyTorch's default init lets it shrink
    (to 2.5e-40 at layer:99 from the course's random state), N(0, 1) makes it overflow to inf
    and NaN, Kaiming keeps it constant, and BN keeps it constant regardless."""
    chosen = any(k.startswith("init") for k in given)
    inits = {conf.init.name: conf.init} if chosen else DEPTH_INITS
    norms = [conf.norm] if "norm" in given else [models.NoNorm(), models.BatchNorm()]
    seed = conf.seed if "seed" in given else COURSE_SEED
    curves = {}
    for norm_cfg in norms:
        for name, init_cfg in inits.items():
            label = name + ("" if norm_cfg.name == "none" else f" + {norm_cfg.name}")
            curves[label] = _layer_stds(init_cfg, norm_cfg, "relu", seed)
    return Probe(
        "depth",
        [_layers_table("ReLU", seed, curves)],
        {"curves": curves, "activation": "ReLU"},
        [
            "the default init (Kaiming uniform with a=sqrt(5)) shrinks the signal layer by "
            "layer, into denormal floats (kept, not flushed to 0, as in the course); N(0, 1) "
            "weights blow it up; Kaiming normal keeps it; BN resets it"
        ],
    )


def initialization(conf: config.Config, given: set[str]) -> Probe:
    """The initialization lesson's gain: tanh shrinks the std of a standard normal input by
    about 1.6, which nn.init.calculate_gain('tanh') puts at 5/3; Xavier with that gain keeps
    the std of a 100-layer tanh net's outputs, where PyTorch's default init lets it vanish."""
    seed = conf.seed if "seed" in given else COURSE_SEED
    torch.manual_seed(seed)
    x = torch.randn(10000)
    out = torch.tanh(x)
    gain, tanh_gain = (x.std() / out.std()).item(), nn.init.calculate_gain("tanh")
    table = _table(f"tanh of x = torch.randn(10000), after torch.manual_seed({seed})", "", "")
    table.add_row("x.std()", f"{x.std().item():.4f}")
    table.add_row("tanh(x).std()", f"{out.std().item():.4f}")
    table.add_row("gain = x.std() / tanh(x).std()", f"{gain:.4f}")
    table.add_row("nn.init.calculate_gain('tanh') = 5/3", f"{tanh_gain:.4f}")
    chosen = any(k.startswith("init") for k in given)
    inits = {conf.init.name: conf.init} if chosen else TANH_INITS
    curves = {
        name: _layer_stds(init_cfg, models.NoNorm(), "tanh", seed)
        for name, init_cfg in inits.items()
    }
    return Probe(
        "init",
        [table, _layers_table("tanh", seed, curves)],
        {
            "x": x.numpy(),
            "out": out.numpy(),
            "gain": gain,
            "tanh_gain": tanh_gain,
            "curves": curves,
            "activation": "tanh",
        },
        [
            "Xavier draws weights of variance gain^2 * 2 / (fan_in + fan_out), so that a layer "
            "keeps its input's variance; tanh's gain makes up for what tanh takes away"
        ],
    )


def _layers_table(activation: str, seed: int, curves: dict) -> Table:
    table = _table(
        f"std of each layer's output in the course's {DEPTH}-layer Linear({WIDTH}, {WIDTH}) + "
        f"{activation} net, torch.manual_seed({seed})",
        "init",
        *(f"layer:{i}" for i in LAYER_MARKS),
        "inf or NaN from",
        "NaN from (the course stops)",
        "grad std, layer:0",
    )
    for label, (forward, backward) in curves.items():
        table.add_row(
            label,
            *(f"{forward[i]:.3g}" for i in LAYER_MARKS),
            _first(forward, lambda s: not math.isfinite(s)),
            _first(forward, math.isnan),
            f"{backward[0]:.3g}",
        )
    return table


def _first(stds: list[float], test) -> str:
    """The first layer whose std passes `test`, counted from 0 as the course's layer:i."""
    i = next((i for i, s in enumerate(stds) if test(s)), None)
    return "-" if i is None else f"layer:{i}"


def _course_net(init_cfg, norm_cfg, activation: str, seed: int):
    """The course's net, DEPTH blocks of Linear(WIDTH, WIDTH, no bias), [norm], activation, and
    its batch of BATCH N(0, 1) inputs, drawn in the course's order: after torch.manual_seed(seed)
    the layers' default weights, one layer after the other, then the init, then the batch."""
    mlp = models.MLP(hidden=[WIDTH] * DEPTH, activation=activation, bias=False)
    net = models.mlp(mlp, norm_cfg, (WIDTH,), 1)[:-1]  # the course's net has no output layer
    torch.manual_seed(seed)
    for layer in net:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()  # the draws the course's nn.Linear(...) makes
    init.apply(net, init_cfg)
    return net, torch.randn(BATCH, WIDTH)


def _layer_stds(init_cfg, norm_cfg, activation: str, seed: int):
    """The std of each block's output, and of the gradient of mean(output^2) there."""
    net, x = _course_net(init_cfg, norm_cfg, activation, seed)
    outputs = []

    def keep(module, args, out):
        out.retain_grad()
        outputs.append(out)

    for layer in net:
        if isinstance(layer, getattr(nn, models.ACTIVATIONS[activation])):
            layer.register_forward_hook(keep)
    net.train()
    # The default init's signal reaches denormal floats (about 2.5e-40 at layer:99 in the
    # course): flushed, they would print 0 where the course prints them. Flushing is a
    # thread's own setting, and torch has no getter: ask a denormal, keep the answer, and run
    # on this one thread (16 rows gain nothing from more, and on a busy machine idle OpenMP
    # threads spinning make it many times slower).
    flushing = (torch.tensor([1e-39]) * 1.0).item() == 0.0
    torch.set_flush_denormal(False)
    try:
        with process.on_one_thread():
            net(x).pow(2).mean().backward()
            forward = [o.detach().std().item() for o in outputs]
            backward = [o.grad.std().item() if o.grad is not None else math.nan for o in outputs]
    finally:
        if flushing:
            torch.set_flush_denormal(True)
    return forward, backward


# --- lr: the course's schedules; the notes' (experiment 9) -----------------------------------

COURSE_SCHEDULES = {  # lr_decay_scheduler.py: lr 0.1 for 200 epochs
    "StepLR(50, 0.1)": schedules.StepLR(step_size=50, gamma=0.1),
    "MultiStepLR([50,125,160], 0.1)": schedules.MultiStepLR(milestones=[50, 125, 160], gamma=0.1),
    "ExponentialLR(0.95)": schedules.ExponentialLR(gamma=0.95),
    "CosineAnnealingLR(50)": schedules.CosineAnnealingLR(T_max=50),
    "ReduceLROnPlateau(cooldown 10)": schedules.ReduceLROnPlateau(
        factor=0.1, patience=10, cooldown=10, min_lr=1e-4
    ),
    # The course's LambdaLR gives one optimizer two param groups, one lambda each; a group's
    # lr depends on its own lambda only, so one group each here gives the same lrs.
    "LambdaLR 0.1**(epoch//20)": schedules.LambdaLR(gamma=0.1, step_size=20),
    "LambdaLR 0.95**epoch": schedules.LambdaLR(gamma=0.95, step_size=1),
}
COURSE_MARKS = (1, 18, 20, 21, 50, 51, 100, 101, 126, 161)
NOTES_SCHEDULES = {  # experiment 9 of the course notes: lr 0.1 for 200 epochs
    "StepLR(20, 0.8)": schedules.StepLR(step_size=20, gamma=0.8),
    "MultiStepLR([20,60,90,135,180], 0.8)": schedules.MultiStepLR(
        milestones=[20, 60, 90, 135, 180], gamma=0.8
    ),
    "ExponentialLR(0.8)": schedules.ExponentialLR(gamma=0.8),
}
NOTES_MARKS = (1, 20, 21, 60, 61, 90, 135, 180)


def _plateau_loss(epoch: int) -> float:
    """The course's loss for ReduceLROnPlateau: it improves once, at epoch 5 (from 0), then
    stops improving."""
    return 0.5 if epoch < 5 else 0.4


def lr(conf: config.Config, given: set[str], demo: str = "course") -> Probe:
    """The learning rate the optimizer trains with in every epoch under a schedule, stepped
    once per epoch as training does (plateau: on a loss that stops improving): the course's
    six schedules by default, the notes' three with demo=notes."""
    course = demo == "course"
    chosen = any(k.startswith("sched") for k in given)
    schedules = {conf.sched.name: conf.sched} if chosen else None
    schedules = schedules or (COURSE_SCHEDULES if course else NOTES_SCHEDULES)
    base = conf.optim.lr if "optim.lr" in given else 0.1
    epochs = conf.train.epochs if "train.epochs" in given else 200
    curves = {}
    for name, sched in schedules.items():
        weight = nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([weight], lr=base)
        scheduler = optim.build_scheduler(optimizer, sched, epochs)
        rates = []
        for epoch in range(epochs):
            rates.append(optimizer.param_groups[0]["lr"])
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(_plateau_loss(epoch))
            elif scheduler is not None:
                optimizer.step()  # (PyTorch wants the optimizer stepped first)
                scheduler.step()
        curves[name] = rates
    marks = sorted({e for e in (*(COURSE_MARKS if course else NOTES_MARKS), epochs) if e <= epochs})
    table = _table(
        f"the optimizer's lr in each epoch (from 1), from lr {base:g}",
        "schedule",
        *(f"epoch {e}" for e in marks),
    )
    for name, rates in curves.items():
        table.add_row(name, *(f"{rates[e - 1]:.3g}" for e in marks))
    return Probe(
        "lr",
        [table],
        {"curves": curves},
        [
            "the lr is the optimizer's own (param_groups[0]['lr']); the course's script "
            "records the scheduler's get_lr(), which on today's torch is an epoch ahead for "
            "ExponentialLR and CosineAnnealingLR and applies MultiStepLR's milestones twice"
        ],
    )


# --- optim: the course's gradient descent and optimizer methods; the notes' (experiment 8) ---

COURSE_RUNS = {  # learning_rate.py and momentum.py: y = 4w^2 from w = 2
    "SGD lr 0.01": optim.GD(lr=0.01),
    "SGD lr 0.03": optim.GD(lr=0.03),
    "SGD lr 0.01 momentum 0.9": optim.SGD(lr=0.01, momentum=0.9),
}
ITERATIONS = 100
ITERATION_MARKS = [1, 2, 3]
SWEEP_MARKS = [1, 10, 50, 99]

NOTES_OPTIMIZERS = {  # name: (config, starting w) on w^2 / 2
    "SGD lr 0.01": (optim.GD(lr=0.01), 1.0),
    "SGD lr 0.01 momentum 0.9": (optim.SGD(lr=0.01, momentum=0.9), 1.0),
    "Adagrad lr 0.01": (optim.Adagrad(lr=0.01), 1.0),
    "RMSprop lr 0.01 alpha 0.9": (optim.RMSprop(lr=0.01, alpha=0.9), 0.1),
    "Adam lr 0.01": (optim.Adam(lr=0.01), 1.0),
}
STEPS = 5


class _Weight(nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(value)


def _descend(cfg: optim.Optim, w0: float, loss_of, steps: int):
    """`steps` optimizer steps on loss_of(w) from w0: w after 0..steps steps, and the loss at
    each w it stepped from (the course's Iter:i)."""
    model = _Weight(torch.tensor([w0]))
    optimizer = optim.build_optimizer(model, cfg)
    ws, losses = [w0], []
    for _ in range(steps):
        loss = loss_of(model.weight).sum()
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ws.append(model.weight.item())
    return ws, losses


def _course_loss(w: torch.Tensor) -> torch.Tensor:
    return torch.pow(2 * w, 2)  # y = (2w)^2 = 4w^2, dy/dw = 8w, as the course writes it


def optimizers(conf: config.Config, given: set[str], demo: str = "course") -> Probe:
    """Gradient descent on the course's y = 4w^2 from w = 2, at its learning rates and with
    momentum, and its sweep of learning rates; then the optimizer lesson's methods: step(),
    param_groups and state_dict(). With demo=notes: the notes' first steps on w^2 / 2."""
    if demo == "notes":
        return _first_steps(conf, given)
    chosen = any(k.startswith("optim") for k in given)
    runs = {conf.optim.name: conf.optim} if chosen else COURSE_RUNS
    table = _table(
        "gradient descent on y = 4w^2 from w = 2; Iter:i is the course's: w after i steps",
        "optimizer",
        *(f"w, Iter:{i}" for i in ITERATION_MARKS),
        *(f"loss, Iter:{i}" for i in ITERATION_MARKS),
        f"loss, Iter:{ITERATIONS - 1} (the {ITERATIONS}th)",
    )
    losses = {}
    for name, cfg in runs.items():
        ws, losses[name] = _descend(cfg, 2.0, _course_loss, ITERATIONS)
        table.add_row(
            name,
            *(f"{ws[i]:.5g}" for i in ITERATION_MARKS),
            *(f"{losses[name][i]:.4g}" for i in ITERATION_MARKS),
            f"{losses[name][-1]:.3g}",
        )
    tables = [table]
    sweep = {}
    if "optim.lr" not in given:  # the course's learning_rate.py: 10 rates, 100 iterations each
        swept = conf.optim if chosen else optim.GD()
        factor = [] if chosen else ["w <- (1 - 8 lr) w"]  # plain descent's step
        sweep_table = _table(
            f"optim={swept.name} at the course's 10 learning rates on y = 4w^2 from w = 2",
            "lr",
            *factor,
            *(f"loss, Iter:{i}" for i in SWEEP_MARKS),
        )
        for rate in numpy.linspace(0.01, 0.2, 10).tolist():
            _, sweep[rate] = _descend(replace(swept, lr=rate), 2.0, _course_loss, ITERATIONS)
            sweep_table.add_row(
                f"{rate:.4g}",
                *([f"{1 - 8 * rate:.4g}"] if factor else []),
                *(f"{sweep[rate][i]:.3g}" for i in SWEEP_MARKS),
            )
        tables.append(sweep_table)
    if chosen:
        tables += _methods(conf.optim, conf.optim)
    else:  # the course's: step() with SGD lr 0.1, state_dict() with momentum 0.9
        tables += _methods(optim.GD(lr=0.1), optim.SGD(lr=0.1, momentum=0.9))
    return Probe(
        "optim",
        tables,
        {"losses": losses, "sweep": sweep},
        [
            "plain descent multiplies w by 1 - 8 lr each step (0.76 at lr 0.03), and "
            "diverges beyond lr 0.25; momentum carries the last step on: 1.84, then 1.5488 "
            "against 1.6928 without it, and overshoots past 0"
        ],
    )


def _label(cfg: optim.Optim) -> str:
    """The optimizer as regexp's overrides name it: optim=sgd lr=0.1 momentum=0.9."""
    momentum = getattr(cfg, "momentum", 0)
    return f"optim={cfg.name} lr={cfg.lr:g}" + (f" momentum={momentum:g}" if momentum else "")


def _methods(step_cfg: optim.Optim, state_cfg: optim.Optim) -> list[Table]:
    """The course's optimizer_methods.py: a weight drawn by torch.manual_seed(1) and
    torch.randn(2, 2), its grad set to ones; one optimizer.step(), the optimizer's
    param_groups, and a fresh optimizer's state_dict() before and after 10 steps."""
    torch.manual_seed(COURSE_SEED)
    model = _Weight(torch.randn(2, 2))
    model.weight.grad = torch.ones(2, 2)
    optimizer = optim.build_optimizer(model, step_cfg)
    before = model.weight.detach().clone()
    optimizer.step()
    step = _table(
        f"optimizer.step() of {_label(step_cfg)} on the course's weight "
        f"(torch.manual_seed({COURSE_SEED}); torch.randn(2, 2); grad set to ones)",
        "",
        "",
    )
    step.add_row("weight before step", _show(before))
    step.add_row("weight.grad", _show(model.weight.grad))
    step.add_row("weight after step", _show(model.weight))
    groups = _table("its optimizer.param_groups: a list with one dict per group", "key", "value")
    for key, value in optimizer.param_groups[0].items():
        groups.add_row(
            escape(f"[0][{key!r}]"), escape("[weight]") if key == "params" else _show(value)
        )
    optimizer = optim.build_optimizer(model, state_cfg)
    states = [optimizer.state_dict()]
    for _ in range(10):
        optimizer.step()
    states.append(optimizer.state_dict())
    state = _table(
        f"optimizer.state_dict() of {_label(state_cfg)}, before and after 10 steps",
        "key",
        "before",
        "after 10 steps",
    )
    state.add_row(escape("['state']"), *(_show(s["state"]) for s in states))
    state.add_row(
        escape("['param_groups'][0]['params']"),
        *(_show(s["param_groups"][0]["params"]) for s in states),
    )
    return [step, groups, state]


def _show(value) -> str:
    """A value as the course prints it (tensors to 4 decimals, dicts of them), for a table
    cell: escaped, so that rich prints [0] rather than read it as markup."""
    return escape(_text(value))


def _text(value) -> str:
    if isinstance(value, torch.Tensor):
        return str(value.detach().double().numpy().round(4).tolist())
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _first_steps(conf: config.Config, given: set[str]) -> Probe:
    """The notes' first steps of each optimizer on loss = w^2 / 2, whose gradient is w."""
    chosen = any(k.startswith("optim") for k in given)
    runs = {conf.optim.name: (conf.optim, 1.0)} if chosen else NOTES_OPTIMIZERS
    table = _table(
        "w over the first steps on loss = w^2 / 2 (gradient w)",
        "optimizer",
        "w0",
        *(f"step {i}" for i in range(1, STEPS + 1)),
    )
    paths = {}
    for name, (cfg, w0) in runs.items():
        paths[name], _ = _descend(cfg, w0, lambda w: w.pow(2) / 2, STEPS)
        table.add_row(name, f"{w0:g}", *(f"{w:.4f}" for w in paths[name][1:]))
    return Probe(
        "optim",
        [table],
        {"paths": paths},
        [
            "momentum carries the last step on (0.99, then 0.9711 against 0.9801); "
            "the adaptive methods divide by a running size of the gradient"
        ],
    )


PROBES = {
    "dropout": dropout,
    "norm": norm,
    "depth": depth,
    "init": initialization,
    "lr": lr,
    "optim": optimizers,
}

# For `regexp probe --help`: what each shows, in a line, and the keys it reads.
SUMMARIES = {
    "dropout": "Dropout(p) then Linear(10000 -> 1) on ones, in train and in eval mode",
    "norm": "batch norm's running statistics over two passes; BN/LN/IN/GN parameter shapes",
    "depth": "each layer's output std in a 100-layer ReLU net under each init, with and without BN",
    "init": "tanh's gain against calculate_gain('tanh'); a 100-layer tanh net under two inits",
    "lr": "the learning rate of every epoch under each of the course's schedules",
    "optim": "descent on 4w^2 with momentum and over lrs; step(), param_groups, state_dict()",
}
TAKES = {  # "group.*": the group and every key in it
    "dropout": ("model.dropout", "seed"),
    "norm": ("norm", "norm.momentum", "norm.eps"),  # norm=bn: its running statistics
    "depth": ("init.*", "norm.*", "seed"),
    "init": ("init.*", "seed"),
    "lr": ("demo", "sched.*", "optim.lr", "train.epochs"),
    "optim": ("demo", "optim.*"),
}
# The probes' own keys, beside regexp train's: each value and what it shows.
KNOBS = {
    "demo": {
        "course": "the course's own scripts (the default)",
        "notes": "the course notes' settings: optim on w^2 / 2 from w = 1; lr under\n"
        "    StepLR(20, 0.8), MultiStepLR([20,60,90,135,180], 0.8) and ExponentialLR(0.8)",
    },
}


def _uses(name: str, key: str) -> bool:
    return any(
        key == k or (k.endswith(".*") and (key == k[:-2] or key.startswith(k[:-1])))
        for k in TAKES[name]
    )


def compute(name: str, overrides: list[str]) -> Probe:
    """Probe `name` with train-style `overrides` and its own knobs (demo=), refused in one line
    where the probe does not use them."""
    keys = {o: config.override_key(o) for o in overrides}
    for override, key in keys.items():
        if not _uses(name, key):
            raise UserError(
                f"{override}: probe {name} does not use {key} (it takes {_takes(name)})"
            )
    knobs = {key: o.partition("=")[2] for o, key in keys.items() if key in KNOBS}
    for key, value in knobs.items():
        if value not in KNOBS[key]:
            raise ConfigError(key, value, " or ".join(KNOBS[key]))
    given = {key for key in keys.values() if key not in KNOBS}
    conf = config.validate(config.compose([o for o, key in keys.items() if key not in KNOBS]))
    if name == "norm" and "norm" in given and not isinstance(conf.norm, models.BatchNorm):
        raise ConfigError("norm", conf.norm.name, "bn: the probe shows batch norm's stats")
    return PROBES[name](conf, given, **knobs)


def run(name: str, overrides: list[str], out: Path, console: Console | None = None) -> Probe:
    """Run probe `name` with `overrides`; print it and write `out`/<name>.png."""
    probe = compute(name, overrides)
    console = console or default_console()
    for table in probe.tables:
        console.print(table)
    for note in probe.notes:
        console.print(note, style="dim")
    out.mkdir(parents=True, exist_ok=True)
    path = plots.probe_figure(name, probe.figure, out / f"{name}.png")
    console.print(f"figure: {path}", soft_wrap=True)
    return probe


def _takes(name: str) -> str:
    return ", ".join(f"{k[:-2]}= and {k}" if k.endswith(".*") else f"{k}=" for k in TAKES[name])


def probe_main(args: list[str]) -> int:
    knobs = "\n".join(
        f"  {key}={value}: {meaning}"
        for key, values in KNOBS.items()
        for value, meaning in values.items()
    )
    parser = argparse.ArgumentParser(
        prog="regexp probe",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The lessons' demonstrations that need no training; each prints a table "
        "and writes a figure.\n\n"
        + "\n".join(f"  {n:8} {SUMMARIES[n]}\n  {'':8} (takes {_takes(n)})" for n in PROBES)
        + "\n\ndemo=, for lr and optim:\n"
        + knobs,
    )
    parser.add_argument("name", choices=PROBES, help="which demonstration")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="the regexp train overrides the probe takes (above), and demo=; the course's "
        "settings without them",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/probes"),
        help="where to write the figure (default: outputs/probes)",
    )
    parsed = parser.parse_args(args)
    run(parsed.name, parsed.overrides, parsed.out)
    return 0
