"""The training loop of a population: train an epoch, evaluate, read the epoch's numbers once,
and hand them to the hooks (hooks.py: records, divergence, early stopping, the schedule,
progress, checkpoints), which the run chooses from its config.

The unit is a population of K >= 1 members (stack.Stack): one run is a population of one,
through the same code. It takes plain objects and knows nothing of Hydra or the command line.
The data stays on the device; each epoch gathers each member's training set once in the order
of its own seeded permutation, and a batch is a slice of that (a large set is gathered batch
by batch). The losses stay on the device and are read once per epoch, for every member at
once, so nothing forces a device-to-host sync every step. Each member's outputs on its valid
set are kept on the device, those of its last epoch and of its best valid epoch, and come back
to the host once, at the end, in its Result.

Why it is long: besides the loop, what only it uses (an epoch's batches, the members' losses
and scores, gradient clipping, evaluation, the outputs kept, the checkpoint's contents) is
read together, top to bottom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from regexp.components.data import Dataset
from regexp.engine.stack import Stack, WeightStats
from regexp.engine.updates import Penalty, Update

EVAL_CHUNK = 8192  # examples per forward pass in evaluation, to bound memory
# A training set up to this size is gathered in its shuffled order once per epoch (a copy);
# a larger one (MNIST's 188 MB, CIFAR-10's 614 MB) batch by batch, to keep one copy only.
GATHER_ONCE_BYTES = 64 * 2**20
# Weight statistics by default about this many times a run: each costs a few tenths of a
# lesson-24 epoch, so every epoch would slow that run down by a quarter.
WEIGHT_STATS_POINTS = 50


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
class PopulationData:
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


def stack_data(datasets: Sequence[Dataset]) -> PopulationData:
    """The members' datasets as one PopulationData; a set every member has is kept once."""

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
    return PopulationData(
        pick("x_train", shared_train),
        pick("y_train", shared_train),
        pick("x_valid", shared_valid),
        pick("y_valid", shared_valid),
        datasets[0].task,
        shared_train,
        shared_valid,
    )


@dataclass
class Plan:
    """How the population trains, beyond its stack, update and data (one value for all)."""

    epochs: int
    start_epoch: int = 0
    batch_size: int | None = None  # None: the whole set
    # Added to each step's objective; the logged train loss stays the data loss.
    penalty: Penalty | None = None
    clip_grad_norm: float | None = None  # each member's gradients to this total norm
    # Weight statistics every this many epochs (None: WEIGHT_STATS_POINTS times a run; 0:
    # never), and in the first and last.
    weight_stats_every: int | None = None
    generators: Sequence[torch.Generator | None] = ()  # each member's batch order
    lrs: Sequence[float] = ()  # the members' learning rates, as configured
    best_valid: Sequence[float] = ()  # each member's best valid loss before this fit


@dataclass
class Fit:
    """The loop's state, which the hooks read and change."""

    stack: Stack
    update: Update
    plan: Plan
    lrs: list[float]  # each member's lr this epoch (the hook of the schedule moves them)
    results: list[Result | None]  # a member's, once it has ended
    active: list[bool]  # which members train (a Python list: no device sync to read it)
    outputs: Outputs
    ran: list[int] = field(default_factory=list)  # the members that trained this epoch
    interrupted: bool = False  # a hook ends the fit after this epoch
    valid_out: torch.Tensor | None = field(default=None, repr=False)

    @property
    def k(self) -> int:
        return self.stack.k

    def running(self) -> list[int]:
        return [i for i in range(self.k) if self.results[i] is None]

    def end(self, i: int, result: Result) -> None:
        """Member `i` ends with `result`: frozen from now on, its outputs those of this epoch."""
        self.results[i] = result
        self.active[i] = False
        self.outputs.stopped(i, self.valid_out)


def fit(
    stack: Stack, update: Update, loss_fn: nn.Module, data: PopulationData, plan: Plan, hooks=()
) -> list[Result]:
    """Train every member from `plan.start_epoch` + 1 to `plan.epochs`, calling `hooks`
    (hooks.Hook: `start`, `epoch_end` with each member's numbers of the epoch, `end`) in their
    order; returns each member's Result. A member a hook ends (diverged, stopped early)
    is frozen and the others go on; the fit ends when none is left or a hook interrupts it.
    Each Result holds the member's valid outputs at its last epoch and at the epoch whose valid
    loss is lowest (a resumed run starts from its `plan.best_valid`)."""
    k = stack.k
    lrs = list(plan.lrs) or update.lr.view(-1).tolist()
    state = Fit(stack, update, plan, lrs, [None] * k, [True] * k, Outputs(k, plan.best_valid))
    for hook in hooks:
        hook.start(state)
    try:
        _epochs(state, loss_fn, data, hooks)
    except KeyboardInterrupt:  # (a second signal: at once, mid-epoch)
        for hook in hooks:
            hook.interrupted(state)
        raise
    if state.outputs.last is None:  # a resumed run with no epoch left: it only ends its record
        classify = data.task == "classification"
        state.outputs.last = evaluate(stack, loss_fn, data, classify, keep=True)[1]
    for hook in hooks:
        hook.end(state)
    results = [r or Result("completed", plan.epochs) for r in state.results]
    for i, result in enumerate(results):
        result.last, result.best, result.best_epoch = state.outputs.of(i)
    return results


def _epochs(state: Fit, loss_fn: nn.Module, data: PopulationData, hooks) -> None:
    """`fit`'s epochs, each followed by the `hooks`, until none is left to train."""
    stack, plan = state.stack, state.plan
    classify = data.task == "classification"
    size = data.n if plan.batch_size is None else min(plan.batch_size, data.n)
    every = plan.weight_stats_every
    if every is None:
        every = max(1, plan.epochs // WEIGHT_STATS_POINTS)
    stats = WeightStats(stack) if every else None
    for epoch in range(plan.start_epoch + 1, plan.epochs + 1):
        columns, penalty = _train_epoch(state, loss_fn, data, size, classify)
        valid_stats, state.valid_out = evaluate(stack, loss_fn, data, classify, keep=True)
        columns += valid_stats
        if penalty is not None:
            columns.append(penalty)
        weighed = bool(stats) and (epoch % every == 0 or epoch in (1, plan.epochs))
        if weighed:
            columns += list(stats())
        # The device-to-host read of the epoch: a handful of numbers per member, once.
        values = torch.stack([c.float() for c in columns], 1).tolist()
        metrics = [
            _metrics(row, classify, data, state.lrs[i], plan.penalty, i, stats if weighed else None)
            for i, row in enumerate(values)
        ]
        state.ran = state.running()
        for i in state.ran:
            state.outputs.seen(i, epoch, state.valid_out, metrics[i]["valid_loss"])
        for hook in hooks:
            hook.epoch_end(state, epoch, metrics)
        state.outputs.last = state.valid_out
        if not state.running() or state.interrupted:
            break


def _metrics(row, classify, data, lr, penalty, i, stats) -> dict[str, float]:
    """Member `i`'s numbers of the epoch, named, from its row of the epoch's read."""
    if classify:
        metrics = {
            "train_loss": row[0],
            "valid_loss": row[2],
            "train_acc": row[1] / data.n,
            "valid_acc": row[3] / data.n_valid,
        }
        rest = row[4:]
    else:
        metrics = {"train_loss": row[0], "valid_loss": row[1]}
        rest = row[2:]
    metrics["lr"] = lr
    if penalty is not None:
        if penalty.on[i]:  # (a member without one logs none, as alone)
            metrics["penalty"] = rest[0]
        rest = rest[1:]
    if stats is not None:
        metrics.update(stats.read(rest))
    return metrics


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


def _train_epoch(fit: Fit, loss_fn, data: PopulationData, size: int, classify: bool):
    """One pass over each member's training set in batches of `size`: each member's mean loss
    per example and, when classifying, its count of correct predictions as it trained, as
    device tensors (K,); and each member's mean penalty, or None without one."""
    stack, update, penalty, clip = fit.stack, fit.update, fit.plan.penalty, fit.plan.clip_grad_norm
    x, y, shared = data.x_train, data.y_train, data.shared_train
    n = data.n
    order = None
    if size < n:
        generators = fit.plan.generators or [None] * stack.k
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
        update.step(stack.flat, stack.grad, fit.active)
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


def evaluate(
    stack: Stack, loss_fn, data: PopulationData, classify: bool = False, keep: bool = False
):
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
