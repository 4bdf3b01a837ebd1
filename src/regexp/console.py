"""The console the commands print to."""

from __future__ import annotations


def console():
    """A terminal's own width, and wide tables when the output goes to a file or a CI log
    (rich would cut them to 80 columns)."""
    from rich.console import Console

    return Console() if Console().is_terminal else Console(width=160)
