"""The training loop of a population: train an epoch, evaluate, log, stop each member on
divergence, checkpoint.

The unit is a population of K >= 1 members (population.Stack): one run is a population of
one, through the same code. It takes plain objects (the stack, its optimizer update, tensors,
one tracker per member) and knows nothing of Hydra or the command line. The data stays on the
device; each epoch gathers each member's training set once in the order of its own seeded
permutation, and a batch is a slice of that (a large set is gathered batch by batch). The
losses stay on the device and are read once per epoch, for every member at once, so nothing
forces a device-to-host sync every step. Each member's outputs on its valid set are kept on
the device, those of its last epoch and of its best valid epoch (decided when the epoch's
losses are read), and come back to the host once, at the end, in its Result.

Why it is long: the loop and what only it uses (an epoch's batches, the members' losses and
scores, gradient clipping, evaluation, the outputs kept, checkpoints) are read together, top
to bottom; the rules of early stopping live apart, in stopping.py.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from regexp.data import Dataset
from regexp.errors import UserError, first_line
from regexp.optim import Penalty, Update
from regexp.rundir import atomic
from regexp.stack import Stack, WeightStats
from regexp.stopping import Stopper

EVAL_CHUNK = 8192  # examples per forward pass in evaluation, to bound memory
# With no checkpoint_every, a checkpoint whenever this many seconds of training have passed:
# a hard kill loses at most that much, and a short run pays for one checkpoint, at its end.
CHECKPOINT_SECONDS = 60.0
# A training set up to this size is gathered in its shuffled order once per epoch (a copy);
# a larger one (MNIST's 188 MB, CIFAR-10's 614 MB) batch by batch, to keep one copy only.
GATHER_ONCE_BYTES = 64 * 2**20
# Weight statistics by default about this many times a run: each costs a few tenths of a
# lesson-24 epoch, so every epoch would slow that run down by a quarter.
WEIGHT_STATS_POINTS = 50


class Tracker(Protocol):
    def log_epoch(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None: ...

    def flush(self) -> None: ...


@dataclass
class Result:
    status: str  # "completed", "diverged" or "interrupted"
    epoch: int  # the last epoch that ran
    error: str | None = None
    stopped: bool = False  # completed by early stopping, at `epoch`
    # The member's outputs on its valid set (n_valid, outputs), on the CPU, in eval mode: at
    # its last epoch, and at its best valid epoch of this fit (None where no epoch of it beat
    # the `best_valid` it started from).
    last: torch.Tensor | None = None
    best: torch.Tensor | None = None
    best_epoch: int | None = None


@dataclass
class Data:
    """A population's data: each member's tensors stacked (K, n, ...), or where every member
    has the same set, that one set (n, ...) with `shared` true."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    task: str
    shared_train: bool
    shared_valid: bool

    @property
    def n(self) -> int:
        return self.x_train.shape[0 if self.shared_train else 1]

    @property
    def n_valid(self) -> int:
        return self.x_valid.shape[0 if self.shared_valid else 1]


def stack_data(datasets: Sequence[Dataset]) -> Data:
    """The members' datasets as one Data; a set every member has is kept once."""

    def same(a: str, b: str) -> bool:
        first = datasets[0]
        return all(
            d is first
            or (torch.equal(getattr(d, a), getattr(first, a)))
            and torch.equal(getattr(d, b), getattr(first, b))
            for d in datasets
        )

    def pick(key: str, shared: bool) -> torch.Tensor:
        if shared:
            return getattr(datasets[0], key)
        return torch.stack([getattr(d, key) for d in datasets])

    shared_train, shared_valid = same("x_train", "y_train"), same("x_valid", "y_valid")
    return Data(
        pick("x_train", shared_train),
        pick("y_train", shared_train),
        pick("x_valid", shared_valid),
        pick("y_valid", shared_valid),
        datasets[0].task,
        shared_train,
        shared_valid,
    )


def fit(
    stack: Stack,
    update: Update,
    loss_fn: nn.Module,
    data: Data,
    *,
    epochs: int,
    batch_size: int | None = None,
    schedule=None,
    trackers: Sequence[Tracker | None] = (),
    generators: Sequence[torch.Generator] = (),
    start_epoch: int = 0,
    checkpoints: Sequence[Path | None] = (),
    checkpoint_every: int | None = None,
    stop: Callable[[], bool] | None = None,
    penalty: Penalty | None = None,
    clip_grad_norm: float | None = None,
    weight_stats_every: int | None = None,
    lrs: Sequence[float] = (),
    progress: Callable[[int, list[float], int], None] | None = None,
    stoppers: Sequence[Stopper | None] = (),
    best_valid: Sequence[float] = (),
) -> list[Result]:
    """Train every member from `start_epoch` + 1 to `epochs`; member i's metrics go to
    `trackers[i]`, its batch order comes from `generators[i]`, its state is saved to
    `checkpoints[i]`. Returns each member's Result.

    `penalty` is added to each step's objective (the logged train loss stays the data loss);
    each member's gradients are clipped to a total norm of `clip_grad_norm`; the weight
    statistics are taken every `weight_stats_every` epochs (None: WEIGHT_STATS_POINTS times a
    run; 0: never) and in the first and last. A member whose loss turns NaN or infinite stops
    at that epoch, with everything it logged kept, and the others go on. The state is saved
    every `checkpoint_every` epochs (or every CHECKPOINT_SECONDS), at the end and when
    `stop()` turns true, which ends the run after the epoch in progress, so that a checkpoint
    always holds whole epochs. `lrs` are the members' learning rates as configured, which
    `schedule` changes each epoch (the logged lr is the Python float torch would show).
    `progress(epoch, valid_losses, running)` hears of each epoch of the whole population.
    Each Result holds the member's valid outputs at its last epoch and at the epoch whose valid
    loss is lowest, as the tracker's best epoch (a resumed run starts from its `best_valid`).

    `stoppers[i]` stops member i early (stopping.Stopper): it is frozen then, as a diverged
    member is, completed at that epoch; its best weights are written as best.pt beside its
    checkpoint, and it ends holding them with `restore_best`, as it does when it trains to
    the last epoch.
    """
    k = stack.k
    trackers = list(trackers) or [None] * k
    checkpoints = list(checkpoints) or [None] * k
    generators = list(generators) or [None] * k
    stoppers = list(stoppers) or [None] * k
    results: list[Result | None] = [None] * k
    active = [True] * k  # (a Python list: the update reads it without a device sync)
    held: list[dict | None] = [None] * k  # a stopped member's state, which training leaves

    def save(i: int, epoch: int) -> None:
        if checkpoints[i] is not None:
            if trackers[i] is not None:  # the record on disk first: never behind a checkpoint
                trackers[i].flush()
            save_checkpoint(
                checkpoints[i], epoch, stack, i, update, schedule, generators[i], stoppers[i]
            )

    last_save = time.monotonic()
    classify = data.task == "classification"
    n, n_valid = data.n, data.n_valid
    size = n if batch_size is None else min(batch_size, n)
    every = weight_stats_every
    if every is None:
        every = max(1, epochs // WEIGHT_STATS_POINTS)
    stats = WeightStats(stack) if every else None
    lrs = schedule.lrs() if schedule is not None else list(lrs) or update.lr.view(-1).tolist()
    if schedule is not None:  # (the schedule's lr from the start: a lambda's factor at 0)
        update.set_lr(lrs)
    outputs = Outputs(k, best_valid)
    for epoch in range(start_epoch + 1, epochs + 1):
        train_stats, penalty_mean = _train_epoch(
            stack,
            update,
            loss_fn,
            data,
            size,
            generators,
            classify,
            penalty,
            clip_grad_norm,
            active,
        )
        valid_stats, valid_out = evaluate(stack, loss_fn, data, classify, keep=True)
        columns = [*train_stats, *valid_stats]
        if penalty_mean is not None:
            columns.append(penalty_mean)
        weight_stats = bool(stats) and (epoch % every == 0 or epoch in (1, epochs))
        if weight_stats:
            columns += list(stats())
        # The device-to-host read of the epoch: a handful of numbers per member, once.
        values = torch.stack([c.float() for c in columns], 1).tolist()
        running = [i for i in range(k) if results[i] is None]
        valid_losses = []
        for i in range(k):
            row = values[i]
            if classify:
                metrics = {
                    "train_loss": row[0],
                    "valid_loss": row[2],
                    "train_acc": row[1] / n,
                    "valid_acc": row[3] / n_valid,
                }
                rest = row[4:]
            else:
                metrics = {"train_loss": row[0], "valid_loss": row[1]}
                rest = row[2:]
            metrics["lr"] = lrs[i]
            if penalty_mean is not None:
                if penalty.on[i]:  # (a member without one logs none, as alone)
                    metrics["penalty"] = rest[0]
                rest = rest[1:]
            if weight_stats:
                metrics.update(stats.read(rest))
            valid_losses.append(metrics["valid_loss"])
            if i not in running:
                continue
            outputs.seen(i, epoch, valid_out, metrics["valid_loss"])
            if trackers[i] is not None:
                trackers[i].log_epoch(epoch, metrics, stack.models[i])
            bad = [key for key in ("train_loss", "valid_loss") if not math.isfinite(metrics[key])]
            if bad:
                error = f"{bad[0]} became {metrics[bad[0]]} in epoch {epoch}"
                results[i] = Result("diverged", epoch, error)
                active[i] = False
                outputs.stopped(i, valid_out)
            elif stoppers[i] is not None and stoppers[i].step(
                epoch, metrics["valid_loss"], stack.models[i]
            ):
                results[i] = Result("completed", epoch, stopped=True)
                active[i] = False
                outputs.stopped(i, valid_out)
                save(i, epoch)
                # (Its batch norm's running statistics would go on moving with the others.)
                held[i] = {key: v.clone() for key, v in stack.models[i].state_dict().items()}
        outputs.last = valid_out
        if schedule is not None:
            schedule.step(valid_losses)
            new_lrs = schedule.lrs()
            if new_lrs != lrs:  # (a constant lr is set once: the update derives from it)
                update.set_lr(new_lrs)
                lrs = new_lrs
        running = [i for i in range(k) if results[i] is None]
        if progress is not None:  # (a stopped member's loss, which moves with its batch
            # norm's running statistics, is no record's: it does not count)
            logged = [r is None or r.epoch == epoch for r in results]
            shown = [v if ok else math.nan for v, ok in zip(valid_losses, logged, strict=True)]
            progress(epoch, shown, len(running))
        if not running:
            break
        if stop is not None and stop():
            for i in running:
                save(i, epoch)
                results[i] = Result("interrupted", epoch)
            break
        if epoch == epochs or (
            epoch % checkpoint_every == 0
            if checkpoint_every
            else time.monotonic() - last_save >= CHECKPOINT_SECONDS
        ):
            for i in running:
                save(i, epoch)
            last_save = time.monotonic()
    if outputs.last is None:  # a resumed run with no epoch left: it only ends its record
        outputs.last = evaluate(stack, loss_fn, data, classify, keep=True)[1]
    for i, stopper in enumerate(stoppers):
        if held[i] is not None:
            with torch.no_grad():
                stack.models[i].load_state_dict(held[i])
        if stopper is not None and (held[i] is not None or results[i] is None):
            stopper.restore(stack.models[i])  # (not an interrupted run's: it goes on)
    results = [r or Result("completed", epochs) for r in results]
    for i, result in enumerate(results):
        result.last, result.best, result.best_epoch = outputs.of(i)
    return results


class Outputs:
    """The members' valid outputs worth keeping, on the device: each epoch's evaluation is kept
    by reference as the last; a member's row is copied (on the device, no sync) into the best
    when its valid loss, read on the host with the epoch's other numbers, improves."""

    def __init__(self, k: int, best_valid: Sequence[float] = ()):
        self.best_loss = list(best_valid) or [math.inf] * k
        self.best_epoch: list[int | None] = [None] * k
        self.last: torch.Tensor | None = None  # (K, n_valid, outputs)
        self.best: torch.Tensor | None = None
        self.frozen: dict[int, torch.Tensor] = {}  # a stopped member's last outputs

    def seen(self, i: int, epoch: int, out: torch.Tensor, valid_loss: float) -> None:
        if not valid_loss < self.best_loss[i]:  # (as the tracker's best: NaN never improves)
            return
        self.best_loss[i], self.best_epoch[i] = valid_loss, epoch
        if self.best is None:
            self.best = out.clone()
        else:
            self.best[i].copy_(out[i])

    def stopped(self, i: int, out: torch.Tensor) -> None:
        self.frozen[i] = out[i]

    def of(self, i: int) -> tuple[torch.Tensor | None, torch.Tensor | None, int | None]:
        last = self.frozen.get(i, None if self.last is None else self.last[i])
        best = None if self.best_epoch[i] is None else self.best[i]
        return (
            None if last is None else last.float().cpu(),
            None if best is None else best.float().cpu(),
            self.best_epoch[i],
        )


def _train_epoch(stack, update, loss_fn, data, size, generators, classify, penalty, clip, active):
    """One pass over each member's training set in batches of `size`: each member's mean loss
    per example and, when classifying, its count of correct predictions as it trained, as
    device tensors (K,); and each member's mean penalty, or None without one."""
    x, y, shared = data.x_train, data.y_train, data.shared_train
    n = data.n
    order = None
    if size < n:
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(x.device)
        whole = x.element_size() * x.numel() * (stack.k if shared else 1)
        if whole <= GATHER_ONCE_BYTES:
            # One gather per epoch, then contiguous slices: cheaper than a gather per step.
            x, y, order = gather(x, shared, order), gather(y, shared, order), None
            shared = False
    losses, outputs, terms = [], [], []
    for start in range(0, n, size):
        if order is not None:  # a large set: a gather per step, no second copy of it
            idx = order[:, start : start + size]
            xb, yb, batch_shared = gather(x, shared, idx), gather(y, shared, idx), False
        elif size == n:
            xb, yb, batch_shared = x, y, shared
        else:
            xb, yb = x[:, start : start + size], y[:, start : start + size]
            batch_shared = False
        stack.zero_grad()
        out = stack.forward(xb, training=True, shared=batch_shared)
        loss = member_losses(loss_fn, out, yb, batch_shared)
        loss.sum().backward()  # each member's gradient is that of its own loss
        if penalty is not None:
            with torch.no_grad():
                terms.append(penalty.value(stack.flat))
                penalty.add_grad(stack.flat, stack.grad)
        if clip is not None:
            clip_grad_norms(stack.grad, clip)
        update.step(stack.flat, stack.grad, active)
        losses.append(loss.detach())
        if classify:
            outputs.append(out.detach())  # scored once per epoch, not per step
    loss = example_mean(losses, n, size)
    term = (terms[0] if len(terms) == 1 else by_member(terms).mean(1)) if terms else None
    if not classify:
        return [loss], term
    if order is not None:  # the labels in the order the outputs came
        y, shared = gather(y, shared, order), False
    return [loss, correct(torch.cat(outputs, 1), y, shared)], term


def gather(t: torch.Tensor, shared: bool, idx: torch.Tensor) -> torch.Tensor:
    """Each member's examples at its indices `idx` (K, m): (K, m, ...)."""
    if shared:
        return t[idx]
    return torch.stack([t[i][idx[i]] for i in range(idx.shape[0])])


def member_losses(loss_fn: nn.Module, out: torch.Tensor, y: torch.Tensor, shared: bool):
    """Each member's mean loss over its batch: (K,). `loss_fn` is unreduced (reduction none)."""
    k, b = out.shape[0], out.shape[1]
    if y.dtype == torch.long:  # class labels: (K, B) or (B,)
        labels = (y.expand(k, b) if shared else y).reshape(k * b)
        return loss_fn(out.reshape(k * b, -1), labels).view(k, b).mean(1)
    target = y.expand(k, *y.shape) if shared else y
    return loss_fn(out, target).reshape(k, -1).mean(1)


def clip_grad_norms(grad: torch.Tensor, max_norm: float) -> None:
    """Scale each member's gradient to a total norm of at most `max_norm`, as
    torch.nn.utils.clip_grad_norm_ does for one model."""
    norms = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
    grad.mul_(torch.clamp(max_norm / (norms + 1e-6), max=1.0))


def example_mean(losses: list[torch.Tensor], n: int, size: int) -> torch.Tensor:
    """The mean over the epoch's n examples of per-batch mean losses (each (K,)): a short last
    batch weighs by its size, not as much as a full one."""
    if len(losses) == 1:
        return losses[0]
    stacked = by_member(losses)
    last = n - (len(losses) - 1) * size
    if last == size:
        return stacked.mean(1)
    weights = torch.full((len(losses),), float(size), device=stacked.device)
    weights[-1] = last
    return (stacked * weights).sum(1) / n


def by_member(values: list[torch.Tensor]) -> torch.Tensor:
    """Per-member values (each (K,)) as rows (K, len(values)), to reduce along a row: a
    reduction across rows would sum each member's values in another order than alone."""
    return torch.stack(values, 1)


def correct(out: torch.Tensor, y: torch.Tensor, shared: bool = False) -> torch.Tensor:
    """How many of each member's outputs `out` (K, B, C) predict the class `y`: the top class,
    or with one logit (binary cross-entropy) class 1 where the logit is > 0. (K,)"""
    predicted = out.argmax(2) if out.shape[2] > 1 else (out[..., 0] > 0).long()
    return (predicted == (y.unsqueeze(0) if shared else y)).sum(1)


def evaluate(stack: Stack, loss_fn, data: Data, classify: bool = False, keep: bool = False):
    """Each member's mean loss and, when classifying, its correct count over its valid set in
    eval mode: a list of (K,) tensors; with `keep`, that list and the outputs (K, n, outputs)."""
    x, y, shared = data.x_valid, data.y_valid, data.shared_valid
    n = data.n_valid
    kept = []
    with torch.inference_mode():
        losses, right = [], []
        for i in range(0, n, EVAL_CHUNK):
            xb = x[i : i + EVAL_CHUNK] if shared else x[:, i : i + EVAL_CHUNK]
            yb = y[i : i + EVAL_CHUNK] if shared else y[:, i : i + EVAL_CHUNK]
            out = stack.forward(xb, training=False, shared=shared)
            if keep:
                kept.append(out)
            chunk = out.shape[1]
            loss = member_losses(loss_fn, out, yb, shared)
            losses.append(loss if chunk == n else loss * chunk)
            if classify:
                right.append(correct(out, yb, shared))
        loss = losses[0] if len(losses) == 1 else by_member(losses).sum(1) / n
        stats = [loss]
        if classify:
            stats.append(right[0] if len(right) == 1 else torch.stack(right).sum(0))
        if not keep:
            return stats
        return stats, kept[0] if len(kept) == 1 else torch.cat(kept, 1)


# 3: Linear weights' optimizer state rows laid out transposed, as the stack keeps them;
# 2: a member's stacked optimizer and schedule state (1, unnumbered: torch.optim's).
CHECKPOINT_FORMAT = 3


def save_checkpoint(
    path: Path, epoch: int, stack: Stack, i: int, update, schedule, generator, stopper=None
):
    """Everything member `i` needs to go on alone exactly as if it had not stopped, written
    atomically (a temp file, then a rename), so a kill mid-write leaves the last one whole;
    with early stopping, its state and (as best.pt beside it) the best weights."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": {key: v.clone() for key, v in stack.models[i].state_dict().items()},
        "optimizer": update.state_dict(i),
        "scheduler": schedule.state_dict(i) if schedule is not None else None,
        # The random streams training draws from: dropout masks and batch order. (The data is
        # made from the seed again when a run resumes.)
        "rng": {
            "dropout": stack.generators[i].get_state(),
            "batches": generator.get_state() if generator is not None else None,
        },
    }
    if stopper is not None:
        stopper.save(Path(path).parent)
        state["early_stop"] = stopper.state_dict()
    with atomic(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """The checkpoint at `path`, refused in one line unless it is one this regexp wrote.

    weights_only=True: the file may hold tensors and plain containers, never code to run.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, KeyError, EOFError) as exc:
        raise UserError(
            f"{path}: refused, not a checkpoint of this run (a safe load of tensors only "
            f"failed: {first_line(exc)})"
        ) from exc
    if isinstance(state, dict) and state.get("format") == 2:
        raise UserError(
            f"{path}: refused, written by an earlier regexp that laid out a member's optimizer "
            "state differently; train the run again"
        )
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path}: refused, written by a regexp older than populations (its optimizer state "
            "is torch.optim's, not a member's); train the run again"
        )
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise UserError(f"{path}: refused, its epoch ({epoch!r}) is not a count of epochs done")
    return state


def load_checkpoint(
    path: Path, stack: Stack, i: int, update, schedule, generator, stopper=None
) -> int:
    """Restore into member `i` what `save_checkpoint` saved; returns the epoch it was saved at."""
    state = read_checkpoint(path, stack.flat.device)
    epoch = state["epoch"]
    with torch.no_grad():
        stack.models[i].load_state_dict(state["model"])
    update.load_state_dict(i, state["optimizer"])
    if schedule is not None and state["scheduler"] is not None:
        schedule.load_state_dict(i, state["scheduler"])
        update.lr[i, 0] = schedule.lrs()[i]
    rng = state["rng"]
    stack.generators[i].set_state(rng["dropout"].cpu())
    if generator is not None and rng["batches"] is not None:
        generator.set_state(rng["batches"].cpu())
    if stopper is not None and "early_stop" in state:
        stopper.load(state["early_stop"], Path(path).parent, stack.flat.device)
    return epoch
