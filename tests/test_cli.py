"""The `regexp` command line: help, dispatch, Hydra's flags, and one-line errors."""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, regexp


def test_help_lists_the_commands(tmp_path):
    out = regexp("--help", cwd=tmp_path).stdout
    for command in ("train", "summary"):
        assert f"  {command} " in out
    assert "regexp train norm=bn optim.weight_decay=1e-2" in out


def test_an_unknown_command_is_refused_with_a_suggestion(tmp_path):
    done = regexp("trian", cwd=tmp_path, check=False, process=True)
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


@pytest.mark.slow
def test_hydra_flags_pass_through(tmp_path):
    out = regexp("train", "--info", "searchpath", cwd=tmp_path).stdout
    assert "conf" in out
    out = regexp("train", "--hydra-help", cwd=tmp_path).stdout
    assert "hydra/launcher" in out


@pytest.mark.parametrize(
    "flags", [["--cfg", "job", "model.dropout=0,0.5"], ["model.dropout=0,0.5", "--cfg", "job"]]
)
def test_two_hydra_modes_at_once_are_refused_in_one_line(tmp_path, flags):
    done = regexp("train", "-m", *flags, cwd=tmp_path, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "Only one of --run, --multirun, --cfg" in done.stderr


# The table of bad inputs and their one-line errors is in test_reliability.py.


@pytest.mark.slow
def test_hydra_full_error_shows_the_traceback(tmp_path):
    done = regexp("train", "optim.lr=-1", cwd=tmp_path, check=False, env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_summary_prints_the_layer_table_and_writes_nothing(tmp_path):
    out = regexp("summary", cwd=tmp_path).stdout
    assert "Total params: 81,001" in out and "Linear" in out
    assert "Total mult-adds (M): 0.16" in out  # not "(Units.MEGABYTES)"
    out = regexp("summary", "data=digits", "norm=bn", "model.hidden=[32]", cwd=tmp_path).stdout
    assert "BatchNorm1d" in out and "[2, 10]" in out
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_is_installed():
    regexp_bin = shutil.which("regexp", path=str(ROOT / ".venv" / "bin")) or shutil.which("regexp")
    assert regexp_bin, "the `regexp` console script is not on PATH"
    done = subprocess.run([regexp_bin, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: regexp" in done.stdout


@pytest.mark.slow
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


def test_train_help_needs_neither_torch_nor_the_training_code(tmp_path):
    code = "import sys; from regexp import cli; cli.main(['train', '--help', 'norm=bn']);"
    # (numpy: a tenth of a second)
    names = "('torch', 'numpy', 'regexp.run.population', 'regexp.engine.track')"
    code += f"print(sorted(m for m in {names} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.stdout.splitlines()[-1] == "[]" and "name: bn" in done.stdout
    assert "== Config groups ==" in done.stdout
    assert "  +experiment: bias_variance, bias_variance_dropout, bn_cnn," in done.stdout


@functools.cache
def completion_script(shell: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "regexp", "train", "--shell-completion", f"install={shell}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def bash_complete(line: str, tmp_path) -> list[str]:
    """What bash offers at the end of `line` with regexp's completion installed: COMP_WORDS
    split as bash splits them (at spaces, and around = and :, each a word of its own; the
    cursor's word is "=" right after one), then the completion function."""
    script = completion_script("bash")
    words = re.findall(r"[=:]|[^\s=:]+", line) + ([""] if line.endswith(" ") else [])
    bin_dir = Path(sys.executable).parent
    shell = f"""
{script}
COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({" ".join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}
_regexp_complete
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", shell], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_bash_completes_commands_groups_options_and_keys_of_regexp_train(tmp_path):
    assert bash_complete("regexp tr", tmp_path) == ["train"]
    assert "norm=" in bash_complete("regexp train no", tmp_path)
    # bash replaces only what follows the '=': the answers are what goes there.
    assert sorted(bash_complete("regexp train norm=", tmp_path)) == [
        "=bn", "=gn", "=in", "=ln", "=none"
    ]  # fmt: skip
    assert bash_complete("regexp train norm=b", tmp_path) == ["bn"]
    assert bash_complete("regexp train optim.weight_d", tmp_path) == ["optim.weight_decay="]
    assert bash_complete("regexp summary +experiment=drop", tmp_path) == ["dropout"]
    assert not [w for w in bash_complete("regexp train s", tmp_path) if "schema" in w]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh here")
def test_zsh_completes_a_partial_override_at_a_tab(tmp_path):
    """An interactive zsh in a pseudo-terminal: type a partial key, press TAB, read the line."""
    bin_dir = Path(sys.executable).parent
    script = """
zmodload zsh/zpty
zpty z "zsh -f -i"
zpty -w z 'PS1="> "; autoload -Uz compinit && compinit -u'
zpty -w z 'eval "$(regexp train -sc install=zsh)"; echo READY'
zpty -r z line '*READY*'
zpty -w -n z $'regexp train optim.weight_d\\t'
zpty -r z line '*weight_decay=*' && print OK
zpty -d z
"""
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["zsh", "-f", "-c", script], capture_output=True, text=True, env=env, timeout=120,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.stdout.strip().endswith("OK"), done.stdout + done.stderr


def test_a_sweep_starts_the_stacked_launchers_workers_only_when_it_will_use_them(monkeypatch):
    from regexp.cli import stacked_in_workers

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert stacked_in_workers(["-m", "seed=range(8)"])
    assert stacked_in_workers(["-m", "hydra/launcher=stacked", "seed=0,1", "optim.lr=1,2,3,4"])
    assert not stacked_in_workers(["-m", "seed=0,1"])  # one population, in this process
    assert not stacked_in_workers(["-m", "seed=range(7)", "optim.lr=0.1"])
    assert not stacked_in_workers(["-m", "hydra/launcher=basic", "seed=range(8)"])
    assert not stacked_in_workers(["-m", "++hydra.launcher.n_jobs=1", "seed=range(8)"])
    assert not stacked_in_workers(["-m", "seed=range(8", "x=1"])  # Hydra says why, later
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert not stacked_in_workers(["-m", "seed=range(8)"])
