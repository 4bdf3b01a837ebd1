"""The console the commands print to, a run's log file, and the progress of populations
training (no torch here: a sweep's launcher shows it while workers train)."""

from __future__ import annotations

import logging
import math
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger("regexp")


def console():
    """A terminal's own width, and wide tables when the output goes to a file or a CI log
    (rich would cut them to 80 columns)."""
    return Console() if Console().is_terminal else Console(width=160)


class LogFile(logging.FileHandler):
    """A run's log file (train.log), whose lines are a courtesy: one that cannot be written (a
    full disk) is said once, in one line, and the run goes on (logging would print a
    traceback for each); what the run records says so itself if the disk stays full. A line
    logged with `extra={"run_log": False}` stays out of it: why a resumed sweep refused the job
    (its dir is left as it was)."""

    said = False

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "run_log", True):
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        import sys

        if not self.said:
            self.said = True
            print(
                f"{self.baseFilename}: a log line was lost ({sys.exc_info()[1]})", file=sys.stderr
            )


def epochs_bar(console: Console) -> Progress:
    """A bar of epochs with the losses beside it, for a run or a population."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeRemainingColumn(),
        console=console,
    )


class PopulationProgress:
    """The epochs of one or more populations, a line each: a progress bar on a terminal, else
    a log line every tenth of the run (each member's own record goes to its dir).

    `populations` holds each one's (members, epochs, start epoch);
    `progress(epoch, valid_losses, running, which)` hears of an epoch of population `which`."""

    def __init__(self, populations: list[tuple[int, int, int]], console: Console | None = None):
        self.sizes = [k for k, _, _ in populations]
        self.epochs = [epochs for _, epochs, _ in populations]
        self.console = console or Console()
        self._last = [0.0] * len(populations)
        self._best = [math.inf] * len(populations)
        sizes = self.sizes
        self._progress = None
        self._names = [
            f"population of {k}" if len(sizes) == 1 else f"population {i + 1}/{len(sizes)} of {k}"
            for i, k in enumerate(sizes)
        ]
        if self.console.is_terminal:
            self._progress = epochs_bar(self.console)
            self._tasks = [
                self._progress.add_task(name, total=epochs, completed=start, losses="")
                for name, (_, epochs, start) in zip(self._names, populations, strict=True)
            ]
            self._progress.start()

    def __call__(self, epoch: int, valid_losses: list[float], running: int, which: int = 0):
        # The lowest valid loss any member has had so far (an epoch's lowest would rise and
        # fall with the members' curves).
        self._best[which] = min([self._best[which], *filter(math.isfinite, valid_losses)])
        best = self._best[which]
        text = f"{running} of {self.sizes[which]} training"
        text += f"  best valid so far {best:.4g}" if math.isfinite(best) else ""
        epochs = self.epochs[which]
        if self._progress is not None:
            now = time.perf_counter()
            if now - self._last[which] > 0.1 or epoch == epochs:
                self._last[which] = now
                self._progress.update(self._tasks[which], completed=epoch, losses=text)
        elif epoch % max(1, epochs // 10) == 0 or epoch == epochs:
            log.info("%s: epoch %d/%d  %s", self._names[which], epoch, epochs, text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
