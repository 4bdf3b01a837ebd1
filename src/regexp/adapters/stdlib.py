"""The Python standard library's private parts (checked by tests/test_adapters.py on the
Pythons pyproject.toml names): the exit handlers run on their own, and the processes of a
process pool."""

from __future__ import annotations

import atexit


def can_run_exit_handlers() -> bool:
    return hasattr(atexit, "_run_exitfuncs")


def run_exit_handlers() -> None:
    """Run what atexit holds now (logging's flush and close among them), as an exit would."""
    atexit._run_exitfuncs()  # noqa: SLF001


def pool_processes(pool) -> list:
    """The live worker processes of a concurrent.futures ProcessPoolExecutor (it lists them
    nowhere public)."""
    return list((pool._processes or {}).values())  # noqa: SLF001
