"""A line and a band per setting in TensorBoard. TensorBoard cannot average runs
(tensorflow/tensorboard#376), so for a sweep whose runs are replicas of settings (they differ
only in `seed` and/or `data.draw`), one more TensorBoard run per setting, under the sweep's
`settings/`, holds at each epoch the mean over the setting's replicas of every scalar of their
metrics.csv, under the runs' own tags, and the band around it (mean ± std, or min to max)
under `± band/<tag>/lower` and `.../upper` with the mean again as `.../mean`, which the
custom-scalars margin charts draw (a group whose name TensorBoard sorts after every other,
below the curves in Scalars). Ticking two setting runs shows "λ = 0 against λ = 1e-2, 5 seeds
each" as two lines with bands.
Replicas of different settings are never averaged together; a setting of one run gets a line
and no band."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from regexp.adapters import tensorboardx as tbx
from regexp.analysis.replicas import Group, Replicas, mean_std
from regexp.config import short_keys
from regexp.run import rundir

SETTINGS = "settings"  # the sweep's dir of the setting runs
BANDS = ("std", "range")  # mean ± std; min to max
BAND = "± band"  # the group of the bands' tags


def write_setting_runs(reps: Replicas, sweep: Path, band: str = "std") -> list[Path]:
    """One TensorBoard run per setting of `reps` under `sweep`/settings/, written anew;
    returns their dirs."""
    root = Path(sweep) / SETTINGS
    if root.is_symlink():  # (not followed: a sweep dir from elsewhere may point it anywhere)
        root.unlink()
    shutil.rmtree(root, ignore_errors=True)  # (the runs of an earlier report: written again)
    dirs = []
    for group in reps.groups:
        run_dir = root / setting_name(group)
        run_dir.mkdir(parents=True)
        write_setting_run(run_dir, group, band)
        dirs.append(run_dir)
    return dirs


def setting_name(group: Group) -> str:
    """The setting's run name: the values that make it, as its jobs' dir names write them."""
    short = short_keys(group.setting)
    items = sorted(group.setting.items())  # (as Hydra orders a job's overrides)
    return ",".join(f"{short[k]}={_text(v)}" for k, v in items) or "all"


def _text(value) -> str:
    """A value as Hydra's sweep writes it: 0 (not 0.0), 0.01, 1e-05."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def epochs_of(group: Group) -> dict[int, list]:
    """Each epoch any replica logged, with the replicas' rows there: (run, row index)."""
    epochs: dict[int, list] = {}
    for run in group.runs:
        for i, epoch in enumerate(run.curves.get("epoch", [])):
            if math.isfinite(epoch):
                epochs.setdefault(int(epoch), []).append((run, i))
    return dict(sorted(epochs.items()))


def mean_and_band(values: list[float], band: str) -> tuple[float, float | None, float | None]:
    """The mean of `values` and its band (None below two values)."""
    mean, std = mean_std(values)
    if len(values) < 2:
        return mean, None, None
    if band == "range":
        return mean, min(values), max(values)
    return mean, mean - std, mean + std


def write_setting_run(run_dir: Path, group: Group, band: str) -> None:
    columns = [c for c in dict.fromkeys(c for r in group.runs for c in r.curves) if c != "epoch"]
    writer = tbx.EventsWriter(rundir.events_prefix(run_dir), "")
    now = time.time()
    charts = {}
    for epoch, rows in epochs_of(group).items():
        values = []
        for column in columns:
            found = [r.curves[column][i] for r, i in rows if i < len(r.curves.get(column, []))]
            found = [v for v in found if math.isfinite(v)]
            if not found:
                continue
            tag = rundir.tag(column)
            mean, lower, upper = mean_and_band(found, band)
            values.append(tbx.Summary.Value(tag=tag, simple_value=mean))
            if lower is not None:
                # The chart's own copy of the mean: a margin chart takes in every run that
                # has its value's tag, and the replicas, which have no band, would fail it.
                series = [f"{BAND}/{tag}/{part}" for part in ("mean", "lower", "upper")]
                for name, value in zip(series, (mean, lower, upper), strict=True):
                    values.append(tbx.Summary.Value(tag=name, simple_value=value))
                charts[tag] = ["Margin", series]
        writer.write_event(tbx.Event(wall_time=now, step=epoch, summary=tbx.Summary(value=values)))
    if charts:
        title = "settings: mean ± std" if band == "std" else "settings: mean, min to max"
        # Custom Scalars shows a category's charts last first: the losses lead this way.
        layout = tbx.summaries.custom_scalars({title: dict(reversed(charts.items()))})
        writer.write_event(tbx.Event(wall_time=now, step=0, summary=layout))
    writer.close()
