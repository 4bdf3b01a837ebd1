"""Reading a run dir's files back (`regexp report`): each file read here alone,
by its name in rundir.py, and each checked for what regexp writes there. A file that is not
(cut short, replaced, someone else's) raises Damaged, which names it and says what is wrong:
the report names the run in one line and goes on with the others."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
import stat
from contextlib import contextmanager
from pathlib import Path

from regexp.run.rundir import (
    METRICS,
    OVERRIDES,
    PREDICTIONS,
    SUMMARY,
    metrics_file,
    overrides_file,
    predictions_file,
    summary_file,
)


class Damaged(ValueError):
    """A file of a run dir that does not hold what regexp writes there (cut short, replaced,
    or someone else's): `file` its name in the run dir, `why` what is wrong with it."""

    def __init__(self, file: str, why: str):
        self.file, self.why = file, why
        super().__init__(f"{file}: {why}")


@contextmanager
def reading(file: str):
    """Whatever goes wrong reading `file` of a run dir, raised as Damaged, naming it."""
    import lzma
    import zipfile
    import zlib

    from regexp.errors import first_line

    try:
        yield
    except Damaged:
        raise
    except OSError as exc:  # (a symlink loop, no permission, ...)
        raise Damaged(file, exc.strerror or first_line(exc)) from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        raise Damaged(file, f"not text (byte 0x{byte} at {exc.start} is not UTF-8)") from None
    except RecursionError:  # (JSON or YAML nested deeper than Python's stack)
        raise Damaged(file, "nested too deeply") from None
    # (an archive's: one zipfile cannot read, NotImplementedError, encrypted, RuntimeError)
    except (ValueError, csv.Error, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError,
            NotImplementedError, RuntimeError) as exc:  # fmt: skip
        raise Damaged(file, first_line(exc)) from None


# The most bytes a summary.json or an overrides.yaml of regexp's holds, by far: read whole.
SMALL = 2**20


def _there(path: Path, file: str, most: int | None = None) -> bool:
    """Whether the run dir has its `file` at `path` (False: not yet). Damaged where it is not a
    regular file (a dir; a pipe or a device, whose reading would block or never end), or is
    more than `most` bytes."""
    try:
        status = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise Damaged(file, "a symlink to nothing") from None
        return False
    if stat.S_ISDIR(status.st_mode):
        raise Damaged(file, "a directory, not a file")
    if not stat.S_ISREG(status.st_mode):
        raise Damaged(file, "not a regular file (a pipe, a socket or a device)")
    if most is not None and status.st_size > most:
        raise Damaged(file, f"{status.st_size:,} bytes, more than any {file} regexp writes")
    return True


def read_summary(run_dir) -> dict:
    """The run's summary.json, each field the report reads of its type; {} where there is none
    (a run that has not ended). Damaged where it is not a summary."""
    path = summary_file(run_dir)
    with reading(SUMMARY):
        if not _there(path, SUMMARY, SMALL):
            return {}
        data = path.read_bytes()
        if not data.strip():
            raise Damaged(SUMMARY, "empty")
        summary = json.loads(data)
    if not isinstance(summary, dict):
        raise Damaged(SUMMARY, f"a JSON {_json_type(summary)}, not an object")
    for key, allowed, is_of_type in SUMMARY_FIELDS:
        if key in summary and not is_of_type(summary[key]):
            raise Damaged(SUMMARY, f"{key} is {_shown(summary[key])}, not {allowed}")
    return summary


def _number(value) -> bool:
    """Whether `value` is a number a float holds (JSON's integers may be longer)."""
    return isinstance(value, float) or (
        isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**1000
    )


SUMMARY_FIELDS = [  # (key, what it must be, the check): those that readers of a summary use
    ("status", "a string", lambda v: isinstance(v, str)),
    ("epochs", "a count of epochs", lambda v: type(v) is int and 0 <= v < 2**31),
    ("final", "a table of numbers", lambda v: _table_of_numbers(v)),
    ("best", "a table of numbers", lambda v: _table_of_numbers(v)),
    ("weight_norm", "a number", lambda v: v is None or _number(v)),
    ("params", "a count of parameters", lambda v: type(v) is int and v >= 0),
    ("overrides", "a list of strings", lambda v: _strings(v)),
]


def _table_of_numbers(value) -> bool:
    return isinstance(value, dict) and all(v is None or _number(v) for v in value.values())


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _json_type(value) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _shown(value) -> str:
    """`value` in a message: as JSON, cut short."""
    text = json.dumps(_pruned(value), default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _pruned(value, depth: int = 3):
    """`value` cut to a few items a level, a few levels deep: YAML's aliases can make a small
    file a structure too large to write out whole."""
    if isinstance(value, (list, dict)) and not depth:
        return "..."
    if isinstance(value, list):
        return [_pruned(v, depth - 1) for v in value[:5]]
    if isinstance(value, dict):
        return {str(k): _pruned(v, depth - 1) for k, v in itertools.islice(value.items(), 5)}
    return value


def read_metrics(run_dir) -> dict[str, list[float]]:
    """The run's metrics.csv by column, aligned by row (NaN where a cell is empty); {} where
    there is none. Damaged where a cell is not a number, or a row has no epoch or one that is
    not a whole number."""
    path = metrics_file(run_dir)
    curves: dict[str, list[float]] = {}
    with reading(METRICS):
        if not _there(path, METRICS):
            return {}
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.DictReader(f)
            try:
                for row in rows:
                    for key, text in row.items():
                        if key:  # (cells past the header's: under None)
                            value = _cell(text, key, rows.line_num)
                            curves.setdefault(key, []).append(value)
            except csv.Error as exc:  # (raised before the reader counts the line it is on)
                raise Damaged(METRICS, f"line {rows.line_num + 1}: {exc}") from None
            header = rows.fieldnames  # (None in an empty file)
    if header and "epoch" not in header:
        raise Damaged(METRICS, f"no epoch column (its header: {_shown(','.join(header))})")
    return curves


def _cell(text: str | None, key: str, line: int) -> float:
    if not text and key == "epoch":
        raise Damaged(METRICS, f"line {line}: no epoch")
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise Damaged(METRICS, f"line {line}: {key} is {_shown(text)}, not a number") from None
    if key == "epoch" and not (value.is_integer() and 0 <= value < 2**31):
        raise Damaged(METRICS, f"line {line}: epoch is {text[:20]}, not an epoch's number")
    return value


def read_overrides(run_dir) -> list[str]:
    """Hydra's record of the run's overrides (a YAML list of strings); [] where there is none.
    Damaged where it is not such a list."""
    import yaml

    path = overrides_file(run_dir)
    with reading(OVERRIDES):
        if not _there(path, OVERRIDES, SMALL):
            return []
        text = path.read_bytes().decode()
    try:
        overrides = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise Damaged(OVERRIDES, f"not YAML ({getattr(exc, 'problem', exc)}{at})") from None
    except RecursionError:
        raise Damaged(OVERRIDES, "nested too deeply") from None
    if not _strings(overrides):  # (Hydra writes [] where there are none)
        what = "empty" if overrides is None else _shown(overrides)
        raise Damaged(OVERRIDES, f"{what}, not a list of overrides (strings)")
    for override in overrides:
        if not OVERRIDE.fullmatch(override):
            raise Damaged(OVERRIDES, f"{_shown(override)} is not an override (KEY=VALUE, ~KEY)")
    return overrides


# What Hydra records of an override: KEY=VALUE, +KEY=VALUE, ++KEY=VALUE, ~KEY, ~KEY=VALUE.
OVERRIDE = re.compile(r"(\+\+|\+)?[\w/@.\-]+=.*|~[\w/@.\-]+(=.*)?", re.DOTALL)


def read_arrays(run_dir) -> dict | None:
    """The arrays of the run's predictions.npz by name; None where there is none. Each array's
    header is checked against the bytes the file holds before any is loaded: a header that
    claims more values than are there is Damaged, not a memory error."""
    import numpy as np

    path = predictions_file(run_dir)
    with reading(PREDICTIONS):
        if not _there(path, PREDICTIONS):
            return None
        arrays = {}
        with open(path, "rb") as f, _npz(f) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                with archive.open(info) as member:
                    _check_header(member, info, name)
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def _npz(f):
    import zipfile

    if not zipfile.is_zipfile(f):
        raise Damaged(PREDICTIONS, "not an .npz archive (numpy's zip of arrays)")
    return zipfile.ZipFile(f)


# Deflate cannot expand data more than about 1032 times: a member that claims more is a lie.
DEFLATE_MOST = 1032


def _check_header(member, info, name: str) -> None:
    """The .npy header of the archive's member `info` against the bytes it holds."""
    import numpy as np

    fmt = np.lib.format
    version = fmt.read_magic(member)
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, dtype = read_header(member)
    values = math.prod(shape)
    holds = info.file_size - member.tell()
    if values * dtype.itemsize != holds or info.file_size > DEFLATE_MOST * info.compress_size + 64:
        raise Damaged(
            PREDICTIONS,
            f"{name}'s header claims {values:,} values of {dtype} (shape {shape}), "
            f"the file holds {max(holds, 0):,} bytes of them",
        )
