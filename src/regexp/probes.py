"""`regexp probe NAME`: the lessons' small demonstrations that need no training.

Each probe computes its numbers with the project's own layers, initializers, optimizers and
schedulers, prints them as a table and draws a figure. Overrides go through the same config
as `regexp train` (init=, norm=, optim=, sched=, model.dropout=, ...): an override narrows
a probe to that choice, where without one it compares the lessons' choices side by side.

Why it is long: each demonstration is a function of some fifty lines with its table, and one
table of them (PROBES, TAKES) serves `regexp probe --help` and the checks of its overrides.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich import box
from rich.console import Console
from rich.table import Table
from torch import nn

from regexp import config, init, models, optim, plots, schedules
from regexp.console import console as default_console
from regexp.errors import ConfigError, UserError


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
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


# --- dropout: experiment 3 ----------------------------------------------------------------


def dropout(conf: config.Config, given: set[str], draws: int = 1000) -> Probe:
    """Dropout(p), then Linear(10000 -> 1, no bias) with all weights 1, on an input of ones:
    in train mode about (1-p) of the units survive, each scaled by 1/(1-p), so the output
    stays near 10000; in eval mode dropout is off and the output is exactly 10000."""
    ps = [conf.model.dropout] if "model.dropout" in given else [0.1, 0.5, 0.9]
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


def norm(conf: config.Config, given: set[str]) -> Probe:
    """BatchNorm1d/2d/3d on constant maps (channel i holds i+1, batch 3) over two passes, and
    the parameter shapes of BN, LN, IN and GN on one batch of (8, 6, 3, 4) maps."""
    bn = conf.norm if isinstance(conf.norm, models.BatchNorm) and "norm" in given else None
    momentum = bn.momentum if bn is not None else 0.3
    eps = bn.eps if bn is not None else 1e-5
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
    return Probe(
        "norm",
        [running, shapes],
        {"trajectories": trajectories, "momentum": momentum},
        [
            "running = (1 - momentum) * running + momentum * batch statistic; "
            "LayerNorm's shape must be the input's trailing dims; "
            "GroupNorm needs the channels divisible by the groups"
        ],
    )


# --- depth: experiment 4 ---------------------------------------------------------------------

DEPTH, WIDTH, BATCH = 100, 256, 16

# Without overrides: the lesson's comparison.
DEPTH_INITS = {
    "default": init.DefaultInit(),
    "normal(std=1)": init.Normal(std=1.0),
    "kaiming_normal": init.KaimingNormal(),
}


def depth(conf: config.Config, given: set[str]) -> Probe:
    """The std of every layer's output and of its gradient in a 100-layer ReLU net, under each
    initializer, with and without batch norm: PyTorch's default init lets it shrink, N(0, 1)
    makes it explode to NaN, Kaiming keeps it constant, and BN keeps it constant regardless."""
    chosen = any(k.startswith("init") for k in given)
    inits = {conf.init.name: conf.init} if chosen else DEPTH_INITS
    norms = [conf.norm] if "norm" in given else [models.NoNorm(), models.BatchNorm()]
    x = torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(conf.seed))
    curves, rows = {}, []
    for norm_cfg in norms:
        for name, init_cfg in inits.items():
            label = name + ("" if norm_cfg.name == "none" else f" + {norm_cfg.name}")
            forward, backward = _depth_stds(init_cfg, norm_cfg, x, conf.seed)
            curves[label] = (forward, backward)
            rows.append((label, forward, backward))
    layers = [1, 2, 5, 10, 20, 30, 50, 75, 100]
    table = _table(
        f"std of the outputs of a {DEPTH}-layer Linear({WIDTH}, {WIDTH}) + ReLU net",
        "init",
        *(f"layer {i}" for i in layers),
        "NaN from layer",
        "grad std, layer 1",
    )
    for label, forward, backward in rows:
        nan_at = next((i + 1 for i, s in enumerate(forward) if not math.isfinite(s)), None)
        table.add_row(
            label,
            *(f"{forward[i - 1]:.3g}" for i in layers),
            str(nan_at or "-"),
            f"{backward[0]:.3g}",
        )
    return Probe(
        "depth",
        [table],
        {"curves": curves},
        [
            "the default init (Kaiming uniform with a=sqrt(5)) shrinks the signal layer by "
            "layer; N(0, 1) weights blow it up; Kaiming normal keeps it; BN resets it"
        ],
    )


def _depth_stds(init_cfg, norm_cfg, x, seed) -> tuple[list[float], list[float]]:
    torch.manual_seed(seed)
    mlp = models.MLP(hidden=[WIDTH] * DEPTH, activation="relu", bias=False)
    net = init.apply(models.mlp(mlp, norm_cfg, (WIDTH,), 1), init_cfg)
    outputs = []

    def keep(module, args, out):
        out.retain_grad()
        outputs.append(out)

    for layer in net:
        if isinstance(layer, nn.ReLU):
            layer.register_forward_hook(keep)
    net.train()
    # The vanishing signal reaches denormal floats, on which a CPU computes 100x slower unless
    # they are flushed to zero, which only the calling thread does: hence one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    flushed = torch.set_flush_denormal(True)
    try:
        net(x).pow(2).mean().backward()
    finally:
        torch.set_num_threads(threads)
        if flushed:
            torch.set_flush_denormal(False)
    forward = [o.detach().std().item() for o in outputs]
    backward = [o.grad.std().item() if o.grad is not None else math.nan for o in outputs]
    return forward, backward


# --- lr: experiment 9 --------------------------------------------------------------------

LESSON_SCHEDULES = {  # lr 0.1 for 200 epochs
    "StepLR(20, 0.8)": schedules.StepLR(step_size=20, gamma=0.8),
    "MultiStepLR([20,60,90,135,180], 0.8)": schedules.MultiStepLR(
        milestones=[20, 60, 90, 135, 180], gamma=0.8
    ),
    "ExponentialLR(0.8)": schedules.ExponentialLR(gamma=0.8),
}


def lr(conf: config.Config, given: set[str]) -> Probe:
    """The learning rate of every epoch under a schedule, stepped once per epoch as training
    does (plateau: with a valid loss that never improves): the lessons' three by default."""
    chosen = any(k.startswith("sched") for k in given)
    schedules = {conf.sched.name: conf.sched} if chosen else LESSON_SCHEDULES
    base = conf.optim.lr if "optim.lr" in given else 0.1
    epochs = conf.train.epochs if "train.epochs" in given else 200
    curves = {}
    for name, sched in schedules.items():
        weight = nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([weight], lr=base)
        scheduler = optim.build_scheduler(optimizer, sched, epochs)
        rates = []
        for _ in range(epochs):
            rates.append(optimizer.param_groups[0]["lr"])
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(1.0)
            elif scheduler is not None:
                optimizer.step()  # (PyTorch wants the optimizer stepped first)
                scheduler.step()
        curves[name] = rates
    marks = sorted({e for e in (1, 20, 21, 60, 61, 90, 135, 180, epochs) if e <= epochs})
    table = _table(f"lr per epoch, from lr {base:g}", "schedule", *(f"epoch {e}" for e in marks))
    for name, rates in curves.items():
        table.add_row(name, *(f"{rates[e - 1]:.3g}" for e in marks))
    return Probe(
        "lr",
        [table],
        {"curves": curves},
        [
            "StepLR multiplies by gamma every step_size epochs, MultiStepLR at each "
            "milestone, ExponentialLR every epoch"
        ],
    )


# --- optim: experiment 8 -----------------------------------------------------------------

LESSON_OPTIMIZERS = {  # name: (config, starting w)
    "SGD lr 0.01": (optim.GD(lr=0.01), 1.0),
    "SGD lr 0.01 momentum 0.9": (optim.SGD(lr=0.01, momentum=0.9), 1.0),
    "Adagrad lr 0.01": (optim.Adagrad(lr=0.01), 1.0),
    "RMSprop lr 0.01 alpha 0.9": (optim.RMSprop(lr=0.01, alpha=0.9), 0.1),
    "Adam lr 0.01": (optim.Adam(lr=0.01), 1.0),
}
STEPS = 5


class _Scalar(nn.Module):
    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w]))


def optimizers(conf: config.Config, given: set[str]) -> Probe:
    """The first steps of each optimizer on loss = w^2 / 2, whose gradient is w itself."""
    chosen = any(k.startswith("optim") for k in given)
    runs = {conf.optim.name: (conf.optim, 1.0)} if chosen else LESSON_OPTIMIZERS
    table = _table(
        "w over the first steps on loss = w^2 / 2 (gradient w)",
        "optimizer",
        "w0",
        *(f"step {i}" for i in range(1, STEPS + 1)),
    )
    paths = {}
    for name, (cfg, w0) in runs.items():
        scalar = _Scalar(w0)
        optimizer = optim.build_optimizer(scalar, cfg)
        path = [w0]
        for _ in range(STEPS):
            optimizer.zero_grad()
            (scalar.w.pow(2).sum() / 2).backward()
            optimizer.step()
            path.append(scalar.w.item())
        paths[name] = path
        table.add_row(name, f"{w0:g}", *(f"{w:.4f}" for w in path[1:]))
    return Probe(
        "optim",
        [table],
        {"paths": paths},
        [
            "momentum carries the last step on (0.99, then 0.9711 against 0.9801); "
            "the adaptive methods divide by a running size of the gradient"
        ],
    )


PROBES = {"dropout": dropout, "norm": norm, "depth": depth, "lr": lr, "optim": optimizers}

# For `regexp probe --help`: what each shows, in a line, and the keys it reads.
SUMMARIES = {
    "dropout": "Dropout(p) then Linear(10000 -> 1) on ones, in train and in eval mode",
    "norm": "batch norm's running statistics over two passes; BN/LN/IN/GN parameter shapes",
    "depth": "each layer's output std in a 100-layer ReLU net under each init, with and without BN",
    "lr": "the learning rate of every epoch under each schedule",
    "optim": "the first steps of each optimizer on w^2 / 2",
}
TAKES = {  # "group.*": the group and every key in it
    "dropout": ("model.dropout",),
    "norm": ("norm", "norm.momentum", "norm.eps"),  # norm=bn: its running statistics
    "depth": ("init.*", "norm.*", "seed"),
    "lr": ("sched.*", "optim.lr", "train.epochs"),
    "optim": ("optim.*",),
}


def _uses(name: str, key: str) -> bool:
    return any(
        key == k or (k.endswith(".*") and (key == k[:-2] or key.startswith(k[:-1])))
        for k in TAKES[name]
    )


def run(name: str, overrides: list[str], out: Path, console: Console | None = None) -> Probe:
    """Run probe `name` with train-style `overrides`; print it and write `out`/<name>.png."""
    keys = {o: o.lstrip("+~").split("=", 1)[0] for o in overrides}
    for override, key in keys.items():
        if not _uses(name, key):
            raise UserError(
                f"{override}: probe {name} does not use {key} (it takes {_takes(name)})"
            )
    given = set(keys.values())
    conf = config.validate(config.compose(overrides))
    if name == "norm" and "norm" in given and not isinstance(conf.norm, models.BatchNorm):
        raise ConfigError("norm", conf.norm.name, "bn: the probe shows batch norm's stats")
    probe = PROBES[name](conf, given)
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


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="regexp probe",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The lessons' demonstrations that need no training; each prints a table "
        "and writes a figure.\n\n"
        + "\n".join(f"  {n:8} {SUMMARIES[n]}\n  {'':8} (takes {_takes(n)})" for n in PROBES),
    )
    parser.add_argument("name", choices=PROBES, help="which demonstration")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="the regexp train overrides the probe takes (above); the lesson's settings "
        "without them",
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
