"""Figures (matplotlib, drawn off-screen): what people would rather look at than read.

Training figures: the fitted curve of a 1-D regression and the decision boundary on 2-D
data. Each comes in two halves, so that the training loop pays next to nothing for it: a
`Plot` runs the model in eval mode on a fixed grid of inputs (tens of microseconds to a
millisecond), and its `Drawing` turns those values into a picture (tens of milliseconds),
in another process (render.py), while the loop goes on. One Figure is reused and only what
changes between epochs (the curve, the class map, and a few points over them) is redrawn.

Report figures: curves and comparisons across the runs of a sweep (`regexp report`).
Probe figures: the lessons' demonstrations that need no training (`regexp probe`).

matplotlib, torch and numpy are imported only where they are used: `regexp report` never
imports torch, and the drawing process imports neither torch nor the training code.

Why it is long: every figure of the project is drawn here, so that matplotlib is set up (the
off-screen backend, sizes, styles) in one place and imported nowhere else.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING

from regexp.errors import first_line
from regexp.run import rundir

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from regexp.components.data import Dataset

# --- training figures ---------------------------------------------------------------------

SIZE, DPI = (5.0, 4.0), 100  # 500 x 400 pixels
GRID_1D, GRID_2D = 200, 64  # points on the x axis; per side of the 2-D grid
FEW_POINTS = 200  # train and valid points drawn in each frame (a few take next to nothing)
MARGIN = 0.1  # of the data's extent, on each side


# The data sets whose runs draw a figure (1-D regression, 2-D classification), known from
# their names before they load: for those the drawing process starts with the run.
class Plot:
    """One kind of figure of one dataset, on the training side. `name` is its TensorBoard tag
    and file name; `spec` is all its `Drawing` needs (numpy arrays and numbers)."""

    name = ""

    def __init__(self, data: Dataset, grid: torch.Tensor, **spec):
        self.grid = grid.to(data.x_train.device)
        points = [
            (x.cpu().numpy(), y.cpu().numpy())
            for x, y in ((data.x_train, data.y_train), (data.x_valid, data.y_valid))
        ]
        self.spec = {"kind": self.name, "points": points, **spec}

    def predict(self, model: nn.Module) -> np.ndarray:
        """The model's outputs on the grid in eval mode (no dropout, BN's running statistics);
        the model is left in the mode it was in."""
        import torch

        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                return self.outputs(model(self.grid)).float().cpu().numpy()
        finally:
            model.train(was_training)

    def outputs(self, out: torch.Tensor) -> torch.Tensor:
        return out


class FitPlot(Plot):
    """The lessons' plot: the fitted curve over the train and valid points."""

    name = "fit"

    def __init__(self, data: Dataset):
        import torch

        lo, hi = _extent(torch.cat([data.x_train, data.x_valid]))
        grid = torch.linspace(lo[0], hi[0], GRID_1D).unsqueeze(1)
        super().__init__(data, grid, x=grid[:, 0].numpy())


class BoundaryPlot(Plot):
    """The classes the model predicts over the plane, under the train and valid points."""

    name = "decision_boundary"

    def __init__(self, data: Dataset):
        import torch

        lo, hi = _extent(torch.cat([data.x_train, data.x_valid]))
        axes = [torch.linspace(lo[i], hi[i], GRID_2D) for i in (0, 1)]
        xx, yy = torch.meshgrid(*axes, indexing="xy")  # rows go along y, as the image's
        super().__init__(
            data,
            torch.stack([xx.flatten(), yy.flatten()], 1),
            xx=xx.numpy(),
            yy=yy.numpy(),
            extent=(lo[0], hi[0], lo[1], hi[1]),
            n_classes=data.n_outputs,
        )
        self.n_classes = data.n_outputs

    def outputs(self, out):
        import torch

        # Two classes: P(class 1) (one output: a sigmoid's); more: the predicted class.
        if out.shape[1] == 1:
            return torch.sigmoid(out[:, 0])
        if self.n_classes == 2:
            return torch.softmax(out.float(), 1)[:, 1]
        return out.argmax(1).to(torch.uint8)


# Each live figure by the name a data option declares (Data.figure).
PLOTS = {"fit": FitPlot, "decision_boundary": BoundaryPlot}


def for_dataset(data: Dataset) -> Plot | None:
    """The live figure `data`'s option declares (the fit for 1-D regression, the boundary for
    2-D classification), or None."""
    plot = PLOTS.get(data.figure)
    return plot(data) if plot is not None else None


class Drawing:
    """The matplotlib half of a Plot: `frame(values, epoch)` draws the values `Plot.predict`
    gave at `epoch` and returns the picture as an RGB PIL image. The axes keep fixed limits,
    so that the frames of an animation line up, and each frame draws only what moves: over
    the axes drawn once (ticks, labels, the legend above them), under the points, drawn once
    into a transparent layer laid on top (a thousand points take tens of milliseconds), or,
    up to FEW_POINTS of them, drawn over the model's artists in each frame (a second figure
    to draw them once would cost more than drawing them)."""

    def __init__(self, spec: dict):
        from PIL import Image

        self.spec = spec
        self.figure, self.canvas, self.ax = self._layer()
        self.moving = self.setup(self.ax)  # the model's artists, bottom to top
        if sum(len(x) for x, _ in spec["points"]) > FEW_POINTS:
            points, canvas, ax = self._layer()
            ax.set(xlim=self.ax.get_xlim(), ylim=self.ax.get_ylim())
            ax.set_axis_off()
            points.patch.set_alpha(0)
            self.points(ax)
            canvas.draw()
            self.overlay = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba())
            self.overlay = self.overlay.copy()  # (the buffer goes with its canvas)
            handles = [*ax.collections, *self.moving]
        else:  # drawn over the model's artists in each frame
            self.overlay = None
            before = len(self.ax.collections)
            self.points(self.ax)
            added = self.ax.collections[before:]
            handles = [*added, *self.moving]
            self.moving = [*self.moving, *added]
        self.ax.legend(
            handles=[h for h in handles if h.get_label()[:1] not in ("", "_")], loc="lower right",
            bbox_to_anchor=(1, 1), ncols=3, fontsize="small", frameon=False, borderaxespad=0.2,
        )  # fmt: skip
        self.title = self.ax.set_title(" ", loc="left")
        for artist in [*self.moving, self.title]:
            artist.set_animated(True)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)

    @staticmethod
    def _layer():
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=SIZE, dpi=DPI)
        canvas = FigureCanvasAgg(figure)  # Agg, whatever backend pyplot would pick
        figure.subplots_adjust(left=0.13, right=0.96, bottom=0.12, top=0.92)
        return figure, canvas, figure.add_subplot()

    def frame(self, values: np.ndarray, epoch: int):
        import numpy as np
        from PIL import Image

        extra = self.update(values)
        self.title.set_text(f"{self.spec['kind'].replace('_', ' ')}, epoch {epoch}")
        self.canvas.restore_region(self.background)
        self.paint(np.asarray(self.canvas.buffer_rgba()))
        for artist in [*self.moving[:1], *extra, *self.moving[1:], self.title]:
            self.ax.draw_artist(artist)
        size = self.canvas.get_width_height()
        picture = Image.frombuffer("RGBA", size, self.canvas.buffer_rgba())
        if self.overlay is not None:
            picture = Image.alpha_composite(picture, self.overlay)
        return picture.convert("RGB")

    def setup(self, ax) -> list:
        """Draw what stays (the axes, at their final limits); return the artists that move,
        bottom to top."""
        raise NotImplementedError

    def points(self, ax) -> None:
        """Draw the train and valid points (labelled, for the legend)."""
        raise NotImplementedError

    def update(self, values: np.ndarray) -> list:
        """Set what the model predicts; return the artists made for this frame alone."""
        raise NotImplementedError

    def paint(self, pixels: np.ndarray) -> None:
        """Write what the model predicts into the canvas's pixels (rows top down, RGBA),
        under the artists that move."""


class FitDrawing(Drawing):
    def setup(self, ax):
        import numpy as np

        (xt, yt), (xv, yv) = self.spec["points"]
        x = self.spec["x"]
        (self.curve,) = ax.plot(x, np.zeros_like(x), c="black", lw=2, label="model")
        # The points' range and as much again: room for a curve that overshoots them, and
        # axes that stay put from frame to frame (a curve beyond them is cut off).
        y = np.concatenate([yt[:, 0], yv[:, 0]])
        pad = max(float(y.max() - y.min()), 1e-6) / 2
        ax.set_xlim(x[0], x[-1])
        ax.set_ylim(float(y.min()) - pad, float(y.max()) + pad)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        return [self.curve]

    def points(self, ax):
        (xt, yt), (xv, yv) = self.spec["points"]
        ax.scatter(xt[:, 0], yt[:, 0], s=30, c="tab:blue", label="train")
        ax.scatter(xv[:, 0], yv[:, 0], s=30, c="tab:orange", marker="s", label="valid")

    def update(self, values):
        self.curve.set_ydata(values[:, 0])
        return []


class BoundaryDrawing(Drawing):
    def setup(self, ax):
        import matplotlib

        # Two classes: P(class 1) from blue to red; more: the predicted class.
        self.two = self.spec["n_classes"] == 2
        self.colour = {"cmap": "RdBu_r" if self.two else "tab10", "vmin": 0}
        self.colour["vmax"] = 1 if self.two else 9
        self.cmap = matplotlib.colormaps[self.colour["cmap"]]
        from matplotlib.collections import LineCollection

        lo_x, hi_x, lo_y, hi_y = self.spec["extent"]
        ax.set(xlim=(lo_x, hi_x), ylim=(lo_y, hi_y))
        self.values = None
        self.boundary = ax.add_collection(LineCollection([], colors="black", linewidths=1))
        # Over the class map, which fills the axes.
        return [self.boundary, *ax.spines.values()]

    def points(self, ax):
        (xt, yt), (xv, yv) = self.spec["points"]
        ax.scatter(*xv.T, c=yv, s=8, alpha=0.4, label="valid", **self.colour)
        ax.scatter(
            *xt.T, c=yt, s=22, edgecolors="black", linewidths=0.6, label="train", **self.colour
        )

    def update(self, values):
        import contourpy  # matplotlib's own contouring, without a ContourSet per frame

        xx, yy = self.spec["xx"], self.spec["yy"]
        self.values = values.reshape(xx.shape)
        lines = []
        if self.two and self.values.min() < 0.5 < self.values.max():  # the boundary, if any
            lines = contourpy.contour_generator(xx, yy, self.values).lines(0.5)
        self.boundary.set_segments(lines)
        return []

    def paint(self, pixels):
        """The class map, its colours at 60% over white, scaled to the axes' pixels by PIL
        (matplotlib's own resampling of an image takes several times as long)."""
        import numpy as np
        from PIL import Image

        x0, y0, width, height = (round(v) for v in self.ax.bbox.bounds)
        top = pixels.shape[0] - y0 - height
        colours = self.cmap(self.values / self.colour["vmax"])[::-1, :, :3]  # rows top down
        grid = Image.fromarray((255 * (0.4 + 0.6 * colours)).astype(np.uint8))
        resample = Image.Resampling.BILINEAR if self.two else Image.Resampling.NEAREST
        pixels[top : top + height, x0 : x0 + width, :3] = grid.resize((width, height), resample)


DRAWINGS = {"fit": FitDrawing, "decision_boundary": BoundaryDrawing}


def _extent(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-column low and high of `x`, widened by MARGIN."""
    lo, hi = x.min(0).values, x.max(0).values
    pad = (hi - lo).clamp_min(1e-6) * MARGIN
    return (lo - pad).tolist(), (hi + pad).tolist()


# --- report figures -----------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    return plt


def _label(overrides: dict, keys: list[str]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(overrides.get(k))}" for k in keys) or "run"


def _short(value) -> str:
    """A swept value in a figure's text; a `$` in it (a value from a run dir) as itself, not
    the start of matplotlib's math."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("$", r"\$")


def _finite(values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _quiet(draw):
    """`draw` with numpy's overflow warnings off: values matplotlib cannot draw give one line
    in Saved.not_drawn, not a screen of warnings."""

    @functools.wraps(draw)
    def quiet(*args, **kwargs):
        import numpy as np

        with np.errstate(all="ignore"):
            return draw(*args, **kwargs)

    return quiet


@_quiet
def report_figures(runs, keys: list[str], out: Path, groups=None) -> list[Path]:
    """The report's figures in `out`: every run's loss curves; the final losses against each
    swept number (or, for a list-valued key such as model.hidden, against the model's
    parameter count); a heatmap of the valid loss when two parameters were swept. With
    `groups` (replicas.Group: the runs of one setting over seeds and draws) each curve is a
    setting's mean with a band of ± one std, and so is each point against a swept number."""
    plt = _pyplot()
    written = Saved()
    if groups is None:
        figure = curves_figure(plt, runs, keys)
    else:
        figure = band_curves_figure(plt, runs, keys, groups)
    if figure is not None:
        _save(figure, out / "curves.png", written)

    with_weights = [r for r in runs if r.curves.get("weights_l2_norm")]
    if with_weights and len(with_weights if groups is None else groups) <= 12:
        figure = weights_figure(plt, with_weights, keys, groups)
        _save(figure, out / "weights.png", written)

    done = [r for r in runs if _finite([r.final("train_loss"), r.final("valid_loss")])]
    for key in keys:
        figure = loss_vs_figure(plt, done, key, groups is not None)
        if figure is not None:
            _save(figure, out / f"loss_vs_{key}.png", written)

    if len(keys) == 2 and done:
        _save(_heatmap(plt, done, keys), out / "heatmap.png", written)
    return written


MAX_PANELS = 30


def curves_figure(plt, runs, keys: list[str]):
    """Small multiples: a panel per value of the first swept key, in which each run (one per
    setting of the other keys) has its valid loss drawn strong and its train loss faint, in
    one colour; the panels share their axes. None without curves."""
    runs = [r for r in runs if r.curves.get("valid_loss")]
    if not runs:
        return None
    first, rest = (keys[0], keys[1:]) if keys else (None, [])
    values = _numeric_order(sorted({r.overrides.get(first) for r in runs}, key=str))
    panels = {v: [r for r in runs if r.overrides.get(first) == v] for v in values[:MAX_PANELS]}
    columns = 3 if len(panels) in (5, 6, 9) else min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.2 * columns + (2 if rest else 0.4), 2.6 * rows + 0.6),
        sharex=True, sharey=True, squeeze=False, layout="constrained",
    )  # fmt: skip
    settings = list(dict.fromkeys(_label(r.overrides, rest) for r in runs))
    many = len(settings) > 10
    cmap = plt.get_cmap("viridis").resampled(len(settings)) if many else plt.get_cmap("tab10")
    colour = {setting: cmap(i) for i, setting in enumerate(settings)}
    losses = []
    for ax, (value, members) in zip(axes.flat, panels.items(), strict=False):
        for run in members:
            setting, epochs = _label(run.overrides, rest), run.curves["epoch"]
            if run.curves.get("train_loss"):
                ax.plot(epochs, run.curves["train_loss"], color=colour[setting], lw=0.8, alpha=0.3)
            ax.plot(epochs, run.curves["valid_loss"], color=colour[setting], lw=1.8, label=setting)
            losses += [v for k in ("valid_loss", "train_loss") for v in run.curves.get(k, [])]
        if first:
            ax.set_title(f"{first.rsplit('.', 1)[-1]}={_short(value)}", fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    finite = [v for v in losses if math.isfinite(v)]
    if finite and min(finite) > 0:
        axes[0, 0].set_yscale("log")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("loss")
    if rest and len(settings) <= 16:
        seen = {}
        for ax in axes.flat[: len(panels)]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                seen.setdefault(label, handle)
        fig.legend(list(seen.values()), list(seen), loc="outside right upper", fontsize="small")
    fig.suptitle("valid loss (strong) and train loss (faint) of every run")
    return fig


# Keys of a scale (a rate, a penalty's strength): a log axis, symlog when 0 is among them.
LOG_KEYS = ("lr", "weight_decay", "l1", "l2")


def loss_vs_figure(plt, runs, key: str, band: bool = False):
    """The final train and valid loss against `key`'s values (the mean over the other
    settings, with a band of ± one std over the runs with `band`); for a list-valued key
    (model.hidden=[50],[200,200]), against the models' parameter counts. None where there is
    nothing to plot."""
    values = {r.overrides.get(key) for r in runs}
    if all(isinstance(v, float) for v in values):
        points = sorted(values)
        x = points
        label = key
    elif all(isinstance(v, str) and v.startswith("[") for v in values) and all(
        "params" in r.summary for r in runs
    ):
        points = sorted(values, key=lambda v: _mean(r.summary["params"] for r in runs
                                                      if r.overrides.get(key) == v))  # fmt: skip
        x = [_mean(r.summary["params"] for r in runs if r.overrides.get(key) == v) for v in points]
        label = f"parameters (by {key})"
    else:
        return None
    if len(points) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for metric, style in (("train_loss", "o-"), ("valid_loss", "s-")):
        at = [[r.final(metric) for r in runs if r.overrides.get(key) == v] for v in points]
        means = [_mean(a) for a in at]
        (line,) = ax.plot(x, means, style, label=metric.replace("_", " "))
        if band:
            spread = [_std(a) for a in at]
            ax.fill_between(
                x,
                [m - d for m, d in zip(means, spread, strict=True)],
                [m + d for m, d in zip(means, spread, strict=True)],
                color=line.get_color(),
                alpha=0.2,
                lw=0,
            )
    if x is not points:  # name each point by its value, over its valid loss
        for xi, yi, value in zip(x, means, points, strict=True):
            ax.annotate(value, (xi, yi), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize="x-small", rotation=20)  # fmt: skip
    _scale_x(ax, x, log=key.rsplit(".", 1)[-1] in LOG_KEYS)
    ax.set(
        xlabel=label,
        ylabel="final loss (mean over the runs, ± std)"
        if band
        else "final loss (mean over the other settings)",
        title=f"train and valid loss against {key}",
    )
    ax.legend()
    return fig


def band_curves_figure(plt, runs, keys: list[str], groups):
    """Each setting's mean valid loss over its seeds and draws with a band of ± one std (and
    its train loss, dashed, while there are few settings). None without curves."""
    if not any(r.curves.get("valid_loss") for r in runs):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = len(groups)
    for group in groups:
        label = f"{_label(group.setting, keys)} (n={len(group.runs)})"
        line = _band(ax, group.runs, "valid_loss", label)
        if line is not None and lines <= 6:
            _band(ax, group.runs, "train_loss", None, "--", line.get_color())
    losses = [
        v
        for r in runs
        for k in ("valid_loss", "train_loss")
        for v in r.curves.get(k, [])
        if math.isfinite(v)
    ]
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    what = "mean ± std over the seeds and draws"
    ax.set(
        xlabel="epoch",
        ylabel="loss",
        title=f"valid (solid) and train loss (dashed), {what}"
        if lines <= 6
        else f"valid loss, {what}",
    )
    if lines <= 12:
        ax.legend(fontsize="small")
    return fig


TERMS = [  # (a Decomposition's attribute, its name in the figure, its style)
    ("bias2", "bias²", "o-"),
    ("variance", "variance", "s-"),
    ("noise", "noise", ":"),
    ("expected_error", "expected error", "D-"),
]


@_quiet
def bias_variance_figures(
    curves: dict, results: list, keys: list[str], out: Path, valid: dict | None = None
) -> list[Path]:
    """bias_variance.png: bias², variance, noise and expected error against each swept
    strength (`curves`: key -> [(value, Decomposition)], the other keys at their smallest), a
    symlog axis where 0 is among the values, the lessons' U-curve, with the expected error on
    the valid set beside it where the curves are over the input range (`valid`, as `curves`);
    where nothing numeric was swept, the terms of each setting as bars. fits.png: for each
    setting (`results`: bias_variance.SettingDecomposition), every run's fit over the truth,
    with their mean."""
    plt = _pyplot()
    lines = {k: line for k, line in curves.items() if len(line) >= 2}
    panels = max(1, len(lines))
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    if lines:
        for ax, (key, line) in zip(axes[0], lines.items(), strict=True):
            values = [v for v, _ in line]
            for attr, name, style in TERMS:
                ax.plot(values, [getattr(d, attr) for _, d in line], style, label=name)
            if valid and key in valid:
                errors = [d.expected_error for _, d in valid[key]]
                ax.plot(values, errors, "D:", c="grey", label="expected error, valid set")
            _scale_x(ax, values)
            task = line[0][1].task
            ax.set(
                xlabel=key,
                ylabel="0-1 loss" if task == "classification" else "squared error",
                title=f"bias and variance against {key.rsplit('.', 1)[-1]}"
                + ("\nover the input range" if valid else ""),
            )
            ax.legend(fontsize="small")
    else:
        ax = axes[0][0]
        names = [_label(r.setting, keys) for r in results]
        width = 0.8 / len(TERMS)
        for j, (attr, name, _) in enumerate(TERMS):
            ax.bar(
                [i + j * width for i in range(len(results))],
                [getattr(r.lead, attr) for r in results],
                width,
                label=name,
            )
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(results))], names)
        ax.set(title="bias and variance of each setting")
        ax.legend(fontsize="small")
    written = Saved()
    _save(fig, out / "bias_variance.png", written)
    with_grid = [r for r in results if r.runs and r.runs[0].grid is not None]
    if with_grid:
        _save(_fits(plt, with_grid[:12], keys), out / "fits.png", written)
    return written


def _fits(plt, results: list, keys: list[str]):
    """Each setting's runs over the truth: 1-D regression, every fitted curve thin, their
    mean thick, f(x) dashed; 2-D data, every run's decision boundary thin, the boundary of
    the mean probability thick, over the valid points."""
    import numpy as np

    cols = min(4, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4 * cols, 3.3 * rows), squeeze=False, sharex=True, sharey=True
    )
    for ax in axes.flat[len(results) :]:
        ax.set_visible(False)
    for ax, result in zip(axes.flat, results, strict=False):
        runs = result.runs
        first = runs[0]
        grids = np.stack([p.grid for p in runs])
        if first.grid_x.shape[1] == 1:
            x = first.grid_x[:, 0]
            for g in grids:
                ax.plot(x, g[:, 0], color="tab:blue", lw=0.6, alpha=0.35)
            ax.plot(x, grids.mean(0)[:, 0], color="black", lw=2, label="mean fit")
            if first.x is not None:
                order = np.argsort(first.x[:, 0])
                truth = first.y if first.target is None else first.target
                name = "valid y" if first.target is None else "f(x)"
                ax.plot(first.x[order, 0], truth[order, 0], "--", c="tab:red", lw=1.5, label=name)
                ax.scatter(first.x[:, 0], first.y[:, 0], s=12, c="tab:orange", zorder=3)
        else:
            side = int(round(math.sqrt(len(first.grid_x))))
            xx = first.grid_x[:, 0].reshape(side, side)
            yy = first.grid_x[:, 1].reshape(side, side)
            if first.x is not None:
                ax.scatter(*first.x.T, c=first.y, cmap="RdBu_r", s=5, alpha=0.3)
            for g in grids:
                ax.contour(xx, yy, g[:, -1].reshape(side, side), levels=[0.5],
                           colors="tab:blue", linewidths=0.6, alpha=0.4)  # fmt: skip
            mean = grids.mean(0)[:, -1].reshape(side, side)
            if mean.min() < 0.5 < mean.max():
                ax.contour(xx, yy, mean, levels=[0.5], colors="black", linewidths=2)
        ax.set_title(f"{_label(result.setting, keys)} (n={len(runs)})", fontsize="small")
    handles = axes.flat[0].get_legend_handles_labels()[0]
    if handles:
        axes.flat[0].legend(fontsize="x-small")
    fig.suptitle("every run's fit (thin) and their mean (thick): the spread is the variance")
    return fig


def weights_figure(plt, runs, keys, groups=None):
    """The weights' L2 norm and sparsity over the epochs: L2's shrinkage, L1's zeros; with
    `groups`, each setting's mean over its runs with a band of ± one std."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for group in groups or []:
        label = f"{_label(group.setting, keys)} (n={len(group.runs)})"
        line = _band(left, group.runs, "weights_l2_norm", label)
        if line is not None:
            _band(right, group.runs, "weights_sparsity", label, color=line.get_color())
    for run in runs if groups is None else []:
        points = [
            (e, n, z)
            for e, n, z in zip(
                run.curves["epoch"],
                run.curves["weights_l2_norm"],
                run.curves["weights_sparsity"],
                strict=True,
            )
            if math.isfinite(n)
        ]
        epochs, norms, zeros = zip(*points, strict=True)
        label = _label(run.overrides, keys)
        left.plot(epochs, norms, label=label)
        right.plot(epochs, zeros, label=label)
    left.set(xlabel="epoch", ylabel="L2 norm of the weights", title="weight norm")
    right.set(xlabel="epoch", ylabel="share of |w| < 1e-3", title="sparsity")
    right.legend(fontsize="small")
    return fig


def _heatmap(plt, runs, keys):
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
    return fig


def _numeric_order(values: list) -> list:
    return sorted(values) if all(isinstance(v, float) for v in values) else values


def _scale_x(ax, values: list[float], log: bool = False) -> None:
    """A log axis for values over decades (or with `log`: a rate, a penalty), symlog when 0
    is among them, so that it shows."""
    positive = [v for v in values if v > 0]
    if not positive or min(values) < 0:
        return
    if log or (len(positive) >= 2 and max(positive) / min(positive) >= 10):
        if min(values) == 0:
            ax.set_xscale("symlog", linthresh=min(positive))
        elif len(positive) >= 2:
            ax.set_xscale("log")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _std(values) -> float:
    """The sample std of the finite values; 0 for fewer than two."""
    from regexp.analysis.replicas import stat

    s = stat(values)
    return 0.0 if s is None else s.std


def _band(ax, runs, metric: str, label, style: str = "-", color=None):
    """The runs' mean curve of `metric` over the epochs with a band of ± one std (epoch by
    epoch, over the runs that logged it); returns the line, None where no run has it."""
    import numpy as np

    by_epoch: dict[float, list[float]] = {}
    for run in runs:
        for e, v in zip(run.curves.get("epoch", []), run.curves.get(metric, []), strict=False):
            if math.isfinite(v):
                by_epoch.setdefault(e, []).append(v)
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    mean = np.array([_mean(by_epoch[e]) for e in epochs])
    spread = np.array([_std(by_epoch[e]) for e in epochs])
    (line,) = ax.plot(epochs, mean, style, label=label, color=color, lw=1.5 if label else 1)
    ax.fill_between(epochs, mean - spread, mean + spread, color=line.get_color(), alpha=0.2, lw=0)
    return line


class Saved(list):
    """The report's figures written, and in `not_drawn` a line for each that matplotlib
    could not draw (values near the float limit, from a diverged or a damaged run)."""

    def __init__(self):
        super().__init__()
        self.not_drawn: list[str] = []


def _save(fig, path: Path, saved: Saved | None = None) -> Path:
    """Draw `fig` into `path`; with `saved`, add it there, or where matplotlib cannot draw
    it, say so there instead of raising."""
    import matplotlib.pyplot as plt

    try:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        with rundir.atomic(path, ".tmp.png") as tmp:  # (replaces a symlink, never follows it)
            fig.savefig(tmp, dpi=100)
    except (ValueError, OverflowError) as exc:
        if saved is None:
            raise
        saved.not_drawn.append(f"{path.name}: not drawn, matplotlib cannot ({first_line(exc)})")
    else:
        if saved is not None:
            saved.append(path)
    finally:
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
    _layer_curves(top, bottom, data)
    top.set_title(f"a 100-layer {data['activation']} net: the signal under each init")
    top.legend(fontsize="small")
    return fig


def _layer_curves(top, bottom, data):
    """Each layer's output std (top) and gradient std (bottom), layers counted from 0 as the
    course prints them; a NaN or inf is off the chart."""
    for label, (forward, backward) in data["curves"].items():
        top.plot(range(len(forward)), forward, label=label)
        if bottom is not None:
            bottom.plot(range(len(backward)), backward, label=label)
    for ax, what in ((top, "output"), (bottom, "gradient")):
        if ax is not None:
            ax.set_yscale("log")
            ax.set(ylabel=f"std of each layer's {what}")
    (bottom or top).set(xlabel="layer (layer:i, from 0)")


def _probe_init(plt, data):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bins = [i / 10 for i in range(-40, 41)]
    left.hist(data["x"], bins=bins, alpha=0.6, label=f"x ~ N(0, 1), std {data['x'].std():.3f}")
    left.hist(data["out"], bins=bins, alpha=0.6, label=f"tanh(x), std {data['out'].std():.3f}")
    left.set(
        xlabel="value",
        ylabel="count",
        title=f"gain {data['gain']:.4f}; calculate_gain('tanh') = {data['tanh_gain']:.4f}",
    )
    left.legend(fontsize="small")
    _layer_curves(right, None, data)
    right.set_title("a 100-layer tanh net under each init")
    right.legend(fontsize="small")
    return fig


def _probe_lr(plt, data):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, rates in data["curves"].items():
        ax.plot(range(1, len(rates) + 1), rates, label=name)
    ax.set_yscale("log")  # schedules a decade apart stay apart
    ax.set(
        xlabel="epoch",
        ylabel="learning rate (log scale; 0 is off the chart)",
        title="learning-rate schedules: the optimizer's lr in each epoch",
    )
    ax.legend(fontsize="small")
    return fig


def _probe_optim(plt, data):
    if "paths" in data:  # the notes' first steps
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, path in data["paths"].items():
            ax.plot(range(len(path)), [w / path[0] for w in path], "o-", label=name)
        ax.set(xlabel="step", ylabel="w / w0", title="first steps on loss = w^2 / 2")
        ax.legend(fontsize="small")
        return fig
    panels = [("gradient descent on y = 4w^2 from w = 2", data["losses"])]
    if data["sweep"]:
        sweep = {f"lr {rate:.3g}": losses for rate, losses in data["sweep"].items()}
        panels.append(("the course's sweep of learning rates", sweep))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels, strict=True):
        for name, losses in curves.items():
            ax.plot(range(len(losses)), losses, label=name)
        ax.set_yscale("log")
        ax.set(xlabel="iteration (Iter:i)", ylabel="loss (log scale; 0 is off the chart)")
        ax.set_title(title)
        ax.legend(fontsize="x-small")
    return fig


PROBE_FIGURES = {
    "dropout": _probe_dropout,
    "norm": _probe_norm,
    "depth": _probe_depth,
    "init": _probe_init,
    "lr": _probe_lr,
    "optim": _probe_optim,
}
