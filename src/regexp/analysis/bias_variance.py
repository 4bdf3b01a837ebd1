"""Bias, variance and noise, measured: the decomposition of a setting's expected error over
its replicas (runs that differ only in `seed` and/or `data.draw`), on their shared valid set,
from each run's predictions.npz (its last epoch).

Regression (MSE), with f̄(x) the mean prediction over the runs and f the noise-free target
where the data knows it (toy_regression), else the valid target itself:

    bias²          = mean_x (f̄(x) − f(x))²
    variance       = mean_x,runs (ŷ(x) − f̄(x))²
    noise          = mean_x (y − f(x))²
    expected error = mean_x,runs (ŷ(x) − y)²  = bias² + variance + noise + the cross term
                     2 mean_x (f̄(x) − f(x))(f(x) − y), printed as the difference.

On 10 valid points the cross term need not be small. Where the data knows its truth f
everywhere and its noise std σ (toy_regression), the report leads with the decomposition
over the whole input range instead, from each run's fitted curve on its figure's grid (the
G points of it between the smallest and the largest input): there the noise is independent
of the fits, and

    expected error = mean_x,runs (ŷ(x) − f(x))² + σ² = bias² + variance + σ²

to float rounding (rows `on=range` of bias_variance.csv; the valid set's are `on=valid`).

When both seed and draw vary, the variance splits exactly (the law of total variance, Neal
et al. 2018, "A Modern Take on the Bias-Variance Tradeoff in Neural Networks") into the part
due to the training set, mean_x over runs of (f̄_D(x) − f̄(x))² with f̄_D the mean over the
runs of draw D, and the part due to initialization and optimization, mean_x,runs
(ŷ(x) − f̄_D(x))².

Classification (0-1 loss; Domingos 2000, "A Unified Bias-Variance Decomposition"), the valid
labels t taken as the truth (no noise): the main prediction y_m(x) is the most frequent class
over the runs (the smallest on a tie); bias B(x) = [y_m(x) ≠ t]; variance V(x) = the share of
runs that disagree with y_m(x). Where the main prediction is right, variance hurts; where it
is wrong, a run that disagrees can be right, and helps:

    expected error = mean_x B + mean_x (1 − B) V − mean_x B P(ŷ = t)
                   = bias + variance that hurts − variance that helps  (exactly).

Pure numpy on the files; it never imports the training code.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from regexp.analysis.replicas import fmt as _fmt
from regexp.run import rundir
from regexp.run.predictions import Predictions
from regexp.run.predictions import read as read_predictions
from regexp.run.readers import Damaged

# Where the cross term is more than this share of the expected error, the report says so.
CROSS_TERM_SHARE = 0.1
COLUMNS = [
    "task", "n", "bias2", "variance", "variance_data", "variance_init", "noise", "noise_var",
    "expected_error", "sum", "difference", "variance_hurts", "variance_helps",
]  # fmt: skip


@dataclass
class Decomposition:
    task: str
    n: int  # runs
    bias2: float  # classification: the 0-1 bias (B = B²)
    variance: float
    expected_error: float
    noise: float = 0.0
    noise_var: float | None = None  # the noise std² the data knows
    variance_data: float | None = None  # due to the training set (seed and draw both vary)
    variance_init: float | None = None  # due to initialization and optimization
    variance_hurts: float | None = None  # classification
    variance_helps: float | None = None

    @property
    def sum(self) -> float:
        """What the terms add up to: bias² + variance + noise, or for 0-1 loss bias +
        variance that hurts − variance that helps."""
        if self.task == "classification":
            return self.bias2 + self.variance_hurts - self.variance_helps
        return self.bias2 + self.variance + self.noise

    @property
    def difference(self) -> float:
        """expected error − the sum: the cross term for MSE (0 for 0-1 loss)."""
        return self.expected_error - self.sum

    def row(self) -> dict:
        return {**asdict(self), "sum": self.sum, "difference": self.difference}


def regression(
    predictions: np.ndarray,
    y: np.ndarray,
    target: np.ndarray | None = None,
    draws: list | None = None,
    noise_std: float | None = None,
) -> Decomposition:
    """The MSE decomposition of `predictions` (runs, n, ...) against the valid targets `y`
    (n, ...) and the noise-free `target` (None: y); `draws`, each run's data draw, splits the
    variance where given."""
    p = np.asarray(predictions, np.float64)
    y = np.asarray(y, np.float64)
    f = y if target is None else np.asarray(target, np.float64)
    mean = p.mean(0)
    d = Decomposition(
        "regression",
        len(p),
        bias2=float(((mean - f) ** 2).mean()),
        variance=float(((p - mean) ** 2).mean()),
        expected_error=float(((p - y) ** 2).mean()),
        noise=float(((y - f) ** 2).mean()),
        noise_var=None if noise_std is None else noise_std**2,
    )
    _split(d, p, mean, draws)
    return d


def over_range(
    grids: np.ndarray, truth: np.ndarray, noise_std: float, draws: list | None = None
) -> Decomposition:
    """The MSE decomposition over the input range: the runs' fits `grids` (runs, G, ...) on a
    grid of inputs against the truth f there (G, ...), with noise of std `noise_std` on the
    targets, which no fit sees: bias² + variance + noise is the expected error, exactly."""
    p = np.asarray(grids, np.float64)
    f = np.asarray(truth, np.float64)
    mean = p.mean(0)
    noise = float(noise_std) ** 2
    d = Decomposition(
        "regression",
        len(p),
        bias2=float(((mean - f) ** 2).mean()),
        variance=float(((p - mean) ** 2).mean()),
        expected_error=float(((p - f) ** 2).mean()) + noise,
        noise=noise,
        noise_var=noise,
    )
    _split(d, p, mean, draws)
    return d


def _split(d: Decomposition, p: np.ndarray, mean: np.ndarray, draws: list | None) -> None:
    """The variance's parts due to the training set and to the initialization, by the runs'
    `draws` (None: not split)."""
    if draws is None:
        return
    labels = [str(x) for x in draws]
    per_draw = {k: p[[i for i, x in enumerate(labels) if x == k]] for k in dict.fromkeys(labels)}
    inside = sum(((g - g.mean(0)) ** 2).sum(0) for g in per_draw.values())
    between = sum(len(g) * (g.mean(0) - mean) ** 2 for g in per_draw.values())
    d.variance_init = float((inside / len(p)).mean())
    d.variance_data = float((between / len(p)).mean())


def decompose_classification(predicted: np.ndarray, labels: np.ndarray) -> Decomposition:
    """Domingos' 0-1 decomposition of the classes `predicted` (runs, n) against `labels` (n,)."""
    p = np.asarray(predicted, np.int64)
    t = np.asarray(labels, np.int64)
    runs, n = p.shape
    classes = int(max(p.max(), t.max())) + 1
    counts = np.zeros((n, classes), np.int64)
    for row in p:
        counts[np.arange(n), row] += 1
    main = counts.argmax(1)  # the smallest class among the most frequent
    biased = main != t
    variance = (p != main).mean(0)
    right = (p == t).mean(0)
    return Decomposition(
        "classification",
        runs,
        bias2=float(biased.mean()),
        variance=float(variance.mean()),
        expected_error=float((p != t).mean()),
        variance_hurts=float((~biased * variance).mean()),
        variance_helps=float((biased * right).mean()),
    )


def classes(outputs: np.ndarray) -> np.ndarray:
    """The classes logits predict: the top one, or with one logit class 1 where it is > 0."""
    return outputs.argmax(-1) if outputs.shape[-1] > 1 else (outputs[..., 0] > 0).astype(np.int64)


@dataclass
class SettingDecomposition:
    """A setting's decomposition, or why it has none."""

    setting: dict
    decomposition: Decomposition | None  # on the valid set
    runs: list[Predictions]
    note: str = ""
    on_range: Decomposition | None = None  # over the input range, where the data knows f
    damaged: list[str] = field(default_factory=list)  # a line per run with a damaged file

    @property
    def lead(self) -> Decomposition | None:
        """The decomposition the report leads with: the exact one where there is one."""
        return self.on_range or self.decomposition


def decompose(group, replica_keys: list[str]) -> SettingDecomposition:
    """The decomposition of a replicas.Group from its runs' predictions.npz."""
    preds, damaged = [], []
    for run in group.runs:
        try:
            preds.append((run, read_predictions(run.path)))
        except Damaged as exc:
            damaged.append(f"left out of bias and variance {run.path}: {exc}")
            preds.append((run, None))
    kept = [(r, p) for r, p in preds if p is not None and np.isfinite(p.last).all()]
    if len(kept) < 2:
        return SettingDecomposition(
            group.setting,
            None,
            [p for _, p in kept],
            "fewer than 2 runs with predictions",
            damaged=damaged,
        )
    y = kept[0][1].y
    if any(p.y.shape != y.shape or not np.array_equal(p.y, y) for _, p in kept):
        note = "the runs' valid sets differ (set data.draw: a draw keeps the valid set of seed 0)"
        return SettingDecomposition(
            group.setting, None, [p for _, p in kept], note, damaged=damaged
        )
    if len({_layout(p) for _, p in kept}) > 1:
        note = "the runs' predictions.npz differ in shape (made by different versions or data)"
        return SettingDecomposition(
            group.setting, None, [p for _, p in kept], note, damaged=damaged
        )
    ps = [p for _, p in kept]
    left = len(preds) - len(kept)
    note = f"{left} runs left out (no predictions, damaged, or not finite)" if left else ""
    if np.issubdtype(y.dtype, np.integer):
        d = decompose_classification(np.stack([classes(p.last) for p in ps]), y)
    else:
        draws = None
        varied = [k for k in ("seed", "data.draw") if k in replica_keys]
        if len(varied) == 2:
            values = [r.overrides.get("data.draw") for r, _ in kept]
            seeds = [r.overrides.get("seed") for r, _ in kept]
            if len(set(map(str, values))) > 1 and len(set(map(str, seeds))) > 1:
                draws = values
        d = regression(np.stack([p.last for p in ps]), y, ps[0].target, draws, ps[0].noise)
        on_range = None
        if (
            ps[0].x is not None
            and ps[0].noise is not None
            and all(p.grid_target is not None and np.isfinite(p.grid).all() for p in ps)
        ):
            # The figure's grid within the inputs' range (it runs a little past both ends).
            x, inside = ps[0].x, ps[0].grid_x
            inside = ((inside >= x.min(0)) & (inside <= x.max(0))).all(1)
            if inside.sum() >= 2:  # (one valid input spans no range)
                grids = np.stack([p.grid[inside] for p in ps])
                on_range = over_range(grids, ps[0].grid_target[inside], ps[0].noise, draws)
        if on_range is None and abs(d.difference) > CROSS_TERM_SHARE * d.expected_error:
            note = _join(
                note,
                f"the cross term (expected error − bias² − variance − noise = "
                f"{d.difference:.4g}) is not small: 2 mean_x (f̄ − f)(f − y) averages to 0 "
                f"over draws of the valid noise, not on {len(y)} valid points",
            )
        return SettingDecomposition(group.setting, d, ps, note, on_range, damaged)
    return SettingDecomposition(group.setting, d, ps, note, damaged=damaged)


def _layout(p: Predictions) -> tuple:
    """The shapes of what a decomposition stacks over runs: the same for every run of one."""
    return tuple(None if a is None else a.shape for a in (p.last, p.x, p.grid_x, p.grid))


def one_kind(results: list[SettingDecomposition]) -> list[SettingDecomposition]:
    """`results` with the decomposition over the input range dropped unless every setting has
    one: a table or a curve never mixes it with the valid set's."""
    if any(r.decomposition is not None and r.on_range is None for r in results):
        for r in results:
            r.on_range = None
    return results


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def write_tables(out: Path, results: list[SettingDecomposition], keys: list[str]) -> list[Path]:
    """bias_variance.csv and bias_variance.md in `out`, a row per setting with a
    decomposition; returns the paths."""
    done = [r for r in results if r.decomposition is not None]
    csv_path, md_path = out / "bias_variance.csv", out / "bias_variance.md"
    # Each setting's rows: over the input range first, where there is one, then the valid set.
    rows = [
        (r.setting, on, d.row())
        for r in done
        for on, d in (("range", r.on_range), ("valid", r.decomposition))
        if d is not None
    ]
    with rundir.atomic(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*keys, "on", *COLUMNS])
        for setting, on, row in rows:
            writer.writerow(
                [*(setting.get(k) for k in keys), on, *(_cell(row[c]) for c in COLUMNS)]
            )
    lines = [claims(done, keys), ""]
    shown = [c for c in COLUMNS[1:] if any(row[c] is not None for _, _, row in rows)]
    heading = [*keys, "on", *shown]
    lines += ["| " + " | ".join(heading) + " |", "|" + "---|" * len(heading)]
    for setting, on, row in rows:
        cells = [*(_fmt(setting.get(k)) for k in keys), on, *(_fmt(row[c]) for c in shown)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {_name(r.setting, keys)}: {r.note}" for r in results if r.note]
    if notes:
        lines += ["", *notes]
    rundir.write_bytes(md_path, ("\n".join(lines) + "\n").encode())
    return [csv_path, md_path]


def claims(done: list[SettingDecomposition], keys: list[str]) -> str:
    """Whether the numbers show what the lessons claim, for each swept number (the other keys
    at their smallest values): variance falls as the strength grows, bias² rises, and the
    expected error is lowest in between."""
    parts = []
    exact = any(r.on_range is not None for r in done)
    where_from = "over the input range" if exact else "on the valid set"
    for key, line in curves(done, keys).items():
        if len(line) < 2:
            continue
        values = [v for v, _ in line]
        var = [d.variance for _, d in line]
        bias = [d.bias2 for _, d in line]
        err = [d.expected_error for _, d in line]
        name = key.rsplit(".", 1)[-1]
        lo, hi = _fmt(values[0]), _fmt(values[-1])
        says = [
            f"variance {'falls' if var[-1] < var[0] else 'does not fall'} as {name} grows "
            f"({_fmt(var[0])} at {lo} -> {_fmt(var[-1])} at {hi})",
            f"bias² {'rises' if bias[-1] > bias[0] else 'does not rise'} "
            f"({_fmt(bias[0])} -> {_fmt(bias[-1])})",
        ]
        best = int(np.argmin(err))
        where = "in between" if 0 < best < len(err) - 1 else "at an end, not in between"
        says.append(
            f"the expected error is lowest at {name}={_fmt(values[best])} ({_fmt(err[best])}, "
            f"{where})"
        )
        parts.append(f"{where_from}: " + ", ".join(says))
    if not parts and len(done) > 1:
        parts.append(f"{len(done)} settings, no swept number to draw the terms against")
    if not parts and done:
        d = done[0].lead
        parts.append(
            f"one setting: bias² {_fmt(d.bias2)}, variance {_fmt(d.variance)}, noise "
            f"{_fmt(d.noise)}, expected error {_fmt(d.expected_error)}"
        )
    return "; ".join(parts) or "no setting with two runs or more on one valid set"


def curves(
    done: list[SettingDecomposition], keys: list[str], on: str = "lead"
) -> dict[str, list[tuple[float, Decomposition]]]:
    """For each swept number, the decompositions (`on`: "lead", SettingDecomposition.lead, or
    "valid") against its values with the other keys at their smallest values (the lessons'
    U-curve)."""
    lines = {}
    for key in keys:
        others = [k for k in keys if k != key]
        if not all(isinstance(r.setting.get(k), float) for r in done for k in keys):
            continue
        base = {k: min(r.setting[k] for r in done) for k in others}
        line = sorted(
            (
                (r.setting[key], r.lead if on == "lead" else r.decomposition)
                for r in done
                if all(r.setting[k] == base[k] for k in others)
            ),
            key=lambda pair: pair[0],
        )
        lines[key] = line
    return lines


def _name(setting: dict, keys: list[str]) -> str:
    return " ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(setting.get(k))}" for k in keys) or "the runs"


def _cell(value):
    return "" if value is None else value
