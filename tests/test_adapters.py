"""Every private part of another library that regexp uses (src/regexp/adapters/), checked
against the installed release: an upgrade that moves or changes one fails here, by name."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from regexp.adapters import hydra as hydra_adapter
from regexp.adapters import stdlib, tensorboardx


def parsed(*lines: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(lines))


def test_hydra_names_a_jobs_dir_by_its_overrides_sorted_without_the_excluded_keys():
    overrides = parsed("seed=1", "model.dropout=0.5", "optim=adam")
    name = hydra_adapter.overrides_dirname(overrides, "=", ",", ["seed"])
    assert name == "model.dropout=0.5,optim=adam"


def test_hydra_applies_value_overrides_to_a_composed_config():
    config = OmegaConf.create({"model": {"dropout": 0.0}, "seed": 0})
    hydra_adapter.apply_overrides(parsed("model.dropout=0.5", "+extra=1", "~seed"), config)
    assert OmegaConf.to_container(config) == {"model": {"dropout": 0.5}, "extra": 1}


def test_a_failed_hydra_job_holds_its_exception():
    from hydra.core.utils import JobReturn, JobStatus

    error = ValueError("bad")
    job = JobReturn(status=JobStatus.FAILED)
    job.return_value = error  # (the setter is public; reading is what the adapter does)
    assert hydra_adapter.failure_of(job) is error


def test_hydra_reads_its_switch_to_raise_errors():
    from hydra._internal import utils

    with hydra_adapter.raising_errors():
        assert utils._is_env_set("HYDRA_FULL_ERROR")  # what run_and_report asks


def test_hydra_main_parses_sys_argv(tmp_path):
    code = """
import hydra, sys
from regexp.adapters import hydra as adapter
@hydra.main(version_base="1.3", config_path=None)
def app(cfg):
    print(cfg.x)
with adapter.command_line(["app", "+x=42", "hydra.run.dir=."]):
    app()
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


def test_pythons_exit_handlers_run_on_their_own(tmp_path):
    code = """
import atexit, os
from regexp.adapters import stdlib
atexit.register(print, "handler ran", flush=True)
stdlib.run_exit_handlers()
os._exit(0)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert stdlib.can_run_exit_handlers() and done.stdout == "handler ran\n", done.stderr


def test_a_process_pool_lists_its_live_workers():
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        pid = pool.submit(os.getpid).result()
        assert [p.pid for p in stdlib.pool_processes(pool)] == [pid]


def test_tensorboardx_writes_events_tensorboard_reads(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = tensorboardx.EventsWriter(str(tmp_path / "events"), ".0")
    value = tensorboardx.Summary.Value(tag="loss/train", simple_value=0.5)
    writer.write_event(tensorboardx.Event(step=3, summary=tensorboardx.Summary(value=[value])))
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/train")] == [(3, 0.5)]
    assert tensorboardx.Status.Value("STATUS_SUCCESS")
    assert tensorboardx.SessionLog.START
    assert callable(tensorboardx.summaries.custom_scalars) and callable(
        tensorboardx.summaries.hparams
    )
    assert tensorboardx.HParamsPluginData and tensorboardx.SessionEndInfo
    assert tensorboardx.SummaryMetadata


@pytest.mark.parametrize("package", ["hydra-core", "tensorboardX"])
def test_each_adapted_library_is_bounded_above_in_pyproject(package):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"{package}>=' in text and f"{package}" in text
    line = next(line for line in text.splitlines() if f'"{package}>=' in line)
    assert ",<" in line, f"{package} needs an upper bound: {line.strip()}"


def test_hydra_writes_its_records_where_the_adapter_makes_them_atomic(tmp_path):
    import inspect

    from hydra._internal.core_plugins import basic_sweeper
    from hydra.core import utils

    assert "_save_config(" in inspect.getsource(utils.run_job)  # .hydra/*.yaml
    assert "OmegaConf.save(" in inspect.getsource(basic_sweeper.BasicSweeper.sweep)  # multirun
    config = OmegaConf.create({"a": 1, "b": ["x", "é"]})
    utils._save_config(config, "hydra.yaml", tmp_path / "hydra")
    OmegaConf.save(config, tmp_path / "hydra" / "multirun.yaml")
    from hydra.core.plugins import Plugins

    with hydra_adapter.atomic_records():
        utils._save_config(config, "hydra.yaml", tmp_path / "atomic")
        # (the class Hydra runs: its module as Hydra's scan of plugins left it)
        sweeper = Plugins.instance().class_name_to_class[basic_sweeper.BasicSweeperConf._target_]
        assert sweeper.sweep.__globals__["OmegaConf"] is not OmegaConf
        sweeper.sweep.__globals__["OmegaConf"].save(config, tmp_path / "atomic" / "multirun.yaml")
    for name in ("hydra.yaml", "multirun.yaml"):  # Hydra's bytes
        assert (tmp_path / "atomic" / name).read_bytes() == (tmp_path / "hydra" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "atomic").iterdir()) == [
        "hydra.yaml",
        "multirun.yaml",
    ]
    assert utils._save_config.__module__ == "hydra.core.utils"  # (put back after the block)
