"""The `regexp` command line: help, dispatch, Hydra's flags, and one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT, regexp


def test_help_lists_the_commands(tmp_path):
    out = regexp("--help", cwd=tmp_path).stdout
    for command in ("train", "summary"):
        assert f"  {command} " in out
    assert "regexp train norm=bn optim.weight_decay=1e-2" in out


def test_an_unknown_command_is_refused_with_a_suggestion(tmp_path):
    done = regexp("trian", cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert "unknown command 'trian'" in done.stderr and "did you mean 'train'" in done.stderr


def test_train_help_is_hydras_with_the_groups_and_their_options(tmp_path):
    out = regexp("train", "--help", cwd=tmp_path).stdout
    assert "norm: bn, gn, in, ln, none" in out
    assert "optim: adagrad, adam, adamw, gd, rmsprop, sgd" in out
    assert "data: cifar10, circles, digits, fashion_mnist, gauss, mnist, moons, spiral, " in out
    assert "schema" not in out  # the typing machinery is not an option to choose
    assert "weight_decay: 0.0" in out  # the composed config
    assert not (tmp_path / "outputs").exists()


def test_cfg_job_prints_the_composed_config_without_training(tmp_path):
    out = regexp("train", "--cfg", "job", "norm=bn", "optim.weight_decay=1e-2", cwd=tmp_path).stdout
    assert "weight_decay: 0.01" in out and "name: bn" in out
    assert not (tmp_path / "outputs").exists()


def test_hydra_flags_pass_through(tmp_path):
    out = regexp("train", "--info", "searchpath", cwd=tmp_path).stdout
    assert "conf" in out
    out = regexp("train", "--hydra-help", cwd=tmp_path).stdout
    assert "hydra/launcher" in out


def test_two_hydra_modes_at_once_are_refused_in_one_line(tmp_path):
    done = regexp("train", "-m", "--cfg", "job", "model.dropout=0,0.5", cwd=tmp_path, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "Only one of --run, --multirun, --cfg" in done.stderr


# The table of bad inputs and their one-line errors is in test_reliability.py.


def test_hydra_full_error_shows_the_traceback(tmp_path):
    done = regexp("train", "optim.lr=-1", cwd=tmp_path, check=False, env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_summary_prints_the_layer_table_and_writes_nothing(tmp_path):
    out = regexp("summary", cwd=tmp_path).stdout
    assert "Total params: 81,001" in out and "Linear" in out
    out = regexp("summary", "data=digits", "norm=bn", "model.hidden=[32]", cwd=tmp_path).stdout
    assert "BatchNorm1d" in out and "[2, 10]" in out
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_is_installed():
    regexp_bin = shutil.which("regexp", path=str(ROOT / ".venv" / "bin")) or shutil.which("regexp")
    assert regexp_bin, "the `regexp` console script is not on PATH"
    done = subprocess.run([regexp_bin, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: regexp" in done.stdout


def test_the_wheel_ships_conf_inside_the_package(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("regexp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "regexp/conf/train.yaml" in names
    assert "regexp/conf/optim/sgd.yaml" in names and "regexp/cli.py" in names
