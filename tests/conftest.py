"""Shared helpers: run the real `regexp` command, compose configs, read TensorBoard files."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# The runs made in this process, as `regexp train` makes them: on one thread (its default),
# where torch's own default thrashes on a busy machine.
torch.set_num_threads(1)

# Tiny versions of the two built-in datasets: the real code paths, in well under a second.
TINY = ["train.epochs=5", "model.hidden=[16,16]"]


@pytest.fixture(autouse=True)
def _torch_threads_as_they_were():
    """A command run in this process sets torch's thread count (`threads=2`), which would carry
    over into the next test here and move its last digits: each test starts with the count as
    it was."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def regexp(*args: str, cwd: Path, check: bool = True, env: dict | None = None, process=False):
    """Run `regexp ARGS` in `cwd` as a user would; returns a CompletedProcess. By default in
    this process, through the command's own `cli.main` (torch is imported already, so a run
    costs its work alone); with `process` (or `env`), as `python -m regexp` in a process of
    its own: where the entry point's exit, signals or the environment are what is tested."""
    if process or env:
        done = _in_a_process(args, cwd, env)
    else:
        done = _in_this_process(args, cwd)
    if check and done.returncode != 0:
        raise AssertionError(
            f"regexp {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def _in_a_process(args, cwd: Path, env: dict | None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "regexp", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _in_this_process(args, cwd: Path) -> subprocess.CompletedProcess:
    from regexp import cli

    out, err = io.StringIO(), io.StringIO()
    here, argv = os.getcwd(), sys.argv[:]
    user_setting = os.environ.pop("HYDRA_FULL_ERROR", None)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # (argparse's --help and usage errors)
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            logging.shutdown()  # (the run's log lines reach train.log before it is read)
    finally:
        os.chdir(here)
        sys.argv = argv
        if user_setting is not None:
            os.environ["HYDRA_FULL_ERROR"] = user_setting
    return subprocess.CompletedProcess(["regexp", *args], code, out.getvalue(), err.getvalue())


def jobs_of(sweep: Path) -> list[Path]:
    """A sweep dir's job dirs (each has Hydra's .hydra/), not its settings/ or .submitit/."""
    return sorted(p for p in Path(sweep).iterdir() if (p / ".hydra").is_dir())


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_events(run_dir: Path):
    """The run's TensorBoard events (all its event files, as TensorBoard reads a run's dir)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(Path(run_dir).glob("events.out.tfevents.*")), f"no event file in {run_dir}"
    events = EventAccumulator(
        str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0}
    )
    events.Reload()
    return events


def gif_epochs(path) -> tuple[int, list[int]]:
    """A GIF's frame count and the epochs its comment names (render.py writes them)."""
    from PIL import Image

    with Image.open(path) as gif:
        note = gif.info["comment"].decode()
        return gif.n_frames, [int(e) for e in note.split(": ")[1].split(",")]


@pytest.fixture
def compose():
    """compose(*overrides) -> the validated config dataclasses, as `regexp train` would get."""
    from regexp import config

    return lambda *overrides: config.validate(config.compose(list(overrides)))
