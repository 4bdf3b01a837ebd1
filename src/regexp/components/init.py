"""Weight and bias initializers for the Linear and Conv layers of a model, and the schemas of
the init group: each option's `init_weight` sets one weight tensor in place.

Norm layers are never touched: they keep PyTorch's weight 1 and bias 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import MISSING

from regexp.components.lazy import lazy
from regexp.components.models import weighted
from regexp.components.options import known, need, option

nn = lazy("torch.nn")

# init.bias: how the biases of the layers init.layers picks are set (None: PyTorch's own).
BIASES = {
    "default": None,
    "zeros": lambda c, b: nn.init.zeros_(b),
    "ones": lambda c, b: nn.init.ones_(b),
    "constant": lambda c, b: nn.init.constant_(b, c.bias_value),
}

# init.layers: which layers are initialized, by whether they are a Linear.
LAYERS = {"all": (True, False), "linear": (True,), "conv": (False,)}

# The nonlinearities Kaiming's gain knows (torch.nn.init.calculate_gain).
NONLINEARITIES = ["linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]


@dataclass
class Init:
    name: str = MISSING
    layers: str = "all"  # whose weights: all (Linear and Conv), linear or conv
    bias: str = "default"  # default (PyTorch's), zeros, ones or constant (init.bias_value)
    bias_value: float = 0.0

    def init_weight(self, w) -> None:
        """Set the weight tensor `w` in place; the base leaves PyTorch's own initialization."""

    def check(self) -> None:
        known("init.layers", self.layers, LAYERS)
        known("init.bias", self.bias, BIASES)


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

    def check(self) -> None:
        super().check()
        known("init.mode", self.mode, ["fan_in", "fan_out"])
        known("init.nonlinearity", self.nonlinearity, NONLINEARITIES)


@option("init")
@dataclass
class KaimingNormal(Kaiming):
    name: str = "kaiming_normal"

    def init_weight(self, w) -> None:
        nn.init.kaiming_normal_(w, self.a, self.mode, self.nonlinearity)


@option("init")
@dataclass
class KaimingUniform(Kaiming):
    name: str = "kaiming_uniform"

    def init_weight(self, w) -> None:
        nn.init.kaiming_uniform_(w, self.a, self.mode, self.nonlinearity)


@dataclass
class Xavier(Init):
    gain: float = 1.0

    def check(self) -> None:
        super().check()
        need(self.gain > 0, "init.gain", self.gain, "a gain > 0")


@option("init")
@dataclass
class XavierNormal(Xavier):
    name: str = "xavier_normal"

    def init_weight(self, w) -> None:
        nn.init.xavier_normal_(w, self.gain)


@option("init")
@dataclass
class XavierUniform(Xavier):
    name: str = "xavier_uniform"

    def init_weight(self, w) -> None:
        nn.init.xavier_uniform_(w, self.gain)


@option("init")
@dataclass
class Normal(Init):
    name: str = "normal"
    mean: float = 0.0
    std: float = 0.01

    def init_weight(self, w) -> None:
        nn.init.normal_(w, self.mean, self.std)

    def check(self) -> None:
        super().check()
        need(self.std >= 0, "init.std", self.std, "a standard deviation >= 0")


@option("init")
@dataclass
class Uniform(Init):
    name: str = "uniform"
    low: float | None = None  # both null: (-1/sqrt(fan_in), 1/sqrt(fan_in))
    high: float | None = None

    def init_weight(self, w) -> None:
        # The lesson's default: U(-1/sqrt(d), 1/sqrt(d)) with d the fan-in (inputs per output).
        bound = 1 / math.sqrt(w[0].numel())
        low, high = (-bound, bound) if self.low is None else (self.low, self.high)
        nn.init.uniform_(w, low, high)

    def check(self) -> None:
        super().check()
        low, high = self.low, self.high
        need(
            (low is None and high is None) or (None not in (low, high) and low < high),
            "init.low",
            low,
            "init.low < init.high, or both null for (-1/sqrt(fan_in), 1/sqrt(fan_in))",
        )


@option("init")
@dataclass
class Zeros(Init):
    name: str = "zeros"

    def init_weight(self, w) -> None:
        nn.init.zeros_(w)


@option("init")
@dataclass
class Ones(Init):
    name: str = "ones"

    def init_weight(self, w) -> None:
        nn.init.ones_(w)


@option("init")
@dataclass
class Constant(Init):
    name: str = "constant"
    value: float = 0.1

    def init_weight(self, w) -> None:
        nn.init.constant_(w, self.value)


def apply(model: nn.Module, cfg: Init) -> nn.Module:
    """Initialize the weights and biases of the layers `cfg.layers` picks, as `cfg` says."""
    bias, linear = BIASES[cfg.bias], LAYERS[cfg.layers]
    for layer in model.modules():
        if isinstance(layer, weighted()) and isinstance(layer, nn.Linear) in linear:
            cfg.init_weight(layer.weight)
            if bias is not None and layer.bias is not None:
                bias(cfg, layer.bias)
    return model
