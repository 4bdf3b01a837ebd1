"""A line and a band per setting in TensorBoard (analysis/settings.py): the mean over a
setting's replicas of each scalar at each epoch, equal to the mean of their metrics.csv
values, with mean ± std (or min to max) around it for the custom-scalars margin charts."""

from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
from conftest import read_events, regexp

from regexp.analysis.settings import BAND


def metrics(run) -> dict[int, dict[str, float]]:
    with open(run / "metrics.csv", newline="") as f:
        return {
            int(r["epoch"]): {k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)
        }


def as_logged(x: float) -> float:
    return float(np.float32(x))  # (TensorBoard keeps a scalar as a float32)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """2 settings of weight decay x 3 seeds, trained once for the module's tests."""
    tmp = tmp_path_factory.mktemp("settings")
    regexp(
        "train", "-m", "optim.weight_decay=0,1e-2", "seed=0,1,2", "train.epochs=12",
        "model.hidden=[8]", "log.figure_every=0", "log.hist_every=0", "hydra.sweep.dir=sweep",
        cwd=tmp,
    )  # fmt: skip
    return tmp / "sweep"


def test_a_sweeps_end_writes_a_run_per_setting_whose_line_is_the_replicas_mean(sweep):
    settings = sorted(p.name for p in (sweep / "settings").iterdir())
    assert settings == ["weight_decay=0", "weight_decay=0.01"]
    for name, decay in zip(settings, ("0", "0.01"), strict=True):
        replicas = [metrics(run) for run in sweep.glob(f"weight_decay={decay},seed=*")]
        assert len(replicas) == 3
        events = read_events(sweep / "settings" / name)
        for column, tag in (("train_loss", "loss/train"), ("valid_loss", "loss/valid")):
            logged = {e.step: e.value for e in events.Scalars(tag)}
            assert sorted(logged) == list(range(1, 13))
            for epoch, value in logged.items():
                values = [r[epoch][column] for r in replicas]
                mean = math.fsum(values) / 3
                assert value == as_logged(mean)
                std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / 2)
                (lower,) = [
                    e.value for e in events.Scalars(f"{BAND}/{tag}/lower") if e.step == epoch
                ]
                (upper,) = [
                    e.value for e in events.Scalars(f"{BAND}/{tag}/upper") if e.step == epoch
                ]
                assert (lower, upper) == (as_logged(mean - std), as_logged(mean + std))


def test_each_scalar_has_a_margin_chart_of_its_mean_and_band(sweep):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    events = read_events(sweep / "settings" / "weight_decay=0.01")
    (config,) = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    (category,) = layout.category
    assert category.title == "settings: mean ± std"
    charts = {c.title: c.margin.series[0] for c in category.chart}
    assert {"loss/train", "loss/valid", "lr"} <= set(charts)
    valid = charts["loss/valid"]
    assert (valid.value, valid.lower, valid.upper) == (
        f"{BAND}/loss/valid/mean", f"{BAND}/loss/valid/lower", f"{BAND}/loss/valid/upper"
    )  # fmt: skip


@pytest.mark.slow
def test_report_writes_them_for_a_sweep_made_before_with_min_to_max_on_request(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    shutil.rmtree(copy / "settings")
    regexp("report", str(copy), "--band", "range", cwd=tmp_path)
    events = read_events(copy / "settings" / "weight_decay=0")
    replicas = [metrics(run) for run in copy.glob("weight_decay=0,seed=*")]
    (epoch,) = [e.step for e in events.Scalars(f"{BAND}/loss/valid/upper")][-1:]
    values = [r[epoch]["valid_loss"] for r in replicas]
    lower = [e.value for e in events.Scalars(f"{BAND}/loss/valid/lower") if e.step == epoch]
    upper = [e.value for e in events.Scalars(f"{BAND}/loss/valid/upper") if e.step == epoch]
    assert (lower, upper) == ([as_logged(min(values))], [as_logged(max(values))])


@pytest.mark.slow
def test_a_setting_of_one_run_gets_a_line_and_no_band(sweep, tmp_path):
    runs = sorted(sweep.glob("*seed=0*")) + sorted(sweep.glob("*weight_decay=0,seed=1*"))
    regexp("report", *map(str, runs), "--out", str(tmp_path / "out"), cwd=tmp_path)
    single = read_events(tmp_path / "out" / "settings" / "weight_decay=0.01")
    assert single.Scalars("loss/valid") and not [
        t for t in single.Tags()["scalars"] if t.startswith(BAND)
    ]
    pair = read_events(tmp_path / "out" / "settings" / "weight_decay=0")
    assert pair.Scalars(f"{BAND}/loss/valid/lower")
