"""The models: MLP, the norm-layer factory, dropout and activations."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from regexp import config

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "identity": nn.Identity,
}


def _batch_norm(cfg: config.BatchNorm, features: int) -> nn.Module:
    return nn.BatchNorm1d(features, cfg.eps, cfg.momentum, cfg.affine, cfg.track_running_stats)


# A norm factory takes the norm config and the number of features it normalizes;
# None means no layer at all.
NORMS: dict[str, Callable[..., nn.Module] | None] = {
    "none": None,
    "bn": _batch_norm,
}


def mlp(cfg: config.MLP, norm: config.Norm, in_shape: tuple[int, ...], n_outputs: int):
    """[Flatten] then, per hidden width: [Dropout] Linear [Norm] activation; then [Dropout] Linear.

    Dropout comes before each Linear after the first (the lesson-25 net), the norm after each
    hidden Linear and before its activation (the lesson-26 net).
    """
    layers: list[nn.Module] = [nn.Flatten()] if len(in_shape) > 1 else []
    width = math.prod(in_shape)
    make_norm = NORMS[norm.name]
    for i, hidden in enumerate(cfg.hidden):
        if i > 0 and cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        layers.append(nn.Linear(width, hidden, bias=cfg.bias))
        if make_norm is not None:
            layers.append(make_norm(norm, hidden))
        layers.append(ACTIVATIONS[cfg.activation]())
        width = hidden
    if cfg.hidden and cfg.dropout > 0:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(width, n_outputs, bias=cfg.bias))
    return nn.Sequential(*layers)


MODELS = {"mlp": mlp}


def build(cfg: config.Model, norm: config.Norm, in_shape: tuple[int, ...], n_outputs: int):
    """The model `cfg` names, for examples of `in_shape` and `n_outputs` outputs."""
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
