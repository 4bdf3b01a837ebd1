"""The models: MLP and CNN, the norm-layer factory, dropout and activations; the schemas of
the model and norm groups beside them.

Why it is long: a builder checks every size it is given against the data before it builds
(the CNN's kernel, padding and pool against its maps, block by block), so that a net that
cannot work is refused in one line that names the key, not met mid-training."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from omegaconf import MISSING

from regexp.components.lazy import lazy
from regexp.components.options import known, need, option
from regexp.errors import ConfigError, show

nn = lazy("torch.nn")

# model.activation -> its torch.nn class
ACTIVATIONS = {
    "relu": "ReLU",
    "leaky_relu": "LeakyReLU",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "gelu": "GELU",
    "elu": "ELU",
    "identity": "Identity",
}

# --- norm layers ------------------------------------------------------------------------------
# A norm layer goes in one of two places: after a Linear, on flat features (N, C), or after a
# conv, on maps (N, C, H, W). Each norm's `layer(shape)` makes it for the normalized shape,
# (C,) or (C, H, W); `features` says whether it has a meaning on flat features.


@dataclass
class Norm:
    name: str = MISSING
    features = True  # (not a config key)

    def layer(self, shape: tuple[int, ...]):
        """The norm layer for outputs of `shape`, or None for no layer."""
        raise NotImplementedError

    def check(self) -> None:
        eps, momentum = getattr(self, "eps", 1), getattr(self, "momentum", None)
        need(eps > 0, "norm.eps", eps, "an epsilon > 0")
        need(momentum is None or 0 <= momentum <= 1, "norm.momentum", momentum, "null or in [0, 1]")


@option("norm")
@dataclass
class NoNorm(Norm):
    name: str = "none"

    def layer(self, shape: tuple[int, ...]) -> None:
        return None


@option("norm")
@dataclass
class BatchNorm(Norm):
    name: str = "bn"
    eps: float = 1e-5
    momentum: float | None = 0.1  # null: a cumulative average
    affine: bool = True
    track_running_stats: bool = True

    def layer(self, shape: tuple[int, ...]):
        cls = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d
        return cls(shape[0], self.eps, self.momentum, self.affine, self.track_running_stats)


@option("norm")
@dataclass
class LayerNorm(Norm):
    name: str = "ln"
    eps: float = 1e-5
    affine: bool = True

    def layer(self, shape: tuple[int, ...]):
        # Over everything but the batch: the features, or C x H x W of a map.
        return nn.LayerNorm(list(shape), self.eps, self.affine)


@option("norm")
@dataclass
class InstanceNorm(Norm):
    name: str = "in"
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = False
    track_running_stats: bool = False
    features = False  # per sample and channel, over the pixels: maps only

    def layer(self, shape: tuple[int, ...]):
        if shape[1] * shape[2] == 1:  # PyTorch refuses to train on it, and it would zero every map
            raise ConfigError(
                "norm",
                self.name,
                "a norm for these 1x1 conv maps: instance norm needs more than one pixel per map; "
                "use norm=bn or gn, or more model.padding / a smaller model.pool",
            )
        return nn.InstanceNorm2d(
            shape[0], self.eps, self.momentum, self.affine, self.track_running_stats
        )


@option("norm")
@dataclass
class GroupNorm(Norm):
    name: str = "gn"
    groups: int = 2  # must divide every normalized layer's channels
    eps: float = 1e-5
    affine: bool = True

    def layer(self, shape: tuple[int, ...]):
        return nn.GroupNorm(self.groups, shape[0], self.eps, self.affine)

    def check(self) -> None:
        super().check()
        need(self.groups >= 1, "norm.groups", self.groups, "a number of groups >= 1")


_NO_FLAT = "instance norm normalizes each channel of a conv map over its pixels, and flat features"


def _norm(cfg: Norm, shape: tuple[int, ...]) -> list:
    """The norm layer for outputs of `shape`, as a list of zero or one layers."""
    layer = cfg.layer(shape)
    return [] if layer is None else [layer]


def _check_groups(cfg: Norm, channels: list[int], where: str) -> None:
    """Refuse a GroupNorm whose groups do not divide every normalized layer's channels."""
    if not isinstance(cfg, GroupNorm) or not channels:
        return
    bad = [c for c in channels if c % cfg.groups]
    if bad:
        common = math.gcd(*channels)
        fits = [g for g in range(1, common + 1) if common % g == 0]
        raise ConfigError(
            "norm.groups",
            cfg.groups,
            f"a number of groups that divides the channels of every normalized layer "
            f"({where}: {', '.join(map(str, channels))}; {bad[0]} is not divisible by "
            f"{cfg.groups}): use one of {', '.join(map(str, fits))}",
        )


# --- models -----------------------------------------------------------------------------------


@dataclass
class Model:
    name: str = MISSING
    activation: str = "relu"
    dropout: float = 0.0  # p, the probability that a unit is zeroed in training
    bias: bool = True  # the Linear and Conv layers' biases

    def build(self, norm: Norm, in_shape: tuple[int, ...], n_outputs: int):
        raise NotImplementedError

    def check(self) -> None:
        known("model.activation", self.activation, ACTIVATIONS)
        need(
            0 <= self.dropout < 1, "model.dropout", self.dropout, "a probability p with 0 <= p < 1"
        )


@option("model")
@dataclass
class MLP(Model):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [200, 200, 200])

    def build(self, norm: Norm, in_shape: tuple[int, ...], n_outputs: int):
        return mlp(self, norm, in_shape, n_outputs)

    def check(self) -> None:
        super().check()
        need(all(h >= 1 for h in self.hidden), "model.hidden", self.hidden, "widths >= 1")


@option("model")
@dataclass
class CNN(Model):
    """LeNet-style: (conv, norm, activation, max-pool) per channel count, then an MLP head."""

    name: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [6, 16])
    kernel: int = 5
    padding: int | None = None  # null: 0 where the input is large enough, else kernel // 2
    pool: int = 2  # max-pool size and stride; 1: no pooling
    head: list[int] = field(default_factory=lambda: [120, 84])
    dropout2d: float = 0.0  # p of Dropout2d after each conv block (whole channels zeroed)
    head_norm_layers: int | None = None  # the first n hidden head layers get the norm; null: all

    def build(self, norm: Norm, in_shape: tuple[int, ...], n_outputs: int):
        return cnn(self, norm, in_shape, n_outputs)

    def check(self) -> None:
        super().check()
        need(
            self.channels and min(self.channels) >= 1,
            "model.channels",
            self.channels,
            "counts >= 1",
        )
        need(all(h >= 1 for h in self.head), "model.head", self.head, "widths >= 1")
        need(self.kernel >= 1, "model.kernel", self.kernel, "a kernel size >= 1")
        need(self.pool >= 1, "model.pool", self.pool, "a pool size >= 1 (1: no pooling)")
        p = self.padding
        need(
            p is None or 0 <= p < self.kernel,
            "model.padding",
            p,
            f"null or 0 to {self.kernel - 1} (model.kernel - 1): a wider padding only adds "
            "outputs that see nothing but padding",
        )
        p = self.dropout2d
        need(0 <= p < 1, "model.dropout2d", p, "a probability 0 <= p < 1")
        n = self.head_norm_layers
        need(
            n is None or 0 <= n <= len(self.head),
            "model.head_norm_layers",
            n,
            f"null (all) or 0 to {len(self.head)}, the number of model.head layers",
        )


def _dense(cfg: Model, norm: Norm, width: int, hidden, n_outputs, n_normed: int):
    """Per hidden width: [Dropout] Linear [Norm] activation; then [Dropout] Linear to the outputs.

    Dropout comes before each Linear after the first (the lesson-25 net); the norm after the
    first `n_normed` hidden Linears, before their activation (the lesson-26 net).
    """
    layers: list = []
    for i, out in enumerate([*hidden, n_outputs]):
        if i > 0 and cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        layers.append(nn.Linear(width, out, bias=cfg.bias))
        if i < len(hidden):
            layers += _norm(norm, (out,)) if i < n_normed else []
            layers.append(getattr(nn, ACTIVATIONS[cfg.activation])())
        width = out
    return layers


def mlp(cfg: MLP, norm: Norm, in_shape: tuple[int, ...], n_outputs: int):
    """[Flatten], then the hidden layers of `_dense`, each with the norm."""
    if not norm.features:
        raise ConfigError(
            "norm",
            norm.name,
            f"a norm for an MLP: {_NO_FLAT} have no pixels; use norm=bn, ln or gn, or model=cnn",
        )
    _check_groups(norm, cfg.hidden, "model.hidden")
    layers: list = [nn.Flatten()] if len(in_shape) > 1 else []
    layers += _dense(cfg, norm, math.prod(in_shape), cfg.hidden, n_outputs, len(cfg.hidden))
    return nn.Sequential(*layers)


def _map_sizes(cfg: CNN, padding: int, h: int, w: int) -> list[tuple[int, int]]:
    """The (H, W) of each conv block's output before pooling, as far as the pooled maps stay
    at least 1x1."""
    sizes = []
    for _ in cfg.channels:
        h, w = h + 2 * padding - cfg.kernel + 1, w + 2 * padding - cfg.kernel + 1
        if min(h, w) < cfg.pool:
            break
        sizes.append((h, w))
        h, w = h // cfg.pool, w // cfg.pool
    return sizes


def _padding(cfg: CNN, h: int, w: int) -> int:
    """model.padding, or when null: none (the lesson's LeNet on 32x32) where the input is large
    enough for every block, else kernel // 2, which keeps the size through each conv."""
    n = len(cfg.channels)
    if cfg.padding is not None:
        if len(_map_sizes(cfg, cfg.padding, h, w)) < n:
            raise ConfigError(
                "model.padding",
                cfg.padding,
                f"a padding that keeps every map at least 1x1 on {h}x{w} inputs (null picks one)",
            )
        _check_kernel(cfg, cfg.padding, h, w)
        return cfg.padding
    for padding in (0, cfg.kernel // 2):
        fits = len(_map_sizes(cfg, padding, h, w))
        if fits == n:
            _check_kernel(cfg, padding, h, w)
            return padding
    if fits == 0:  # (kernel // 2 keeps the first conv's maps at about the input's size)
        most = min(h, w) + 2 * padding - cfg.kernel + 1
        why = f"the size of the first conv's maps on {h}x{w} inputs: a larger pool leaves nothing"
        raise ConfigError("model.pool", cfg.pool, f"at most {most}, {why}")
    raise ConfigError(
        "model.channels",
        cfg.channels,
        f"at most {fits} conv blocks on {h}x{w} inputs with model.kernel={cfg.kernel} and "
        f"model.pool={cfg.pool}: the maps shrink to nothing after that",
    )


def _check_kernel(cfg: CNN, padding: int, h: int, w: int) -> None:
    """Refuse a kernel wider than a conv block's input maps and their padding: its outer rows
    and columns would only ever cover padding, at the cost of all its weights (model.kernel=
    1000 on 8x8 digits: an epoch of hours, for what a 16x16 kernel computes)."""
    pooled = [(y // cfg.pool, x // cfg.pool) for y, x in _map_sizes(cfg, padding, h, w)]
    for block, (y, x) in enumerate([(h, w), *pooled][: len(cfg.channels)], 1):
        # (with model.padding null, the padding grows with the kernel: kernel // 2)
        most = 2 * min(y, x) if cfg.padding is None else min(y, x) + padding
        if cfg.kernel > most:
            raise ConfigError(
                "model.kernel",
                cfg.kernel,
                f"at most {most} with model.padding={show(cfg.padding)} on the {y}x{x} maps of "
                f"conv block {block}: a larger kernel only ever covers padding at its edges",
            )


def cnn(cfg: CNN, norm: Norm, in_shape: tuple[int, ...], n_outputs: int):
    """LeNet-style: per channel count, Conv [Norm] activation [MaxPool] [Dropout2d]; then
    Flatten and a head as in the MLP, whose first `model.head_norm_layers` layers get the norm.
    """
    if len(in_shape) != 3:
        raise ConfigError(
            "model",
            cfg.name,
            f"a model for this data: a CNN takes images (C x H x W), these examples have shape "
            f"{tuple(in_shape)}; use model=mlp",
        )
    normed = len(cfg.head) if cfg.head_norm_layers is None else cfg.head_norm_layers
    if not norm.features:
        if cfg.head_norm_layers:
            raise ConfigError(
                "model.head_norm_layers",
                cfg.head_norm_layers,
                f"0 or null with norm={norm.name}: {_NO_FLAT} have no pixels; "
                f"it goes on the conv maps only",
            )
        normed = 0
    _check_groups(norm, [*cfg.channels, *cfg.head[:normed]], "model.channels and model.head")

    channels, h, w = in_shape
    padding = _padding(cfg, h, w)
    layers: list = []
    for out, (conv_h, conv_w) in zip(cfg.channels, _map_sizes(cfg, padding, h, w), strict=True):
        layers.append(nn.Conv2d(channels, out, cfg.kernel, padding=padding, bias=cfg.bias))
        layers += _norm(norm, (out, conv_h, conv_w))
        layers.append(getattr(nn, ACTIVATIONS[cfg.activation])())
        if cfg.pool > 1:
            layers.append(nn.MaxPool2d(cfg.pool))
        if cfg.dropout2d > 0:
            layers.append(nn.Dropout2d(cfg.dropout2d))
        channels, h, w = out, conv_h // cfg.pool, conv_w // cfg.pool
    layers.append(nn.Flatten())
    layers += _dense(cfg, norm, channels * h * w, cfg.head, n_outputs, normed)
    return nn.Sequential(*layers)


def build(cfg: Model, norm: Norm, in_shape: tuple[int, ...], n_outputs: int):
    """The model `cfg` names, for examples of `in_shape` and `n_outputs` outputs; a norm or a
    size that has no meaning for this model and data is refused with a ConfigError."""
    return cfg.build(norm, in_shape, n_outputs)


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def weighted() -> tuple[type, ...]:
    """The layers whose weights count as "the weights" for weight norms and penalties."""
    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weights(model: nn.Module) -> list:
    """The weight tensors of the Linear and Conv layers: no biases, no norm parameters."""
    kinds = weighted()
    return [m.weight for m in model.modules() if isinstance(m, kinds)]


def describe(model: nn.Module, in_shape: tuple[int, ...], device="cpu") -> str:
    """The layer table: each layer's output shape and parameter count, with the totals."""
    from torchinfo import summary  # heavy: only when a table is wanted
    from torchinfo.enums import Units

    was_training = model.training
    model.eval()  # a forward pass that neither updates BN statistics nor draws dropout masks
    try:
        stats = summary(
            model,
            input_size=(2, *in_shape),
            col_names=("output_size", "num_params"),
            row_settings=("var_names",),
            depth=4,
            verbose=0,
            device=device,
        )
    finally:
        model.train(was_training)
    # torchinfo 1.8 formats its unit enum by name on Python 3.11+ ("Units.MEGABYTES"): its
    # value is the unit ("M", a million mult-adds).
    return re.sub(r"\(Units\.(\w+)\)", lambda m: f"({Units[m.group(1)].value})", str(stats))
