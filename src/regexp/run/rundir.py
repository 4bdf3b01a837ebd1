"""Run dirs: a fresh one for each run and sweep, a lock held by the run writing in one, the
checkpoint `resume=` continues, what each job of a resumed sweep does with its dir, and every
file of a run dir: its name, its path and its writing (atomic: a temp file, then a rename).

Why it is long: it is the one owner of a run dir's files (DESIGN.md, section 4), so each
file's name, writer and strict reader sit here together rather than beside their users."""

from __future__ import annotations

import csv
import fcntl
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path

from regexp import process
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


def check_makeable(key: str, path: Path) -> None:
    """Refuse a dir under a file (or a file in its place), which no mkdir can make."""
    for where in (path, *path.parents):
        if where.is_dir():
            return
        if where.exists() or where.is_symlink():
            what = "a file" if where.is_file() else "not a dir"
            raise ConfigError(key, path, f"a dir that can be made there: {where} is {what}")


def checkpoint_of(run_dir: str) -> Path:
    """The checkpoint of the run in `run_dir`, which `resume=` continues."""
    if not str(run_dir).strip():  # (not the current dir, whatever it holds)
        raise ConfigError("resume", run_dir, "the dir of a run to continue, not an empty value")
    checkpoint = checkpoint_file(run_dir)
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
        summary = json.loads(summary_file(run_dir).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def resumed_sweep_job(run_dir: Path, epochs: int) -> str | None:
    """What the job writing in `run_dir` does in a resumed sweep (None outside one): "skip" a
    job that ended (completed its `epochs` or stopped early, diverged, or failed unless failed
    jobs rerun); "resume" one whose checkpoint goes on (interrupted, killed, completed but given
    more epochs, a failed one rerun); "start" one that never trained or left no checkpoint."""
    if not in_resumed_sweep(run_dir):
        return None
    summary = summary_of(run_dir)
    status = summary.get("status")
    ended = status == "completed" and (
        (summary.get("epochs") or 0) >= epochs or "stopped_epoch" in summary
    )
    rerun_failed = process.resumed_sweep_told()[1]
    if ended or status == "diverged" or (status == "failed" and not rerun_failed):
        return "skip"
    return "resume" if checkpoint_file(run_dir).is_file() else "start"


def in_resumed_sweep(run_dir) -> bool:
    """Whether `run_dir` is a job's of the sweep this command resumes (`-m resume=`)."""
    sweep = process.resumed_sweep_told()[0]
    return bool(sweep) and Path(sweep).resolve() in Path(run_dir).resolve().parents


def hydra_record_dir(*, _root_) -> str | None:
    """conf/train.yaml's `hydra.output_subdir` (the resolver `regexp_hydra_record`): where Hydra
    writes its record of a job as it sets the job up, before the job checks anything. None
    (Hydra writes none) for a job of a resumed sweep whose dir holds one already: that job
    writes it once its checks let it go on (write_hydra_record), so a job they refuse, or one
    skipped, leaves its dir as it was."""
    from omegaconf import OmegaConf

    run_dir = OmegaConf.select(_root_, "hydra.runtime.output_dir", default=None)
    kept = run_dir and in_resumed_sweep(run_dir) and (Path(run_dir) / HYDRA_RECORD).is_dir()
    return None if kept else HYDRA_RECORD


def write_hydra_record(run_dir, texts: dict[str, str]) -> None:
    """Hydra's record of the run (file name: its YAML), as Hydra writes it, each file
    atomically."""
    record = Path(run_dir) / HYDRA_RECORD
    record.mkdir(exist_ok=True)
    for name, text in texts.items():
        with atomic(record / name) as tmp:
            tmp.write_text(text, encoding="utf-8")


def stamp(run_dir) -> tuple:
    """When the run's summary.json and metrics.csv last changed (None: not there): a launcher
    whose worker died tells by it what each member of its population left."""

    def changed(path: Path):
        try:
            return path.stat().st_mtime_ns, path.stat().st_size
        except OSError:
            return None

    return changed(summary_file(run_dir)), changed(metrics_file(run_dir))


def clear_record(run_dir: Path) -> None:
    """Remove the event files and best weights a run left without a checkpoint (killed before
    its first), before a run starts again in its dir (every other file it wrote is rewritten
    as it trains): a record that no checkpoint continues, which TensorBoard would show beside
    the new one."""
    for stale in [*Path(run_dir).glob(f"{EVENTS}.out.tfevents.*"), best_file(run_dir)]:
        stale.unlink(missing_ok=True)


def remove_untrained(run_dir: Path, here: Path) -> None:
    """Remove the dir this command made for a run that was refused before it trained, where
    it holds nothing but Hydra's record of the command and the refusal's summary, and the
    dirs above it that it leaves empty (outputs/<date>), up to `here`, the command's dir."""
    import shutil

    run_dir, here = Path(run_dir).resolve(), Path(here).resolve()
    if not {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log", SUMMARY}:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents:
        if here not in parent.parents:
            break
        try:
            parent.rmdir()  # (only if empty)
        except OSError:
            break


# --- the files of a run dir: named here alone, written here alone -----------------------------

SUMMARY = "summary.json"  # how the run ended: status, final and best metrics, ...
METRICS = "metrics.csv"  # a row per epoch
CHECKPOINT = "checkpoint.pt"  # the last state, which `resume=` continues
BEST = "best.pt"  # with early stopping, the best valid epoch's weights
PREDICTIONS = "predictions.npz"  # the valid outputs, for the bias-variance report
MODEL_TABLE = "model.txt"  # the layer table
EVENTS = "events"  # TensorBoard's event files: events.out.tfevents.*
HYDRA_RECORD = ".hydra"  # Hydra's record of the run: config.yaml, hydra.yaml, overrides.yaml
OVERRIDES = f"{HYDRA_RECORD}/overrides.yaml"  # the overrides that made the run


# metrics.csv column -> TensorBoard tag
TAGS = {
    "train_loss": "loss/train",
    "valid_loss": "loss/valid",
    "train_acc": "acc/train",
    "valid_acc": "acc/valid",
    "lr": "lr",
    "penalty": "loss/penalty",  # the reg.l1/reg.l2 term added to the training objective
}


def tag(column: str) -> str:
    """The TensorBoard tag of a metrics.csv column."""
    return TAGS.get(column, column.replace("_", "/", 1))


def summary_file(run_dir) -> Path:
    return Path(run_dir) / SUMMARY


def metrics_file(run_dir) -> Path:
    return Path(run_dir) / METRICS


def checkpoint_file(run_dir) -> Path:
    return Path(run_dir) / CHECKPOINT


def best_file(run_dir) -> Path:
    return Path(run_dir) / BEST


def predictions_file(run_dir) -> Path:
    return Path(run_dir) / PREDICTIONS


def overrides_file(run_dir) -> Path:
    return Path(run_dir) / OVERRIDES


def events_prefix(run_dir) -> str:
    """The prefix of the run's TensorBoard event files, which sit in the run dir itself, so
    that TensorBoard names the run by its folder."""
    return str(Path(run_dir) / EVENTS)


def figure_stem(run_dir, name: str) -> Path:
    """The live figure `name` of the run: `<name>.png` (the last) and `<name>.gif` (all)."""
    return Path(run_dir) / name


def write_summary(run_dir, summary: dict) -> None:
    """Write `summary` as the run's summary.json atomically: readers never see half a file."""
    text = json.dumps(_finite(summary), indent=2, default=str) + "\n"
    write_bytes(summary_file(run_dir), text.encode())


def write_model_table(run_dir, table: str) -> None:
    write_bytes(Path(run_dir) / MODEL_TABLE, (table + "\n").encode())


def write_checkpoint(run_dir, state: dict) -> None:
    """The run's checkpoint, atomically: a kill mid-write leaves the last one whole."""
    _save(checkpoint_file(run_dir), state)


def write_best(run_dir, state: dict) -> None:
    _save(best_file(run_dir), state)


def write_predictions(run_dir, arrays: dict) -> Path:
    import numpy as np

    path = predictions_file(run_dir)
    with atomic(path, ".tmp.npz") as tmp:  # (np.savez adds .npz to a name without it)
        np.savez(tmp, **arrays)
    return path


def check_record(run_dir, epoch: int) -> None:
    """Refuse, in one line, a record that a resume from `epoch` could not go on with: its
    metrics.csv (metrics_up_to) or its summary.json (seconds_spent)."""
    metrics_up_to(run_dir, epoch)
    seconds_spent(run_dir)


def metrics_up_to(run_dir, epoch: int) -> tuple[list[str] | None, list[list[str]]]:
    """metrics.csv's header (None where there is none: a bare checkpoint's dir) and its rows up
    to `epoch`, that of the checkpoint a resume goes on from, which they must reach (one of
    another run is refused) whole: any damage there is refused in one line naming the line.
    What comes after is trained again (rows a kill left past the checkpoint, one cut short)."""
    path = metrics_file(run_dir)
    if not path.exists():
        return None, []
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header, rows = next(reader, None), []
            if not header:
                return None, []
            if header[0] != "epoch":
                raise UserError(f"{path}: refused, its header starts with {header[0]!r}, not epoch")
            while not rows or int(rows[-1][0]) < epoch:
                row = next(reader, None)
                if row is None:
                    reached = rows[-1][0] if rows else 0
                    raise UserError(
                        f"{checkpoint_file(run_dir)}: refused, it is of epoch {epoch} and {path} "
                        f"reached epoch {reached}: not a checkpoint of this run"
                    )
                _check_row(f"{path} line {reader.line_num}", header, row, rows)
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: refused, not a record regexp wrote ({exc})") from None
    return header, rows


def _check_row(where: str, header: list[str], row: list[str], before: list[list[str]]) -> None:
    """Refuse a row of metrics.csv that is not one regexp wrote after the rows `before` it."""
    if len(row) != len(header):
        raise UserError(f"{where}: refused, {len(row)} cells; its header has {len(header)}")
    last = int(before[-1][0]) if before else 0
    if not (row[0].isdigit() and row[0].isascii()) or int(row[0]) <= last:
        raise UserError(f"{where}: refused, its epoch {row[0]!r} does not follow {last}")
    for name, cell in zip(header[1:], row[1:], strict=True):
        if cell and not _number(cell):
            raise UserError(f"{where}: refused, its {name} {cell[:40]!r} is not a number")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def seconds_spent(run_dir) -> float:
    """The seconds the run in `run_dir` trained before a resume (its summary.json's; none
    without one); a summary.json regexp did not write is refused."""
    path = summary_file(run_dir)
    if not path.exists():
        return 0.0
    try:
        summary = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: refused, not a summary regexp wrote ({exc})") from None
    seconds = summary.get("seconds") if isinstance(summary, dict) else None
    if not isinstance(summary, dict) or not isinstance(seconds, (int, float, type(None))):
        raise UserError(f"{path}: refused, not a summary regexp wrote (its seconds: {seconds!r})")
    return float(seconds or 0)


def open_metrics(run_dir, mode: str):
    """The run's metrics.csv, open to append to (`a`) or to start (`w`)."""
    return open(metrics_file(run_dir), mode, newline="")  # noqa: SIM115


def replace_metrics(run_dir, rows: list[list[str]]) -> None:
    """metrics.csv replaced at once by `rows` (a temp file, then a rename): a kill or a full
    disk mid-write leaves the old record whole."""
    with atomic(metrics_file(run_dir)) as tmp, open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def write_bytes(path: Path, data: bytes) -> None:
    """`data` into a file of a run dir (a figure's PNG or GIF, its JSON), atomically."""
    with atomic(path) as tmp:
        tmp.write_bytes(data)


def _save(path: Path, state: dict) -> None:
    import torch  # (where a run trains: torch is there already)

    with atomic(path) as tmp:
        torch.save(state, tmp)


def _finite(obj):
    """`obj` with NaN and infinities as null, which JSON can hold."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
