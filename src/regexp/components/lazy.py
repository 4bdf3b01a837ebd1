"""A module imported on first use.

The config groups' schemas live beside the code that builds them, and Hydra needs every schema
to compose a config: `regexp train --help` and a sweep's launcher compose configs without
training, and should not pay for importing torch (seconds). Modules that hold schemas name
torch through `lazy("torch")`, which imports it the first time an attribute is read.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        value = getattr(self._module, attr)
        # Kept, so that the next read is a plain attribute's, as cheap as the module's own:
        # a hot loop (an optimizer step) reads torch.X often.
        setattr(self, attr, value)
        return value


def lazy(name: str) -> LazyModule:
    return LazyModule(name)
