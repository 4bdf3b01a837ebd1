"""Weight and bias initializers for the Linear and Conv layers of a model.

Norm layers are never touched: they keep PyTorch's weight 1 and bias 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from regexp import config
from regexp.models import WEIGHTED


def _uniform(cfg: config.Uniform, w: torch.Tensor) -> None:
    # The lesson's default: U(-1/sqrt(d), 1/sqrt(d)) with d the fan-in (inputs per output).
    bound = 1 / math.sqrt(w[0].numel())
    low, high = (-bound, bound) if cfg.low is None else (cfg.low, cfg.high)
    nn.init.uniform_(w, low, high)


# A weight initializer sets one weight tensor in place from its config; None leaves PyTorch's
# own initialization.
INITIALIZERS: dict[str, Callable[..., object] | None] = {
    "default": None,
    "kaiming_normal": lambda c, w: nn.init.kaiming_normal_(w, c.a, c.mode, c.nonlinearity),
    "kaiming_uniform": lambda c, w: nn.init.kaiming_uniform_(w, c.a, c.mode, c.nonlinearity),
    "xavier_normal": lambda c, w: nn.init.xavier_normal_(w, c.gain),
    "xavier_uniform": lambda c, w: nn.init.xavier_uniform_(w, c.gain),
    "normal": lambda c, w: nn.init.normal_(w, c.mean, c.std),
    "uniform": _uniform,
    "zeros": lambda c, w: nn.init.zeros_(w),
    "ones": lambda c, w: nn.init.ones_(w),
    "constant": lambda c, w: nn.init.constant_(w, c.value),
}

# init.bias: the same for the biases of the layers init.layers picks.
BIASES: dict[str, Callable[..., object] | None] = {
    "default": None,
    "zeros": lambda c, b: nn.init.zeros_(b),
    "ones": lambda c, b: nn.init.ones_(b),
    "constant": lambda c, b: nn.init.constant_(b, c.bias_value),
}

# init.layers: which layers are initialized.
LAYERS: dict[str, tuple[type[nn.Module], ...]] = {
    "all": WEIGHTED,
    "linear": (nn.Linear,),
    "conv": tuple(t for t in WEIGHTED if t is not nn.Linear),
}

# The nonlinearities Kaiming's gain knows (torch.nn.init.calculate_gain).
NONLINEARITIES = ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]


def apply(model: nn.Module, cfg: config.Init) -> nn.Module:
    """Initialize the weights and biases of the layers `cfg.layers` picks, as `cfg` says."""
    weight, bias = INITIALIZERS[cfg.name], BIASES[cfg.bias]
    for layer in model.modules():
        if isinstance(layer, LAYERS[cfg.layers]):
            if weight is not None:
                weight(cfg, layer.weight)
            if bias is not None and layer.bias is not None:
                bias(cfg, layer.bias)
    return model
