"""Figures: the fit of a 1-D regression and the decision boundary of 2-D data, drawn in eval
mode, logged to TensorBoard every log.figure_every epochs and saved as a PNG at the end."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import torch
from conftest import TINY, read_events, regexp
from PIL import Image
from torch import nn

from regexp import data, plots, run
from regexp.track import Tracker


def dropout_net(n_in: int, n_out: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(n_in, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, n_out))


def test_each_dataset_gets_the_figure_that_suits_it(compose):
    def plot(*overrides):
        conf = compose(*overrides)
        return plots.for_dataset(data.load(conf.data, 0))

    assert isinstance(plot(), plots.FitPlot)
    assert isinstance(plot("data=spiral"), plots.BoundaryPlot)
    assert plot("data=digits") is None


def test_figures_are_drawn_in_eval_mode_from_a_copy_of_the_state_then(compose):
    dataset = data.load(compose().data, 0)
    figure = plots.for_dataset(dataset)
    model = dropout_net(1, 1)
    state = figure.snapshot(model)
    with torch.no_grad():
        expected = model.eval()(figure.grid).numpy()
        model[0].weight.mul_(2)  # training goes on after the snapshot
    for training in (True, False):
        model.train(training)
        first, second = figure.predict(model, state), figure.predict(model, state)
        assert model.training is training
        assert (first == second).all() and np.allclose(first, expected)  # no dropout masks
    assert not np.allclose(figure.predict(model), expected)  # the live model, as it is now
    xs = figure.grid[:, 0]  # a fixed grid a little wider than the points
    assert xs[0] < dataset.x_train.min() and xs[-1] > dataset.x_train.max()


def test_the_tracker_logs_figures_every_n_epochs_and_at_the_end_then_saves_a_png(compose, tmp_path):
    dataset = data.load(compose("data=moons", "data.n_train=20", "data.n_valid=20").data, 0)
    model = dropout_net(2, 2)
    figure = plots.for_dataset(dataset)
    tracker = Tracker(
        tmp_path, epochs=5, hparams={}, metrics=["train_loss", "valid_loss"], figure=figure,
        figure_every=2,
    )  # fmt: skip
    for epoch in range(1, 6):
        tracker.log_epoch(epoch, {"train_loss": 1.0, "valid_loss": 1.0}, model)
    assert model.training  # as the loop left it
    tracker.close("completed", model)
    images = read_events(tmp_path).Images("figures/decision_boundary")
    assert [i.step for i in images] == [2, 4, 5]
    png = Image.open(io.BytesIO((tmp_path / "decision_boundary.png").read_bytes()))
    assert png.format == "PNG" and png.size == (images[-1].width, images[-1].height) == (500, 400)


def test_a_one_output_classifier_is_drawn_with_its_sigmoid(compose):
    dataset = data.load(compose("data=xor", "data.n_train=10", "data.n_valid=10").data, 0)
    figure = plots.for_dataset(dataset)
    model = dropout_net(2, 1)
    values = figure.predict(model)
    assert values.shape == (len(figure.grid), 2) and np.allclose(values.sum(1), 1)
    png, width, height = figure.render(model, None, epoch=3)
    assert png.startswith(b"\x89PNG") and (width, height) == (500, 400)


def test_a_run_saves_its_figure_and_figure_every_0_turns_figures_off(compose, tmp_path):
    conf = compose(*TINY, "log.figure_every=2")
    run.execute(conf, tmp_path / "on")
    assert [i.step for i in read_events(tmp_path / "on").Images("figures/fit")] == [2, 4, 5]
    assert (tmp_path / "on" / "fit.png").stat().st_size > 0
    run.execute(compose(*TINY, "log.figure_every=0"), tmp_path / "off")
    assert not (tmp_path / "off" / "fit.png").exists()
    assert read_events(tmp_path / "off").Tags()["images"] == []


def test_a_2d_run_from_the_command_line_leaves_its_decision_boundary(tmp_path):
    regexp("train", "data=circles", *TINY, "log.figure_every=3", "hydra.run.dir=run", cwd=tmp_path)
    steps = [i.step for i in read_events(tmp_path / "run").Images("figures/decision_boundary")]
    assert steps == [3, 5] and (tmp_path / "run" / "decision_boundary.png").exists()


def test_datasets_and_snapshots_import_neither_scikit_learn_nor_matplotlib():
    code = """
import sys, torch
from regexp import config, data, plots
for cfg in (data.ToyRegression(), data.Moons(), data.Digits()):
    d = data.load(cfg, 0)
    figure = plots.for_dataset(d)
    if figure is not None:
        figure.predict(torch.nn.Linear(d.in_shape[0], d.n_outputs))
print(sorted(m for m in ("sklearn", "matplotlib") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
