"""Run dirs: a fresh one for each run and sweep, a lock held by the run writing in one, the
checkpoint `resume=` continues, and what each job of a resumed sweep does with its dir."""

from __future__ import annotations

import fcntl
import json
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


@contextmanager
def atomic(path: Path, suffix: str = ".tmp"):
    """Yields a temporary path beside `path` to write, moved onto `path` once written: a reader
    never sees half a file, and a write that fails (a full disk) leaves nothing behind."""
    tmp = Path(path).with_name(Path(path).name + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    """A resumed run must have epochs left to train, unless it never wrote the summary of its
    end: killed between its last checkpoint and its last records, it resumes to write them."""
    if done > epochs or (done == epochs and completed(run_dir)):
        raise ConfigError(
            "train.epochs", epochs, f"more than the {done} epochs the run in {run_dir} has done"
        )


def completed(run_dir) -> bool:
    """Whether the run in `run_dir` ended and wrote so (summary.json says `completed`)."""
    return summary_of(run_dir).get("status") == "completed"


def summary_of(run_dir) -> dict:
    """The run's summary.json, or {} where there is none to read: never written (the run never
    started), cut short by a kill, or not a summary of ours."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


# Set by `regexp train -m resume=SWEEP_DIR` for the jobs it launches, in whatever process or
# machine a launcher runs them: the sweep being resumed, and whether its failed jobs rerun.
RESUMED_SWEEP, RERUN_FAILED = "REGEXP_RESUMED_SWEEP", "REGEXP_RERUN_FAILED"


def resumed_sweep_job(run_dir: Path, epochs: int) -> str | None:
    """What the job writing in `run_dir` does in a resumed sweep (None outside one): "skip" a
    job that ended (completed its `epochs` or stopped early, diverged, or failed unless failed
    jobs rerun); "resume" one whose checkpoint goes on (interrupted, killed, completed but given
    more epochs, a failed one rerun); "start" one that never trained or left no checkpoint."""
    sweep = os.environ.get(RESUMED_SWEEP)
    if not sweep or Path(sweep).resolve() not in Path(run_dir).resolve().parents:
        return None
    summary = summary_of(run_dir)
    status = summary.get("status")
    ended = status == "completed" and (
        (summary.get("epochs") or 0) >= epochs or "stopped_epoch" in summary
    )
    if ended or status == "diverged" or (status == "failed" and not os.environ.get(RERUN_FAILED)):
        return "skip"
    return "resume" if (Path(run_dir) / "checkpoint.pt").is_file() else "start"


def clear_record(run_dir: Path) -> None:
    """Remove the event files and best weights a run left without a checkpoint, before it
    starts again in its dir (every other file it wrote is rewritten as it trains): a record
    that no checkpoint continues, which TensorBoard would show beside the new one."""
    for stale in [*Path(run_dir).glob("events.out.tfevents.*"), Path(run_dir) / "best.pt"]:
        stale.unlink(missing_ok=True)
