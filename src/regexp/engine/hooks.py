"""The hooks the training loop calls after each epoch, which a run chooses from its config: its
records (metrics.csv and TensorBoard), histograms, live figures, divergence, early stopping,
the learning-rate schedule, the progress of a population, and checkpoints. They run in the
order of the list the loop gets (`population` builds it): records first, then what ends
members, then what reads the epoch's outcome."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from regexp.engine import checkpoint
from regexp.engine.loop import Fit, Result
from regexp.engine.stopping import Stopper

# With no checkpoint_every, a checkpoint whenever this many seconds of training have passed:
# a hard kill loses at most that much, and a short run pays for one checkpoint, at its end.
CHECKPOINT_SECONDS = 60.0
# An epoch longer than this keeps each member's state at its end in memory, for a second
# signal that stops the next one at once (a copy costs a small part of such an epoch).
HOLD_SECONDS = 0.1


class Hook:
    """A hook that does nothing at some of the loop's calls."""

    def start(self, fit: Fit) -> None:
        pass

    def epoch_end(self, fit: Fit, epoch: int, metrics: list[dict]) -> None:
        pass

    def end(self, fit: Fit) -> None:
        pass

    def interrupted(self, fit: Fit) -> None:
        """The fit stops at once, in the middle of an epoch (a second SIGINT or SIGTERM)."""


class Records(Hook):
    """Each member's epoch into its own record (track.Tracker): TensorBoard, metrics.csv, its
    console line, its histograms and live figure."""

    def __init__(self, trackers: Sequence):
        self.trackers = trackers

    def epoch_end(self, fit: Fit, epoch: int, metrics: list[dict]) -> None:
        for i in fit.ran:
            if self.trackers[i] is not None:
                self.trackers[i].log_epoch(epoch, metrics[i])


class Every(Hook):
    """Something each member's record takes every `every` epochs, and a new run's at epoch 0."""

    def __init__(self, trackers: Sequence, every: int):
        self.trackers, self.every = trackers, every

    def take(self, tracker, model, epoch: int) -> None:
        raise NotImplementedError

    def start(self, fit: Fit) -> None:
        if fit.plan.start_epoch == 0:
            for tracker, model in zip(self.trackers, fit.stack.models, strict=True):
                if tracker is not None:
                    self.take(tracker, model, 0)

    def epoch_end(self, fit: Fit, epoch: int, metrics: list[dict]) -> None:
        if epoch % self.every == 0:
            for i in fit.ran:
                if self.trackers[i] is not None:
                    self.take(self.trackers[i], fit.stack.models[i], epoch)


class Histograms(Every):
    """Each member's weight and gradient histograms (log.hist_every) into its TensorBoard
    record; at epoch 0, the initial weights only."""

    def take(self, tracker, model, epoch: int) -> None:
        tracker.log_histograms(model, epoch, grads=epoch > 0)


class LiveFigures(Every):
    """Each member's live figure, its fit or decision boundary (log.figure_every), drawn in the
    drawing process into TensorBoard's Images and the run dir; the last comes as the record
    closes."""

    def take(self, tracker, model, epoch: int) -> None:
        tracker.draw(model, epoch)


class Divergence(Hook):
    """A member whose train or valid loss turns NaN or infinite ends there, with everything it
    logged kept; the others go on."""

    def epoch_end(self, fit: Fit, epoch: int, metrics: list[dict]) -> None:
        for i in fit.ran:
            bad = [
                key for key in ("train_loss", "valid_loss") if not math.isfinite(metrics[i][key])
            ]
            if bad:
                fit.end(
                    i,
                    Result(
                        "diverged", epoch, f"{bad[0]} became {metrics[i][bad[0]]} in epoch {epoch}"
                    ),
                )


class LRSchedule(Hook):
    """The learning-rate schedule (schedules.py), stepped once an epoch on the valid losses."""

    def __init__(self, schedule):
        self.schedule = schedule

    def start(self, fit: Fit) -> None:  # (the schedule's lr from the start: a lambda's at 0)
        fit.lrs = self.schedule.lrs()
        fit.update.set_lr(fit.lrs)

    def epoch_end(self, fit: Fit, epoch: int, metrics: list[dict]) -> None:
        self.schedule.step([m["valid_loss"] for m in metrics])
        lrs = self.schedule.lrs()
        if lrs != fit.lrs:  # (a constant lr is set once: the update derives from it)
            fit.update.set_lr(lrs)
            fit.lrs = lrs


class Checkpoints(Hook):
    """Each running member's checkpoint (checkpoint.py) every `every` epochs (None: every
    CHECKPOINT_SECONDS of training), at the last epoch, and when `stop()` turns true, which
    ends the fit after the epoch in progress: a checkpoint always holds whole epochs. A member's
    record is flushed before its checkpoint is written, so the record is never behind it. A fit
    stopped at once (a second signal) keeps the last completed epoch, where it was long: its
    state, held since that epoch ended, is written then."""

    def __init__(
        self, run_dirs, trackers, schedule=None, stoppers=(), every=None, stop=None, runs=()
    ):
        """`runs`: each member's run identity (config.identity), which its checkpoint carries."""
        self.run_dirs, self.trackers, self.schedule = run_dirs, trackers, schedule
        self.runs = list(runs) or [""] * len(run_dirs)
        self.stoppers = list(stoppers) or [None] * len(run_dirs)
        self.every, self.stop = every, stop
        self.last_save = self.last_epoch = time.monotonic()
        self.held: dict[int, dict] = {}  # member -> its state at the last epoch's end

    def state(self, fit: Fit, i: int, epoch: int) -> dict:
        generator = fit.plan.generators[i] if fit.plan.generators else None
        return checkpoint.state_of(
            fit, i, epoch, self.schedule, generator, self.stoppers[i], self.runs[i]
        )

    def save(self, fit: Fit, i: int, epoch: int, state: dict | None = None) -> None:
        if self.run_dirs[i] is None:
            return
        if self.trackers[i] is not None:
            self.trackers[i].flush()
        state = state or self.state(fit, i, epoch)
        checkpoint.store(self.run_dirs[i], state, self.stoppers[i])

    def interrupted(self, fit: Fit) -> None:
        for i, state in self.held.items():
            self.save(fit, i, state["epoch"], state)

    def epoch_end(self, fit: Fit, epoch: int, metrics: list[dict]) -> None:
        running = fit.running()
        now, took = time.monotonic(), time.monotonic() - self.last_epoch
        self.last_epoch, self.held = now, {}
        if took > HOLD_SECONDS:
            self.held = {i: self.state(fit, i, epoch) for i in running if self.run_dirs[i]}
        if not running:
            return
        if self.stop is not None and self.stop():
            for i in running:
                self.save(fit, i, epoch)
                fit.results[i] = Result("interrupted", epoch)
            fit.interrupted = True
        elif epoch == fit.plan.epochs or (
            epoch % self.every == 0
            if self.every
            else time.monotonic() - self.last_save >= CHECKPOINT_SECONDS
        ):
            for i in running:
                self.save(fit, i, epoch, self.held.get(i))
            self.last_save = time.monotonic()


class EarlyStopping(Hook):
    """Each member's early stopping (stopping.Stopper): a member that stops is frozen, as a
    diverged one is, completed at that epoch, and checkpointed with its best weights (best.pt);
    at the end it holds them, as it does when it trains to the last epoch."""

    def __init__(self, stoppers: Sequence[Stopper | None], checkpoints: Checkpoints | None):
        self.stoppers, self.checkpoints = stoppers, checkpoints
        self.held: dict[int, dict] = {}  # a stopped member's state, which training leaves

    def epoch_end(self, fit: Fit, epoch: int, metrics: list[dict]) -> None:
        for i in fit.ran:
            stopper = self.stoppers[i]
            if stopper is None or fit.results[i] is not None:
                continue
            model = fit.stack.models[i]
            if stopper.step(epoch, metrics[i]["valid_loss"], model):
                fit.end(i, Result("completed", epoch, stopped=True))
                if self.checkpoints is not None:
                    self.checkpoints.save(fit, i, epoch)
                # (Its batch norm's running statistics would go on moving with the others.)
                self.held[i] = {key: v.clone() for key, v in model.state_dict().items()}

    def end(self, fit: Fit) -> None:
        for i, stopper in enumerate(self.stoppers):
            model = fit.stack.models[i]
            if i in self.held:
                with torch.no_grad():
                    model.load_state_dict(self.held[i])
            if stopper is not None and (i in self.held or fit.results[i] is None):
                stopper.restore(model)  # (not an interrupted run's: it goes on)


class Progress(Hook):
    """`progress(epoch, valid_losses, running)` hears of each epoch of the whole population (a
    member that ended before the epoch shows NaN: its loss, which moves with its batch norm's
    running statistics, is no record's)."""

    def __init__(self, progress: Callable[[int, list[float], int], None]):
        self.progress = progress

    def epoch_end(self, fit: Fit, epoch: int, metrics: list[dict]) -> None:
        logged = [r is None or r.epoch == epoch for r in fit.results]
        shown = [m["valid_loss"] if ok else math.nan for m, ok in zip(metrics, logged, strict=True)]
        self.progress(epoch, shown, len(fit.running()))
