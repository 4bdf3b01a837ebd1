"""The training loop: train an epoch, evaluate, log, stop on divergence.

It takes plain objects (model, optimizer, tensors, tracker) and knows nothing of Hydra or the
command line. The data stays on the model's device; each epoch gathers it once in the order of
a seeded permutation, and a batch is a slice of that. The losses stay on the device and are
read once per epoch, so nothing forces a device-to-host sync every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from regexp.data import Dataset

EVAL_CHUNK = 8192  # examples per forward pass in evaluation, to bound memory


class Tracker(Protocol):
    def log_epoch(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> None: ...


@dataclass
class Result:
    status: str  # "completed" or "diverged"
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
) -> Result:
    """Train from `start_epoch` + 1 to `epochs`; each epoch's metrics go to `tracker`."""
    classify = data.task == "classification"
    n, n_valid = data.x_train.shape[0], data.x_valid.shape[0]
    size = n if batch_size is None else min(batch_size, n)
    for epoch in range(start_epoch + 1, epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        train_stats = _train_epoch(
            model, optimizer, loss_fn, data.x_train, data.y_train, size, generator, classify
        )
        valid_stats = evaluate(model, loss_fn, data.x_valid, data.y_valid, classify)
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
    return Result("completed", epochs)


def _train_epoch(model, optimizer, loss_fn, x, y, size, generator, classify):
    """One pass over (x, y) in batches of `size`: the mean batch loss and, when classifying,
    the count of correct predictions as the model trained, as device tensors."""
    model.train()
    n = x.shape[0]  # (len() on a tensor is a slow Python call)
    if size < n:
        # One gather per epoch, then contiguous slices: cheaper than a gather per step.
        order = torch.randperm(n, generator=generator).to(x.device)
        x, y = x[order], y[order]
    losses, outputs = [], []
    for start in range(0, n, size):
        xb, yb = (x, y) if size == n else (x[start : start + size], y[start : start + size])
        optimizer.zero_grad(set_to_none=True)
        out = model(xb)
        loss = loss_fn(out, yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if classify:
            outputs.append(out.detach())  # scored once per epoch, not per step
    loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
    if not classify:
        return [loss]
    return [loss, (torch.cat(outputs).argmax(1) == y).sum()]


def evaluate(model, loss_fn, x, y, classify=False):
    """Mean loss and, when classifying, the correct count over (x, y) in eval mode."""
    model.eval()
    n = x.shape[0]
    with torch.inference_mode():
        if n <= EVAL_CHUNK:
            out = model(x)
            return [loss_fn(out, y), (out.argmax(1) == y).sum()] if classify else [loss_fn(out, y)]
        losses, correct = [], []
        for i in range(0, n, EVAL_CHUNK):
            xb, yb = x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK]
            out = model(xb)
            losses.append(loss_fn(out, yb) * xb.shape[0])
            if classify:
                correct.append((out.argmax(1) == yb).sum())
        loss = torch.stack(losses).sum() / n
        return [loss, torch.stack(correct).sum()] if classify else [loss]
