"""An Optuna search's settings, checked before its first trial (a Hydra callback that
conf/train.yaml names): n_trials, n_jobs, max_failure_rate, the direction, and each search
space, from hydra.sweeper.params or the command line: its bounds, and the config at each of
its ends. Optuna refuses some of these only once the study runs, with a traceback; n_jobs=0
would loop for ever; a dropout interval past 1 would run trials that all fail."""

from __future__ import annotations

import copy
import enum

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from regexp.components.options import need
from regexp.errors import ConfigError, Ended, UserError, show, user_error


class SearchCheck(Callback):
    """Refuses a sweep whose Optuna search cannot work, in one line, before anything runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if "optuna" not in str(config.hydra.sweeper.get("_target_", "")).lower():
            return
        try:
            check_search(config)
        except UserError as error:  # (Ended: Hydra turns an Exception here into a warning)
            raise Ended("refused", error) from None


def check_search(config: DictConfig) -> None:
    sweeper = config.hydra.sweeper
    for key, least in (("n_trials", 1), ("n_jobs", 1)):
        value = sweeper.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
        need(ok, f"hydra.sweeper.{key}", value, f"an integer >= {least}")
    rate = sweeper.get("max_failure_rate", 0.0)
    ok = isinstance(rate, (int, float)) and 0 <= rate <= 1
    need(ok, "hydra.sweeper.max_failure_rate", rate, "a share from 0 to 1")
    direction = sweeper.get("direction")
    named = [direction] if not isinstance(direction, ListConfig) else list(direction)
    names = [d.name if isinstance(d, enum.Enum) else str(d) for d in named]
    need(
        len(names) == 1 and names[0] in ("minimize", "maximize"),
        "hydra.sweeper.direction",
        show(names) if isinstance(direction, ListConfig) else direction,
        "minimize or maximize (each run returns one value: its best valid loss)",
    )
    params = sweeper.get("params") or {}
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    spaces = {f"hydra.sweeper.params.{k}": f"{k}={v}" for k, v in params.items()}
    spaces.update({o.lstrip("+~").split("=", 1)[0]: o for o in config.hydra.overrides.task})
    for name, line in spaces.items():
        check_space(name, line, task)


def check_space(name: str, line: str, task: DictConfig) -> None:
    """Refuse the search space `line` (key=interval(...), choice(...) or range(...)) set as
    `name` unless its bounds are in order and the config is valid at each of its ends."""
    override = OverridesParser.create().parse_override(line)
    if not override.is_sweep_override():
        return
    key, space = override.key_or_group, override.value()
    shown = line.split("=", 1)[1]
    if override.is_interval_sweep() or override.is_range_sweep():
        low = space.start
        high = space.end if override.is_interval_sweep() else space.stop
        need(low <= high, name, shown, f"a range from low to high: {show(low)} > {show(high)}")
        log = "log" in getattr(space, "tags", ())
        need(not log or low > 0, name, shown, "a log interval from a value > 0")
        ends = [low, high]
    else:
        ends = list(override.sweep_iterator())
    if isinstance(OmegaConf.select(task, key), DictConfig):
        return  # a config group: each choice is composed by Hydra, which names a missing one
    from regexp import config  # (the schemas: heavy, and only for a search)

    for value in ends:
        trial = copy.deepcopy(task)
        try:
            OmegaConf.update(trial, key, value, force_add=True)
            config.validate(trial)
        except Exception as exc:
            why = user_error(exc)
            if why is None:
                raise
            raise ConfigError(
                name, shown, f"a search space of allowed values; at {show(value)}: {why}"
            ) from None
