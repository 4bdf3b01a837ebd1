"""Weight and bias initializers for the Linear and Conv layers of a model."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from regexp import config
from regexp.models import WEIGHTED

# An initializer takes its config and one layer and sets the layer's weight and bias in place;
# None leaves PyTorch's own initialization.
INITIALIZERS: dict[str, Callable[[config.Init, nn.Module], None] | None] = {
    "default": None,
}


def apply(model: nn.Module, cfg: config.Init) -> nn.Module:
    """Initialize every Linear and Conv layer of `model` as `cfg` says."""
    initialize = INITIALIZERS[cfg.name]
    if initialize is not None:
        for layer in model.modules():
            if isinstance(layer, WEIGHTED):  # norm layers keep weight 1, bias 0
                initialize(cfg, layer)
    return model
