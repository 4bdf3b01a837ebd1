"""The options of the config groups, registered from their schema dataclasses.

Each option of a group (conf/<group>/<name>.yaml) is a dataclass decorated with
`@option(group)` beside the code that builds it: that registers it in Hydra's ConfigStore as
`schema/<group>/<name>` (the YAML file names it in its defaults list, so Hydra types every key
and refuses a misspelt one) and in the registry of names below. Adding an option is its
dataclass and its YAML file. A schema's `check()` refuses the values a type cannot express.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import fields
from typing import Any

from hydra.core.config_store import ConfigStore

from regexp.errors import ConfigError

# group -> option name -> schema dataclass
OPTIONS: dict[str, dict[str, type]] = {}


def option(group: str):
    """Register a dataclass as the schema of one option of `group`, under its `name` default."""

    def register(cls):
        name = next(f.default for f in fields(cls) if f.name == "name")
        ConfigStore.instance().store(group=f"schema/{group}", name=name, node=cls)
        OPTIONS.setdefault(group, {})[name] = cls
        return cls

    return register


def names(group: str) -> list[str]:
    return sorted(OPTIONS.get(group, {}))


def need(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Refuse `key`=`value` unless `ok`, saying what is `allowed`."""
    if not ok:
        raise ConfigError(key, value, allowed)


def known(key: str, value: str, choices) -> None:
    """Refuse a `value` that is not one of `choices`, listing them (and the closest one)."""
    choices = sorted(choices)
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    need(value in choices, key, value, f"one of {', '.join(choices)}{hint}")


def knobs(cfg, *skip: str) -> dict:
    """An option's fields but its name, as keyword arguments for PyTorch (lists as tuples)."""
    return {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in dataclasses.asdict(cfg).items()
        if k not in ("name", *skip)
    }
