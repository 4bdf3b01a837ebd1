"""Early stopping: a member stops when its valid loss has not improved for `patience` epochs,
and (with `restore_best`) ends holding the weights of its best valid epoch.

The loop (train.fit) asks each member's `Stopper` after every epoch whether to stop; a member
that stops is frozen as a diverged one is, and the others go on. Its best weights are kept on
the device (a copy of its state at each improvement) and written as `best.pt` beside its
checkpoint whenever the checkpoint is written, so that a resumed run goes on with the same
best, the same count of epochs without improvement and the same weights to restore.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from regexp.errors import UserError
from regexp.run import rundir


class Stopper:
    """One member's early stopping; `patience` epochs without an improvement of more than
    `min_delta` in the valid loss stop it."""

    def __init__(self, patience: int, min_delta: float = 0.0, restore_best: bool = True):
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.best, self.best_epoch, self.wait = math.inf, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self._saved = True  # whether best.pt holds best_state
        self.restored: int | None = None  # the epoch whose weights `restore` loaded

    def step(self, epoch: int, valid_loss: float, model: nn.Module) -> bool:
        """Hear of `epoch`'s valid loss; true when the member is to stop after it."""
        if valid_loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = valid_loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self._saved = False
            return False
        self.wait += 1
        return self.wait >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best weights into `model`, if it is to end holding them."""
        if self.restore_best and self.best_state is not None:
            with torch.no_grad():
                model.load_state_dict(self.best_state)
            self.restored = self.best_epoch

    def state_dict(self) -> dict:
        state = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}
        return {**state, "stopped": self.wait >= self.patience}

    def save(self, run_dir: Path) -> None:
        """Write the best weights as `best.pt` in `run_dir` (atomically), if not yet written."""
        if self._saved or self.best_state is None:
            return
        rundir.write_best(run_dir, {"epoch": self.best_epoch, "model": self.best_state})
        self._saved = True

    def load(self, state: dict, run_dir: Path, device) -> None:
        """Go on from a checkpoint's `state` and the run's `best.pt` (tensors only); a run
        that stopped early is refused: there is nothing left to train."""
        if state.get("stopped"):
            raise UserError(
                f"{run_dir}: refused, the run stopped early (its valid loss had not improved "
                f"for {state['wait']} epochs since epoch {state['best_epoch']}); nothing to resume"
            )
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        path = rundir.best_file(run_dir)
        if path.is_file():
            best = torch.load(path, map_location=device, weights_only=True)
            self.best_state = best["model"]
        self._saved = True


def load_best(path: Path, model: nn.Module) -> int:
    """Load a run's `best.pt` into `model` (tensors only, never code); returns its epoch."""
    best = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(best["model"])
    return int(best["epoch"])
