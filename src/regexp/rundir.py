"""Run dirs: a fresh one for each run and sweep, a lock held by the run writing in one, and
the checkpoint `resume=` continues."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from regexp.errors import ConfigError, UserError


def fresh(path: str) -> str:
    """`path`, made now, or the first of `path-2`, `path-3`... that no run or sweep has made:
    two started in the same second get dirs of their own. (conf/train.yaml's run and sweep
    dirs, through the cached resolver `regexp_fresh`: each config resolves it once.)"""
    base, n = Path(path), 1
    while True:
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        candidate.parent.mkdir(parents=True, exist_ok=True)
        try:
            candidate.mkdir()  # atomic: one process makes it, the others see it exists
        except FileExistsError:
            n += 1
            continue
        return str(candidate)


@contextmanager
def hold(run_dir: Path):
    """The lock of the run writing in `run_dir`, held while it runs: an OS lock on the dir,
    which a killed or crashed run releases with its process. A second writer is refused."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{run_dir}: refused, a live run is writing in it (it holds the dir's lock); "
                "wait for it to end or stop it, or give another dir"
            ) from None
        yield
    finally:
        os.close(fd)  # (releases the lock)


def check_free(run_dir: Path) -> None:
    """Refuse `run_dir` if a live run holds its lock (checked before anything is written)."""
    if Path(run_dir).is_dir():
        with hold(Path(run_dir)):
            pass


def checkpoint_of(run_dir: str) -> Path:
    """The checkpoint of the run in `run_dir`, which `resume=` continues."""
    if not str(run_dir).strip():  # (not the current dir, whatever it holds)
        raise ConfigError("resume", run_dir, "the dir of a run to continue, not an empty value")
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
