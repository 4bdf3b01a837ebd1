"""What a run dir holds for the runs that go on in it: the checkpoint `resume=` continues."""

from __future__ import annotations

from pathlib import Path

from regexp.errors import ConfigError


def checkpoint_of(run_dir: str) -> Path:
    """The checkpoint of the run in `run_dir`, which `resume=` continues."""
    checkpoint = Path(run_dir) / "checkpoint.pt"
    if not checkpoint.is_file():
        what = "no such dir" if not Path(run_dir).is_dir() else "it holds no checkpoint.pt"
        raise ConfigError("resume", run_dir, f"the dir of a run to continue ({what})")
    return checkpoint


def check_more_epochs(epochs: int, done: int, run_dir) -> None:
    """A resumed run must have epochs left to train."""
    if done >= epochs:
        raise ConfigError(
            "train.epochs", epochs, f"more than the {done} epochs the run in {run_dir} has done"
        )
