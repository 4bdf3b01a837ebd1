"""The training loop: train an epoch, evaluate, log, stop on divergence, checkpoint.

It takes plain objects (model, optimizer, tensors, tracker) and knows nothing of Hydra or the
command line. The data stays on the model's device; each epoch gathers it once in the order of
a seeded permutation, and a batch is a slice of that (a large set is gathered batch by batch).
The losses stay on the device and are read once per epoch, so nothing forces a device-to-host
sync every step.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from regexp.data import Dataset
from regexp.models import weights

EVAL_CHUNK = 8192  # examples per forward pass in evaluation, to bound memory
# With no checkpoint_every, a checkpoint whenever this many seconds of training have passed:
# a hard kill loses at most that much, and a short run pays for one checkpoint, at its end.
CHECKPOINT_SECONDS = 60.0
# A training set up to this size is gathered in its shuffled order once per epoch (a copy);
# a larger one (MNIST's 188 MB, CIFAR-10's 614 MB) batch by batch, to keep one copy only.
GATHER_ONCE_BYTES = 64 * 2**20
SPARSE_BELOW = 1e-3  # a weight with |w| under this counts as zero in weights/sparsity
# Weight statistics by default about this many times a run: each costs a few tenths of a
# lesson-24 epoch, so every epoch would slow that run down by a quarter.
WEIGHT_STATS_POINTS = 50


# Modules whose forward does not depend on the train/eval flag. For a model made of these
# alone (the lesson-24 net), switching modes changes nothing and costs about 30 us an epoch,
# a twentieth of that net's epoch, so the loop skips it. Exact types: a subclass may differ.
MODE_FREE = (
    nn.Sequential,
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Flatten,
    nn.Identity,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.ELU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.LayerNorm,
    nn.GroupNorm,
)


def modes_matter(model: nn.Module) -> bool:
    """Whether `model` computes differently in train and eval mode (dropout, batch norm...)."""
    return any(type(m) not in MODE_FREE for m in model.modules())


class Tracker(Protocol):
    def log_epoch(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None: ...


@dataclass
class Result:
    status: str  # "completed", "diverged" or "interrupted"
    epoch: int  # the last epoch that ran
    error: str | None = None


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int | None = None,
    scheduler=None,
    tracker: Tracker | None = None,
    generator: torch.Generator | None = None,
    start_epoch: int = 0,
    checkpoint: Path | None = None,
    checkpoint_every: int | None = None,
    stop: Callable[[], bool] | None = None,
    penalty: Callable[[], torch.Tensor] | None = None,
    clip_grad_norm: float | None = None,
    weight_stats_every: int | None = None,
) -> Result:
    """Train from `start_epoch` + 1 to `epochs`; each epoch's metrics go to `tracker`.

    `penalty()` is added to each step's loss (the logged train loss stays the data loss);
    gradients are clipped to a total norm of `clip_grad_norm`; the weight statistics are
    taken every `weight_stats_every` epochs (None: WEIGHT_STATS_POINTS times a run; 0: never)
    and in the first and last. With `checkpoint`, the state is saved there every
    `checkpoint_every` epochs (or every CHECKPOINT_SECONDS), at the end and when `stop()`
    turns true, which ends the run after the epoch in progress, so that a checkpoint always
    holds whole epochs.
    """

    def save(epoch: int) -> None:
        nonlocal last_save
        if checkpoint is not None:
            save_checkpoint(checkpoint, epoch, model, optimizer, scheduler, generator)
            last_save = time.monotonic()

    last_save = time.monotonic()
    classify = data.task == "classification"
    n, n_valid = data.x_train.shape[0], data.x_valid.shape[0]
    size = n if batch_size is None else min(batch_size, n)
    every = weight_stats_every
    if every is None:
        every = max(1, epochs // WEIGHT_STATS_POINTS)
    stats = WeightStats(model) if every else None
    switch = modes_matter(model)
    model.train()
    for epoch in range(start_epoch + 1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        train_stats, penalty_mean = _train_epoch(
            model,
            optimizer,
            loss_fn,
            data.x_train,
            data.y_train,
            size,
            generator,
            classify,
            penalty,
            clip_grad_norm,
            switch,
        )
        valid_stats = evaluate(model, loss_fn, data.x_valid, data.y_valid, classify, switch)
        weight_stats = None
        if stats and (epoch % every == 0 or epoch in (1, epochs)):
            weight_stats = stats()
        # The device-to-host reads of the epoch: a handful of numbers, once.
        values = [v.item() for v in (*train_stats, *valid_stats)]
        if classify:
            metrics = {
                "train_loss": values[0],
                "valid_loss": values[2],
                "train_acc": values[1] / n,
                "valid_acc": values[3] / n_valid,
            }
        else:
            metrics = {"train_loss": values[0], "valid_loss": values[1]}
        metrics["lr"] = lr
        if penalty_mean is not None:
            metrics["penalty"] = penalty_mean.item()
        if weight_stats is not None:
            metrics.update(stats.read(weight_stats))
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(metrics["valid_loss"])
            else:
                scheduler.step()
        if tracker is not None:
            tracker.log_epoch(epoch, metrics, model)
        bad = [k for k in ("train_loss", "valid_loss") if not math.isfinite(metrics[k])]
        if bad:
            return Result("diverged", epoch, f"{bad[0]} became {metrics[bad[0]]} in epoch {epoch}")
        if stop is not None and stop():
            save(epoch)
            return Result("interrupted", epoch)
        if epoch == epochs or (
            epoch % checkpoint_every == 0
            if checkpoint_every
            else time.monotonic() - last_save >= CHECKPOINT_SECONDS
        ):
            save(epoch)
    return Result("completed", epochs)


def _train_epoch(
    model, optimizer, loss_fn, x, y, size, generator, classify, penalty, clip, switch=True
):
    """One pass over (x, y) in batches of `size`: the mean loss per example and, when classifying,
    the count of correct predictions as the model trained, as device tensors; and the mean
    penalty, or None without one."""
    if switch:
        model.train()
    n = x.shape[0]  # (len() on a tensor is a slow Python call)
    order = None
    if size < n:
        order = torch.randperm(n, generator=generator).to(x.device)
        if x.element_size() * x.numel() <= GATHER_ONCE_BYTES:
            # One gather per epoch, then contiguous slices: cheaper than a gather per step.
            x, y, order = x[order], y[order], None
    params = [p for p in model.parameters() if p.requires_grad] if clip is not None else None
    losses, outputs, terms = [], [], []
    for start in range(0, n, size):
        if order is not None:  # a large set: a gather per step, no second copy of it
            idx = order[start : start + size]
            xb, yb = x[idx], y[idx]
        else:
            xb, yb = (x, y) if size == n else (x[start : start + size], y[start : start + size])
        optimizer.zero_grad(set_to_none=True)
        out = model(xb)
        loss = loss_fn(out, yb)
        if penalty is None:
            loss.backward()
        else:
            term = penalty()
            (loss + term).backward()  # the objective; the data loss alone is what is logged
            terms.append(term.detach())
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        losses.append(loss.detach())
        if classify:
            outputs.append(out.detach())  # scored once per epoch, not per step
    loss = example_mean(losses, n, size)
    term = (terms[0] if len(terms) == 1 else torch.stack(terms).mean()) if terms else None
    if not classify:
        return [loss], term
    labels = y if order is None else y[order]  # in the order the outputs came
    return [loss, correct(torch.cat(outputs), labels)], term


def example_mean(losses: list[torch.Tensor], n: int, size: int) -> torch.Tensor:
    """The mean over the epoch's n examples of per-batch mean losses: a short last batch
    weighs by its size, not as much as a full one."""
    if len(losses) == 1:
        return losses[0]
    stacked = torch.stack(losses)
    last = n - (len(losses) - 1) * size
    if last == size:
        return stacked.mean()
    weights = torch.full_like(stacked, size)
    weights[-1] = last
    return (stacked * weights).sum() / n


def correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """How many of the outputs `out` predict the class `y`: the top class, or with one logit
    (binary cross-entropy) class 1 where the logit is > 0."""
    predicted = out.argmax(1) if out.shape[1] > 1 else (out[:, 0] > 0).long()
    return (predicted == y).sum()


def evaluate(model, loss_fn, x, y, classify=False, switch=True):
    """Mean loss and, when classifying, the correct count over (x, y) in eval mode (with
    `switch` false, in the mode the model is in: for a model whose modes don't matter)."""
    if switch:
        model.eval()
    n = x.shape[0]
    with torch.inference_mode():
        if n <= EVAL_CHUNK:
            out = model(x)
            return [loss_fn(out, y), correct(out, y)] if classify else [loss_fn(out, y)]
        losses, right = [], []
        for i in range(0, n, EVAL_CHUNK):
            xb, yb = x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK]
            out = model(xb)
            losses.append(loss_fn(out, yb) * xb.shape[0])
            if classify:
                right.append(correct(out, yb))
        loss = torch.stack(losses).sum() / n
        return [loss, torch.stack(right).sum()] if classify else [loss]


def save_checkpoint(path: Path, epoch: int, model, optimizer, scheduler=None, generator=None):
    """Everything a resumed run needs to go on exactly as if it had not stopped, written
    atomically (a temp file, then a rename), so a kill mid-write leaves the last one whole."""
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        # The random streams training draws from: dropout masks and batch order. (numpy's and
        # Python's are used only to make the data, which a resumed run remakes from the seed.)
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "batches": generator.get_state() if generator is not None else None,
        },
    }
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, optimizer, scheduler=None, generator=None) -> int:
    """Restore what `save_checkpoint` saved; returns the epoch it was saved at.

    weights_only=True: the file may hold tensors and plain containers, never code to run.
    """
    device = next(model.parameters()).device
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    if generator is not None and rng["batches"] is not None:
        generator.set_state(rng["batches"].cpu())
    return int(state["epoch"])


class WeightStats:
    """The L2 norm, the L1 norm and the share of near-zero entries (|w| < SPARSE_BELOW) of the
    model's weights (Linear and Conv weights: no biases, no norm layers), taken on the device
    in a few ops over one flat copy."""

    def __init__(self, model: nn.Module):
        # Detached, made once: they follow the optimizer's in-place updates.
        self.views = [w.detach() for w in weights(model)]
        self.count = sum(v.numel() for v in self.views)
        # One buffer, made once and worked in place: the less memory the statistics touch,
        # the less of the training step's data they push out of the cache.
        like = self.views[0] if self.views else torch.empty(0)
        self.flat = like.new_empty(self.count)

    def __bool__(self) -> bool:
        return self.count > 0

    def __call__(self) -> torch.Tensor:
        # reshape is a view for contiguous weights, a copy for others (channels_last convs).
        a = torch.cat([v.reshape(-1) for v in self.views], out=self.flat).abs_()
        l2, l1 = torch.dot(a, a).sqrt(), a.sum()
        # Minus the count of |w| < t, in float ops (several times faster on a CPU than a
        # comparison into a bool tensor): min(|w| - t, 0) has the sign -1 below t, 0 from t on.
        below = a.sub_(SPARSE_BELOW).clamp_(max=0).sign_().sum()
        return torch.stack([l2, l1, below])

    def read(self, stats: torch.Tensor) -> dict[str, float]:
        l2, l1, minus_below = stats.tolist()
        return {
            "weights_l2_norm": l2,
            "weights_l1_norm": l1,
            "weights_sparsity": abs(minus_below) / self.count,
        }
