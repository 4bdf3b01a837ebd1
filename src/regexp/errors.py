"""The errors a user can fix, which the CLI reports in one line (exit code 2, no traceback),
the end of a run or sweep that did not complete, and a run stopped by a signal."""

from __future__ import annotations

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
