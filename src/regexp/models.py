"""The models: MLP and CNN, the norm-layer factory, dropout and activations."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from regexp import config
from regexp.config import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "identity": nn.Identity,
}

# --- norm layers ------------------------------------------------------------------------------
# A norm layer goes in one of two places: after a Linear, on flat features (N, C), or after a
# conv, on maps (N, C, H, W). Each norm maps the places where it has a meaning to a factory,
# called with the norm's config and the normalized shape, (C,) or (C, H, W).


def _no_norm(cfg: config.NoNorm, shape: tuple[int, ...]) -> None:
    return None


def _batch_norm(cls: type[nn.Module]):
    def make(cfg: config.BatchNorm, shape: tuple[int, ...]) -> nn.Module:
        return cls(shape[0], cfg.eps, cfg.momentum, cfg.affine, cfg.track_running_stats)

    return make


def _layer_norm(cfg: config.LayerNorm, shape: tuple[int, ...]) -> nn.Module:
    # Over everything but the batch: the features, or C x H x W of a map.
    return nn.LayerNorm(list(shape), cfg.eps, cfg.affine)


def _instance_norm(cfg: config.InstanceNorm, shape: tuple[int, ...]) -> nn.Module:
    if shape[1] * shape[2] == 1:  # PyTorch refuses to train on it, and it would zero every map
        raise ConfigError(
            "norm",
            cfg.name,
            "a norm for these 1x1 conv maps: instance norm needs more than one pixel per map; "
            "use norm=bn or gn, or more model.padding / a smaller model.pool",
        )
    return nn.InstanceNorm2d(shape[0], cfg.eps, cfg.momentum, cfg.affine, cfg.track_running_stats)


def _group_norm(cfg: config.GroupNorm, shape: tuple[int, ...]) -> nn.Module:
    return nn.GroupNorm(cfg.groups, shape[0], cfg.eps, cfg.affine)


NORMS: dict[str, dict[str, Callable[..., nn.Module | None]]] = {
    "none": {"features": _no_norm, "maps": _no_norm},
    "bn": {"features": _batch_norm(nn.BatchNorm1d), "maps": _batch_norm(nn.BatchNorm2d)},
    "ln": {"features": _layer_norm, "maps": _layer_norm},
    "in": {"maps": _instance_norm},  # per sample and channel, over the pixels: maps only
    "gn": {"features": _group_norm, "maps": _group_norm},
}

_NO_FLAT = "instance norm normalizes each channel of a conv map over its pixels, and flat features"


def _norm(cfg: config.Norm, shape: tuple[int, ...]) -> list[nn.Module]:
    """The norm layer for outputs of `shape`, as a list of zero or one layers."""
    layer = NORMS[cfg.name]["features" if len(shape) == 1 else "maps"](cfg, shape)
    return [] if layer is None else [layer]


def _check_groups(cfg: config.Norm, channels: list[int], where: str) -> None:
    """Refuse a GroupNorm whose groups do not divide every normalized layer's channels."""
    if not isinstance(cfg, config.GroupNorm) or not channels:
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


def _dense(cfg: config.Model, norm: config.Norm, width: int, hidden, n_outputs, n_normed: int):
    """Per hidden width: [Dropout] Linear [Norm] activation; then [Dropout] Linear to the outputs.

    Dropout comes before each Linear after the first (the lesson-25 net); the norm after the
    first `n_normed` hidden Linears, before their activation (the lesson-26 net).
    """
    layers: list[nn.Module] = []
    for i, out in enumerate([*hidden, n_outputs]):
        if i > 0 and cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        layers.append(nn.Linear(width, out, bias=cfg.bias))
        if i < len(hidden):
            layers += _norm(norm, (out,)) if i < n_normed else []
            layers.append(ACTIVATIONS[cfg.activation]())
        width = out
    return layers


def mlp(cfg: config.MLP, norm: config.Norm, in_shape: tuple[int, ...], n_outputs: int):
    """[Flatten], then the hidden layers of `_dense`, each with the norm."""
    if "features" not in NORMS[norm.name]:
        raise ConfigError(
            "norm",
            norm.name,
            f"a norm for an MLP: {_NO_FLAT} have no pixels; use norm=bn, ln or gn, or model=cnn",
        )
    _check_groups(norm, cfg.hidden, "model.hidden")
    layers: list[nn.Module] = [nn.Flatten()] if len(in_shape) > 1 else []
    layers += _dense(cfg, norm, math.prod(in_shape), cfg.hidden, n_outputs, len(cfg.hidden))
    return nn.Sequential(*layers)


def _map_sizes(cfg: config.CNN, padding: int, h: int, w: int) -> list[tuple[int, int]]:
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


def _padding(cfg: config.CNN, h: int, w: int) -> int:
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
        return cfg.padding
    for padding in (0, cfg.kernel // 2):
        fits = len(_map_sizes(cfg, padding, h, w))
        if fits == n:
            return padding
    raise ConfigError(
        "model.channels",
        cfg.channels,
        f"at most {fits} conv blocks on {h}x{w} inputs with model.kernel={cfg.kernel} and "
        f"model.pool={cfg.pool}: the maps shrink to nothing after that",
    )


def cnn(cfg: config.CNN, norm: config.Norm, in_shape: tuple[int, ...], n_outputs: int):
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
    if "features" not in NORMS[norm.name]:
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
    layers: list[nn.Module] = []
    for out, (conv_h, conv_w) in zip(cfg.channels, _map_sizes(cfg, padding, h, w), strict=True):
        layers.append(nn.Conv2d(channels, out, cfg.kernel, padding=padding, bias=cfg.bias))
        layers += _norm(norm, (out, conv_h, conv_w))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.pool > 1:
            layers.append(nn.MaxPool2d(cfg.pool))
        if cfg.dropout2d > 0:
            layers.append(nn.Dropout2d(cfg.dropout2d))
        channels, h, w = out, conv_h // cfg.pool, conv_w // cfg.pool
    layers.append(nn.Flatten())
    layers += _dense(cfg, norm, channels * h * w, cfg.head, n_outputs, normed)
    return nn.Sequential(*layers)


MODELS = {"mlp": mlp, "cnn": cnn}


def build(cfg: config.Model, norm: config.Norm, in_shape: tuple[int, ...], n_outputs: int):
    """The model `cfg` names, for examples of `in_shape` and `n_outputs` outputs; a norm or a
    size that has no meaning for this model and data is refused with a ConfigError."""
    return MODELS[cfg.name](cfg, norm, in_shape, n_outputs)


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# The layers whose weights count as "the weights" for weight norms and penalties.
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weights(model: nn.Module) -> list:
    """The weight tensors of the Linear and Conv layers: no biases, no norm parameters."""
    return [m.weight for m in model.modules() if isinstance(m, WEIGHTED)]


def describe(model: nn.Module, in_shape: tuple[int, ...], device="cpu") -> str:
    """The layer table: each layer's output shape and parameter count, with the totals."""
    from torchinfo import summary  # heavy: only when a table is wanted

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
    return str(stats)
