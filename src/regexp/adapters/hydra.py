"""Hydra's private parts (hydra-core < 1.4, as pyproject.toml bounds it; tests/test_adapters.py
checks each): the dir name of a job's overrides, the step that applies overrides to a composed
config, a failed job's exception, the command line that `hydra.main` reads, and how Hydra
writes its record of a run and of a sweep."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def overrides_dirname(overrides, kv_sep: str, item_sep: str, exclude_keys) -> str:
    """`hydra.job.override_dirname` of a job with the parsed `overrides`, as Hydra names it."""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(
        overrides=overrides, kv_sep=kv_sep, item_sep=item_sep, exclude_keys=exclude_keys
    )


def apply_overrides(overrides, config) -> None:
    """Apply parsed value `overrides` to a composed `config` in place, as Hydra's own loader
    does after composing (the stacked launcher composes once per choice of config files)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    ConfigLoaderImpl._apply_overrides_to_config(overrides, config)  # noqa: SLF001


def failure_of(job_return) -> BaseException:
    """The exception a failed job raised. (Its public `return_value` raises it, and first
    writes a line of Hydra's own to stderr.)"""
    return job_return._return_value  # noqa: SLF001


@contextlib.contextmanager
def command_line(argv: list[str]):
    """`argv` as the command line while the block runs: `hydra.main`'s app parses sys.argv,
    its only way in."""
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def raising_errors():
    """Hydra raises a job's or a config's error (HYDRA_FULL_ERROR=1, its own switch) rather
    than printing its own report and exiting 1, so that regexp can say it in one line. Yields
    the user's setting, which comes back after the block: "1" asks for the traceback."""
    from regexp import process

    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    with process.environment({"HYDRA_FULL_ERROR": "1"}):
        yield user_setting


@contextlib.contextmanager
def atomic_records():
    """Hydra writes its record of a run (.hydra/config.yaml, hydra.yaml, overrides.yaml) and of
    a sweep (multirun.yaml) in place: a kill mid-write leaves one cut short, from which
    `resume=` would read back another run's overrides. While the block runs, each is written
    whole or not at all (rundir.write_bytes: a temp file, then a rename), with Hydra's bytes."""
    from hydra._internal.core_plugins import basic_sweeper
    from hydra.core import utils
    from hydra.core.plugins import Plugins
    from omegaconf import OmegaConf

    from regexp.run import rundir

    Plugins.instance()  # (its first call runs the sweeper's module again: done before the patch)

    def save_config(cfg, filename: str, output_dir: Path) -> None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        rundir.write_bytes(Path(output_dir) / filename, OmegaConf.to_yaml(cfg).encode())

    class Saving:
        """OmegaConf as the basic sweeper sees it: its `save` atomic."""

        def __getattr__(self, name: str):
            return getattr(OmegaConf, name)

        @staticmethod
        def save(config, f, resolve: bool = False) -> None:
            rundir.write_bytes(Path(f), OmegaConf.to_yaml(config, resolve=resolve).encode())

    saved = utils._save_config, basic_sweeper.OmegaConf  # noqa: SLF001
    utils._save_config, basic_sweeper.OmegaConf = save_config, Saving()  # noqa: SLF001
    try:
        yield
    finally:
        utils._save_config, basic_sweeper.OmegaConf = saved  # noqa: SLF001
