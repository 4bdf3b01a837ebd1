"""double_descent.png: a width sweep's test and train error against the width (log axis, the
parameter count on a second axis), a curve per weight decay λ with the ensemble's beside it,
the interpolation threshold marked; beneath, per λ, the squared error of the probabilities
split into bias² and variance, and the variance into its data and init parts."""

from __future__ import annotations

from pathlib import Path

from regexp.analysis.double_descent import curves_by_decay, threshold
from regexp.figures.plots import Saved, _pyplot, _quiet, _save

MAX_DECAYS = 4  # panels beneath, one per λ; more λ are drawn above only
TERMS = [  # (attribute, label, style)
    ("bias2", "bias²", "o-"),
    ("variance", "variance", "s-"),
    ("variance_data", "variance from the data", "v--"),
    ("variance_init", "variance from the init", "^--"),
]


@_quiet
def double_descent_figure(found: list, out: Path) -> Saved:
    """double_descent.png in `out` from the curve's points (analysis.double_descent.Point)."""
    import numpy as np

    plt = _pyplot()
    curves = curves_by_decay(found)
    below = list(curves.items())[:MAX_DECAYS]
    fig = plt.figure(figsize=(max(10, 4.5 * len(below)), 8.5), layout="constrained")
    grid = fig.add_gridspec(2, len(below), height_ratios=[1.3, 1])
    top = fig.add_subplot(grid[0, :])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (decay, curve) in enumerate(curves.items()):
        color = colors[k % len(colors)]
        name = "the runs" if decay is None else f"λ={decay:g}"  # (λ not swept nor given)
        widths = [p.width for p in curve]
        test = np.array([p.test_error for p in curve])
        std = np.array([p.test_error_std for p in curve])
        top.plot(widths, test, "o-", c=color, label=f"{name} test")
        top.fill_between(widths, test - std, test + std, color=color, alpha=0.15, lw=0)
        train = [np.nan if p.train_error is None else p.train_error for p in curve]
        top.plot(widths, train, "--", c=color, label=f"{name} train")
        top.plot(widths, [p.ensemble_error for p in curve], ":", marker="D", c=color, ms=4,
                 label=f"{name} ensemble of the replicas")  # fmt: skip
        at_zero = threshold(curve)
        if at_zero is not None:
            top.axvline(at_zero.width, c=color, lw=0.8, alpha=0.6)
            top.annotate(
                f"train error 0 ({name})",
                (at_zero.width, 0),
                xycoords=("data", "axes fraction"),
                xytext=(3, 3 + 12 * k),
                textcoords="offset points",
                fontsize="small",
                color=color,
            )
    top.set(xscale="log", xlabel="width", ylabel="0-1 error on the valid set")
    _width_ticks(top, found)
    top.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # (off the curves)
    _params_axis(top, found)
    fig.suptitle("double descent: error against width, a curve per weight decay λ")
    for j, (decay, curve) in enumerate(below):
        ax = fig.add_subplot(grid[1, j])
        widths = [p.width for p in curve]
        for attr, label, style in TERMS:
            values = [getattr(p, attr) for p in curve]
            if all(v is not None for v in values):
                ax.plot(widths, values, style, label=label, ms=4)
        ax.set(
            xscale="log",
            xlabel="width",
            ylabel="squared error of the probabilities" if j == 0 else None,
            title="bias and variance" + ("" if decay is None else f", λ={decay:g}"),
        )
        _width_ticks(ax, curve)
        if j == len(below) - 1:  # (one legend for the panels, off their curves)
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    written = Saved()
    _save(fig, out / "double_descent.png", written)
    return written


def _width_ticks(ax, found: list) -> None:
    """A tick at each width, as the number it is."""
    widths = sorted({p.width for p in found})
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.minorticks_off()


def _params_axis(ax, found: list) -> None:
    """The parameter count of each width on a second x axis, above."""
    counts = dict(sorted((p.width, p.params) for p in found if p.params is not None))
    if not counts:
        return
    above = ax.twiny()
    above.set(xscale="log", xlim=ax.get_xlim(), xlabel="parameters")
    above.set_xticks(list(counts), [f"{n:,}" for n in counts.values()], fontsize="x-small")
    above.minorticks_off()
