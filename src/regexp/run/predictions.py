"""`predictions.npz`: what a run predicted on its valid set, for the bias-variance report.

One file per run dir, written when the run's training ends (numpy's .npz, float32 unless
said otherwise; n is the number of valid examples, C the model's outputs):

| array | shape | what |
| --- | --- | --- |
| `last` | (n, C) | the valid outputs at the last epoch, in eval mode (classifying: logits) |
| `best` | (n, C) | the same at the best valid epoch |
| `epochs` | (2,) int64 | the last and the best epoch |
| `y` | (n, C), or (n,) int64 | the valid targets, or the valid labels |
| `target` | (n, C) | toy_regression only: the noise-free target f(x) of each valid input |
| `noise` | () float64 | toy_regression only: the std of the noise on the valid targets |
| `x` | (n, d) | 1-D regression and 2-D data: the valid inputs (as the model sees them) |
| `grid_x` | (G, d) | 1-D regression and 2-D data: the inputs of the run's figure grid |
| `grid` | (G, C') | the last epoch's outputs there (the fitted curve; P(class 1), or the class) |
| `grid_target` | (G, C) | toy_regression only: the noise-free target f(x) on the grid |

It imports numpy only (`keep` takes what training made, and plots.py for the figure's grid,
when it is called), so that `regexp report` reads it without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regexp.run import readers, rundir


@dataclass
class Predictions:
    last: np.ndarray
    best: np.ndarray
    epochs: tuple[int, int]  # (last, best)
    y: np.ndarray
    target: np.ndarray | None = None
    noise: float | None = None
    grid_x: np.ndarray | None = None
    grid: np.ndarray | None = None
    x: np.ndarray | None = None
    grid_target: np.ndarray | None = None


def write(run_dir: Path, p: Predictions) -> Path:
    """Write `p` into `run_dir` atomically (a temp file, then a rename)."""
    arrays = {
        "last": np.asarray(p.last, np.float32),
        "best": np.asarray(p.best, np.float32),
        "epochs": np.asarray(p.epochs, np.int64),
        "y": np.asarray(p.y, np.int64 if np.issubdtype(p.y.dtype, np.integer) else np.float32),
    }
    if p.target is not None:
        arrays["target"] = np.asarray(p.target, np.float32)
    if p.noise is not None:
        arrays["noise"] = np.asarray(p.noise, np.float64)
    if p.grid_x is not None and p.grid is not None:
        arrays["grid_x"] = np.asarray(p.grid_x, np.float32)
        arrays["grid"] = np.asarray(p.grid, np.float32)
        if p.grid_target is not None:
            arrays["grid_target"] = np.asarray(p.grid_target, np.float32)
    if p.x is not None:
        arrays["x"] = np.asarray(p.x, np.float32)
    return rundir.write_predictions(run_dir, arrays)


def read(run_dir: Path) -> Predictions | None:
    """The run's predictions, or None where it has none; readers.Damaged where the file is not
    what `write` writes (not an .npz, an array missing, of another shape or kind)."""
    a = readers.read_arrays(run_dir)
    if a is None:
        return None
    check_arrays(a)
    return Predictions(
        a["last"],
        a["best"],
        tuple(int(e) for e in a["epochs"]),
        a["y"],
        a.get("target"),
        float(a["noise"]) if "noise" in a else None,
        a.get("grid_x"),
        a.get("grid"),
        a.get("x"),
        a.get("grid_target"),
    )


def check_arrays(a: dict[str, np.ndarray]) -> None:
    """Raise readers.Damaged where the arrays `a` are not those of the table above."""

    def damaged(why: str):
        raise readers.Damaged(rundir.PREDICTIONS, why)

    missing = [k for k in ("last", "best", "epochs", "y") if k not in a]
    if missing:
        damaged(f"no {', '.join(missing)} array (it holds: {', '.join(a) or 'none'})")
    for name, array in a.items():
        if array.dtype.kind not in "fiu":
            damaged(f"{name} holds {array.dtype}, not numbers")
    last = a["last"]
    if last.ndim != 2 or 0 in last.shape:
        damaged(f"last has shape {last.shape}, not (n, C) with n, C > 0")
    n, c = last.shape
    y, labels = a["y"], a["y"].dtype.kind in "iu"
    if labels and (y.shape != (n,) or y.min() < 0 or y.max() >= max(c, 2)):
        damaged(f"y holds integers of shape {y.shape}: not ({n},) labels from 0 to {max(c, 2) - 1}")
    if ("grid_x" in a) != ("grid" in a) or ("grid_target" in a and "grid" not in a):
        damaged("grid_x, grid and grid_target come together (grid_target with toy_regression)")
    d = g = None
    if "grid_x" in a:
        g, d = a["grid_x"].shape if a["grid_x"].ndim == 2 else (None, None)
        if d != (2 if labels else 1) or (labels and math.isqrt(g) ** 2 != g):
            shape = a["grid_x"].shape
            damaged(
                f"grid_x has shape {shape}: not (G, 1) of a regression, or (G, 2) of a "
                "classification with G a square"
            )
    grid = a.get("grid", last)
    shapes = {  # name -> its shape, given last's, y's kind and grid_x's
        "best": (n, c),
        "epochs": (2,),
        "y": (n,) if labels else (n, c),
        "target": (n, c),
        "noise": (),
        "x": (n, d),
        "grid": (g, grid.shape[-1] if grid.ndim == 2 else 1),
        "grid_target": (g, c),
    }
    for name, shape in shapes.items():
        if name in a and (a[name].shape != shape or 0 in a[name].shape):
            damaged(f"{name} has shape {a[name].shape}, not {shape} (last's is {last.shape})")


def keep(run_dir: Path, result, dataset, model) -> None:
    """Write the predictions of a run that trained: its valid outputs at its last and best
    epochs (train.Result; a resumed run whose best epoch came before it resumed keeps that
    one's from its file), the valid targets and what the data knows of them (data.Dataset),
    and `model`'s outputs on its figure's grid."""
    from regexp.figures import plots

    if result.last is None:
        return
    best, best_epoch = result.best, result.best_epoch
    if best is None:
        try:
            before = read(run_dir)
        except readers.Damaged:  # (rewritten below)
            before = None
        if before is not None:
            best, best_epoch = before.best, before.epochs[1]
        else:
            best, best_epoch = result.last, result.epoch
    figure = plots.for_dataset(dataset)
    grid_x = grid = x = grid_target = None
    if figure is not None:
        # (G, 1) where the figure draws one value a point: P(class 1), or the class
        grid_x, grid = (
            figure.grid.cpu().numpy(),
            figure.predict(model).reshape(len(figure.grid), -1),
        )
        x = dataset.x_valid.cpu().numpy()
        if dataset.truth is not None:
            grid_target = dataset.truth(figure.grid).numpy()
    target = dataset.valid_target
    write(
        run_dir,
        Predictions(
            np.asarray(result.last),
            np.asarray(best),
            (result.epoch, best_epoch),
            dataset.y_valid.cpu().numpy(),
            None if target is None else target.cpu().numpy(),
            dataset.valid_noise,
            grid_x,
            grid,
            x,
            grid_target,
        ),
    )
