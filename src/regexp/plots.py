"""Figures (matplotlib, drawn off-screen): what people would rather look at than read."""

from __future__ import annotations

import math
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def _label(overrides: dict, keys: list[str]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(overrides.get(k))}" for k in keys) or "run"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _finite(values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def report_figures(runs, keys: list[str], out: Path) -> list[Path]:
    """The report's figures in `out`: every run's valid-loss curve; the final losses against
    each swept number; a heatmap of the valid loss when two parameters were swept."""
    plt = _pyplot()
    written = []
    with_curves = [r for r in runs if r.curves.get("valid_loss")]
    if with_curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run in with_curves:
            ax.plot(
                run.curves["epoch"], run.curves["valid_loss"], label=_label(run.overrides, keys)
            )
        if all(v > 0 for r in with_curves for v in r.curves["valid_loss"] if math.isfinite(v)):
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel="valid loss", title="valid loss of every run")
        if len(with_curves) <= 12:
            ax.legend(fontsize="small")
        written.append(_save(fig, out / "curves.png"))

    done = [r for r in runs if _finite([r.final("train_loss"), r.final("valid_loss")])]
    for key in keys:
        values = sorted(
            {r.overrides.get(key) for r in done if isinstance(r.overrides.get(key), float)}
        )
        if len(values) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for metric, style in (("train_loss", "o-"), ("valid_loss", "s-")):
            means = [
                _mean(r.final(metric) for r in done if r.overrides.get(key) == v) for v in values
            ]
            ax.plot(values, means, style, label=metric.replace("_", " "))
        _scale_x(ax, values)
        ax.set(
            xlabel=key,
            ylabel="final loss (mean over the other settings)",
            title=f"train and valid loss against {key}",
        )
        ax.legend()
        written.append(_save(fig, out / f"loss_vs_{key}.png"))

    if len(keys) == 2 and done:
        written += _heatmap(plt, done, keys, out / "heatmap.png")
    return written


def _heatmap(plt, runs, keys, path: Path) -> list[Path]:
    rows = sorted({r.overrides.get(keys[0]) for r in runs}, key=str)
    cols = sorted({r.overrides.get(keys[1]) for r in runs}, key=str)
    rows, cols = _numeric_order(rows), _numeric_order(cols)
    grid = [
        [
            _mean(
                r.final("valid_loss")
                for r in runs
                if r.overrides.get(keys[0]) == a and r.overrides.get(keys[1]) == b
            )
            for b in cols
        ]
        for a in rows
    ]
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 3, 0.8 * len(rows) + 2))
    image = ax.imshow(
        [[math.nan if v is None else v for v in row] for row in grid], cmap="viridis_r"
    )
    ax.set_xticks(range(len(cols)), [_short(c) for c in cols])
    ax.set_yticks(range(len(rows)), [_short(r) for r in rows])
    ax.set(xlabel=keys[1], ylabel=keys[0], title="final valid loss")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v is not None:
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", color="w", fontsize="small")
    fig.colorbar(image, ax=ax)
    return [_save(fig, path)]


def _numeric_order(values: list) -> list:
    return sorted(values) if all(isinstance(v, float) for v in values) else values


def _scale_x(ax, values: list[float]) -> None:
    """A log axis for a parameter swept over decades (lambda, lr); symlog when 0 is among them."""
    positive = [v for v in values if v > 0]
    if len(positive) >= 2 and max(positive) / min(positive) >= 10 and min(values) >= 0:
        if min(values) == 0:
            ax.set_xscale("symlog", linthresh=min(positive))
        else:
            ax.set_xscale("log")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def probe_figure(name: str, data: dict, path: Path) -> Path:
    """The figure of `regexp probe NAME`."""
    plt = _pyplot()
    return _save(PROBE_FIGURES[name](plt, data), path)


def _probe_dropout(plt, data):
    fig, ax = plt.subplots(figsize=(7, 4))
    for p, outputs in data["outputs"].items():
        ax.hist(outputs, bins=40, alpha=0.6, label=f"train mode, p={p:g}")
    ax.axvline(data["eval"], color="k", linestyle="--", label="eval mode (any p)")
    ax.set(
        xlabel="output of Linear(10000 -> 1) on ones",
        ylabel="draws",
        title="dropout keeps the expected output: survivors are scaled by 1/(1-p)",
    )
    ax.legend(fontsize="small")
    return fig


def _probe_norm(plt, data):
    fig, ax = plt.subplots(figsize=(6, 4))
    for layer, (means, variances) in data["trajectories"].items():
        ax.plot(means, "o-", label=f"{layer} running_mean")
        ax.plot(variances, "s--", label=f"{layer} running_var")
    ax.set(
        xlabel="forward passes",
        ylabel="value (channel holding 2)",
        title=f"BatchNorm running statistics, momentum {data['momentum']}",
    )
    ax.legend(fontsize="x-small")
    return fig


def _probe_depth(plt, data):
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    for label, (forward, backward) in data["curves"].items():
        layers = range(1, len(forward) + 1)
        top.plot(layers, forward, label=label)
        bottom.plot(layers, backward, label=label)
    for ax, what in ((top, "output"), (bottom, "gradient")):
        ax.set_yscale("log")
        ax.set(ylabel=f"std of each layer's {what}")
    top.set_title("a 100-layer ReLU net: the signal under each init (NaN: off the chart)")
    bottom.set(xlabel="layer")
    top.legend(fontsize="small")
    return fig


PROBE_FIGURES = {"dropout": _probe_dropout, "norm": _probe_norm, "depth": _probe_depth}
