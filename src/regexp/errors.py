"""The errors a user can fix, which the CLI reports in one line (exit code 2, no traceback),
the end of a run or sweep that did not complete, and a run stopped by a signal."""

from __future__ import annotations

import difflib
import errno
import re
import signal
from pathlib import Path
from typing import Any


class UserError(Exception):
    """Something the user can fix: reported by the CLI in one line, exit code 2, no traceback."""


class ConfigError(UserError):
    """A config value that is not allowed: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={show(value)} is not allowed: {allowed}")

    def __reduce__(self):  # as it comes back from a launcher's worker process
        return type(self), (self.key, self.value, self.allowed)


class Ended(BaseException):  # noqa: N818 (not an error: how a run ended)
    """A run or sweep that did not complete, raised once its jobs are done: the CLI exits 2
    with the `error` in one line (a user's mistake), or 1 (what happened is logged already).

    A BaseException, as KeyboardInterrupt is: it is raised from a Hydra callback, and Hydra
    turns an Exception raised there into a warning."""

    def __init__(self, why: str, error: UserError | None = None):
        super().__init__(why)
        self.error = error


def first_line(exc: BaseException, most: int = 200) -> str:
    """The first line of `exc`'s message (at most `most` characters), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:most] if text else type(exc).__name__


def show(value: Any) -> str:
    """A value as an override would write it: lists as [a,b], None as null."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return "null" if value is None else str(value)


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM; the process exits with 128 + the signal number."""

    def __init__(self, signum: int, run_dir: Path | None = None, epoch: int | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.run_dir, self.epoch = signum, run_dir, epoch

    def __reduce__(self):  # as it comes back from a launcher's worker process
        return type(self), (self.signum, self.run_dir, self.epoch)


def user_error(exc: BaseException) -> str | None:
    """One line that says what the user got wrong, or None when `exc` is a bug."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc.__cause__, UserError):  # (Hydra's instantiate wraps a launcher's refusal)
        return str(exc.__cause__)
    unwritable = unwritable_path(exc)
    if unwritable is not None:
        return unwritable
    if isinstance(exc, ValueError) and str(exc).startswith(
        ("Only one of --run, --multirun", "Config group override must be")
    ):
        return str(exc)  # Hydra's usage errors (`hydra/launcher=null`: a group needs an option)
    if isinstance(exc, (RuntimeError, ImportError)) and str(exc).startswith(
        ("Invalid plugin", "Unknown plugin class", "Could not instantiate plugin")
    ):  # (hydra.launcher._target_=os.system: Hydra instantiates its plugins' classes alone)
        return (
            f"{first_line(exc)}: a launcher's or sweeper's _target_ must be the class of a Hydra "
            "plugin; pick one with hydra/launcher=NAME or hydra/sweeper=NAME"
        )
    if isinstance(exc, MissingConfigException) and exc.options:
        group, _, name = (exc.missing_cfg_file or "").rpartition("/")
        return no_such_option(group, name, exc.options)
    if isinstance(exc, OverrideParseException):
        reason = exc.message.split(" See https://")[0].splitlines()[0]
        return (
            f"{exc.override}: not an override Hydra can parse ({reason}; KEY=VALUE, lists as [a,b])"
        )
    if not isinstance(exc, (HydraException, OmegaConfBaseException)):
        return None
    # Hydra wraps OmegaConf's error, which names the key; prefer that one.
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return _omegaconf_error(cause)
    return _first_lines(str(exc))


def no_such_option(group: str, name: str, options) -> str:
    """The line that says `name` is none of a config group's `options`, with the closest."""
    close = difflib.get_close_matches(name, options, n=1)
    hint = f"; did you mean {group}={close[0]}?" if close else ""
    return f"{group}={name}: no such option (options: {', '.join(options)}){hint}"


# What stops a write that the user can fix: a dir that cannot be made or written (a path
# under /proc or under a file, a read-only filesystem, no permission), a full disk or quota.
UNWRITABLE = {
    *(errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS),
    *(errno.ENOSPC, errno.EDQUOT),
}


def unwritable_path(exc: BaseException) -> str | None:
    """One line for an error writing a file or dir, anywhere in `exc`'s chain; None if none."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in UNWRITABLE and exc.filename:
            return f"cannot use {exc.filename}: {exc.strerror}"
        exc = exc.__cause__ or exc.__context__
    return None


def _omegaconf_error(exc) -> str:
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    key = exc.full_key
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError)):
        return no_such_key(key, exc.object_type)
    message = str(exc).splitlines()[0]
    value = getattr(exc, "value", None)
    return f"{key}={value}: {message}" if value is not None else f"{key}: {message}"


def no_such_key(key: str, schema) -> str:
    """`key` (a dotted path) is none of `schema`'s fields: the line that says so, with the
    closest known name."""
    known = _fields(schema)
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, known, n=1)
    prefix = f"{parent}." if parent else ""
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    where = f"'{parent}'" if parent else "the config"
    return f"{key}: no such key in {where}{hint} (keys: {', '.join(known)})"


def _fields(cls) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def _first_lines(text: str) -> str:
    """Hydra's multi-line messages, folded to one line without the search-path dump."""
    text = text.split("\nConfig search path:")[0]
    text = re.sub(r"\s*\n\s*", " ", text.strip())
    return text
