"""Double descent: a width sweep's test error against the model's width, per weight decay λ,
decomposed into bias² and variance over each width's replicas (runs that differ only in
`seed` and/or `data.draw`), from each run's predictions.npz (its last epoch) and summary.json.

The sweep is a width sweep where it varies `model.hidden` (each value one width, or layers of
one width, all of one depth) and, besides the replica keys, at most `optim.weight_decay`.
Per (λ, width):

    train_error     1 − the final train accuracy (on the noisy labels it trained on), mean
    test_error      the 0-1 error on the clean valid set, mean over the replicas, and its std
    ensemble_error  the 0-1 error of the replicas' averaged probabilities

and the decomposition of the squared error of the predicted probabilities p (softmax of the
valid logits) against the one-hot labels y, summed over the classes (the Brier score), whose
terms add up exactly, with p̄(x) the mean over the replicas:

    E ||p − y||²  = ||p̄ − y||² + E ||p − p̄||²        (mean over x)
    expected error = bias2      + variance

and where both seed and draw vary, variance = variance_data + variance_init by the law of
total variance (Neal et al. 2018; Adlam & Pennington 2020): the variance over draws of the
mean over seeds, plus the mean over draws of the variance over seeds. bias_variance.py does
the arithmetic (its regression decomposition, on the probabilities; per class there, summed
over the classes here); its 0-1 decomposition (Domingos) of the same runs is
bias_variance.csv's.

Pure numpy on the files; it never imports the training code.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from regexp.analysis import bias_variance
from regexp.analysis.replicas import Group, Replicas, fmt, stat
from regexp.run import readers, rundir
from regexp.run.predictions import read as read_predictions

WIDTH = "model.hidden"
DECAY = "optim.weight_decay"
COLUMNS = [
    "weight_decay", "width", "params", "train_error", "test_error", "test_error_std", "bias2",
    "variance", "variance_data", "variance_init", "ensemble_error",
]  # fmt: skip


@dataclass
class Point:
    """One (λ, width) of the curve: a row of double_descent.csv."""

    weight_decay: float | None
    width: int
    params: int | None
    train_error: float | None
    test_error: float
    test_error_std: float
    bias2: float
    variance: float
    variance_data: float | None  # (None where seed and draw do not both vary)
    variance_init: float | None
    ensemble_error: float
    runs: int  # the replicas with predictions


def width_of(value) -> int | None:
    """The width a `model.hidden` value gives: [16] or [16, 16] is 16; None for layers of
    different widths, or a value that is not a list of widths."""
    hidden = _layers(value)
    return hidden[0] if hidden and len(set(hidden)) == 1 else None


def _layers(value) -> list[int] | None:
    """A `model.hidden` value's widths, None where it is not a list of integers."""
    try:
        hidden = json.loads(str(value))
    except ValueError:
        return None
    if not isinstance(hidden, list) or not all(type(w) is int for w in hidden):
        return None
    return hidden


def is_width_sweep(reps: Replicas) -> bool:
    """Whether the sweep's settings are widths of one depth (and at most a weight decay
    besides): nets of [16] and [16, 16] are not two points of one curve."""
    if WIDTH not in reps.keys or not set(reps.keys) <= {WIDTH, DECAY}:
        return False
    values = [g.setting[WIDTH] for g in reps.groups]
    depths = {len(_layers(v) or ()) for v in values}
    return all(width_of(v) is not None for v in values) and len(depths) == 1


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits (last axis); one logit is P(class 1), as a 2-class pair."""
    z = np.asarray(logits, np.float64)
    if z.shape[-1] == 1:
        z = np.concatenate([np.zeros_like(z), z], -1)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def decompose_probabilities(
    probs: np.ndarray, labels: np.ndarray, draws: list | None = None
) -> bias_variance.Decomposition:
    """The squared-error decomposition of the probabilities `probs` (runs, n, C) against the
    one-hot `labels` (n,), summed over the classes; `draws`, each run's data draw, splits the
    variance where given."""
    probs = np.asarray(probs, np.float64)
    classes = probs.shape[-1]
    onehot = np.eye(classes)[np.asarray(labels, np.int64)]
    d = bias_variance.regression(probs, onehot, draws=draws)  # (per class: mean over them)
    for name in ("bias2", "variance", "expected_error", "variance_data", "variance_init"):
        value = getattr(d, name)
        setattr(d, name, None if value is None else value * classes)
    return d


def point(group: Group, weight_decay: float | None) -> tuple[Point | None, list[str]]:
    """The (λ, width) point of `group`'s runs, with a line for each run left out; None where
    fewer than two runs have predictions on one valid set."""
    kept, notes = [], []
    for run in group.runs:
        try:
            p = read_predictions(run.path)
        except readers.Damaged as exc:
            notes.append(f"left out of double descent {run.path}: {exc}")
            continue
        if p is not None and np.isfinite(p.last).all() and np.issubdtype(p.y.dtype, np.integer):
            kept.append((run, p))
    if len(kept) < 2 or any(not np.array_equal(p.y, kept[0][1].y) for _, p in kept):
        return None, notes
    labels = kept[0][1].y
    probs = np.stack([softmax(p.last) for _, p in kept])
    draws = [r.overrides.get("data.draw") for r, _ in kept]
    seeds = [r.overrides.get("seed") for r, _ in kept]
    split = len(set(map(str, draws))) > 1 and len(set(map(str, seeds))) > 1
    d = decompose_probabilities(probs, labels, draws if split else None)
    test = stat((probs.argmax(-1) != labels).mean(-1).tolist())
    train = stat(1 - r.final("train_acc") for r, _ in kept if r.final("train_acc") is not None)
    params = kept[0][0].summary.get("params")
    return Point(
        weight_decay,
        width_of(group.setting[WIDTH]),
        params if isinstance(params, int) else None,
        None if train is None else train.mean,
        test.mean,
        test.std,
        d.bias2,
        d.variance,
        d.variance_data,
        d.variance_init,
        float((probs.mean(0).argmax(-1) != labels).mean()),
        len(kept),
    ), notes


def points(reps: Replicas) -> tuple[list[Point], list[str]]:
    """The curve of a width sweep, sorted by λ then width, with a line for each run left out;
    none where the sweep is not a width sweep."""
    if not is_width_sweep(reps):
        return [], []
    found, notes = [], []
    for group in reps.groups:
        decay = group.setting.get(DECAY)
        if decay is None:  # (λ not swept: the runs' own, where a command line set it)
            decay = group.runs[0].overrides.get(DECAY)
        p, left_out = point(group, decay if isinstance(decay, float) else None)
        notes += left_out
        if p is not None:
            found.append(p)
    found.sort(key=lambda p: (p.weight_decay or 0.0, p.width))
    return found, notes


def curves_by_decay(found: list[Point]) -> dict[float | None, list[Point]]:
    """The points per λ, each curve by width."""
    curves: dict[float | None, list[Point]] = {}
    for p in found:
        curves.setdefault(p.weight_decay, []).append(p)
    return curves


def threshold(curve: list[Point]) -> Point | None:
    """The interpolation threshold: the narrowest width whose train error is 0."""
    return next((p for p in curve if p.train_error == 0), None)


def descent_verdict(found: list[Point]) -> str:
    """What the curve shows, from its numbers: where the test error peaks (the smallest λ's
    curve), how far above the widest model, whether the variance peaks there too, how much
    each other λ takes off the peak, and how much the ensemble does. Its parts are joined by
    commas: the report's verdict goes on after a semicolon."""
    curves = curves_by_decay(found)
    if not curves or all(len(c) < 3 for c in curves.values()):
        return "double descent: fewer than 3 widths with two replicas or more"
    decay, curve = next((d, c) for d, c in curves.items() if len(c) >= 3)
    errors = [p.test_error for p in curve]
    i = int(np.argmax(errors))
    peak, widest = curve[i], curve[-1]
    name = f"λ={fmt(decay)}" if decay is not None else "the runs"
    if not 0 < i < len(curve) - 1:
        return (
            f"double descent ({name}): no peak at an inner width, the test error is highest at "
            f"width {peak.width} ({fmt(peak.test_error)})"
        )
    above = peak.test_error - widest.test_error
    spread = max(peak.test_error_std, widest.test_error_std)
    parts = [
        f"double descent ({name}): the test error peaks at width {peak.width} "
        f"({_params(peak)}{fmt(peak.test_error)} ± {fmt(peak.test_error_std)}), "
        f"{fmt(above)} above the widest (width {widest.width}, {fmt(widest.test_error)}), "
        + ("more than" if above > spread else "within")
        + f" the replicas' spread ({fmt(spread)})"
    ]
    at_zero = threshold(curve)
    parts.append(
        f"the train error reaches 0 at width {at_zero.width}"
        if at_zero
        else "the train error reaches 0 at no width"
    )
    top = max(curve, key=lambda p: p.variance)
    data = "" if top.variance_data is None else f", {fmt(top.variance_data)} of it from the data"
    there = "" if top is peak else f", against {fmt(peak.variance)} at the test error's peak"
    parts.append(f"the variance peaks at width {top.width} ({fmt(top.variance)}{data}{there})")
    for other, other_curve in curves.items():
        here = next((p for p in other_curve if p.width == peak.width), None)
        if other == decay or here is None:
            continue
        highest = max(p.test_error for p in other_curve)
        parts.append(
            f"λ={fmt(other)} {'lowers' if here.test_error < peak.test_error else 'raises'} it "
            f"to {fmt(here.test_error)} (its own highest: {fmt(highest)})"
        )
    parts.append(
        f"the ensemble of {peak.runs} replicas errs {fmt(peak.ensemble_error)} at the peak "
        f"({fmt(peak.test_error - peak.ensemble_error)} below the single models)"
    )
    return ", ".join(parts)


def _params(p: Point) -> str:
    return "" if p.params is None else f"{p.params} params, "


def write_curve(out: Path, found: list[Point]) -> Path:
    """double_descent.csv in `out`, a row per (λ, width)."""
    path = out / "double_descent.csv"
    with rundir.atomic(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for p in found:
            row = asdict(p)
            writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
    return path
