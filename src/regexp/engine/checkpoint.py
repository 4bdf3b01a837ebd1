"""A member's checkpoint: everything it needs to go on alone exactly as if it had not stopped
(its weights, optimizer and schedule state, random streams, early-stopping state) and which
run it belongs to, and the checks that refuse a file this regexp did not write for that run."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import torch

from regexp.engine.stack import Stack
from regexp.errors import UserError, first_line, show
from regexp.run import rundir

# 4: the run it belongs to (config.identity); 3: Linear weights' optimizer state rows laid
# out transposed, as the stack keeps them; 2: a member's stacked optimizer and schedule state
# (1, unnumbered: torch.optim's).
CHECKPOINT_FORMAT = 4


def state_of(fit, i: int, epoch: int, schedule, generator, stopper=None, run: str = "") -> dict:
    """Member `i`'s state after `epoch` of `fit` (loop.Fit), as a checkpoint of the run whose
    identity is `run`."""
    stack = fit.stack
    state = {
        "format": CHECKPOINT_FORMAT,
        "run": run,
        "epoch": epoch,
        "model": {key: v.clone() for key, v in stack.models[i].state_dict().items()},
        "optimizer": fit.update.state_dict(i),
        "scheduler": schedule.state_dict(i) if schedule is not None else None,
        # The random streams training draws from: dropout masks and batch order. (The data is
        # made from the seed again when a run resumes.)
        "rng": {
            "dropout": stack.generators[i].get_state(),
            "batches": generator.get_state() if generator is not None else None,
        },
    }
    if stopper is not None:
        state["early_stop"] = stopper.state_dict()
    return state


def store(run_dir: Path, state: dict, stopper=None) -> None:
    """Write `state` as the run's checkpoint; with early stopping, the best weights first."""
    if stopper is not None:
        stopper.save(run_dir)
    rundir.write_checkpoint(run_dir, state)


def read_checked(path: Path, device: torch.device | str = "cpu", run: str | None = None) -> dict:
    """The checkpoint at `path`, refused in one line unless it is one this regexp wrote, with
    fields of the types it writes, and (given the `run`'s identity) one of that run.

    weights_only=True: the file may hold tensors and plain containers, never code to run.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, KeyError, EOFError) as exc:
        raise UserError(
            f"{path}: refused, not a checkpoint of this run (a safe load of tensors only "
            f"failed: {first_line(exc)})"
        ) from exc
    if isinstance(state, dict) and state.get("format") in (2, 3):
        raise UserError(
            f"{path}: refused, written by an earlier regexp that "
            + (
                "laid out a member's optimizer state differently"
                if state["format"] == 2
                else "did not record which run it belongs to"
            )
            + "; train the run again"
        )
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path}: refused, written by a regexp older than populations (its optimizer state "
            "is torch.optim's, not a member's); train the run again"
        )
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise UserError(f"{path}: refused, its epoch ({epoch!r}) is not a count of epochs done")
    wrong = _wrong_field(state)
    if wrong:
        raise UserError(f"{path}: refused, not a checkpoint of this run: {wrong}")
    if run is not None:
        _check_run(path, state["run"], run)
    return state


def _wrong_field(state: dict) -> str | None:
    """What in `state` is not of the type `state_of` writes, or None."""

    def tensors(d) -> bool:
        return isinstance(d, dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items()
        )

    def stream(t) -> bool:  # a generator's state
        return isinstance(t, torch.Tensor) and t.dtype == torch.uint8

    def count(n) -> bool:
        return type(n) is int and n >= 0

    def number(x) -> bool:
        return type(x) in (int, float) and not math.isnan(x)

    def numbers(d: dict) -> bool:  # a schedule's state: numbers, lists of them, and its name
        return all(
            number(v) or (isinstance(v, list) and all(map(number, v))) or k == "name"
            for k, v in d.items()
        )

    optimizer, rng = state.get("optimizer"), state.get("rng")
    scheduler, early = state.get("scheduler"), state.get("early_stop", {})
    checks = {
        "run": isinstance(state.get("run"), str),
        "model": tensors(state.get("model")),
        "optimizer": isinstance(optimizer, dict)
        and count(optimizer.get("step"))
        and number(optimizer.get("lr"))
        and math.isfinite(optimizer["lr"])
        and optimizer["lr"] >= 0
        and tensors(optimizer.get("state")),
        "scheduler": scheduler is None
        or (isinstance(scheduler, dict) and isinstance(scheduler.get("name"), str))
        and numbers(scheduler),
        "rng": isinstance(rng, dict)
        and stream(rng.get("dropout"))
        and (rng.get("batches") is None or stream(rng.get("batches"))),
        "early_stop": isinstance(early, dict)
        and (
            not early
            or number(early.get("best"))
            and count(early.get("best_epoch"))
            and count(early.get("wait"))
            and isinstance(early.get("stopped"), bool)
        ),
    }
    wrong = [name for name, ok in checks.items() if not ok]
    return f"its {wrong[0]} is not what regexp writes there" if wrong else None


def _check_run(path: Path, theirs: str, ours: str) -> None:
    """Refuse a checkpoint of another run than the one it is resumed in (a file copied from
    another run of the same net would load)."""
    if theirs == ours:
        return
    try:
        saved = json.loads(theirs)
    except ValueError:
        saved = None
    if not isinstance(saved, dict):
        raise UserError(f"{path}: refused, it does not say which run it belongs to")
    mine = json.loads(ours)
    key = next(k for k in sorted({*saved, *mine}) if saved.get(k) != mine.get(k))
    raise UserError(
        f"{path}: refused, a checkpoint of another run ({key}={show(saved.get(key))} there, "
        f"{show(mine.get(key))} in this run's config)"
    )


def restore(
    path: Path, run: str, stack: Stack, i: int, update, schedule, generator, stopper=None
) -> int:
    """Restore into member `i`, whose run's identity is `run`, what `state_of` took; returns
    the epoch it was saved at."""
    state = read_checked(path, stack.flat.device, run)
    epoch = state["epoch"]
    model = stack.models[i]
    misfit = _misfit(state["model"], model.state_dict())
    if misfit:
        raise UserError(f"{path}: refused, its weights do not fit this run's model: {misfit}")
    with torch.no_grad():
        model.load_state_dict(state["model"])
    update.load_state_dict(i, state["optimizer"])
    if schedule is not None and state["scheduler"] is not None:
        schedule.load_state_dict(i, state["scheduler"])
        update.lr[i, 0] = schedule.lrs()[i]
    rng = state["rng"]
    stack.generators[i].set_state(rng["dropout"].cpu())
    if generator is not None and rng["batches"] is not None:
        generator.set_state(rng["batches"].cpu())
    if stopper is not None and "early_stop" in state:
        best = rundir.best_file(Path(path).parent)
        try:
            stopper.load(state["early_stop"], Path(path).parent, stack.flat.device)
        except (pickle.UnpicklingError, RuntimeError, EOFError, LookupError, TypeError) as exc:
            why = first_line(exc)
            raise UserError(f"{best}: refused, not this run's best weights ({why})") from None
        misfit = stopper.best_state is not None and _misfit(stopper.best_state, model.state_dict())
        if misfit:
            raise UserError(f"{best}: refused, its weights do not fit this run's model: {misfit}")
    return epoch


def _misfit(weights, mine: dict) -> str | None:
    """How `weights` (a state dict read back) differ from the model's `mine` in their keys,
    shapes or types (load_state_dict would cast another dtype), or None."""
    if not isinstance(weights, dict):
        return f"a {type(weights).__name__}, not a state dict"
    for key in sorted({*weights, *mine}):
        theirs, ours = weights.get(key), mine.get(key)
        if ours is None or not isinstance(theirs, torch.Tensor):
            return f"{key} is {'missing' if theirs is None else 'not expected'}"
        if (theirs.shape, theirs.dtype) != (ours.shape, ours.dtype):
            return (
                f"{key} of {tuple(theirs.shape)} {theirs.dtype}, "
                f"not {tuple(ours.shape)} {ours.dtype}"
            )
    return None
